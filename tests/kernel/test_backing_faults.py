"""Backing-store faults under a served LUN, in the lab guest (issue 14).

``tcmu-scst daemon`` (a process) serves vdisks exported through tcm_loop; commands go
through the kernel's sg driver (SG_IO) so the test sees the exact status and sense:

* EIO: a BLOCKIO vdisk on a scsi_debug disk. scsi_debug's medium-error option makes
  reads of a block range fail (the block layer's ENODATA/EIO), and an ``offline``
  SCSI device fails everything (EIO). The initiator gets MEDIUM ERROR with the LBA,
  never GOOD; a second LUN on a healthy file keeps serving; clearing the fault
  (option off, device ``running``) makes the same commands GOOD with the right data;
* ENOSPC: sparse files larger than the small tmpfs holding them. A thin vdisk answers
  DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (27/07), a thick one MEDIUM
  ERROR, WRITE ERROR (0C/00) with the LBA; acknowledged writes read back; UNMAP (thin)
  or a bigger tmpfs lets the same write through;
* the backing file truncated under the LUN: blocks past its new end read as MEDIUM
  ERROR 11/00 with the first missing LBA (before this issue: zeros with GOOD), blocks
  before it read intact, a write there lands; deleted: the open file keeps serving;
* a pass-through disk (dev_disk over scsi_debug) taken offline, then deleted from the
  SCSI layer, each while fio runs through the export: fio stops with an I/O error, the
  LUN answers LOGICAL UNIT NOT SUPPORTED; back ``running`` it serves the same data
  again, deleted it stays gone; the daemon serves its other LUN, no task hangs.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tcmu_scst.handlers.passthrough_params import PassthroughParams
from tcmu_scst.handlers.passthrough_params import to_dev_config as passthrough_config
from tcmu_scst.handlers.sg_io import SgDirection
from tests.kernel.daemon_rig import DaemonProcess, MiB, assert_no_hang_since, kernel_log
from tests.kernel.fault_rig import (
    BS,
    GOOD,
    LUN_NOT_SUPPORTED,
    READ_ERROR,
    SPACE_ALLOCATION_FAILED,
    WRITE_ERROR,
    Disk,
    good,
    healthy_disk,
    sense_of,
    serving,
)
from tests.kernel.tcmu_rig import load_scsi_debug

SCSI_DEBUG_OPT_MEDIUM_ERR = 2  # scsi_debug "opts" bit: reads of a block range fail


def test_eio_from_a_block_device_is_medium_error_and_clears(
    tmp_path: Path, modprobe: Callable[..., None], daemon: DaemonProcess
) -> None:
    start, count = 4096, 64  # the blocks scsi_debug fails (medium_error_start/count)
    info = load_scsi_debug(modprobe, "dev_size_mb=16", f"medium_error_start={start}",
                           f"medium_error_count={count}", need_block=True)
    assert info.block is not None
    opts = Path("/sys/bus/pseudo/drivers/scsi_debug/opts")
    state = Path(f"/sys/class/scsi_device/{info.hctl}/device/state")
    daemon.start()
    try:
        with contextlib.ExitStack() as stack:
            disk = Disk(stack, "eio", 16 * MiB, filename=info.block, blockio=True)
            other, other_data = healthy_disk(stack, tmp_path)
            pattern = os.urandom(128 * BS)
            good(disk.write(start - 64, pattern))  # writes are not failed by the option
            opts.write_text(f"{SCSI_DEBUG_OPT_MEDIUM_ERR}\n")
            # A read that covers the bad range fails with the LBA of the command's
            # first block, or of the first bad one when the kernel read up to it.
            result, _ = disk.read(start - 64, 128)
            code, lba = sense_of(result)
            assert code == READ_ERROR and lba in (start - 64, start), (code, lba)
            result, _ = disk.read(start + 10, 1)
            assert sense_of(result) == (READ_ERROR, start + 10)
            result, data = disk.read(0, 64)  # outside the range: served
            good(result)
            result, data = other.read(0, 128)
            good(result)
            assert data == other_data, "the other LUN stopped serving"
            # The whole device gone (offline): reads and writes fail, never GOOD.
            state.write_text("offline\n")
            try:
                result, _ = disk.read(8, 8)
                assert sense_of(result) == (READ_ERROR, 8)
                result = disk.write(16, os.urandom(8 * BS))
                assert sense_of(result) == (WRITE_ERROR, 16)
                good(other.write(256, os.urandom(8 * BS)))
            finally:
                state.write_text("running\n")
            opts.write_text("0\n")
            # Cleared: the same reads are GOOD and return what was written.
            result, data = disk.read(start - 64, 128)
            good(result)
            assert data == pattern
            disk.lands(16, os.urandom(8 * BS))
            serving(daemon)
    finally:
        opts.write_text("0\n")
        delete = Path(f"/sys/class/scsi_device/{info.hctl}/device/delete")
        daemon.stop()  # closes the BLOCKIO fd: scsi_debug can go (modprobe's teardown)
        if delete.exists():
            delete.write_text("1")


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "fault", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_enospc_is_space_allocation_failed_thin_and_write_error_thick(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    daemon.start()
    with small_tmpfs(tmp_path / "small", "2m") as small, contextlib.ExitStack() as stack:
        sizes = 8 * MiB  # each file is sparse and 4 times larger than the file system
        for name in ("thin", "thick"):
            with open(small / f"{name}.img", "wb") as f:
                f.truncate(sizes)
        thin = Disk(stack, "thin", sizes, filename=str(small / "thin.img"),
                    thin_provisioned=True)
        thick = Disk(stack, "thick", sizes, filename=str(small / "thick.img"))
        other, other_data = healthy_disk(stack, tmp_path)
        acked: list[tuple[int, bytes]] = []
        chunk = 256 * 1024 // BS
        failed = None
        for lba in range(0, sizes // BS, chunk):
            data = os.urandom(chunk * BS)
            result = thin.write(lba, data)
            if result.status != GOOD:
                failed = lba
                assert sense_of(result) == (SPACE_ALLOCATION_FAILED, None)
                break
            acked.append((lba, data))
        assert failed is not None, "8 MiB fitted into a 2 MiB tmpfs?"
        assert 2 <= len(acked) <= 8, len(acked)
        # The thick disk on the same full file system: WRITE ERROR with the LBA.
        result = thick.write(100, os.urandom(8 * BS))
        assert sense_of(result) == (WRITE_ERROR, 100)
        # Everything acknowledged reads back; the other LUN serves on.
        for lba, data in acked:
            result, seen = thin.read(lba, chunk)
            good(result)
            assert seen == data, f"acknowledged write at LBA {lba} lost"
        result, seen = other.read(0, 128)
        good(result)
        assert seen == other_data
        # Thin recovery: UNMAP the first chunk, and the failed write goes through.
        good(thin.unmap(0, chunk))
        thin.lands(failed, os.urandom(chunk * BS))
        # Thick recovery: more room.
        subprocess.run(["mount", "-o", "remount,size=32m", str(small)], check=True)
        thick.lands(100, os.urandom(8 * BS))
        serving(daemon)


def test_backing_file_truncated_then_deleted_under_the_lun(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    size = 4 * MiB
    image = tmp_path / "cut.img"
    original = os.urandom(size)
    image.write_bytes(original)
    daemon.start()
    with contextlib.ExitStack() as stack:
        disk = Disk(stack, "cut", size, filename=str(image))
        result, seen = disk.read(0, 2048)
        good(result)
        assert seen == original[: 2048 * BS]
        # Cut to 1 MiB + 1 block: the blocks past it are gone.
        end_lba = 2049
        os.truncate(image, end_lba * BS)
        result, seen = disk.read(0, 2049)
        good(result)
        assert seen == original[: 2049 * BS]
        for lba, blocks in ((2049, 1), (2040, 16), (6000, 8)):
            result, _ = disk.read(lba, blocks)
            assert sense_of(result) == (READ_ERROR, max(lba, end_lba)), (lba, blocks)
        # A write past the end lands (the file grows again to hold it).
        disk.lands(7000, os.urandom(16 * BS))
        # The fault cleared (the file at its size again): the lost blocks read as the
        # zeros the file now holds, the rest as written.
        os.truncate(image, size)
        result, seen = disk.read(6000, 8)
        good(result)
        assert seen == bytes(8 * BS)
        # Deleted: the daemon's open file keeps serving until the LUN goes.
        image.unlink()
        again = os.urandom(32 * BS)
        good(disk.write(100, again))
        result, seen = disk.read(0, 2049)
        good(result)
        assert seen == original[: 100 * BS] + again + original[132 * BS : 2049 * BS]
        serving(daemon)


def test_a_lost_write_back_fails_every_later_synchronize_cache(
    tmp_path: Path, modprobe: Callable[..., None], daemon: DaemonProcess
) -> None:
    # FILEIO write-back on ext4 on scsi_debug: writes are acknowledged from the page
    # cache; the disk goes offline before they are written back. Linux reports the
    # failed write-back to one fdatasync only; every SYNCHRONIZE CACHE after it must
    # fail too, or an initiator is told data is durable that never reached the disk.
    info = load_scsi_debug(modprobe, "dev_size_mb=32", need_block=True)
    assert info.block is not None
    state = Path(f"/sys/class/scsi_device/{info.hctl}/device/state")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["modprobe", "ext4"], check=True, timeout=60)
    subprocess.run(["mkfs.ext4", "-q", "-F", info.block], check=True, timeout=120)
    subprocess.run(["mount", info.block, str(mnt)], check=True, timeout=60)
    image = mnt / "wb.img"
    image.write_bytes(bytes(4 * MiB))  # allocated and on disk: no metadata to write
    os.sync()
    daemon.start()
    sync_cache = bytes((0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    try:
        with contextlib.ExitStack() as stack:
            disk = Disk(stack, "wb", 4 * MiB, filename=str(image))
            good(disk.sg.execute(sync_cache, SgDirection.NONE, [], 0, timeout_ms=30_000))
            good(disk.write(64, os.urandom(256 * BS)))  # GOOD from the page cache
            state.write_text("offline\n")
            try:
                first = disk.sg.execute(sync_cache, SgDirection.NONE, [], 0, timeout_ms=30_000)
                assert sense_of(first)[0][0] == 0x3, first.sense.hex()  # MEDIUM ERROR
            finally:
                state.write_text("running\n")
            for _ in range(2):  # the disk is back; the written-back data is not
                again = disk.sg.execute(sync_cache, SgDirection.NONE, [], 0, timeout_ms=30_000)
                assert sense_of(again)[0][0] == 0x3, again.sense.hex()
            serving(daemon)
    finally:
        daemon.stop()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        delete = Path(f"/sys/class/scsi_device/{info.hctl}/device/delete")
        if delete.exists():
            delete.write_text("1")


def fio_until(device: str, fault: Callable[[], object]) -> float:
    """fio random read/write through ``device``, ``fault`` after 2 s; fio must stop
    with an I/O error (bounded: it would run its 60 s and exit 0 if the fault never
    reached the initiator). Returns the seconds from the fault to fio's end."""
    fio = subprocess.Popen(
        ["fio", "--name=loss", f"--filename={device}", "--rw=randrw", "--bs=4k",
         "--iodepth=8", "--ioengine=libaio", "--direct=1", "--size=8M", "--time_based",
         "--runtime=60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(2)  # let it run, commands in the device
        assert fio.poll() is None, fio.communicate()[0]
        faulted = time.monotonic()
        fault()
        out, _ = fio.communicate(timeout=120)
    finally:
        if fio.poll() is None:
            fio.kill()
    assert fio.returncode != 0, out
    assert re.search(r"err=\s*(5|6|19)\b|Input/output error|No such device", out), out
    return time.monotonic() - faulted


def test_a_pass_through_disk_offline_then_deleted_under_load(
    tmp_path: Path, modprobe: Callable[..., None], daemon: DaemonProcess
) -> None:
    # dev_disk over a scsi_debug disk whose commands take a while (delay in jiffies),
    # so fio always has some in the device; the SCSI device goes offline, comes back,
    # then is deleted, each time under fio.
    info = load_scsi_debug(modprobe, "dev_size_mb=16", "delay=5", need_block=True)
    device = Path(f"/sys/class/scsi_device/{info.hctl}/device")
    log_before = len(kernel_log())
    daemon.start()
    try:
        with contextlib.ExitStack() as stack:
            config = passthrough_config(PassthroughParams("dev_disk", info.hctl))
            disk = Disk(stack, "pt", 16 * MiB, dev_config=config)
            other, other_data = healthy_disk(stack, tmp_path)
            kept = os.urandom(64 * BS)
            good(disk.write(16384, kept))  # past fio's 8 MiB
            took = fio_until(disk.lun.block, lambda: (device / "state").write_text("offline\n"))
            print(f"offline: fio ended {took:.1f} s after it")
            result, _ = disk.read(16384, 64)  # the LUN reports the loss
            assert sense_of(result) == (LUN_NOT_SUPPORTED, None), result.sense.hex()
            (device / "state").write_text("running\n")
            result, seen = disk.read(16384, 64)  # back: served again, data intact
            good(result)
            assert seen == kept
            took = fio_until(disk.lun.block, lambda: (device / "delete").write_text("1"))
            print(f"deleted: fio ended {took:.1f} s after it")
            # Gone for good, without touching the gone device.
            for _ in range(2):
                result, _ = disk.read(0, 8)
                assert sense_of(result) == (LUN_NOT_SUPPORTED, None), result.sense.hex()
            # The daemon serves on: the other LUN reads and writes.
            result, seen = other.read(0, 128)
            good(result)
            assert seen == other_data
            other.lands(512, os.urandom(16 * BS))
            serving(daemon)
            assert_no_hang_since(log_before)
    finally:
        daemon.stop()
        if (device / "delete").exists():
            (device / "delete").write_text("1")
    assert_no_hang_since(log_before)
