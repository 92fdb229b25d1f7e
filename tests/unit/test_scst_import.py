"""``tcmu-scst config import``: targetcli's saveconfig.json -> scst.conf."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tcmu_scst import cli
from tcmu_scst.errors import ConfigError
from tcmu_scst.scst import conf
from tcmu_scst.scst.importer import import_saveconfig

SAMPLE = Path(__file__).parent.parent / "fixtures" / "targetcli" / "saveconfig.json"
IQN = "iqn.2003-01.org.linux-iscsi.storage1.x8664:sn.3c5a7e9b1d2f"


def test_a_realistic_targetcli_save_file_becomes_groups_luns_and_chap() -> None:
    config = import_saveconfig(SAMPLE)
    assert [(d.name, d.handler, d.params) for d in config.devices] == [
        ("web01", "vdisk_fileio", {"filename": "/srv/iscsi/web01.img"}),
        ("logs", "vdisk_fileio", {"filename": "/srv/iscsi/logs.img", "write_through": "1"}),
        ("db", "vdisk_blockio", {"filename": "/dev/vg0/db"}),
    ]
    iscsi, loop = config.targets
    assert (iscsi.fabric, iscsi.name, iscsi.enabled) == ("iscsi", IQN, True)
    assert iscsi.luns == []  # generate_node_acls 0: only the ACLs see LUNs
    assert iscsi.portals == ["0.0.0.0:3260"]
    assert iscsi.attributes["MaxRecvDataSegmentLength"] == "8192"
    web, db = iscsi.groups
    assert (web.name, web.initiators) == (
        "webservers",
        ["iqn.1994-05.com.redhat:web01", "iqn.1994-05.com.redhat:web02"],
    )  # one tag, one group
    assert [(lun.number, lun.device, lun.read_only) for lun in web.luns] == [
        (0, "web01", False),
        (1, "logs", True),  # mapped LUN 1 -> TPG LUN 2, write_protect
    ]
    assert web.incoming_users == [("web", "webs3cret1234")]
    assert (db.name, db.initiators, [(x.number, x.device) for x in db.luns]) == (
        "acl2",
        ["iqn.1993-08.org.debian:01:db01"],
        [(0, "db")],
    )
    assert (loop.fabric, loop.name, [(x.number, x.device) for x in loop.luns]) == (
        "loopback",
        "naa.5001405f6e7d8c9b",
        [(0, "logs")],
    )


def test_the_written_file_reads_back_as_the_same_setup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["config", "import", str(SAMPLE)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"# Imported from {SAMPLE} by tcmu-scst config import.\n")
    assert conf.parse(text, "imported.conf") == import_saveconfig(SAMPLE)
    out = tmp_path / "scst.conf"
    assert cli.main(["config", "import", str(SAMPLE), "-o", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600  # it holds CHAP secrets
    assert out.read_text() == text


def sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE.read_text())
    return data


def test_demo_mode_becomes_the_default_lun_set_with_the_tpg_account(tmp_path: Path) -> None:
    data = sample()
    tpg = data["targets"][0]["tpgs"][0]
    tpg["attributes"]["generate_node_acls"] = 1
    tpg["attributes"]["demo_mode_write_protect"] = 0
    tpg["chap_userid"], tpg["chap_password"] = "all", "alls3cret1234"
    path = tmp_path / "saveconfig.json"
    path.write_text(json.dumps(data))
    iscsi = import_saveconfig(path).targets[0]
    assert [(x.number, x.device, x.read_only) for x in iscsi.luns] == [
        (0, "web01", False), (1, "db", False), (2, "logs", False)
    ]  # fmt: skip
    assert iscsi.incoming_users == [("all", "alls3cret1234")]


def test_what_has_no_equivalent_is_refused_all_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = sample()
    data["storage_objects"] += [
        {"plugin": "ramdisk", "name": "scratch", "size": 1 << 20},
        {"plugin": "pscsi", "name": "tape0", "dev": "/dev/sg3"},
        {"plugin": "user", "name": "rbd0", "config": "rbd/pool/img"},
    ]
    data["targets"].append({"fabric": "vhost", "wwn": "naa.5001405000000001", "tpgs": []})
    data["targets"][0]["tpgs"][0]["node_acls"][2]["mapped_luns"][0]["index"] = 3
    path = tmp_path / "saveconfig.json"
    path.write_text(json.dumps(data))
    assert cli.main(["config", "import", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing half-written
    assert [line.removeprefix(f"tcmu-scst config: error: {path}: ") for line in
            captured.err.splitlines()] == [
        "backstore ramdisk/scratch has no tcmu-scst equivalent: we have no RAM-backed store "
        "(vdisk_nullio discards writes); use a fileio image on tmpfs instead",
        "backstore pscsi/tape0 has no tcmu-scst equivalent: name the SCSI device by its "
        "H:C:I:L address in a HANDLER dev_disk (dev_tape, ...) section by hand",
        "backstore user/rbd0 has no tcmu-scst equivalent: it is served by another TCMU "
        "handler (tcmu-runner); keep it there",
        "target vhost/naa.5001405000000001: fabric 'vhost' has no SCST target driver here; "
        "tcmu-scst serves iscsi, loopback, qla2xxx, tcm_fc",
    ]  # fmt: skip


def test_scst_rules_apply_to_the_imported_model(tmp_path: Path) -> None:
    data = sample()
    data["targets"][0]["tpgs"][0]["node_acls"][2]["mapped_luns"][0]["index"] = 3
    path = tmp_path / "saveconfig.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        import_saveconfig(path)
    assert str(info.value) == (
        f"{path}: group acl2 of target {IQN} has no LUN 0: there must be LUN 0 in each "
        "security group; renumber its LUNs to start at 0"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not a readable JSON save file"),
        ("[]", "not a targetcli save file (expected a JSON object)"),
        ('{"targets": [{"fabric": "iscsi", "wwn": "iqn.2024-01.x:t", "tpgs": [{}, {}]}]}',
         "target iqn.2024-01.x:t has 2 TPGs; an SCST target is one LIO TPG"),
        ('{"storage_objects": [{"plugin": "fileio"}], "targets": [{"fabric": "iscsi", '
         '"wwn": "iqn.2024-01.x:t", "tpgs": [{"luns": [{"index": 0}]}]}]}',
         "target iqn.2024-01.x:t LUN 0:  is not a backstore tcmu-scst imported"),
    ],
)  # fmt: skip
def test_malformed_files_give_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        import_saveconfig(path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}: ")
