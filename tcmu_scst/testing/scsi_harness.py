"""Drive a SCSI emulation the way the ring does, without a kernel.

:func:`run` wraps a CDB and a bytearray buffer (split into several iovecs, and for
Data-In pre-filled with a stale pattern) into a :class:`~tcmu_scst.command.Command`,
executes it and returns the status, the parsed sense and exactly the Data-In bytes
the result says were placed. CDB builders cover the commands of ``scsi.sbc``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tcmu_scst.command import Command, DataBuffer, Result
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi.block import BlockDeviceConfig
from tcmu_scst.scsi.sbc import SbcDevice
from tcmu_scst.testing.memory_backend import MemoryBackend

STALE = 0xA5  # what a Data-In buffer holds before the handler touches it


@dataclass(frozen=True)
class Sense:
    key: int
    asc: int
    ascq: int
    information: int | None
    #: (C/D, byte, bit or None) when SKSV is set.
    field: tuple[bool, int, int | None] | None

    @classmethod
    def parse(cls, raw: bytes) -> Sense:
        if len(raw) < 18 or raw[0] & 0x7F != 0x70 or raw[7] != len(raw) - 8:
            raise AssertionError(f"malformed fixed sense {raw.hex()}")
        info = int.from_bytes(raw[3:7], "big") if raw[0] & 0x80 else None
        field = None
        if raw[15] & 0x80:
            bit = raw[15] & 0x07 if raw[15] & 0x08 else None
            field = (bool(raw[15] & 0x40), int.from_bytes(raw[16:18], "big"), bit)
        return cls(raw[2] & 0x0F, raw[12], raw[13], info, field)

    @property
    def code(self) -> tuple[int, int, int]:
        return (self.key, self.asc, self.ascq)


@dataclass(frozen=True)
class Reply:
    result: Result
    data: bytes  # the Data-In bytes the result reported (data_in_len of them)
    buffer: bytes  # the whole buffer afterwards

    @property
    def status(self) -> int:
        return self.result.status

    @property
    def sense(self) -> Sense:
        return Sense.parse(self.result.sense)


def make_command(
    cdb: bytes, data_out: bytes | None = None, in_len: int = 0, iovecs: int = 3
) -> tuple[Command, bytearray]:
    """A Command over a fresh bytearray split into up to ``iovecs`` views."""
    backing = bytearray(data_out) if data_out is not None else bytearray([STALE]) * in_len
    views: list[memoryview] = []
    whole = memoryview(backing)
    size = len(backing)
    if size:
        step = max(1, -(-size // iovecs))
        views = [whole[pos : pos + step] for pos in range(0, size, step)]
    return Command(1, bytes(cdb), DataBuffer(views)), backing


def run(
    execute: Callable[[Command], Result],
    cdb: bytes,
    data_out: bytes | None = None,
    in_len: int = 0,
    iovecs: int = 3,
) -> Reply:
    cmd, backing = make_command(cdb, data_out, in_len, iovecs)
    result = execute(cmd)
    placed = result.data_in_len or 0
    return Reply(result, bytes(backing[:placed]), bytes(backing))


# -- CDB builders ----------------------------------------------------------------------


def _be(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def rw_cdb(opcode: int, lba: int, blocks: int, byte1: int = 0, control: int = 0) -> bytes:
    """READ/WRITE/VERIFY/WRITE AND VERIFY/SYNC CACHE/PRE-FETCH/WRITE SAME of any length."""
    length = op.cdb_length(opcode)
    if length == 6:
        return bytes((opcode, (lba >> 16) & 0x1F, (lba >> 8) & 0xFF, lba & 0xFF,
                      blocks & 0xFF, control))
    if length == 10:
        return bytes((opcode, byte1)) + _be(lba, 4) + b"\x00" + _be(blocks, 2) + bytes((control,))
    if length == 12:
        return bytes((opcode, byte1)) + _be(lba, 4) + _be(blocks, 4) + bytes((0, control))
    return bytes((opcode, byte1)) + _be(lba, 8) + _be(blocks, 4) + bytes((0, control))


def inquiry(page: int | None = None, alloc: int = 255, control: int = 0) -> bytes:
    evpd = 0 if page is None else 1
    return bytes((op.INQUIRY, evpd, page or 0)) + _be(alloc, 2) + bytes((control,))


def mode_sense6(page: int, pc: int = 0, subpage: int = 0, dbd: bool = False,
                alloc: int = 255) -> bytes:
    return bytes((op.MODE_SENSE, 0x08 if dbd else 0, (pc << 6) | page, subpage, alloc, 0))


def mode_sense10(page: int, pc: int = 0, subpage: int = 0, dbd: bool = False,
                 llbaa: bool = False, alloc: int = 1024) -> bytes:
    byte1 = (0x08 if dbd else 0) | (0x10 if llbaa else 0)
    return bytes((op.MODE_SENSE_10, byte1, (pc << 6) | page, subpage, 0, 0, 0)) + _be(
        alloc, 2) + b"\x00"


def mode_select6(length: int, pf: bool = True, sp: bool = False) -> bytes:
    return bytes((op.MODE_SELECT, (0x10 if pf else 0) | (0x01 if sp else 0), 0, 0, length, 0))


def mode_select10(length: int, pf: bool = True, sp: bool = False) -> bytes:
    byte1 = (0x10 if pf else 0) | (0x01 if sp else 0)
    return bytes((op.MODE_SELECT_10, byte1, 0, 0, 0, 0, 0)) + _be(length, 2) + b"\x00"


def read_capacity10(lba: int = 0, pmi: bool = False) -> bytes:
    return bytes((op.READ_CAPACITY, 0)) + _be(lba, 4) + bytes((0, 0, 1 if pmi else 0, 0))


def read_capacity16(alloc: int = 32) -> bytes:
    return bytes((op.SERVICE_ACTION_IN_16, op.SAI_READ_CAPACITY_16)) + bytes(8) + _be(
        alloc, 4) + b"\x00\x00"


def get_lba_status(lba: int, alloc: int = 4096) -> bytes:
    return bytes((op.SERVICE_ACTION_IN_16, op.SAI_GET_LBA_STATUS)) + _be(lba, 8) + _be(
        alloc, 4) + b"\x00\x00"


def compare_and_write(lba: int, blocks: int, byte1: int = 0) -> bytes:
    return bytes((op.COMPARE_AND_WRITE, byte1)) + _be(lba, 8) + bytes(3) + bytes(
        (blocks, 0, 0))


def unmap(param_len: int, anchor: bool = False) -> bytes:
    return bytes((op.UNMAP, 1 if anchor else 0, 0, 0, 0, 0, 0)) + _be(param_len, 2) + b"\x00"


def unmap_params(ranges: list[tuple[int, int]], data_len: int | None = None,
                 bd_len: int | None = None) -> bytes:
    descriptors = b"".join(_be(lba, 8) + _be(n, 4) + bytes(4) for lba, n in ranges)
    bd = len(descriptors) if bd_len is None else bd_len
    dl = bd + 6 if data_len is None else data_len
    return _be(dl, 2) + _be(bd, 2) + bytes(4) + descriptors


def rsoc(options: int = 0, opcode: int = 0, sa: int = 0, rctd: bool = False,
         alloc: int = 8192) -> bytes:
    return bytes((op.MAINTENANCE_IN, op.MI_REPORT_SUPPORTED_OPERATION_CODES,
                  (0x80 if rctd else 0) | options, opcode)) + _be(sa, 2) + _be(alloc, 4) + b"\0\0"


def request_sense(alloc: int = 252, desc: bool = False) -> bytes:
    return bytes((op.REQUEST_SENSE, 1 if desc else 0, 0, 0, alloc, 0))


def start_stop(start: bool, loej: bool = False, no_flush: bool = False, power: int = 0) -> bytes:
    byte4 = (power << 4) | (0x04 if no_flush else 0) | (0x02 if loej else 0) | int(start)
    return bytes((op.START_STOP, 0, 0, 0, byte4, 0))


TEST_UNIT_READY = bytes(6)


def make_disk(size: int = 1 << 20, **config: object) -> tuple[SbcDevice, MemoryBackend]:
    """An SbcDevice named ``disk1`` over a zero-filled MemoryBackend of ``size`` bytes."""
    settings: dict[str, object] = {"name": "disk1", **config}
    backend = MemoryBackend(size)
    return SbcDevice(BlockDeviceConfig(**settings), backend), backend  # type: ignore[arg-type]
