"""The example of SCST's scst.conf(5) on the real LIO (issue 15).

The guest has no Fibre Channel HBA and no SCSI disks at 1:0:0:0, so the sections for
``dev_disk``, ``qla2x00t`` and ``fcst`` are left out; everything else is the man page's
text, backing files pointed at files (and a loop device) the test makes.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import LoopbackTpg
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import apply_config
from tcmu_scst.scst.commands import load
from tcmu_scst.scst.materializer import Materializer
from tcmu_scst.scst.ownership import load_ownership
from tests.kernel.tcmu_rig import iscsi_inq, product_id
from tests.kernel.test_scst_apply import daemon

pytestmark = pytest.mark.kernel
__all__ = ["daemon"]  # the fixture, used by name

EXAMPLE = Path(__file__).parent.parent / "fixtures" / "scst-conf-5" / "example.conf"
NO_HARDWARE = ("HANDLER dev_disk", "TARGET_DRIVER qla2x00t", "TARGET_DRIVER fcst")
IQN = "iqn.2006-10.net.vlnb:tgt"
INI = "iqn.2024-01.org.test:conf5"


def sections_without(text: str, heads: tuple[str, ...]) -> str:
    """``text`` without the top-level sections whose first line starts with ``heads``."""
    kept: list[str] = []
    depth, skipping = 0, False
    for line in text.splitlines():
        if depth == 0:
            skipping = line.startswith(heads)
        depth += line.count("{") - line.count("}")
        if not skipping:
            kept.append(line)
    return "\n".join(kept) + "\n"


@pytest.fixture
def example(tmp_path: Path, daemon: None) -> Iterator[tuple[Configfs, Path, Path]]:
    text = sections_without(EXAMPLE.read_text(), NO_HARDWARE)
    for name in ("disk1", "disk2", "cdrom1.iso", "blockio1.img"):
        with open(tmp_path / name, "wb") as f:
            f.truncate(16 << 20)
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(tmp_path / "blockio1.img")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    for old, new in (("/disk1", tmp_path / "disk1"), ("/disk2", tmp_path / "disk2"),
                     ("/cdrom1.iso", tmp_path / "cdrom1.iso"), ("/dev/sda5", loop)):
        text = text.replace(f"filename {old}\n", f"filename {new}\n")
    path = tmp_path / "scst.conf"
    path.write_text(text)
    cfs, state = Configfs(), tmp_path / "state.json"
    try:
        yield cfs, state, path
    finally:
        apply_config(cfs, conf.parse("", "empty"), state)
        subprocess.run(["losetup", "-d", loop], check=False)


def test_the_example_applies_first_chap_account_and_srpt_warned(
    example: tuple[Configfs, Path, Path],
) -> None:
    cfs, state, path = example
    config = load(path)
    assert sum("TARGET_DRIVER ib_srpt is not applied" in w for w in config.warnings) == 1
    apply_config(cfs, config, state)
    assert not cfs.exists("srpt")
    # scst_local: one loopback target whose LUN 0 is disk1.
    (owned,) = [t for t in load_ownership(state).targets if t.fabric == "loopback"]
    nodes = LoopbackTpg(cfs, owned.wwn).wait_for_lun(0)
    assert nodes.block is not None
    model = Path(f"/sys/block/{os.path.basename(nodes.block)}/device/model").read_text()
    assert model.strip() == "disk1"
    # iSCSI, case C (LUN 2 is read-only): refused, materialized with joe's account.
    url = f"iscsi://joe%12charsecret@127.0.0.1/{IQN}/0"
    assert iscsi_inq(INI, url).returncode != 0
    assert INI in [m.initiator for m in Materializer(cfs, state).poll_once()]
    assert product_id(INI, url) == "disk1"
    # fred's account is the one not applied: his login fails CHAP.
    fred = f"iscsi://fred%12charsecret2@127.0.0.1/{IQN}/0"
    assert iscsi_inq(INI, fred).returncode != 0
    assert cfs.read(f"iscsi/{IQN}/tpgt_1/param/HeaderDigest") == "CRC32C,None"


def test_a_dummy_nullio_lun_0_answers_no_device_through_lio(
    tmp_path: Path, daemon: None
) -> None:
    """``dummy 1``: the INQUIRY that reaches the initiator through LIO says peripheral
    qualifier 1, type 1Fh; the next LUN is a disk as usual (libiscsi, no Linux scan)."""
    with open(tmp_path / "disk1", "wb") as f:
        f.truncate(16 << 20)
    iqn = "iqn.2024-01.org.tcmu-scst:dummy"
    text = (
        "HANDLER vdisk_nullio {\n DEVICE dummy {\n  dummy 1\n }\n}\n"
        f"HANDLER vdisk_fileio {{\n DEVICE disk1 {{\n  filename {tmp_path}/disk1\n }}\n}}\n"
        f"TARGET_DRIVER iscsi {{\n TARGET {iqn} {{\n  LUN 0 dummy\n  LUN 1 disk1\n"
        "  enabled 1\n }\n}\n"
    )
    cfs, state = Configfs(), tmp_path / "state.json"
    try:
        apply_config(cfs, conf.parse(text, "d.conf"), state)
        lun0 = iscsi_inq(INI, f"iscsi://127.0.0.1/{iqn}/0")
        assert lun0.returncode == 0, lun0.stderr
        # libiscsi's names for qualifier 001b and type 1Fh
        assert "Peripheral Qualifier:DISCONNECTED\nPeripheral Device Type:UNKNOWN\n" in (
            lun0.stdout
        )
        assert product_id(INI, f"iscsi://127.0.0.1/{iqn}/1") == "disk1"
    finally:
        apply_config(cfs, conf.parse("", "empty"), state)
