"""Every vdisk mode served from userspace and seen by sd through tcm_loop.

For FILEIO, WRITE_THROUGH, NV_CACHE, READ_ONLY, O_DIRECT (backing file on ext4: the
guest's /tmp is tmpfs, which refuses O_DIRECT), BLOCKIO (a loop device) and NULLIO,
at 512- and 4096-byte blocks:

* sg3_utils show what the mode promises: INQUIRY, VPD 0x80/0x83/0xb0/0xb1/0xb2, READ
  CAPACITY(16) (LBPME only when thin), MODE SENSE (WCE per mode, WP for READ_ONLY);
* writable modes hold a file system (mkfs.ext4, files, umount, fsck -n clean) and pass
  fio --verify;
* READ_ONLY refuses writes (dd fails, WRITE(10) gives DATA PROTECT), NULLIO reads zeros,
  a thin FILEIO frees backing-file blocks after fstrim.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config

from .tcmu_rig import ext4_round_trip, fio_verify, fstrim_frees, serve

MiB = 1 << 20
SIZE = 64 * MiB

# mode name -> VdiskParams flags
MODES: dict[str, dict[str, bool]] = {
    "FILEIO": {},
    "WRITE_THROUGH": {"write_through": True},
    "NV_CACHE": {"nv_cache": True},
    "READ_ONLY": {"read_only": True},
    "O_DIRECT": {"o_direct": True},
    "BLOCKIO": {"blockio": True},
    "NULLIO": {"nullio": True},
}
WRITABLE = ["FILEIO", "WRITE_THROUGH", "NV_CACHE", "O_DIRECT", "BLOCKIO"]
# What MODE SENSE page 08h must say: write-back only for plain FILEIO/BLOCKIO/O_DIRECT
# and NULLIO; WRITE_THROUGH is write-through, NV_CACHE is reported write-through (SCST).
WCE = {"FILEIO": 1, "WRITE_THROUGH": 0, "NV_CACHE": 0, "READ_ONLY": 1, "O_DIRECT": 1,
       "BLOCKIO": 1, "NULLIO": 1}


def _trace(line: str) -> None:
    """One line per command in /results/vdisk-modes-trace.log when the lab mounted it:
    the last line shows what a stalled run was waiting for."""
    if os.path.ismount("/results") and os.access("/results", os.W_OK):
        with open("/results/vdisk-modes-trace.log", "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def run(*argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    _trace(" ".join(argv))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    _trace(f"  -> {proc.returncode} {proc.stderr.strip()[-300:]!r}")
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: "
                             f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def raw(*argv: str) -> bytes:
    _trace(" ".join(argv))
    proc = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def _detach(loop: str) -> None:
    run("losetup", "-d", loop, check=False)


class Ext4Scratch:
    """An ext4 file system on a loop device over a tmpfs file (supports O_DIRECT)."""

    def __init__(self, tmp: Path, size: int = 160 * MiB) -> None:
        self.image = tmp / "ext4.img"
        with open(self.image, "wb") as f:
            f.truncate(size)
        run("modprobe", "ext4")
        self.loop = run("losetup", "--find", "--show", str(self.image)).stdout.strip()
        run("mkfs.ext4", "-q", "-F", self.loop)
        self.mount = tmp / "ext4"
        self.mount.mkdir()
        run("mount", self.loop, str(self.mount))

    def close(self) -> None:
        run("umount", str(self.mount), check=False)
        _detach(self.loop)


@dataclass
class Vdisk:
    mode: str
    block_size: int
    dev: str  # /dev/sdX
    sg: str  # /dev/sgN
    backing: Path | None
    block_device: str = ""  # BLOCKIO: the loop device it serves

    def spins(self) -> bool:
        """Whether the LUN should say it rotates: yes, except where BLOCKIO's device
        does not (a loop device over tmpfs reports non-rotating)."""
        if not self.block_device:
            return True
        name = Path(self.block_device).name
        return Path(f"/sys/block/{name}/queue/rotational").read_text().strip() == "1"


def make_vdisk(stack: ExitStack, tmp: Path, mode: str, block_size: int,
               thin: bool = False) -> Vdisk:
    _trace(f"== {mode} {block_size} thin={thin}")
    stack.callback(lambda: _trace(f"== {mode} {block_size}: teardown finished"))
    flags = dict(MODES[mode])
    backing: Path | None = None
    filename = ""
    size = SIZE
    if mode == "O_DIRECT":
        fs = Ext4Scratch(tmp)
        stack.callback(fs.close)
        backing = fs.mount / "vdisk.img"
    elif mode == "BLOCKIO":
        image = tmp / "blockio.img"
        with open(image, "wb") as f:
            f.truncate(SIZE)
        loop = run("losetup", "--find", "--show", str(image)).stdout.strip()
        stack.callback(lambda: _detach(loop))
        filename = loop
    elif mode != "NULLIO":
        backing = tmp / f"{mode.lower()}.img"
    if backing is not None:
        with open(backing, "wb") as f:
            f.truncate(SIZE)
        filename = str(backing)
    if mode == "READ_ONLY" and backing is not None:
        # a recognisable pattern so reads can be checked
        with open(backing, "r+b") as f:
            f.write(b"RO" * (MiB // 2))
    params = VdiskParams(name=f"v{mode.lower()[:8]}{block_size}", filename=filename,
                         blocksize=block_size, thin_provisioned=thin,
                         size=SIZE if mode == "NULLIO" else None, **flags)
    served = serve(stack, to_dev_config(params), size, block_size=block_size)
    assert served.lun is not None and served.lun.block and served.lun.sg
    block_device = filename if mode == "BLOCKIO" else ""
    return Vdisk(mode, block_size, served.lun.block, served.lun.sg, backing, block_device)


def mode_page(dev: str, page: int) -> tuple[int, bytes]:
    """(device-specific parameter byte, the page) from MODE SENSE(10)."""
    data = raw("sg_modes", "-r", f"--page={page}", dev)
    bd_len = int.from_bytes(data[6:8], "big")
    return data[3], data[8 + bd_len:]


def vpd(dev: str, page: int) -> bytes:
    return raw("sg_vpd", "-r", f"--page={page}", dev)


# ---------------------------------------------------------------- identity and pages


@pytest.mark.parametrize("block_size", [512, 4096])
@pytest.mark.parametrize("mode", list(MODES))
def test_pages_show_what_the_mode_promises(
    lio_stack: ExitStack, tmp_path: Path, mode: str, block_size: int
) -> None:
    disk = make_vdisk(lio_stack, tmp_path, mode, block_size)
    inq = raw("sg_inq", "-r", "--len=96", disk.dev)
    assert inq[0] & 0x1F == 0, "peripheral device type must be 0 (disk)"
    assert inq[1] & 0x80 == 0, "not removable by default"
    assert inq[8:16].strip() != b"", "vendor identification is empty"
    supported = vpd(disk.dev, 0x00)[4:]
    for page in (0x80, 0x83, 0xB0, 0xB1, 0xB2):
        assert page in supported, f"VPD page {page:#x} missing from page 00h"
    serial = vpd(disk.dev, 0x80)
    assert serial[1] == 0x80 and serial[4:].strip(b" \0"), "empty unit serial number"
    ident = vpd(disk.dev, 0x83)
    assert ident[1] == 0x83 and int.from_bytes(ident[2:4], "big") > 0
    limits = vpd(disk.dev, 0xB0)
    assert int.from_bytes(limits[8:12], "big") > 0, "MAXIMUM TRANSFER LENGTH 0"
    bdc = vpd(disk.dev, 0xB1)
    # MEDIUM ROTATION RATE: 0 (not reported) by default; 1 (non-rotating) when BLOCKIO
    # serves a device that does not spin, whatever the vdisk's rotational says.
    assert int.from_bytes(bdc[4:6], "big") == (0 if disk.spins() else 1), "rotation rate"
    lbp = vpd(disk.dev, 0xB2)
    assert lbp[5] & 0x80 == 0, "LBPU set on a fully provisioned device"

    cap = raw("sg_readcap", "--readonly", "-l", "-r", disk.dev)
    assert int.from_bytes(cap[0:8], "big") + 1 == SIZE // block_size
    assert int.from_bytes(cap[8:12], "big") == block_size
    assert cap[14] & 0x80 == 0, "LBPME on a fully provisioned device"
    sysfs = Path(f"/sys/block/{Path(disk.dev).name}/queue/logical_block_size")
    assert int(sysfs.read_text()) == block_size

    dsp, caching = mode_page(disk.dev, 0x08)
    assert caching[0] & 0x3F == 0x08
    assert (caching[2] >> 2) & 1 == WCE[mode], f"{mode}: WCE should be {WCE[mode]}"
    assert bool(dsp & 0x80) == (mode == "READ_ONLY"), f"{mode}: WP bit wrong"
    assert dsp & 0x10, "DPOFUA should be set"
    wc = Path(f"/sys/block/{Path(disk.dev).name}/queue/write_cache").read_text().strip()
    # sd ignores WCE on a write-protected disk (sd_read_cache_type) and shows write through
    assert wc == ("write back" if WCE[mode] and mode != "READ_ONLY" else "write through")
    ro = Path(f"/sys/block/{Path(disk.dev).name}/ro").read_text().strip()
    assert ro == ("1" if mode == "READ_ONLY" else "0")


def test_thin_and_non_rotational_pages(lio_stack: ExitStack, tmp_path: Path) -> None:
    image = tmp_path / "thin.img"
    with open(image, "wb") as f:
        f.truncate(SIZE)
    params = VdiskParams(name="vthinpg", filename=str(image), thin_provisioned=True,
                         rotational=False)
    served = serve(lio_stack, to_dev_config(params), SIZE)
    assert served.lun is not None and served.lun.block
    dev = served.lun.block
    cap = raw("sg_readcap", "--readonly", "-l", "-r", dev)
    assert cap[14] & 0x80, "LBPME must be set for a thin device"
    assert cap[14] & 0x40, "LBPRZ: unmapped blocks read as zeros"
    assert int.from_bytes(vpd(dev, 0xB1)[4:6], "big") == 1, "rate 1 = non-rotating"
    assert vpd(dev, 0xB2)[5] & 0x80, "LBPU: UNMAP supported"
    assert int.from_bytes(vpd(dev, 0xB0)[20:24], "big") > 0, "MAXIMUM UNMAP LBA COUNT 0"
    name = Path(dev).name
    assert Path(f"/sys/block/{name}/queue/rotational").read_text().strip() == "0"
    assert int(Path(f"/sys/block/{name}/queue/discard_max_bytes").read_text()) > 0


# ---------------------------------------------------------------- data paths


@pytest.mark.parametrize("block_size", [512, 4096])
@pytest.mark.parametrize("mode", WRITABLE)
def test_filesystem_and_fio_verify(
    lio_stack: ExitStack, tmp_path: Path, mode: str, block_size: int
) -> None:
    disk = make_vdisk(lio_stack, tmp_path, mode, block_size)
    ext4_round_trip(disk.dev, tmp_path / "mnt", run)
    # fio: 16 KiB blocks, then blocks of the device's block size.
    fio_verify(disk.dev, (("16k", "24M"), (str(block_size), "2M")), run)


@pytest.mark.parametrize("block_size", [512, 4096])
def test_read_only_refuses_writes(lio_stack: ExitStack, tmp_path: Path,
                                  block_size: int) -> None:
    disk = make_vdisk(lio_stack, tmp_path, "READ_ONLY", block_size)
    assert disk.backing is not None
    before = disk.backing.read_bytes()[:MiB]
    got = raw("dd", f"if={disk.dev}", "bs=64k", "count=16", "iflag=direct", "status=none")
    assert got == before
    dd = run("dd", "if=/dev/zero", f"of={disk.dev}", f"bs={block_size}", "count=1",
             "oflag=direct", "status=none", check=False)
    assert dd.returncode != 0, "dd wrote to a READ_ONLY vdisk"
    # WRITE(10) of one block at LBA 0 straight through sg: DATA PROTECT / 27h.
    payload = tmp_path / "blk"
    payload.write_bytes(b"\xAA" * block_size)
    sgr = run("sg_raw", "-v", "-s", str(block_size), "-i", str(payload), disk.sg,
              "2a", "00", "00", "00", "00", "00", "00", "00", "01", "00", check=False)
    text = sgr.stdout + sgr.stderr
    assert sgr.returncode != 0, text
    assert "Data protect" in text or "data protect" in text.lower(), text
    assert "Write protected" in text or "write protected" in text.lower(), text
    assert disk.backing.read_bytes()[:MiB] == before, "backing file changed"


@pytest.mark.parametrize("block_size", [512, 4096])
def test_nullio_returns_zeros_and_accepts_writes(
    lio_stack: ExitStack, tmp_path: Path, block_size: int
) -> None:
    disk = make_vdisk(lio_stack, tmp_path, "NULLIO", block_size)
    run("dd", "if=/dev/urandom", f"of={disk.dev}", "bs=64k", "count=32", "oflag=direct",
        "status=none")
    got = raw("dd", f"if={disk.dev}", "bs=64k", "count=64", "iflag=direct", "status=none")
    assert len(got) == 64 * 64 * 1024
    assert got == bytes(len(got)), "NULLIO returned non-zero bytes"


def test_thin_fstrim_frees_backing_blocks(lio_stack: ExitStack, tmp_path: Path) -> None:
    disk = make_vdisk(lio_stack, tmp_path, "FILEIO", 512, thin=True)
    assert disk.backing is not None
    backing = disk.backing
    fstrim_frees(disk.dev, tmp_path / "mnt", lambda: os.stat(backing).st_blocks * 512, run)
