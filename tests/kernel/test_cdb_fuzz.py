"""CDB fuzzing through the real kernel: sg -> tcm_loop -> LIO -> TCMU ring -> daemon.

``tcmu-scst daemon`` (a process, as systemd runs it) serves a thin vdisk on a file of
random bytes, a vcdrom on an image and a perf disk; each is LUN 0 of a tcm_loop
target. :mod:`tcmu_scst.testing.cdb_fuzz` makes the commands from a fixed seed
(every opcode 00h-FFh, valid commands, one mutation each: reserved bits, LBAs beyond
the capacity, huge or mismatched transfer and allocation lengths, control bits,
truncated and padded CDBs, random bytes) and SG_IO sends each with a timeout:

* every answer is GOOD or CONDITION MET, or CHECK CONDITION with well-formed sense
  (never HARDWARE ERROR, ILLEGAL REQUEST only with a bad-field ASC), from the
  host adapter without a timeout or transport error;
* a rejected command leaves the backing file byte for byte as it was;
* the daemon is the same process afterwards, with no traceback in its log, no
  task is in D state and the kernel logged no lockup;
* afterwards (units started, PR and SPC-2 reservations cleared, unit attentions
  read) the LUN serves its file's contents through sd/sr and new writes land.

The in-process twin (``tests/unit/test_cdb_fuzz.py``) runs the same seed first.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import random
from pathlib import Path

import pytest

from tcmu_scst.command import CHECK_CONDITION, Direction
from tcmu_scst.handlers.perf import PerfParams
from tcmu_scst.handlers.perf import to_dev_config as perf_config
from tcmu_scst.handlers.sg_io import (
    DID_OK,
    DRIVER_MASK,
    DRIVER_SENSE,
    SgDevice,
    SgDirection,
    SgIoError,
    SgResult,
)
from tcmu_scst.handlers.vcdrom_params import VcdromParams
from tcmu_scst.handlers.vcdrom_params import to_dev_config as vcdrom_config
from tcmu_scst.handlers.vdisk_params import VdiskParams
from tcmu_scst.handlers.vdisk_params import to_dev_config as vdisk_config
from tcmu_scst.service import control
from tcmu_scst.testing.cdb_fuzz import FuzzCommand, Geometry, check_answer, fuzz_commands, specs_for
from tests.kernel.daemon_rig import (
    DaemonProcess,
    Lun,
    assert_no_hang_since,
    export,
    kernel_log,
    user_backstore,
)

SEED = 14  # the unit twin runs this seed and count in-process
COUNT = 1500  # per LUN
TIMEOUT_MS = 20_000
KiB = 1024

_DIRECTIONS = {Direction.NONE: SgDirection.NONE, Direction.IN: SgDirection.FROM_DEV,
               Direction.OUT: SgDirection.TO_DEV}  # fmt: skip


class Target:
    """One fuzzed LUN: its sg node, its backing file (None for perf), its geometry."""

    def __init__(self, kind: str, tmp: Path, stack: contextlib.ExitStack) -> None:
        self.kind = kind
        self.image: Path | None = None
        if kind == "vdisk":
            self.geo, self.type, size = Geometry(512, 2048), 0, 1024 * KiB
            self.image = tmp / "fuzz.img"
            self.image.write_bytes(random.Random(1).randbytes(size))
            config = vdisk_config(VdiskParams(name="fuzzdisk", filename=str(self.image),
                                              thin_provisioned=True))
        elif kind == "vcdrom":
            self.geo, self.type, size = Geometry(2048, 256), 5, 512 * KiB
            self.image = tmp / "fuzz.iso"
            self.image.write_bytes(random.Random(2).randbytes(size))
            config = vcdrom_config(VcdromParams("fuzzcd", str(self.image)))
        else:
            self.geo, self.type, size = Geometry(512, 2048), 0, 1024 * KiB
            config = perf_config(PerfParams("dev_disk_perf", "fuzzperf", size=size))
        backstore = user_backstore(stack, f"fuzz{kind}", config, size,
                                   hw_block_size=self.geo.block_size)
        self.lun: Lun = export(stack, backstore)
        self.sg = SgDevice.open(self.lun.sg)
        stack.callback(self.sg.close)

    def contents(self) -> bytes:
        return self.image.read_bytes() if self.image is not None else b""

    def send(self, command: FuzzCommand) -> SgResult:
        buffer = bytearray(command.data) if command.data else bytearray(command.length)
        return self.sg.execute(command.cdb, _DIRECTIONS[command.direction],
                               [memoryview(buffer)], command.length, timeout_ms=TIMEOUT_MS)

    def command(self, cdb: bytes, data: bytes = b"", read: int = 0) -> SgResult:
        direction = Direction.OUT if data else Direction.IN if read else Direction.NONE
        return self.send(FuzzCommand(cdb, direction, len(data) or read, data, "restore"))


def restore(target: Target) -> None:
    """Undo what fuzzed commands may legitimately have changed, as an initiator would:
    allow removal, (re)load and start the unit, clear PR and SPC-2 reservations."""
    def pr_out(action: int) -> bytes:  # SPC-4 6.16: 24-byte parameter list
        return bytes((0x5F, action, 0, 0, 0, 0, 0, 0, 24, 0))

    key = (0xF022).to_bytes(8, "big")
    for cdb, data in (
        (bytes.fromhex("1e0000000000"), b""),  # PREVENT ALLOW MEDIUM REMOVAL: allow
        (bytes.fromhex("1b0000000300" if target.type == 5 else "1b0000000100"), b""),
        (bytes.fromhex("170000000000"), b""),  # RELEASE(6)
        (pr_out(0x06), bytes(8) + key + bytes(8)),  # REGISTER AND IGNORE EXISTING KEY
        (pr_out(0x03), key + bytes(16)),  # CLEAR: unregisters everyone, drops the reservation
    ):
        target.command(cdb, data)
    for _ in range(20):  # read the unit attentions the above and the fuzz left
        if target.command(bytes(6)).status == 0:
            return
    pytest.fail(f"{target.kind}: TEST UNIT READY never GOOD after the fuzz")


def serves_its_file(target: Target) -> None:
    """The block node reads what the backing file holds; a write through it lands."""
    size = target.geo.blocks * target.geo.block_size
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    fd = os.open(target.lun.block, os.O_RDWR if target.kind != "vcdrom" else os.O_RDONLY)
    try:
        seen = os.pread(fd, size, 0)
        expected = target.contents() if target.image is not None else bytes(size)
        assert seen == expected, f"{target.kind}: {target.lun.block} differs from its medium"
        if target.kind == "vcdrom":
            return
        fresh = os.urandom(64 * KiB)
        os.pwrite(fd, fresh, 128 * KiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    if target.image is not None:
        assert target.contents()[128 * KiB : 192 * KiB] == fresh


@pytest.mark.parametrize("kind", ["vdisk", "vcdrom", "perf"])
def test_random_and_mutated_cdbs_through_sg(
    kind: str, tmp_path: Path, daemon: DaemonProcess
) -> None:
    log_before = len(kernel_log())
    daemon.start()
    outcomes: collections.Counter[str] = collections.Counter()
    with contextlib.ExitStack() as stack:
        target = Target(kind, tmp_path, stack)
        rng = random.Random(SEED)
        before = target.contents()
        for command in fuzz_commands(rng, COUNT, target.geo, specs_for(target.type)):
            try:
                result = target.send(command)
            except SgIoError as err:
                # sg refuses before the command exists (a transfer beyond what the
                # host's queue limits allow): not a device answer, nothing sent.
                assert err.errno == errno.EINVAL, f"{command}: {err}"
                outcomes["refused by sg"] += 1
                continue
            assert result.host_status == DID_OK, f"{command}: host status {result.host_status}"
            assert result.driver_status & DRIVER_MASK in (0, DRIVER_SENSE), (
                f"{command}: driver status {result.driver_status:#x}")
            problem = check_answer(result.status, result.sense)
            assert problem is None, f"seed {SEED}: {command}: {problem}"
            after = target.contents()
            if result.status == CHECK_CONDITION:
                assert after == before, f"seed {SEED}: {command} failed but changed the file"
                outcomes[f"sense {result.sense[2] & 0xF:x}/{result.sense[12]:02x}"] += 1
            else:
                outcomes[f"status {result.status:#x}"] += 1
            before = after
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert control.ControlClient(daemon.sock).ping().pid == daemon.proc.pid
        restore(target)
        serves_its_file(target)
    assert daemon.starts == 1
    log = daemon.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert_no_hang_since(log_before)
    print(f"{kind}: {COUNT} CDBs (seed {SEED}): {dict(sorted(outcomes.items()))}")
