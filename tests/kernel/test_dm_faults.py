"""Device-mapper faults under a BLOCKIO and a FILEIO vdisk, in the lab guest (issue 14).

The vdisk's backing store is a device-mapper device over a loop device; the test swaps
its table the way an administrator would (``dmsetup suspend``, ``load``, ``resume``):

* a range of the device mapped to the ``error`` target (dm-mod's own): reads of it are
  MEDIUM ERROR 03/11/00, writes 03/0C/00, each with the command's LBA; the rest of the
  LUN and a second LUN on a healthy file serve on;
* the whole device flapping between ``linear`` and ``error`` (by table swaps) while four
  writers push 4 KiB writes through sg: every answer is GOOD or that MEDIUM ERROR, never
  a hang; with ``linear`` back, every write that was answered GOOD is on the disk beneath
  (the loop device's file) and reads back through the LUN; new writes land; no task in
  D state;
* the same with dm-flakey's own timer (``flakey``: 1 s up, 1 s failing every I/O) under
  a FILEIO write-through vdisk.

FILEIO runs write-through (O_DSYNC), where GOOD promises durability for each write;
a write-back FILEIO promises it only at SYNCHRONIZE CACHE (``test_backing_faults``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tcmu_scst.handlers.sg_io import SgDevice, SgDirection
from tcmu_scst.testing.scsi_harness import Sense
from tests.kernel import fault_rig as rig
from tests.kernel.daemon_rig import DaemonProcess, MiB, assert_no_hang_since, kernel_log

SIZE = 8 * MiB
SECTORS = SIZE // 512
WRITERS, WRITE_BLOCKS = 4, 8  # 4 KiB writes
FLAPS = 12


def dmsetup(*argv: str) -> None:
    env = {**os.environ, "DM_DISABLE_UDEV": "1"}  # no udev in the guest: dmsetup makes nodes
    done = subprocess.run(["dmsetup", *argv], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, f"dmsetup {' '.join(argv)}: {done.stderr}"


@dataclass
class DmDevice:
    name: str
    loop: str
    image: Path

    @property
    def path(self) -> str:
        for entry in Path("/sys/block").glob("dm-*"):
            if (entry / "dm" / "name").read_text().strip() == self.name:
                return f"/dev/{entry.name}"
        raise AssertionError(f"no dm device {self.name}")

    def linear(self, start: int, count: int) -> str:
        return f"{start} {count} linear {self.loop} {start}"

    def swap(self, *lines: str) -> None:
        """Replace the table: suspend (in-flight I/O completes), load, resume."""
        dmsetup("suspend", self.name)
        try:
            dmsetup("load", self.name, "--table", "\n".join(lines))
        finally:
            dmsetup("resume", self.name)

    def flakey(self, up: int = 1, down: int = 1) -> None:
        """dm-flakey over the whole device: ``up`` seconds serving, ``down`` seconds
        failing every I/O with EIO, on its own timer."""
        self.swap(f"0 {SECTORS} flakey {self.loop} 0 {up} {down}")

    def healthy(self) -> None:
        self.swap(self.linear(0, SECTORS))

    def failing(self, start: int = 0, count: int = SECTORS) -> None:
        """Sectors [start, start + count) on the error target, the rest linear."""
        lines = [f"{start} {count} error"]
        if start:
            lines.insert(0, self.linear(0, start))
        if start + count < SECTORS:
            lines.append(self.linear(start + count, SECTORS - start - count))
        self.swap(*lines)


@contextlib.contextmanager
def dm_over_loop(tmp: Path, name: str) -> Iterator[DmDevice]:
    image = tmp / f"{name}.img"
    image.write_bytes(os.urandom(SIZE))
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()  # fmt: skip
    try:
        dm = DmDevice(name, loop, image)
        dmsetup("create", name, "--table", dm.linear(0, SECTORS))
        try:
            yield dm
        finally:
            subprocess.run(["dmsetup", "remove", "--retry", name], check=False, timeout=60,
                           env={**os.environ, "DM_DISABLE_UDEV": "1"})  # fmt: skip
    finally:
        subprocess.run(["losetup", "-d", loop], check=False, timeout=60)


@dataclass
class Writer:
    """One thread's 4 KiB writes through its own sg fd, each to a fresh LBA of its
    stripe; what was answered GOOD, and every other answer."""

    sg_node: str
    first_lba: int
    acked: dict[int, bytes] = field(default_factory=dict)
    failed: list[tuple[int, str]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    slowest_error_ms = 0  # reported, not asserted: how promptly an error came back

    def run(self, stop: threading.Event, blocks: int) -> None:
        sg = SgDevice.open(self.sg_node)
        try:
            lba = self.first_lba
            while not stop.is_set() and lba + WRITE_BLOCKS <= self.first_lba + blocks:
                data = os.urandom(WRITE_BLOCKS * rig.BS)
                cdb = (bytes((0x8A, 0)) + lba.to_bytes(8, "big")
                       + WRITE_BLOCKS.to_bytes(4, "big") + bytes(2))  # fmt: skip
                res = sg.execute(cdb, SgDirection.TO_DEV, [memoryview(bytearray(data))],
                                 len(data), timeout_ms=30_000)  # fmt: skip
                if res.host_status != 0 or res.status not in (rig.GOOD, rig.CHECK_CONDITION):
                    self.bad.append(f"LBA {lba}: host {res.host_status:#x} status {res.status:#x}")
                elif res.status == rig.GOOD:
                    self.acked[lba] = data
                else:
                    sense = Sense.parse(res.sense)
                    if (sense.code, sense.information) != (rig.WRITE_ERROR, lba):
                        self.bad.append(f"LBA {lba}: sense {res.sense.hex()}")
                    self.failed.append((lba, res.sense.hex()))
                    self.slowest_error_ms = max(self.slowest_error_ms, res.duration_ms)
                lba += WRITE_BLOCKS
        finally:
            sg.close()


def flapping_writes(dm: DmDevice, sg_node: str, flakey: bool = False) -> list[Writer]:
    """WRITERS threads writing while the table flips FLAPS times between error and
    linear (or, with ``flakey``, for 4 s on dm-flakey's timer); ends with linear."""
    stripe = SECTORS // WRITERS
    writers = [Writer(sg_node, i * stripe) for i in range(WRITERS)]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop, stripe)) for w in writers]
    for t in threads:
        t.start()
    try:
        if flakey:
            dm.flakey()
            stop.wait(4.0)
        for flap in range(0 if flakey else FLAPS):
            if flap % 2 == 0:
                dm.failing()
            else:
                dm.healthy()
            stop.wait(0.3)
    finally:
        dm.healthy()
        stop.set()
        for t in threads:
            t.join(120)
    assert not any(t.is_alive() for t in threads), "a writer hangs"
    return writers


def on_disk(image: Path, lba: int, length: int) -> bytes:
    with open(image, "rb") as f:
        f.seek(lba * rig.BS)
        return f.read(length)


def assert_acked_writes_on_disk(dm: DmDevice, disk: rig.Disk, writers: list[Writer],
                                 label: str) -> None:
    """No odd answer; both GOOD and errors were seen; every GOOD write is on the disk
    beneath and reads back through the LUN."""
    bad = [line for w in writers for line in w.bad]
    assert not bad, bad[:10]
    acked = {lba: data for w in writers for lba, data in w.acked.items()}
    failed = sum(len(w.failed) for w in writers)
    slowest = max(w.slowest_error_ms for w in writers)
    print(f"{label}: {len(acked)} writes GOOD, {failed} MEDIUM ERROR, "
          f"slowest error answer {slowest} ms")  # fmt: skip
    assert acked and failed, "the load did not span the faults: make it longer"
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    lost = [lba for lba, data in acked.items() if on_disk(dm.image, lba, len(data)) != data]
    assert not lost, f"{len(lost)} acknowledged writes not on the disk, e.g. LBA {lost[:5]}"
    for lba, data in list(acked.items())[:: max(1, len(acked) // 64)]:
        result, seen = disk.read(lba, WRITE_BLOCKS)
        rig.good(result)
        assert seen == data, f"LBA {lba}"


def test_dm_flakey_under_fileio_write_through(
    tmp_path: Path, modprobe: Callable[..., None], daemon: DaemonProcess
) -> None:
    modprobe("dm_mod")
    modprobe("dm_flakey")
    log_before = len(kernel_log())
    daemon.start()
    with dm_over_loop(tmp_path, "tcmu-flakey") as dm, contextlib.ExitStack() as stack:
        disk = rig.Disk(stack, "dmflakey", SIZE, filename=dm.path, blockio=False,
                        write_through=True)  # fmt: skip
        other, other_data = rig.healthy_disk(stack, tmp_path)
        writers = flapping_writes(dm, disk.lun.sg, flakey=True)
        assert_acked_writes_on_disk(dm, disk, writers, "fileio on dm-flakey")
        result, seen = other.read(0, 128)
        rig.good(result)
        assert seen == other_data
        disk.lands(4096, os.urandom(8 * rig.BS))
        rig.serving(daemon)
        assert_no_hang_since(log_before)


@pytest.mark.parametrize("mode", ["blockio", "fileio"])
def test_dm_error_table_swaps_under_load(
    tmp_path: Path, modprobe: Callable[..., None], daemon: DaemonProcess, mode: str
) -> None:
    modprobe("dm_mod")
    log_before = len(kernel_log())
    daemon.start()
    with dm_over_loop(tmp_path, f"tcmu-fault-{mode}") as dm, contextlib.ExitStack() as stack:
        blockio = mode == "blockio"
        disk = rig.Disk(stack, f"dm{mode}", SIZE, filename=dm.path, blockio=blockio,
                    write_through=not blockio)  # fmt: skip
        other, other_data = rig.healthy_disk(stack, tmp_path)
        original = dm.image.read_bytes()
        # A bad range: 64 blocks from LBA 4096 on the error target.
        start, count = 4096, 64
        dm.failing(start, count)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")  # FILEIO: no cached copy
        result, _ = disk.read(start + 10, 4)
        assert rig.sense_of(result) == (rig.READ_ERROR, start + 10)
        result, _ = disk.read(start - 8, 16)  # straddles the start: first block's LBA
        code, lba = rig.sense_of(result)
        assert code == rig.READ_ERROR and lba in (start - 8, start), (code, lba)
        result = disk.write(start + 20, os.urandom(8 * rig.BS))
        assert rig.sense_of(result) == (rig.WRITE_ERROR, start + 20)
        result, seen = disk.read(0, 64)  # outside the range
        rig.good(result)
        assert seen == original[: 64 * rig.BS]
        result, seen = other.read(0, 128)
        rig.good(result)
        assert seen == other_data
        dm.healthy()
        result, seen = disk.read(start + 10, 4)
        rig.good(result)
        assert seen == original[(start + 10) * rig.BS : (start + 14) * rig.BS]
        # The device flapping under four writers.
        writers = flapping_writes(dm, disk.lun.sg)
        assert_acked_writes_on_disk(dm, disk, writers, f"{mode} over {FLAPS} swaps")
        disk.lands(start + 20, os.urandom(8 * rig.BS))
        rig.serving(daemon)
        assert_no_hang_since(log_before)
