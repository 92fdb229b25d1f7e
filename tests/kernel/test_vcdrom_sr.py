"""vcdrom seen by the kernel's CD-ROM driver (sr_mod through tcm_loop).

An ISO made here with genisoimage mounts as iso9660 and a file reads back
byte-identical; a change to a second ISO (the handler's change hook, as the daemon
would call it) is noticed by the kernel on the next open; the tray ejects and
loads with sg_start, refuses to eject while PREVENT is in force, and the drive
refuses a change while a mounted file system keeps it locked.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from tcmu_scst.errors import HandlerError
from tcmu_scst.handlers.vcdrom import VcdromHandler, VcdromParams, to_dev_config

from .tcmu_rig import serve


def make_iso(tmp_path: Path, label: str, payload: bytes) -> Path:
    tree = tmp_path / label
    tree.mkdir()
    (tree / "payload.bin").write_bytes(payload)
    (tree / "label.txt").write_text(label + "\n")
    iso = tmp_path / f"{label}.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-R", "-J", "-V", label, "-o", str(iso), str(tree)],
        check=True, timeout=60,
    )
    return iso


def sg(*args: str) -> int:
    """Run an sg3_utils command; its exit status (2 = NOT READY, 5 = ILLEGAL REQUEST...)."""
    return subprocess.run(list(args), capture_output=True, timeout=30).returncode


def mount(dev: str, where: Path) -> None:
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "iso9660", "-o", "ro", dev, str(where)], check=True,
                   timeout=60)


def umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], check=True, timeout=60)


def test_iso_mount_change_and_eject(lio_stack: ExitStack, tmp_path: Path) -> None:
    subprocess.run(["modprobe", "isofs"], check=True)
    first = os.urandom(3 * 1024 * 1024 + 123)
    second = os.urandom(700 * 1024 + 5)
    iso_a = make_iso(tmp_path, "DISC_A", first)
    iso_b = make_iso(tmp_path, "DISC_B", second)

    config = to_dev_config(VcdromParams("cd0", str(iso_a)))
    served = serve(lio_stack, config, iso_a.stat().st_size, block_size=2048)
    handler = served.handler
    assert isinstance(handler, VcdromHandler)
    assert served.lun is not None and served.lun.block is not None
    dev = served.lun.block
    assert Path(dev).name.startswith("sr"), f"{dev} is not a CD-ROM node"
    sysfs = Path(f"/sys/class/scsi_device/{served.lun.hctl}/device")
    assert (sysfs / "type").read_text().strip() == "5"
    assert Path(f"/sys/block/{Path(dev).name}/removable").read_text().strip() == "1"

    mnt = tmp_path / "mnt"
    mount(dev, mnt)
    try:
        assert (mnt / "payload.bin").read_bytes() == first
        assert (mnt / "label.txt").read_text() == "DISC_A\n"
        # Mounted: sr locked the door (PREVENT), so the medium cannot be swapped.
        with pytest.raises(HandlerError, match="prevents medium removal"):
            handler.change_medium(str(iso_b))
    finally:
        umount(mnt)

    # The raw device is the image, byte for byte.
    with open(dev, "rb") as raw:
        assert raw.read(64 * 2048) == iso_a.read_bytes()[: 64 * 2048]

    handler.change_medium(str(iso_b))
    mount(dev, mnt)  # the open notices the media change (GESN / UA 28/00)
    try:
        assert (mnt / "payload.bin").read_bytes() == second
        assert (mnt / "label.txt").read_text() == "DISC_B\n"
    finally:
        umount(mnt)
    size_sectors = int(Path(f"/sys/block/{Path(dev).name}/size").read_text())
    assert size_sectors * 512 == iso_b.stat().st_size

    # Eject and load through the SCSI generic node; PREVENT blocks the eject.
    node = served.lun.sg or dev
    assert sg("sg_turs", node) == 0
    assert sg("sg_prevent", "--prevent=1", node) == 0
    assert sg("sg_start", "--eject", node) == 5  # ILLEGAL REQUEST, removal prevented
    assert not handler.device.tray_open
    assert sg("sg_prevent", "--allow", node) == 0
    assert sg("sg_start", "--eject", node) == 0
    assert handler.device.tray_open
    assert sg("sg_turs", node) == 2  # NOT READY, medium not present (tray open)
    assert sg("sg_start", "--load", node) == 0
    assert not handler.device.tray_open
    for _ in range(3):  # the unit attention of the load comes first
        if sg("sg_turs", node) == 0:
            break
    assert sg("sg_turs", node) == 0

    # An empty drive: medium not present, and the kernel reads nothing.
    handler.change_medium(None)
    for _ in range(3):
        status = sg("sg_turs", node)
        if status == 2:
            break
    assert status == 2
    assert subprocess.run(["dd", f"if={dev}", "of=/dev/null", "bs=2048", "count=1"],
                          capture_output=True, timeout=60).returncode != 0


def sg_raw_in(node: str, cdb: bytes, length: int) -> bytes:
    """Send ``cdb`` with sg_raw and return the Data-In it got (stdout, binary)."""
    done = subprocess.run(
        ["sg_raw", "-b", "-r", str(length), node, *(f"{b:02x}" for b in cdb)],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_dvd_image_answers_read_disc_structure_and_get_performance(
    lio_stack: ExitStack, tmp_path: Path
) -> None:
    # A sparse image larger than an 80-minute CD: the drive reports a DVD-ROM.
    blocks = 400_000
    image = tmp_path / "dvd.img"
    with open(image, "wb") as f:
        f.truncate(blocks * 2048)
    served = serve(lio_stack, to_dev_config(VcdromParams("dvd0", str(image))),
                   blocks * 2048, block_size=2048)  # fmt: skip
    assert served.lun is not None and served.lun.sg is not None
    node = served.lun.sg
    for _ in range(3):  # the power-on unit attention first
        if sg("sg_turs", node) == 0:
            break
    physical = sg_raw_in(node, bytes((0xAD, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04, 0, 0)), 2052)
    assert physical[:2] == (2050).to_bytes(2, "big") and physical[4] == 0x01  # DVD-ROM book
    end = int.from_bytes(physical[12:16], "big")
    assert end == 0x030000 + blocks - 1
    copyright_info = sg_raw_in(node, bytes((0xAD, 0, 0, 0, 0, 0, 0, 1, 0, 8, 0, 0)), 8)
    assert copyright_info[4] == 0  # no copy protection system
    perf = sg_raw_in(node, bytes((0xAC, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0)), 24)
    assert int.from_bytes(perf[16:20], "big") == blocks - 1
    # The kernel's own view of the capacity agrees.
    assert Path(f"/sys/block/{Path(served.lun.block or '').name}/size").read_text().strip() == (
        str(blocks * 4)
    )
