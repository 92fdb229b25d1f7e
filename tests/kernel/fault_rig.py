"""What the backing-store fault tests share: a LUN served by ``tcmu-scst daemon``,
exported through tcm_loop and driven through the kernel's sg driver (SG_IO), so a test
sees the exact status and sense of every command (issue 14)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tcmu_scst.handlers.sg_io import DID_OK, SgDevice, SgDirection, SgResult
from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config
from tcmu_scst.service import control
from tcmu_scst.testing.scsi_harness import Sense
from tests.kernel.daemon_rig import DaemonProcess, MiB, export, user_backstore

BS = 512
MAX_BLOCKS = MiB // BS  # hw_max_sectors: sg refuses more in one command (EINVAL)
GOOD, CHECK_CONDITION = 0x00, 0x02
READ_ERROR, WRITE_ERROR = (0x3, 0x11, 0x00), (0x3, 0x0C, 0x00)
SPACE_ALLOCATION_FAILED = (0x7, 0x27, 0x07)
LUN_NOT_SUPPORTED = (0x5, 0x25, 0x00)


class Disk:
    """One exported vdisk, driven through its sg node."""

    def __init__(self, stack: contextlib.ExitStack, name: str, size: int,
                 dev_config: str = "", **params: object) -> None:
        """A vdisk with ``params``, or any handler's ``dev_config``."""
        config = dev_config or to_dev_config(VdiskParams(name=name, **params))  # type: ignore[arg-type]
        self.lun = export(stack, user_backstore(stack, name, config, size))
        self.sg = SgDevice.open(self.lun.sg)
        stack.callback(self.sg.close)

    def _rw(self, opcode: int, lba: int, blocks: int, direction: SgDirection,
            buffer: bytearray) -> SgResult:
        cdb = bytes((opcode, 0)) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + bytes(2)
        result = self.sg.execute(cdb, direction, [memoryview(buffer)], len(buffer),
                                 timeout_ms=30_000)
        assert result.host_status == DID_OK, f"host status {result.host_status:#x}"
        return result

    def read(self, lba: int, blocks: int) -> tuple[SgResult, bytes]:
        """READ(16) in commands of at most 1 MiB (the LUN's max transfer); the first
        failed command's result, or the last one's, and the bytes read."""
        data = b""
        for first in range(lba, lba + blocks, MAX_BLOCKS):
            count = min(MAX_BLOCKS, lba + blocks - first)
            buffer = bytearray(count * BS)
            result = self._rw(0x88, first, count, SgDirection.FROM_DEV, buffer)
            data += bytes(buffer)
            if result.status != GOOD:
                break
        return result, data

    def write(self, lba: int, data: bytes) -> SgResult:
        return self._rw(0x8A, lba, len(data) // BS, SgDirection.TO_DEV, bytearray(data))

    def lands(self, lba: int, data: bytes) -> None:
        """A write that must be GOOD and read back."""
        good(self.write(lba, data))
        result, seen = self.read(lba, len(data) // BS)
        good(result)
        assert seen == data, f"LBA {lba}: read back differs from what was written"

    def unmap(self, lba: int, blocks: int) -> SgResult:
        params = bytearray(24)
        params[0:2], params[2:4] = (22).to_bytes(2, "big"), (16).to_bytes(2, "big")
        params[8:16], params[16:20] = lba.to_bytes(8, "big"), blocks.to_bytes(4, "big")
        cdb = bytes((0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0))
        return self.sg.execute(cdb, SgDirection.TO_DEV, [memoryview(params)], 24)


def sense_of(result: SgResult) -> tuple[tuple[int, int, int], int | None]:
    assert result.status == CHECK_CONDITION, f"status {result.status:#x}, wanted an error"
    sense = Sense.parse(result.sense)
    return sense.code, sense.information


def good(result: SgResult) -> None:
    assert result.status == GOOD, f"status {result.status:#x} sense {result.sense.hex()}"


def serving(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon died"
    assert control.ControlClient(daemon.sock).ping().pid == daemon.proc.pid
    assert daemon.starts == 1


def healthy_disk(stack: contextlib.ExitStack, tmp: Path) -> tuple[Disk, bytes]:
    """A second LUN on a healthy file, with 64 KiB written: it must keep serving."""
    image = tmp / "healthy.img"
    image.write_bytes(bytes(4 * MiB))
    disk = Disk(stack, "healthy", 4 * MiB, filename=str(image))
    data = os.urandom(64 * 1024)
    good(disk.write(0, data))
    return disk, data
