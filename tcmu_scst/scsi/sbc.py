"""SBC-4 block device emulation over a :class:`~tcmu_scst.scsi.block.BlockBackend`.

:class:`SbcDevice` adds the block commands to :class:`~tcmu_scst.scsi.spc.SpcDevice`:
READ/WRITE (6/10/12/16), VERIFY and WRITE AND VERIFY (10/12/16), SYNCHRONIZE
CACHE, PRE-FETCH, WRITE SAME, UNMAP, COMPARE AND WRITE, READ CAPACITY (10/16),
GET LBA STATUS, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, plus the SBC VPD
and mode pages. It serves disks (type 00h) and optical memory (07h) alike.

Concurrency: commands run on several worker threads. Reads and writes take their
block range shared, COMPARE AND WRITE exclusive (:mod:`tcmu_scst.scsi.rangelock`),
so the compare and the write are atomic against every overlapping command.

Transfer-length mismatches (the kernel's data length is the initiator's expected
length, tcmu-abi §2.6) follow SAM-5 5.4.3: only what both the CDB and the buffer
cover is transferred. Data-In is cut to the buffer; a longer Data-Out buffer has
its excess ignored; a shorter one is processed for the whole blocks it holds.
A buffer that ends inside a block cannot be written without inventing data, so it
is refused with INVALID FIELD IN COMMAND INFORMATION UNIT (0E/03) before anything
is written. COMPARE AND WRITE needs all its 2 x N blocks.
"""

from __future__ import annotations

import errno
import logging
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple

from tcmu_scst.command import RESULT_GOOD, Command, DataBuffer, Result, data_in_result
from tcmu_scst.errors import ConfigError
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi import sbc_pages as pages
from tcmu_scst.scsi.block import BackendError, BlockBackend, BlockDeviceConfig, WouldBlock
from tcmu_scst.scsi.cdb import be, reject_mask, rw_lba_and_length
from tcmu_scst.scsi.identity import naa_designator
from tcmu_scst.scsi.modes import ModePage
from tcmu_scst.scsi.rangelock import RangeLock
from tcmu_scst.scsi.sense import (
    UA_CAPACITY_DATA_CHANGED,
    UA_MEDIUM_MAY_HAVE_CHANGED,
    SenseError,
)
from tcmu_scst.scsi.spc import SpcDevice, data_in
from tcmu_scst.scsi.xcopy import CopyManager

log = logging.getLogger(__name__)

SUPPORTED_DEVICE_TYPES = (0x00, 0x07)  # direct access block, optical memory

#: Bytes compared or written per backend call (VERIFY, WRITE SAME): bounds memory.
CHUNK = 1 << 20
#: GET LBA STATUS asks the backend about at most this many bytes per command.
LBA_STATUS_WINDOW = 1 << 36
_MAX_DESCRIPTOR_BLOCKS = 0xFFFFFFFF

_FUA = 0x08
VPD_THIRD_PARTY_COPY = 0x8F
_BYTCHK_SHIFT = 1


def first_mismatch(a: bytes, b: bytes) -> int:
    """Index of the first byte where ``a`` and ``b`` differ (they must differ)."""
    lo, hi = 0, min(len(a), len(b))
    # Narrow down with slice comparisons (fast in C), then finish byte by byte.
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if a[lo:mid] != b[lo:mid]:
            hi = mid
        else:
            lo = mid
    for index in range(lo, hi):
        if a[index] != b[index]:
            return index
    return hi


def validate_config(config: BlockDeviceConfig) -> None:
    """Refuse a configuration the emulation cannot honour."""
    bs = config.block_size
    if bs < 512 or bs & (bs - 1):
        raise ConfigError(
            f"device {config.name}: block size {bs} is not a power of two >= 512; "
            "use 512, 1024, 2048 or 4096"
        )
    if config.device_type not in SUPPORTED_DEVICE_TYPES:
        raise ConfigError(
            f"device {config.name}: device type {config.device_type:#x} is not a block "
            "device; the SBC emulation serves types 0x00 (disk) and 0x07 (optical memory)"
        )
    if not 0 <= config.lbppbe <= 15:
        raise ConfigError(f"device {config.name}: lbppbe {config.lbppbe} is outside 0..15")
    for field in ("max_transfer_blocks", "max_unmap_descriptors", "max_write_same_blocks"):
        value = getattr(config, field)
        if not 1 <= value <= 0xFFFFFFFF:
            raise ConfigError(f"device {config.name}: {field} {value} is outside 1..2^32-1")
    naa_designator(config)  # raises ConfigError for a malformed naa_id
    if not 1 <= config.max_unmap_blocks <= 0xFFFFFFFF:
        raise ConfigError(
            f"device {config.name}: max_unmap_blocks {config.max_unmap_blocks} is outside "
            "1..2^32-1"
        )


# A backing store that is a network service (Ceph RBD) reports these when it cannot
# be reached: not a medium error, the store may come back. (ETIMEDOUT, no answer in
# time, is COMMAND TIMEOUT DURING PROCESSING.) Not NOT READY / ASYMMETRIC ACCESS
# STATE TRANSITION (04/0A): that claims an ALUA transition, which recent Linux
# requeues every second (ALUA_TRANSITION_REPREP_DELAY) until the command's time
# budget is spent, and on which scsi_dh_alua re-reads the port groups.
_UNREACHABLE_ERRNOS = frozenset({errno.ESHUTDOWN, errno.ENOTCONN, errno.ECONNREFUSED,
                                 errno.EHOSTUNREACH})


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """UNMAP's block ranges, sorted, overlapping and adjacent ones merged: what is
    deallocated is their union (SBC-4 5.32), and one backend call per run of blocks,
    not per descriptor (libiscsi's Unmap.Simple sends up to 256 one-block descriptors
    in a row; on Ceph RBD each discard is a round trip to the OSD)."""
    merged: list[tuple[int, int]] = []
    for lba, blocks in sorted(ranges):
        if merged and lba <= merged[-1][0] + merged[-1][1]:
            first, count = merged[-1]
            merged[-1] = (first, max(count, lba + blocks - first))
        else:
            merged.append((lba, blocks))
    return merged


class PlainExtent(NamedTuple):
    """A READ/WRITE(10/16) the flat data path serves: what to transfer, checked."""

    lba: int
    blocks: int
    writing: bool
    durable: bool  # the write must be stable before GOOD (FUA or write-through)


#: A backend's transfer that never waits (see :meth:`SbcDevice.try_plain_nowait`):
#: ``(offset, views, length, writing, fua) -> bytes moved``, or None if it would wait.
NowaitTransfer = Callable[[int, list[memoryview], int, bool, bool], "int | None"]


class _PlainRw(NamedTuple):
    """READ/WRITE(10) or (16) as the data path's flat function takes it."""

    key: tuple[int, int | None]
    cdb_len: int
    reject: int  # the CDB bits execute() refuses (cdb.reject_mask)
    writing: bool
    # (LBA, transfer length) in one call: 10-byte: 4-byte LBA at 2, 2-byte length at 7;
    # 16-byte: 8-byte LBA at 2, 4-byte length at 10 (SBC-4 5.15, 5.18).
    fields: struct.Struct


class PlainState(NamedTuple):
    """What a device allows plain READ/WRITE(10/16) right now (the compiled path's
    plan is built from it; see SbcDevice.plain_state)."""

    block_size: int
    blocks: int
    max_blocks: int
    writable: bool
    durable: bool  # a plain WRITE must be durable before GOOD
    durable_fua: bool  # ... a FUA one


def plain_reject_masks() -> tuple[bytes, bytes]:
    """The CDB bits refused in READ/WRITE(10) and in READ/WRITE(16), as byte strings
    (each the union of the READ's and the WRITE's: refusing more only sends a command
    to the general path, which answers it precisely)."""
    ten = sixteen = 0
    for plain in _PLAIN_RW.values():
        if plain.cdb_len == 10:
            ten |= plain.reject
        else:
            sixteen |= plain.reject
    return ten.to_bytes(10, "big"), sixteen.to_bytes(16, "big")


_RW10_FIELDS = struct.Struct(">2xIxH")
_RW16_FIELDS = struct.Struct(">2xQI")

_PLAIN_RW: dict[int, _PlainRw] = {
    spec.opcode: _PlainRw(spec.key, spec.cdb_len, reject_mask(spec), spec.writes_medium,
                          _RW16_FIELDS if spec.cdb_len == 16 else _RW10_FIELDS)
    for spec in (op.BY_KEY[(code, None)]
                 for code in (op.READ_10, op.WRITE_10, op.READ_16, op.WRITE_16))
}


class SbcDevice(SpcDevice):
    """A block device: SPC plus SBC commands over ``backend``."""

    def peripheral_byte(self) -> int:
        """001b/1Fh (no device, SPC-4 6.6.2) for SCST's ``dummy`` LUN placeholder."""
        if self.config.not_connected:
            return 0x20 | 0x1F
        return super().peripheral_byte()

    def __init__(self, config: BlockDeviceConfig, backend: BlockBackend) -> None:
        validate_config(config)
        super().__init__(config)
        self.config = config
        self.backend = backend
        self._locks = RangeLock()
        self._default_write_back = config.write_back
        #: PREVENT ALLOW MEDIUM REMOVAL state (device-wide, like everything here).
        self.prevent_removal = False
        self._mode_pages = self._build_mode_pages()
        for opcode in (op.READ_6, op.READ_10, op.READ_12, op.READ_16):
            self.register(opcode, None, self._read)
        for opcode in (op.WRITE_6, op.WRITE_10, op.WRITE_12, op.WRITE_16):
            self.register(opcode, None, self._write)
        for opcode in (op.VERIFY, op.VERIFY_12, op.VERIFY_16):
            self.register(opcode, None, self._verify)
        for opcode in (op.WRITE_VERIFY, op.WRITE_VERIFY_12, op.WRITE_VERIFY_16):
            self.register(opcode, None, self._write_and_verify)
        for opcode in (op.SYNCHRONIZE_CACHE, op.SYNCHRONIZE_CACHE_16):
            self.register(opcode, None, self._synchronize_cache)
        for opcode in (op.PRE_FETCH, op.PRE_FETCH_16):
            self.register(opcode, None, self._pre_fetch)
        for opcode in (op.WRITE_SAME, op.WRITE_SAME_16):
            self.register(opcode, None, self._write_same)
        if config.thin_provisioned:  # LBPU=0 means UNMAP is not a supported command
            self.register(op.UNMAP, None, self._unmap)
        self.register(op.COMPARE_AND_WRITE, None, self._compare_and_write)
        self.register(op.ORWRITE_16, None, self._orwrite)
        self.register(op.READ_CAPACITY, None, self._read_capacity_10)
        self.register(op.READ_DEFECT_DATA, None, self._read_defect_data)
        self.register(op.READ_DEFECT_DATA_12, None, self._read_defect_data)
        self.register(op.SERVICE_ACTION_IN_16, op.SAI_READ_CAPACITY_16, self._read_capacity_16)
        self.register(op.SERVICE_ACTION_IN_16, op.SAI_GET_LBA_STATUS, self._get_lba_status)
        self.register(op.START_STOP, None, self._start_stop_unit)
        self.register(op.ALLOW_MEDIUM_REMOVAL, None, self._prevent_allow_medium_removal)
        #: EXTENDED COPY's copy manager; the daemon widens its scope to other devices.
        self.copies = CopyManager(self)
        self.register(op.EXTENDED_COPY, op.XCOPY_LID1, self.copies.extended_copy)
        self.register(op.RECEIVE_COPY_RESULTS, op.RCR_COPY_STATUS, self._copy_status)
        self.register(op.RECEIVE_COPY_RESULTS, op.RCR_OPERATING_PARAMETERS,
                      self._copy_operating_parameters)

    # -- state -----------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Number of logical blocks (the backend's size may change: online resize)."""
        return self.backend.size // self.config.block_size

    def write_protected(self) -> bool:
        return self.config.read_only

    def _durable(self, fua: bool) -> bool:
        """Whether a write must reach stable storage before we answer it.

        FUA asks for it; write-through mode (WCE=0) promises it for every write.
        NV_CACHE declares the cache non-volatile, so neither applies (SCST semantics).
        """
        return not self.config.nv_cache and (fua or not self.config.write_back)

    def notify_resized(self) -> None:
        """The backing store changed size: report CAPACITY DATA HAS CHANGED."""
        self.unit_attentions.post(*UA_CAPACITY_DATA_CHANGED)

    def notify_medium_changed(self) -> None:
        """The backing file was replaced: report MEDIUM MAY HAVE CHANGED."""
        self.unit_attentions.post(*UA_MEDIUM_MAY_HAVE_CHANGED)

    # -- shared checks ---------------------------------------------------------

    def _require_medium(self) -> None:
        """READ CAPACITY has nothing to report without a medium (a stopped unit still
        has one: its capacity is known)."""
        if not self.medium_present:
            raise SenseError.medium_not_present()

    def _check_transfer(self, blocks: int, length_field: int) -> None:
        if blocks > self.config.max_transfer_blocks:
            raise SenseError.invalid_field_in_cdb(length_field)

    def _check_range(self, lba: int, blocks: int) -> None:
        if lba + blocks > self.capacity:
            raise SenseError.lba_out_of_range()

    def _write_extent(self, cmd: Command, cdb: bytes) -> tuple[int, int]:
        """(LBA, blocks to write) of a WRITE-family CDB, checked against the device and
        cut to what the Data-Out buffer holds; 0 blocks means nothing to do."""
        lba, blocks, length_field = rw_lba_and_length(cdb)
        self._check_transfer(blocks, length_field)
        self._check_range(lba, blocks)
        return lba, self._data_out_blocks(cmd, blocks)

    def _data_out_blocks(self, cmd: Command, blocks: int) -> int:
        """How many of ``blocks`` the Data-Out buffer really holds (SAM-5 overrun rules)."""
        bs = self.config.block_size
        have = len(cmd.data)
        if have >= blocks * bs:
            return blocks
        if have % bs:
            log.warning(
                "%r: Data-Out buffer of %d bytes ends inside a %d-byte block; refused",
                cmd, have, bs,
            )
            raise SenseError.invalid_field_in_command_iu()
        return have // bs

    @staticmethod
    def _require_data_out(cmd: Command, needed: int) -> None:
        if len(cmd.data) < needed:
            log.warning("%r: Data-Out buffer holds %d bytes, the command needs %d; refused",
                        cmd, len(cmd.data), needed)
            raise SenseError.invalid_field_in_command_iu()

    @contextmanager
    def _backend_errors(self, writing: bool, lba: int | None = None) -> Iterator[None]:
        """Turn backing-store failures into MEDIUM ERROR / SPACE ALLOCATION FAILED;
        ``lba``: the command's first block (for the INFORMATION field)."""
        try:
            yield
        except (BackendError, OSError) as error:
            raise self._backend_failure(error, writing, lba) from error

    def _backend_failure(
        self, error: BackendError | OSError, writing: bool, lba: int | None = None
    ) -> SenseError:
        """SBC-4 4.18 (medium errors): the INFORMATION field holds the LBA of the
        first block that failed: the one the backend names, else the command's
        first block (a failed pread/pwrite does not say which block it stopped at)."""
        code = error.errno or 0
        log.warning("%s: backing store %s failed: %s", self.config.name,
                    "write" if writing else "read", error)
        if writing and code == errno.ENOSPC and self.config.thin_provisioned:
            return SenseError.space_allocation_failed()
        if code == errno.ETIMEDOUT:
            return SenseError.command_timeout()
        if code in _UNREACHABLE_ERRNOS:
            return SenseError.communication_failure()
        offset = getattr(error, "offset", None)
        if offset is not None:
            lba = offset // self.config.block_size
        if writing:
            return SenseError.write_error(lba)
        return SenseError.read_error(lba)

    # -- the data path's flat READ / WRITE ---------------------------------------

    def _execute(self, cmd: Command) -> Result:
        cdb = cmd.cdb
        plain = _PLAIN_RW.get(cdb[0]) if cdb else None
        if plain is not None:
            result = self._plain_rw(cmd, cdb, plain)
            if result is not None:
                return result
        return super()._execute(cmd)

    def plain_extent(self, cmd: Command) -> PlainExtent | None:
        """The checked extent of a READ/WRITE(10/16) in the common case; None when the
        general path must answer (see :meth:`_plain_rw`). For handlers that move the
        data themselves (asynchronously) and then answer with :meth:`plain_result`."""
        cdb = cmd.cdb
        plain = _PLAIN_RW.get(cdb[0]) if cdb else None
        checked = None if plain is None else self._plain_extent(cmd, cdb, plain)
        return None if checked is None else PlainExtent(*checked)

    def plain_result(self, extent: PlainExtent, error: BackendError | OSError | None) -> Result:
        """The answer to a :meth:`plain_extent` transfer that ended with ``error``."""
        if error is not None:
            return self._backend_failure(error, extent.writing).result()
        if extent.writing:
            return RESULT_GOOD
        return data_in_result(extent.blocks * self.config.block_size)

    def try_plain_nowait(self, cmd: Command, transfer: NowaitTransfer) -> Result | None:
        """READ/WRITE(10/16) in the common case on the ring thread, in one call.

        ``transfer(offset, views, length, writing, fua)`` is the backend's attempt
        that never waits: the bytes it moved, or None when it would have to (a cache
        miss, a write that must be durable first, an error); then this raises
        :class:`WouldBlock`: nothing was answered, the command runs again in full
        where blocking is fine (the general path gives every precise answer, errors
        included). None: not a plain READ/WRITE(10/16), nothing was tried. The same
        checks as :meth:`_plain_rw`, without the layers between the ring and the
        ``preadv``.
        """
        cdb = cmd.cdb
        plain = _PLAIN_RW.get(cdb[0]) if cdb else None
        extent = None if plain is None else self._plain_extent(cmd, cdb, plain)
        if extent is None:
            return None
        lba, blocks, writing, durable = extent
        bs = self.config.block_size
        data = cmd.data
        length = blocks * bs
        views = data.views if data.length == length else data.slices(0, length)
        locks = self._locks
        ticket = locks.acquire_shared(lba, lba + blocks)
        try:
            moved = transfer(lba * bs, views, length, writing, durable)
        finally:
            locks.release_shared(ticket)
        if moved is None or moved < length:
            # Would wait, or a short read (the file shrank): the worker says which.
            raise WouldBlock
        return RESULT_GOOD if writing else data_in_result(length)

    def lock_shared(self, extent: PlainExtent) -> int:
        """Hold the extent's blocks shared (against COMPARE AND WRITE) until
        :meth:`unlock_shared` with the returned ticket."""
        return self._locks.acquire_shared(extent.lba, extent.lba + extent.blocks)

    def unlock_shared(self, ticket: int) -> None:
        self._locks.release_shared(ticket)

    def plain_state(self) -> PlainState | None:
        """The device's side of a compiled-path plan: None while any plain READ/WRITE
        must take the general path (a unit attention pending, not ready, a range held
        exclusively, a subclass's own READ/WRITE); see :meth:`_plain_extent`."""
        if (
            self.unit_attentions
            or self.not_ready_error() is not None
            or self._locks.exclusive_held()
        ):
            return None
        handlers = self._handlers
        for plain in _PLAIN_RW.values():
            own = SbcDevice._write if plain.writing else SbcDevice._read
            if getattr(handlers.get(plain.key), "__func__", None) is not own:
                return None
        config = self.config
        bs = config.block_size
        return PlainState(
            bs, self.backend.size // bs, config.max_transfer_blocks,
            not self.write_protected(), self._durable(False), self._durable(True),
        )

    def _plain_extent(
        self, cmd: Command, cdb: bytes, plain: _PlainRw
    ) -> tuple[int, int, bool, bool] | None:
        """READ/WRITE(10/16) in the common case, checked in one function: ``(lba,
        blocks, writing, durable)`` (a plain tuple: a NamedTuple costs a Python call
        per command), or None.

        Nearly every command of a data path is one of these four, and the general
        path (lookup, per-byte CDB check, handler table, extent helpers) costs
        several times the I/O itself in CPython. This answers exactly what the
        general path would, making the same checks in the same order in one step
        each; whenever one of them would not pass (a unit attention pending, a
        refused CDB bit, a stopped unit, write protection, a zero, too long or out
        of range transfer, a short Data-Out buffer, a subclass's own READ/WRITE) it
        returns None and the general path gives the precise answer.
        """
        writing = plain.writing
        if (
            len(cdb) != plain.cdb_len
            or int.from_bytes(cdb, "big") & plain.reject
            or self.unit_attentions
            or getattr(self._handlers.get(plain.key), "__func__", None)
            is not (SbcDevice._write if writing else SbcDevice._read)
            or self.not_ready_error() is not None
            or (writing and self.write_protected())
        ):
            return None
        lba, blocks = plain.fields.unpack_from(cdb)
        config = self.config
        bs = config.block_size
        if (
            not blocks
            or blocks > config.max_transfer_blocks
            or lba + blocks > self.backend.size // bs  # (self.capacity, inline)
            or cmd.data.length < blocks * bs
        ):
            return None
        return lba, blocks, writing, writing and self._durable(bool(cdb[1] & _FUA))

    def _plain_rw(self, cmd: Command, cdb: bytes, plain: _PlainRw) -> Result | None:
        """READ/WRITE(10/16) in the common case, in one function; None otherwise."""
        extent = self._plain_extent(cmd, cdb, plain)
        if extent is None:
            return None
        lba, blocks, writing, durable = extent
        bs = self.config.block_size
        length = blocks * bs
        with self._locks.shared(lba, lba + blocks):
            try:
                if writing:
                    self.backend.write(lba * bs, length, cmd.data, 0, fua=durable)
                else:
                    self.backend.read(lba * bs, length, cmd.data, 0)
            except (BackendError, OSError) as error:
                raise self._backend_failure(error, writing, lba) from error
        return RESULT_GOOD if writing else data_in_result(length)

    # -- READ / WRITE ------------------------------------------------------------

    def _read(self, cmd: Command, cdb: bytes) -> Result:
        lba, blocks, length_field = rw_lba_and_length(cdb)
        self._check_transfer(blocks, length_field)
        self._check_range(lba, blocks)
        bs = self.config.block_size
        # DPO is a cache hint and FUA on a read needs nothing more: the backend
        # reads through the same cache the writes went to.
        length = min(blocks * bs, len(cmd.data))
        if length:
            with self._locks.shared(lba, lba + blocks), self._backend_errors(False, lba):
                self.backend.read(lba * bs, length, cmd.data, 0)
        return data_in_result(length)

    def _write(self, cmd: Command, cdb: bytes) -> Result:
        fua = len(cdb) > 6 and bool(cdb[1] & _FUA)
        lba, blocks = self._write_extent(cmd, cdb)
        if blocks == 0:
            return Result()
        bs = self.config.block_size
        with self._locks.shared(lba, lba + blocks), self._backend_errors(True, lba):
            self.backend.write(lba * bs, blocks * bs, cmd.data, 0, fua=self._durable(fua))
        return Result()

    # -- VERIFY / WRITE AND VERIFY -------------------------------------------------

    def _compare_medium(self, offset: int, expected: Callable[[int, int], bytes], length: int,
                        info_base: int = 0) -> None:
        """Compare ``length`` medium bytes from ``offset`` with ``expected(pos, n)``."""
        pos = 0
        while pos < length:
            n = min(CHUNK, length - pos)
            with self._backend_errors(False):
                medium = self.backend.read_bytes(offset + pos, n)
            wanted = expected(pos, n)
            if medium != wanted:
                raise SenseError.miscompare(info_base + pos + first_mismatch(wanted, medium))
            pos += n

    def _read_back(self, offset: int, length: int) -> None:
        """Verify without compare: the range must be readable."""
        pos = 0
        while pos < length:
            n = min(CHUNK, length - pos)
            with self._backend_errors(False):
                self.backend.read_bytes(offset + pos, n)
            pos += n

    def _verify(self, cmd: Command, cdb: bytes) -> Result:
        bytchk = (cdb[1] >> _BYTCHK_SHIFT) & 0x03
        if bytchk == 0b10:
            raise SenseError.invalid_field_in_cdb(1, 2)
        lba, blocks, length_field = rw_lba_and_length(cdb)
        if bytchk:
            self._check_transfer(blocks, length_field)
        self._check_range(lba, blocks)
        if blocks == 0 or bytchk == 0:
            # BYTCHK 0: a medium verification; a virtual medium has no sector to
            # check beyond the range, which is checked above.
            return Result()
        bs = self.config.block_size
        offset = lba * bs
        with self._locks.shared(lba, lba + blocks):
            if bytchk == 0b01:
                blocks = self._data_out_blocks(cmd, blocks)
                self._compare_medium(offset, cmd.data.read, blocks * bs)
            else:
                # BYTCHK 11b: one block of Data-Out compared with every block. The
                # INFORMATION offset counts as if that block were repeated.
                self._require_data_out(cmd, bs)
                block = cmd.data.read(0, bs)
                per_chunk = max(1, CHUNK // bs)
                pattern = block * per_chunk

                def expected(pos: int, n: int) -> bytes:
                    return pattern[:n]

                for first in range(0, blocks, per_chunk):
                    count = min(per_chunk, blocks - first)
                    self._compare_medium(offset + first * bs, expected, count * bs,
                                         info_base=first * bs)
        return Result()

    def _write_and_verify(self, cmd: Command, cdb: bytes) -> Result:
        bytchk = (cdb[1] >> _BYTCHK_SHIFT) & 0x03
        if bytchk > 0b01:
            raise SenseError.invalid_field_in_cdb(1, 2)
        lba, blocks = self._write_extent(cmd, cdb)
        if blocks == 0:
            return Result()
        bs = self.config.block_size
        length = blocks * bs
        with self._locks.shared(lba, lba + blocks):
            with self._backend_errors(True):
                # Verification is of the medium, so the write must reach it first.
                self.backend.write(lba * bs, length, cmd.data, 0, fua=not self.config.nv_cache)
            if bytchk:
                self._compare_medium(lba * bs, cmd.data.read, length)
            else:
                self._read_back(lba * bs, length)
        return Result()

    # -- SYNCHRONIZE CACHE / PRE-FETCH ----------------------------------------------

    def _synchronize_cache(self, cmd: Command, cdb: bytes) -> Result:
        lba, blocks, _ = rw_lba_and_length(cdb)
        self._check_range(lba, blocks)
        # IMMED is accepted; status is returned after the flush either way.
        if self.config.nv_cache:
            return Result()  # NV_CACHE: the cache is declared non-volatile (SCST)
        bs = self.config.block_size
        with self._backend_errors(True):
            self.backend.flush(lba * bs, blocks * bs)
        return Result()

    def _pre_fetch(self, cmd: Command, cdb: bytes) -> Result:
        """PRE-FETCH (SBC-4 5.9): start reading the range into the host cache; GOOD.

        SBC-4 returns CONDITION MET only when the blocks *were* transferred to the
        cache, and GOOD when the cache cannot take them all. The backend's prefetch
        is a hint (posix_fadvise WILLNEED starts read-ahead and returns at once), so
        we can never promise the former: GOOD, with IMMED=0 or 1 alike. libiscsi's
        iscsi-test-cu expects exactly that.
        """
        lba, blocks, _ = rw_lba_and_length(cdb)
        self._check_range(lba, blocks)
        if blocks == 0:  # 0 = from LBA to the last logical block
            if lba >= self.capacity:
                raise SenseError.lba_out_of_range()
            blocks = self.capacity - lba
        bs = self.config.block_size
        if blocks:
            with self._backend_errors(False):
                self.backend.prefetch(lba * bs, blocks * bs)
        return Result()

    # -- WRITE SAME / UNMAP --------------------------------------------------------

    def _write_same(self, cmd: Command, cdb: bytes) -> Result:
        ten = len(cdb) == 10
        unmap = bool(cdb[1] & 0x08)
        ndob = not ten and bool(cdb[1] & 0x01)
        lba, blocks, length_field = rw_lba_and_length(cdb)
        if unmap and not self.config.thin_provisioned:
            raise SenseError.invalid_field_in_cdb(1, 3)  # LBPWS/LBPWS10 are 0
        capacity = self.capacity
        if blocks == 0:
            # WSNZ=0: zero means "from LBA to the last logical block", still bounded
            # by the MAXIMUM WRITE SAME LENGTH we report (SBC-4 5.50).
            if lba >= capacity:
                raise SenseError.lba_out_of_range()
            blocks = capacity - lba
        if blocks > self.config.max_write_same_blocks:
            raise SenseError.invalid_field_in_cdb(length_field)
        self._check_range(lba, blocks)
        bs = self.config.block_size
        if ndob:
            block = bytes(bs)
        else:
            self._require_data_out(cmd, bs)
            block = cmd.data.read(0, bs)
        if blocks == 0:
            return Result()
        offset, length = lba * bs, blocks * bs
        with self._locks.shared(lba, lba + blocks), self._backend_errors(True, lba):
            # Deallocated blocks read as zeros (LBPRZ=1), so only a zero block may
            # be unmapped instead of written.
            if unmap and not any(block):
                self._discard(offset, length)
            else:
                self._write_pattern(offset, length, block)
        return Result()

    def _write_pattern(self, offset: int, length: int, block: bytes) -> None:
        per_chunk = max(1, CHUNK // len(block))
        chunk = block * per_chunk
        durable = self._durable(False)
        pos = 0
        while pos < length:
            n = min(len(chunk), length - pos)
            self.backend.write_bytes(offset + pos, chunk[:n], fua=durable)
            pos += n

    def _discard(self, offset: int, length: int) -> None:
        self.backend.discard(offset, length)
        if self._durable(False):
            self.backend.flush(offset, length)  # write-through: make the hole stick

    def _unmap(self, cmd: Command, cdb: bytes) -> Result:
        """UNMAP (SBC-4 5.32): validate the whole parameter list, then deallocate."""
        param_len = be(cdb, 7, 2)
        if param_len == 0:
            return Result()
        if param_len < 8:
            raise SenseError.parameter_list_length_error()
        params = cmd.data.read(0, min(param_len, len(cmd.data)))
        if len(params) < 8:
            raise SenseError.parameter_list_length_error()
        data_len = be(params, 0, 2)
        bd_len = be(params, 2, 2)
        if data_len + 2 > len(params) or bd_len + 8 > len(params):
            raise SenseError.parameter_list_length_error()
        if bd_len + 6 > data_len:
            raise SenseError.invalid_field_in_parameter_list(2)
        count = bd_len // 16  # an incomplete last descriptor is ignored (SBC-4)
        if count > self.config.max_unmap_descriptors:
            raise SenseError.invalid_field_in_parameter_list(2)
        capacity = self.capacity
        ranges: list[tuple[int, int]] = []
        total = 0
        for index in range(count):
            at = 8 + 16 * index
            lba, blocks = be(params, at, 8), be(params, at + 8, 4)
            if lba + blocks > capacity:
                raise SenseError.lba_out_of_range()
            total += blocks
            if blocks:
                ranges.append((lba, blocks))
        if total > self.config.max_unmap_blocks:
            raise SenseError.invalid_field_in_parameter_list(8 + 8)
        bs = self.config.block_size
        for lba, blocks in _coalesce(ranges):
            with self._locks.shared(lba, lba + blocks), self._backend_errors(True, lba):
                self._discard(lba * bs, blocks * bs)
        return Result()

    # -- COMPARE AND WRITE ------------------------------------------------------------

    def _compare_and_write(self, cmd: Command, cdb: bytes) -> Result:
        """Compare N blocks with the first half of Data-Out, write the second half (SBC-4 5.3)."""
        lba = be(cdb, 2, 8)
        blocks = cdb[13]
        fua = bool(cdb[1] & _FUA)
        if blocks > pages.max_compare_write_blocks(self.config):
            raise SenseError.invalid_field_in_cdb(13)
        self._check_range(lba, blocks)
        if blocks == 0:
            if len(cmd.data):
                # 0 blocks with a Data-Out buffer: the initiator meant a count the 1-byte
                # field cannot hold (256 is sent as 0); refuse it rather than ignore
                # the data it expects to be compared and written (libiscsi expects 24/00).
                raise SenseError.invalid_field_in_cdb(13)
            return Result()
        bs = self.config.block_size
        length = blocks * bs
        self._require_data_out(cmd, 2 * length)
        with self._locks.exclusive(lba, lba + blocks):
            with self._backend_errors(False):
                medium = self.backend.read_bytes(lba * bs, length)
            verify = cmd.data.read(0, length)
            if medium != verify:
                raise SenseError.miscompare(first_mismatch(verify, medium))
            with self._backend_errors(True):
                self.backend.write(lba * bs, length, cmd.data, length, fua=self._durable(fua))
        return Result()

    def _orwrite(self, cmd: Command, cdb: bytes) -> Result:
        """ORWRITE(16): OR the Data-Out into the blocks (SBC-4 5.8).

        Read, OR and write happen under an exclusive range lock, so no other command
        sees or changes the blocks in between.
        """
        fua = bool(cdb[1] & _FUA)
        lba, blocks = self._write_extent(cmd, cdb)
        if blocks == 0:
            return Result()
        bs = self.config.block_size
        length = blocks * bs
        with self._locks.exclusive(lba, lba + blocks):
            with self._backend_errors(False):
                medium = self.backend.read_bytes(lba * bs, length)
            data_out = cmd.data.read(0, length)
            ored = int.from_bytes(medium, "little") | int.from_bytes(data_out, "little")
            mixed = DataBuffer([memoryview(ored.to_bytes(length, "little"))])
            with self._backend_errors(True):
                self.backend.write(lba * bs, length, mixed, 0, fua=self._durable(fua))
        return Result()

    # -- READ CAPACITY / GET LBA STATUS -------------------------------------------------

    def _read_capacity_10(self, cmd: Command, cdb: bytes) -> Result:
        self._require_medium()
        if not cdb[8] & 0x01 and be(cdb, 2, 4):
            raise SenseError.invalid_field_in_cdb(2)  # LBA set without PMI (SBC-3)
        last = max(self.capacity - 1, 0)
        data = min(last, 0xFFFFFFFF).to_bytes(4, "big") + self.config.block_size.to_bytes(4, "big")
        return data_in(cmd, data, len(data))

    def _read_defect_data(self, cmd: Command, cdb: bytes) -> Result:
        """READ DEFECT DATA(10/12): a file or a block device has no defects to list.

        Both lists are valid and empty, in the format asked for (SBC-3 5.14/5.15);
        only the reserved format 111b is refused.
        """
        long_form = cdb[0] == op.READ_DEFECT_DATA_12
        at = 1 if long_form else 2
        flags = cdb[at] & 0x1F  # REQ_PLIST, REQ_GLIST -> PLISTV, GLISTV; the format
        if flags & 0x07 == 0x07:
            raise SenseError.invalid_field_in_cdb(at, 2)
        if long_form:
            # GENERATION CODE 0 (not supported), DEFECT LIST LENGTH 0.
            return data_in(cmd, bytes([0, flags]) + bytes(6), be(cdb, 6, 4))
        return data_in(cmd, bytes([0, flags, 0, 0]), be(cdb, 7, 2))

    def _read_capacity_16(self, cmd: Command, cdb: bytes) -> Result:
        self._require_medium()
        if not cdb[14] & 0x01 and be(cdb, 2, 8):
            raise SenseError.invalid_field_in_cdb(2)
        alloc = be(cdb, 10, 4)
        data = bytearray(32)
        data[0:8] = max(self.capacity - 1, 0).to_bytes(8, "big")
        data[8:12] = self.config.block_size.to_bytes(4, "big")
        data[13] = self.config.lbppbe & 0x0F
        if self.config.thin_provisioned:
            data[14] = 0x80 | 0x40  # LBPME, LBPRZ
        return data_in(cmd, bytes(data), alloc)

    def _get_lba_status(self, cmd: Command, cdb: bytes) -> Result:
        """GET LBA STATUS (SBC-4 5.7): mapped/deallocated extents from the starting LBA."""
        start = be(cdb, 2, 8)
        alloc = be(cdb, 10, 4)
        capacity = self.capacity
        if start >= capacity:
            raise SenseError.lba_out_of_range()
        if alloc == 0:
            return data_in(cmd, b"", 0)
        bs = self.config.block_size
        end = min(capacity, start + LBA_STATUS_WINDOW // bs)
        if self.config.thin_provisioned:
            with self._backend_errors(False):
                extents = self.backend.mapped(start * bs, (end - start) * bs)
            status = lba_extents(extents, start, end, bs)
        else:
            status = [(start, end - start, True)]
        room = max(1, (alloc - 8) // 16)
        body = bytearray()
        for lba, blocks, mapped in status:
            while blocks and len(body) < 16 * room:
                n = min(blocks, _MAX_DESCRIPTOR_BLOCKS)
                body += lba.to_bytes(8, "big") + n.to_bytes(4, "big")
                body += bytes((0x00 if mapped else 0x01, 0, 0, 0))
                lba += n
                blocks -= n
        data = (len(body) + 4).to_bytes(4, "big") + bytes(4) + bytes(body)
        return data_in(cmd, data, alloc)

    # -- START STOP UNIT / PREVENT ALLOW MEDIUM REMOVAL -----------------------------------

    def _start_stop_unit(self, cmd: Command, cdb: bytes) -> Result:
        """START STOP UNIT (SBC-4 5.25).

        START=0 stops media access (NOT READY, INITIALIZING COMMAND REQUIRED)
        until START=1. On a removable device LOEJ=1 also ejects (MEDIUM NOT
        PRESENT) or loads the medium, unless removal is prevented.
        """
        byte4 = cdb[4]
        if byte4 >> 4:
            # A POWER CONDITION other than START_VALID: a virtual unit has no
            # power states to enter, and START/LOEJ are then ignored (SBC-4).
            return Result()
        start, loej, no_flush = bool(byte4 & 0x01), bool(byte4 & 0x02), bool(byte4 & 0x04)
        if loej and not self.config.removable:
            raise SenseError.invalid_field_in_cdb(4, 1)
        if loej and self.prevent_removal:
            # Prevention locks the medium in or out: neither eject nor load (SBC-4 5.25).
            raise SenseError.medium_removal_prevented()
        if start:
            # A load brings back the same backing store the initiator itself ejected:
            # no MEDIUM MAY HAVE CHANGED (that is for media an administrator swaps).
            self.medium_present = self.medium_present or loej
            self.started = True
            return Result()
        if not no_flush and not self.config.nv_cache and self.medium_present:
            with self._backend_errors(True):
                self.backend.flush(0, 0)
        self.started = False
        if loej:
            self.medium_present = False
        return Result()

    def reset(self) -> None:
        """A logical unit reset clears the prevention of medium removal (SBC-4 4.x)
        and stops the copies in progress."""
        self.prevent_removal = False
        self.copies.reset()

    def abort_commands(self, cmd_ids: tuple[int, ...]) -> None:
        """ABORT TASK and friends: stop those commands if they are copies."""
        self.copies.abort(cmd_ids)

    # -- EXTENDED COPY endpoint (scsi.xcopy.CopyEndpoint) and RECEIVE COPY RESULTS ----

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def copy_designator(self) -> bytes:
        return naa_designator(self.config)

    def copy_check(self, writing: bool) -> SenseError | None:
        if writing and self.write_protected():
            return SenseError.write_protected()
        return self.not_ready_error()

    def read_blocks(self, lba: int, count: int) -> bytes:
        bs = self.config.block_size
        with self._locks.shared(lba, lba + count), self._backend_errors(False, lba):
            return self.backend.read_bytes(lba * bs, count * bs)

    def write_blocks(self, lba: int, data: bytes) -> None:
        bs = self.config.block_size
        count = len(data) // bs
        with self._locks.shared(lba, lba + count), self._backend_errors(True, lba):
            self.backend.write_bytes(lba * bs, data, fua=self._durable(False))

    def _copy_status(self, cmd: Command, cdb: bytes) -> Result:
        return data_in(cmd, self.copies.copy_status(cdb[2]), be(cdb, 10, 4))

    def _copy_operating_parameters(self, cmd: Command, cdb: bytes) -> Result:
        return data_in(cmd, self.copies.operating_parameters(), be(cdb, 10, 4))

    def _prevent_allow_medium_removal(self, cmd: Command, cdb: bytes) -> Result:
        if cdb[4] & 0x02:  # PREVENT 10b/11b are obsolete (MMC only)
            raise SenseError.invalid_field_in_cdb(4, 1)
        self.prevent_removal = bool(cdb[4] & 0x01)
        return Result()

    # -- INQUIRY, VPD and mode pages -------------------------------------------------

    def standard_inquiry(self) -> bytes:
        data = bytearray(super().standard_inquiry())
        data[5] |= 0x08  # 3PC: third-party copy commands (EXTENDED COPY) are supported
        return bytes(data)

    def vpd_pages(self) -> dict[int, Callable[[], bytes]]:
        result = super().vpd_pages()
        result[pages.VPD_BLOCK_LIMITS] = lambda: pages.vpd_block_limits(self.config)
        result[pages.VPD_BLOCK_DEVICE_CHARACTERISTICS] = (
            lambda: pages.vpd_block_device_characteristics(self.config)
        )
        result[pages.VPD_LOGICAL_BLOCK_PROVISIONING] = (
            lambda: pages.vpd_logical_block_provisioning(self.config)
        )
        result[VPD_THIRD_PARTY_COPY] = self.copies.third_party_copy_vpd
        return result

    def _build_mode_pages(self) -> dict[int, ModePage]:
        recovery = pages.rw_error_recovery_page()
        control = pages.control_page()
        exceptions = pages.informational_exceptions_page()

        def fixed(page: bytes) -> ModePage:
            return ModePage(page[0], lambda: page, lambda: page,
                            lambda: pages.unchangeable(page))

        return {
            pages.MODE_RW_ERROR_RECOVERY: fixed(recovery),
            pages.MODE_CACHING: ModePage(
                pages.MODE_CACHING,
                current=lambda: pages.caching_page(self._write_cache_enabled()),
                default=lambda: pages.caching_page(
                    self._default_write_back and not self.config.nv_cache
                ),
                changeable=lambda: pages.caching_page_changeable(self.config),
                apply=self._apply_caching_page,
            ),
            pages.MODE_CONTROL: fixed(control),
            pages.MODE_INFORMATIONAL_EXCEPTIONS: fixed(exceptions),
        }

    def mode_pages(self) -> Mapping[int, ModePage]:
        return self._mode_pages

    def _write_cache_enabled(self) -> bool:
        # SCST reports an NV_CACHE device as write-through (WCE=0).
        return self.config.write_back and not self.config.nv_cache

    def _apply_caching_page(self, page: bytes) -> None:
        write_back = bool(page[2] & pages.WCE)
        if self.config.write_back and not write_back and not self.config.nv_cache:
            # Going write-through promises durability for what we acknowledged
            # under write-back too: flush before saying yes.
            with self._backend_errors(True):
                self.backend.flush(0, 0)
        self.config.write_back = write_back

    def mode_device_specific(self) -> int:
        # WP when read-only; DPOFUA: DPO and FUA are supported.
        return (0x80 if self.config.read_only else 0x00) | 0x10

    def mode_block_descriptor(self, long_lba: bool) -> bytes:
        capacity = self.capacity
        bs = self.config.block_size
        if long_lba:
            return capacity.to_bytes(8, "big") + bytes(4) + bs.to_bytes(4, "big")
        return min(capacity, 0xFFFFFFFF).to_bytes(4, "big") + b"\x00" + bs.to_bytes(3, "big")

    def check_mode_block_descriptor(self, descriptor: bytes, offset: int, long_lba: bool) -> None:
        """Only the current geometry (or NUMBER OF LOGICAL BLOCKS 0: keep it) is accepted."""
        capacity = self.capacity
        if long_lba:
            blocks, block_len, len_at = be(descriptor, 0, 8), be(descriptor, 12, 4), 12
        else:
            blocks, block_len, len_at = be(descriptor, 0, 4), be(descriptor, 5, 3), 5
            capacity = min(capacity, 0xFFFFFFFF)
        if blocks not in (0, capacity):
            raise SenseError.invalid_field_in_parameter_list(offset)
        if block_len != self.config.block_size:
            raise SenseError.invalid_field_in_parameter_list(offset + len_at)


def lba_extents(
    extents: list[tuple[int, int, bool]], start: int, end: int, block_size: int
) -> list[tuple[int, int, bool]]:
    """Turn byte extents into block extents covering ``[start, end)``.

    A block is deallocated only if every byte of it lies in an unmapped extent; a
    block the backend did not describe counts as mapped (the safe answer).
    """
    holes: list[tuple[int, int]] = []
    for offset, length, is_mapped in sorted(extents):
        if is_mapped or length <= 0:
            continue
        first = max(-(-offset // block_size), start)
        last = min((offset + length) // block_size, end)
        if first < last:
            if holes and holes[-1][1] >= first:
                holes[-1] = (holes[-1][0], max(holes[-1][1], last))
            else:
                holes.append((first, last))
    result: list[tuple[int, int, bool]] = []
    pos = start
    for first, last in holes:
        if first > pos:
            result.append((pos, first - pos, True))
        result.append((first, last - first, False))
        pos = last
    if pos < end:
        result.append((pos, end - pos, True))
    return result
