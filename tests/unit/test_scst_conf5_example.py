"""The example of SCST's scst.conf(5) checks and applies unchanged (issue 15).

What LIO cannot do is said once, as a FILE:LINE warning: the ib_srpt targets (and the
ALUA lines naming them), the CHAP accounts past the first of a target.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigError
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import apply_config
from tcmu_scst.scst.mapping import map_config
from tcmu_scst.testing.fake_configfs import FakeConfigfs

FIXTURE = Path(__file__).parent.parent / "fixtures" / "scst-conf-5" / "example.conf"
HEADER = 5  # the fixture's citation lines above the man page's text


def example() -> str:
    return FIXTURE.read_text()


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line holding ``needle`` (the tests name lines by text)."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_example_parses_with_one_warning_per_thing_lio_cannot_do() -> None:
    text = example()
    config = conf.parse(text, "scst.conf")
    srpt = line_of(text, "TARGET_DRIVER ib_srpt")
    assert srpt > HEADER
    fred = line_of(text, "fred 12charsecret2")
    assert (
        f"scst.conf:{srpt}: TARGET_DRIVER ib_srpt is not applied: tcmu-scst does not drive "
        "LIO's srpt fabric (SRP needs an InfiniBand/RDMA port; LIO names srpt targets by "
        "port GUID, not as SCST does); its targets ib_srpt_target_0, ib_srpt_target_1 are "
        "not created"
    ) in config.warnings
    assert (
        f"scst.conf:{fred}: IncomingUser fred of target iqn.2006-10.net.vlnb:tgt is not "
        "applied: LIO's iSCSI keeps one CHAP account per initiator, joe (the first); "
        "initiators logging in as fred will fail CHAP"
    ) in config.warnings
    # Four ALUA TARGET lines name ib_srpt targets: one warning each, and dropped.
    alua = [w for w in config.warnings if "of target group" in w]
    assert len(alua) == 4
    assert all(f"its TARGET_DRIVER ib_srpt (line {srpt}) is not" in w for w in alua)
    assert all(not tg.targets for dg in config.device_groups for tg in dg.target_groups)
    # Every warning names its own line once.
    lines = [w.split(":")[1] for w in config.warnings]
    assert len(lines) == len(set(lines)) == 9
    fabrics = sorted((t.fabric, t.name) for t in config.targets)
    assert fabrics == [
        ("iscsi", "iqn.2006-10.net.vlnb:tgt"),
        ("loopback", "scst_local_tgt"),
        ("qla2xxx", "25:00:00:f0:98:87:92:f3"),
        ("qla2xxx", "25:00:00:f0:98:87:92:f4"),
        ("tcm_fc", "20:00:00:22:15:81:74:2b"),
        ("tcm_fc", "20:00:00:22:15:81:87:f9"),
    ]
    iscsi = next(t for t in config.targets if t.fabric == "iscsi")
    assert iscsi.incoming_users == [("joe", "12charsecret")]
    dummy = config.device("dummy")
    assert dummy is not None and dummy.params == {"dummy": "1"}


def test_an_extra_chap_account_is_still_checked() -> None:
    text = (
        "TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n"
        '  IncomingUser "joe 12charsecret"\n  IncomingUser "fred"\n }\n}\n'
    )
    with pytest.raises(ConfigError, match='c:4: IncomingUser takes "user secret"'):
        conf.parse(text, "c")


def test_an_unapplied_driver_section_is_still_read() -> None:
    text = "TARGET_DRIVER ib_srpt {\n TARGET t0 {\n  LUN x disk1\n  enabled 2\n }\n}\n"
    with pytest.raises(ConfigError) as info:
        conf.parse(text, "c")
    assert str(info.value).splitlines() == [
        "c:3: LUN number 'x' is not a decimal number",
        "c:4: enabled must be 0 or 1, not '2'",
    ]


def test_an_alua_line_naming_no_target_at_all_is_still_refused() -> None:
    text = example().replace("TARGET ib_srpt_target_1 {\n\t\t\trel_tgt_id 2", "TARGET nowhere {"
                             "\n\t\t\trel_tgt_id 2", 1)
    with pytest.raises(ConfigError, match="names target nowhere, which no TARGET_DRIVER"):
        conf.parse(text, "c")


def test_the_example_applies_what_lio_has(tmp_path: Path) -> None:
    text = example()
    for path in ("/disk1", "/disk2", "/dev/sda5", "/cdrom1.iso"):
        image = tmp_path / path.rsplit("/", 1)[1]
        image.write_bytes(b"\0" * (1 << 20))
        text = text.replace(f"filename {path}\n", f"filename {image}\n")
    config = conf.parse(text, "scst.conf")
    desired = map_config(config)
    wwns = sorted((t.fabric, t.wwn) for t in desired.targets)
    assert ("iscsi", "iqn.2006-10.net.vlnb:tgt") in wwns
    assert ("qla2xxx", "25:00:00:f0:98:87:92:f3") in wwns
    assert ("fc", "20:00:00:22:15:81:74:2b") in wwns
    assert not any("ib_srpt" in wwn for _, wwn in wwns)
    (tmp_path / "cfs").mkdir()
    cfs = FakeConfigfs(tmp_path / "cfs")
    apply_config(cfs, config, tmp_path / "state.json")
    tpg = "iscsi/iqn.2006-10.net.vlnb:tgt/tpgt_1"
    assert cfs.read(f"{tpg}/param/HeaderDigest") == "CRC32C,None"
    # Mixed RO flags: case C, the materializer gives each initiator the first account.
    (iscsi,) = [t for t in desired.targets if t.fabric == "iscsi"]
    assert iscsi.default_case == "C" and iscsi.default_chap is not None
    assert iscsi.default_chap.userid == "joe"
    # The dummy LUN placeholder reaches the handler through its dev_config.
    (dummy,) = [b for b in desired.backstores if b.name == "dummy"]
    assert ";dm" in dummy.dev_config
