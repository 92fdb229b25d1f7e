"""scst.conf (modern syntax): parsing, validation messages with file:line, writer round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcmu_scst.errors import ConfigError, ConfigErrors
from tcmu_scst.scst import conf
from tcmu_scst.scst.model import Device, Group, Lun, ScstConfig, Target

EXAMPLE = """\
# comment line
setup_id 0x10
HANDLER vdisk_fileio {
    DEVICE disk1 {
        filename "/srv/a b.img"   # trailing comment
        nv_cache 1
    }
    DEVICE disk2 {
        filename /srv/x\\#y
    }
}
HANDLER vdisk_nullio {
    DEVICE null1
}
TARGET_DRIVER iscsi {
    enabled 1
    TARGET iqn.2024-01.org.x:t1 {
        IncomingUser "joe secret123456"
        OutgoingUser "tgt secret654321"
        HeaderDigest CRC32C,None
        portal 192.0.2.1
        allowed_portal [2001:db8::1]:3261
        LUN 0 disk1
        LUN 1 disk2 {
            read_only 1
        }
        GROUP g1 {
            LUN 0 disk2
            INITIATOR iqn.1991-05.com.microsoft:host1
            IncomingUser "host1 secret567890"
        }
        enabled 1
    }
}
TARGET_DRIVER qla2x00t {
    TARGET 21:00:00:24:ff:31:4c:48 {
        GROUP fc {
            LUN 0 null1
            INITIATOR 21:00:00:24:ff:31:4c:49
        }
    }
}
GROUP Default {
    LUN 0 null1
}
"""


def test_parses_every_section_with_values_and_lines() -> None:
    config = conf.parse(EXAMPLE, "ex.conf")
    assert config.setup_id == 0x10
    assert [(d.name, d.handler) for d in config.devices] == [
        ("disk1", "vdisk_fileio"),
        ("disk2", "vdisk_fileio"),
        ("null1", "vdisk_nullio"),
    ]
    assert config.devices[0].params == {"filename": "/srv/a b.img", "nv_cache": "1"}
    assert config.devices[1].params == {"filename": "/srv/x#y"}
    assert config.devices[0].where.line == 4
    t1, fc = config.targets
    assert (t1.fabric, t1.name, t1.enabled) == ("iscsi", "iqn.2024-01.org.x:t1", True)
    assert t1.incoming_users == [("joe", "secret123456")]
    assert t1.outgoing_user == ("tgt", "secret654321")
    assert t1.attributes == {"HeaderDigest": "CRC32C,None"}
    assert t1.portals == ["192.0.2.1:3260", "[2001:db8::1]:3261"]
    assert t1.luns == [Lun(0, "disk1"), Lun(1, "disk2", True)]
    assert t1.groups[0].initiators == ["iqn.1991-05.com.microsoft:host1"]
    assert t1.groups[0].incoming_users == [("host1", "secret567890")]
    assert (fc.fabric, fc.enabled) == ("qla2xxx", False)  # SCST: disabled unless enabled 1
    assert config.groups == [Group("Default", [], [Lun(0, "null1")])]
    assert config.drivers == {"iscsi": {"enabled": "1"}}


def test_writer_output_reads_back_identical() -> None:
    config = conf.parse(EXAMPLE, "ex.conf")
    text = conf.write(config)
    assert conf.parse(text, "again.conf") == config
    assert 'filename "/srv/a b.img"' in text
    assert 'filename "/srv/x#y"' in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FOO bar\n", "c.conf:1: unknown keyword 'FOO' at top level; expected HANDLER, "
         "TARGET_DRIVER, GROUP, DEVICE_GROUP, setup_id, threads"),
        ("HANDLER vdisk_fileio {\n", "c.conf:1: section HANDLER vdisk_fileio is never closed; "
         "add '}'"),
        ("}\n", "c.conf:1: '}' closes no section; remove it"),
        ('setup_id "0x1\n', "c.conf:1: unterminated double quote; close it with '\"'"),
        ("HANDLER vdisk_fileio {\n DEVICE d {\n  filename /a\n }\n}\n"
         "TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  LUN 1 d\n }\n}\n",
         "c.conf:7: target iqn.2024-01.x:t has no LUN 0: there must be LUN 0 in each"
         " security group; "
         "renumber its LUNs to start at 0"),
        ("HANDLER vdisk_fileio {\n DEVICE d {\n  filename /a\n }\n}\n"
         "TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  LUN 0 d\n  LUN 0 e\n }\n}\n",
         "c.conf:9: LUN 0 is assigned twice in target iqn.2024-01.x:t (d and e); give each"
         " device its "
         "own LUN"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  LUN 0 nosuch\n }\n}\n",
         "c.conf:3: LUN 0 in target iqn.2024-01.x:t names unknown device 'nosuch'; define it in a "
         "HANDLER section first"),
        ("HANDLER vdisk_fileio {\n DEVICE d {\n  filename /a\n }\n}\n"
         "TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  LUN 0 d\n  LUN 1 d\n }\n}\n",
         "c.conf:9: device d is exported twice in target iqn.2024-01.x:t (LUN 0 and 1); keep one"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  GROUP g {\n   INITIATOR a/b\n "
         " }\n }\n}\n",
         "c.conf:4: initiator name 'a/b' contains '/' or white space, which LIO cannot store "
         "(in group g of target iqn.2024-01.x:t)"),
        ("TARGET_DRIVER qla2x00t {\n TARGET 21:00:00:24:ff:31:4c:48 {\n  GROUP g {\n"
         "   INITIATOR iqn.2024-01.x\n  }\n }\n}\n",
         "c.conf:4: initiator name 'iqn.2024-01.x' is not an FC WWPN; write 8 lower-case hex"
         " bytes with "
         "colons, e.g. 21:00:00:24:ff:31:4c:48 (in group g of target 21:00:00:24:ff:31:4c:48)"),
        ("TARGET_DRIVER qla2x00t {\n TARGET 2100002 {\n }\n}\n",
         "c.conf:2: qla2xxx target '2100002' is not a port WWPN; write 8 lower-case hex bytes "
         "with colons, e.g. 21:00:00:24:ff:31:4c:48"),
        ("TARGET_DRIVER foo {\n}\n", "c.conf:1: unknown target driver 'foo'; use one of: fcst, "
         "iscsi, loopback, qla2x00t, qla2xxx, scst_local, tcm_fc"),
        ("HANDLER vdisk_foo {\n DEVICE d\n}\n", "c.conf:2: unknown handler 'vdisk_foo'; use one "
         "of: dev_cdrom, dev_changer, dev_disk, dev_disk_perf, dev_modisk, dev_modisk_perf, "
         "dev_processor, dev_raid, dev_tape, dev_tape_perf, vcdrom, vdisk_blockio, "
         "vdisk_fileio, vdisk_nullio, vdisk_rbd"),
        ("HANDLER vdisk_fileio {\n DEVICE a,b\n}\n", "c.conf:2: device name 'a,b' contains '/', "
         "',', ':' or white space, which a LIO backstore name cannot hold"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  portal 10.0.0.*\n }\n}\n",
         "c.conf:3: portal pattern '10.0.0.*': LIO listens on exact addresses; write one "
         "'portal IP:PORT' line per address"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  portal 10.0.0.1:99999\n }\n}\n",
         "c.conf:3: portal '10.0.0.1:99999' is not IP:PORT with a port 1..65535"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  rel_tgt_idx 1\n }\n}\n",
         "c.conf:3: unknown keyword 'rel_tgt_idx' at TARGET iqn.2024-01.x:t; expected LUN, GROUP, "
         "enabled, IncomingUser, OutgoingUser, portal, allowed_portal or an iSCSI parameter"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  enabled yes\n }\n}\n",
         "c.conf:3: enabled must be 0 or 1, not 'yes'"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  IncomingUser joe\n }\n}\n",
         'c.conf:3: IncomingUser takes "user secret" (quoted, two words)'),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  OutgoingUser \"a secret123456\"\n"
         "  OutgoingUser \"c secret123456\"\n }\n}\n",
         "c.conf:4: OutgoingUser of target iqn.2024-01.x:t is set twice; keep one (mutual CHAP"
         " has one target account)"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  GROUP Default_x {\n  }\n }\n}\n",
         "c.conf:3: group name Default_x is reserved for the default LUN set; put target "
         "iqn.2024-01.x:t's default LUNs directly in its TARGET section"),
        ("DEVICE_GROUP dg {\n DEVICE nope\n}\n", "c.conf:2: device group dg names unknown "
         "device 'nope'; define it in a HANDLER section first"),
        ("GROUP g {\n INITIATOR iqn.2024-01.a\n INITIATOR iqn.2024-01.a\n}\n",
         "c.conf:3: initiator iqn.2024-01.a is listed twice in group g; remove one"),
        ("HANDLER vdisk_fileio {\n DEVICE d\n DEVICE d\n}\n",
         "c.conf:3: device d is defined twice; remove or rename one"),
        ("HANDLER vdisk_nullio {\n DEVICE d\n}\n"
         "TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  LUN 0 d {\n   hidden 1\n  }\n }\n}\n",
         "c.conf:7: unknown keyword 'hidden' at LUN 0; expected read_only"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  LUN x d\n }\n}\n",
         "c.conf:3: LUN number 'x' is not a decimal number"),
        # str.isdigit() takes these; int() crashed on the first, read the second as 0.
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  LUN \u00b2 d\n }\n}\n",
         "c.conf:3: LUN number '\u00b2' is not a decimal number"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  LUN \u0660 d\n }\n}\n",
         "c.conf:3: LUN number '\u0660' is not a decimal number"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  portal"
         " 10.0.0.1:\u00b3\u00b2\u2076\u2070\n"
         " }\n}\n",
         "c.conf:3: portal '10.0.0.1:\u00b3\u00b2\u2076\u2070' is not IP:PORT with a port "
         "1..65535"),
    ],
)  # fmt: skip
def test_bad_input_gives_one_line_error_with_file_line_and_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        conf.parse(text, "c.conf")
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_every_error_in_one_run_and_line_numbers_count_comments_and_blank_lines() -> None:
    text = "# one\n\n  # three\nbogus 1\nalso_bogus 2\n"
    with pytest.raises(ConfigErrors) as info:
        conf.parse(text, "f")
    assert info.value.line == 4  # it reads as its first error
    assert [err.line for err in info.value.errors] == [4, 5]


def test_a_utf8_byte_order_mark_is_not_a_keyword(tmp_path: Path) -> None:
    path = tmp_path / "scst.conf"
    path.write_bytes(b"\xef\xbb\xbf" + b"HANDLER vdisk_nullio {\n DEVICE d\n}\n")
    assert [d.name for d in conf.load(path).devices] == ["d"]


def test_empty_file_is_an_empty_setup() -> None:
    assert conf.parse("# nothing\n", "e") == ScstConfig()
    assert conf.parse(conf.write(ScstConfig()), "e") == ScstConfig()


def test_quote_handles_blanks_quotes_backslashes_and_hash() -> None:
    for value in ["plain", "a b", 'say "hi"', "back\\slash", "#hash", "", "{x}"]:
        text = f"HANDLER vdisk_fileio {{\n DEVICE d {{\n  filename {conf.quote(value)}\n }}\n}}\n"
        if value == "":
            with pytest.raises(ConfigError):  # an empty value is refused, never dropped
                conf.parse(text.replace('""', ""), "q")
            continue
        assert conf.parse(text, "q").devices[0].params["filename"] == value


def test_normalize_portal_forms() -> None:
    assert conf.normalize_portal("10.1.2.3") == "10.1.2.3:3260"
    assert conf.normalize_portal("10.1.2.3:3261") == "10.1.2.3:3261"
    assert conf.normalize_portal("2001:db8::1") == "[2001:db8::1]:3260"
    assert conf.normalize_portal("[2001:db8::1]:860") == "[2001:db8::1]:860"
    with pytest.raises(ConfigError, match="missing"):
        conf.normalize_portal("[2001:db8::1")
    # The kernel helper's spelling, so the live np/ directory compares equal next time.
    assert conf.normalize_portal("2001:DB8:0::1") == "[2001:db8::1]:3260"
    with pytest.raises(ConfigError) as info:
        conf.normalize_portal("storage:3260", "p.conf", 7)
    assert str(info.value) == (
        "p.conf:7: portal 'storage:3260': portal address 'storage' is not an IPv4 or IPv6 address"
    )


def test_fc_names_are_normalized_to_the_kernel_form() -> None:
    config = conf.parse(
        "TARGET_DRIVER qla2x00t {\n TARGET naa.21000024FF314C48 {\n  GROUP g {\n"
        "   INITIATOR 21:00:00:24:FF:31:4C:49\n  }\n }\n}\n",
        "fc.conf",
    )
    assert config.targets[0].name == "21:00:00:24:ff:31:4c:48"
    assert config.targets[0].groups[0].initiators == ["21:00:00:24:ff:31:4c:49"]


# ---- property: writer and parser agree on any model ------------------------------------

_IQN = r"iqn\.2024-01\.[a-z0-9]{1,6}(:[a-z0-9.-]{0,8})?"
_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,11}", fullmatch=True)
_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r"),
    min_size=1,
    max_size=20,
).filter(lambda v: v.strip() == v and v.strip() != "" and "  " not in v)


@st.composite
def configs(draw: st.DrawFn) -> ScstConfig:
    dev_names = draw(st.lists(_names, min_size=1, max_size=4, unique=True))
    devices = [
        Device(
            n,
            draw(st.sampled_from(["vdisk_fileio", "vdisk_nullio", "vcdrom"])),
            draw(st.dictionaries(st.sampled_from(["filename", "blocksize", "usn"]), _values,
                                 max_size=2)),
        )
        for n in dev_names
    ]  # fmt: skip
    # The writer groups devices per HANDLER section (first appearance order).
    first = list(dict.fromkeys(d.handler for d in devices))
    devices.sort(key=lambda d: first.index(d.handler))

    def luns() -> list[Lun]:
        chosen = draw(st.lists(st.sampled_from(dev_names), unique=True, max_size=3))
        return [Lun(i, d, draw(st.booleans())) for i, d in enumerate(chosen)]

    targets = []
    for i in range(draw(st.integers(0, 2))):
        groups = [
            Group(f"g{j}", draw(st.lists(st.from_regex(_IQN, fullmatch=True),
                                         unique=True, max_size=2)), luns())
            for j in range(draw(st.integers(0, 2)))
        ]  # fmt: skip
        targets.append(
            Target(
                "iscsi",
                f"iqn.2024-01.org.test:t{i}",
                draw(st.booleans()),
                luns(),
                groups,
                portals=draw(st.lists(st.sampled_from(["10.0.0.1:3260", "[::1]:3261"]),
                                      unique=True)),
                attributes=draw(st.dictionaries(st.sampled_from(["addr_method", "comment"]),
                                                _values, max_size=2)),
            )
        )  # fmt: skip
    globals_ = [Group("Default", [], luns())] if draw(st.booleans()) else []
    return ScstConfig(devices, targets, globals_, setup_id=draw(st.none() | st.integers(0, 99)))


@settings(max_examples=40, deadline=None)
@given(configs())
def test_round_trip_any_valid_model(config: ScstConfig) -> None:
    assert conf.parse(conf.write(config), "rt") == config
