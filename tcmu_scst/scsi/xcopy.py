"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS: the copy manager of a block device.

SPC-4 6.4 and 6.18. What a copy manager here accepts:

* the parameter list header of EXTENDED COPY (LID1) with LIST ID USAGE 00b, 10b or
  11b; no inline data (MAXIMUM INLINE DATA LENGTH is 0);
* identification target (CSCD) descriptors, type E4h, whose designator is an NAA
  designator with logical-unit association naming a block device this process
  serves (the same LU or another one the :class:`CopyScope` lets us reach);
* block device to block device segment descriptors, type 02h (DC honoured).

The copy runs inside the daemon, in :data:`CHUNK`-byte pieces, each under the
source's and then the destination's shared range lock (never both at once), so
other commands interleave with it and COMPARE AND WRITE stays atomic; an ABORT TASK
or LUN RESET notification stops it between two pieces. Overlapping ranges of the
same LU are copied back to front when the destination lies after the source, so the
result is as if the whole source had been read first.

Errors (SPC-4 6.4.3, 5.17.7): a malformed parameter list is ILLEGAL REQUEST with the
precise ASC (PARAMETER LIST LENGTH ERROR, TOO MANY TARGET/SEGMENT DESCRIPTORS,
UNSUPPORTED TARGET/SEGMENT DESCRIPTOR TYPE CODE, INVALID FIELD IN PARAMETER LIST)
and nothing is copied. Once segments are processed, a failure is COPY ABORTED with
the COMMAND-SPECIFIC INFORMATION naming the segment and a segment pointer to the
field in error: an unknown or refused copy target is UNREACHABLE COPY TARGET
(08/04), a block range beyond a device's capacity is 00/00 with the pointer on the
LBA field, a failing backing store carries its own ASC (11/00, 0C/00, 27/00).

Held results: SPC-4 keeps a copy's status per I_T nexus until RECEIVE COPY RESULTS
(COPY STATUS) returns it. TCMU does not tell us the nexus of a command, so status is
held per LU, returned once, and forgotten :data:`HOLD_SECONDS` after the copy ended
(or when a newer copy reuses the list identifier, or on a LUN reset).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from tcmu_scst.command import BUSY, Command, Result
from tcmu_scst.scsi.cdb import be
from tcmu_scst.scsi.sense import ABORTED_COMMAND, COPY_ABORTED, ILLEGAL_REQUEST, SenseError

log = logging.getLogger(__name__)

# Service actions (SPC-4 table 102 and 6.18).
XCOPY_LID1 = 0x00
RCR_COPY_STATUS = 0x00
RCR_OPERATING_PARAMETERS = 0x03

HEADER_LEN = 16
ID_CSCD = 0xE4  # identification CSCD descriptor
CSCD_LEN = 32
BLOCK_TO_BLOCK = 0x02
BLOCK_TO_BLOCK_LEN = 28

# Limits reported in VPD 8Fh and OPERATING PARAMETERS, and enforced.
MAX_CSCD_DESCRIPTORS = 8
MAX_SEGMENT_DESCRIPTORS = 64
MAX_DESCRIPTOR_LIST_LENGTH = MAX_CSCD_DESCRIPTORS * CSCD_LEN + (
    MAX_SEGMENT_DESCRIPTORS * BLOCK_TO_BLOCK_LEN
)
MAX_HELD_COPIES = 16  # identified copies whose status is held at once
#: EXTENDED COPY commands running at once on one LU. A copy keeps one of the device's
#: worker threads for its whole length; a second one would take the next worker and
#: starve READ/WRITE, so it is answered BUSY (the initiator retries or copies itself).
MAX_RUNNING_COPIES = 1
#: Bytes read and written per step: bounds memory and how long a lock is held.
CHUNK = 1 << 20
HOLD_SECONDS = 10.0

# LIST ID USAGE (header byte 1, bits 4-3).
_USAGE_RESERVED = 0b01
_USAGE_NO_LIST_ID = 0b11

# COPY MANAGER STATUS of COPY STATUS data.
STATUS_IN_PROGRESS = 0x00
STATUS_DONE = 0x01
STATUS_FAILED = 0x02

_NAA = 0x3
_CODE_SET_BINARY = 0x1


class CopyEndpoint(Protocol):
    """A block device the copy manager reads or writes (an ``SbcDevice``)."""

    @property
    def block_size(self) -> int: ...

    @property
    def capacity(self) -> int: ...

    def copy_designator(self) -> bytes:
        """The NAA designator value (VPD 83h) a CSCD descriptor names it by."""
        ...

    def copy_check(self, writing: bool) -> SenseError | None:
        """Why the device cannot take part in a copy now (NOT READY, WRITE PROTECTED)."""
        ...

    def read_blocks(self, lba: int, count: int) -> bytes: ...

    def write_blocks(self, lba: int, data: bytes) -> None: ...


class CopyScope(Protocol):
    """Which devices a copy received by one device may touch.

    ``resolve`` finds a served device by its NAA designator; ``may_copy`` is the
    access rule (see ``service.units``): TCMU tells us nothing about the initiator,
    so a device is reachable only when every initiator that can reach the receiving
    device can reach it the same way.
    """

    def resolve(self, designator: bytes) -> CopyEndpoint | None: ...

    def may_copy(self, origin: CopyEndpoint, other: CopyEndpoint) -> bool: ...


class SelfScope:
    """Only the receiving device (no daemon: tests, the compliance runner)."""

    def __init__(self, device: CopyEndpoint) -> None:
        self.device = device

    def resolve(self, designator: bytes) -> CopyEndpoint | None:
        return self.device if designator == self.device.copy_designator() else None

    def may_copy(self, origin: CopyEndpoint, other: CopyEndpoint) -> bool:
        return origin is other


def copy_aborted(asc: int, ascq: int, segment: int | None = None,
                 field: int | None = None) -> SenseError:
    """COPY ABORTED; ``segment`` goes to COMMAND-SPECIFIC INFORMATION, ``field`` (offset
    in the parameter list) to the sense-key-specific segment pointer."""
    return SenseError(COPY_ABORTED, asc, ascq, field, in_cdb=False, bit=None,
                      command_specific=segment)


@dataclass(frozen=True, slots=True)
class Segment:
    index: int
    offset: int  # of the descriptor in the parameter list
    source: int
    destination: int
    dc: bool
    blocks: int
    source_lba: int
    destination_lba: int


@dataclass(frozen=True, slots=True)
class Cscd:
    offset: int
    designator: bytes | None  # None: not an NAA logical-unit designator
    block_length: int


@dataclass(frozen=True, slots=True)
class CopyPlan:
    list_id: int | None  # None: LIST ID USAGE 11b
    cscds: tuple[Cscd, ...]
    segments: tuple[Segment, ...]


@dataclass(slots=True)
class CopyStatus:
    status: int
    segments: int = 0
    bytes_copied: int = 0
    ended: float = 0.0


def _unsupported(asc_ascq: tuple[int, int], offset: int) -> SenseError:
    return SenseError(ILLEGAL_REQUEST, *asc_ascq, offset, in_cdb=False, bit=7)


def parse_parameter_list(params: bytes) -> CopyPlan:
    """Check an EXTENDED COPY (LID1) parameter list; raise the SPC-4 sense on error."""
    if len(params) < HEADER_LEN:
        raise SenseError.parameter_list_length_error()
    usage = (params[1] >> 3) & 0x03
    if usage == _USAGE_RESERVED:
        raise SenseError.invalid_field_in_parameter_list(1, 4)
    cscd_len = be(params, 2, 2)
    segments_len = be(params, 8, 4)
    inline_len = be(params, 12, 4)
    if HEADER_LEN + cscd_len + segments_len + inline_len > len(params):
        raise SenseError.parameter_list_length_error()
    if cscd_len + segments_len > MAX_DESCRIPTOR_LIST_LENGTH:
        raise SenseError.parameter_list_length_error()
    if inline_len:
        raise SenseError.invalid_field_in_parameter_list(12)
    if cscd_len % CSCD_LEN:
        raise SenseError.invalid_field_in_parameter_list(2)
    if cscd_len // CSCD_LEN > MAX_CSCD_DESCRIPTORS:
        raise _unsupported((0x26, 0x06), 2)  # TOO MANY TARGET DESCRIPTORS
    seg_start = HEADER_LEN + cscd_len
    raw_segments = list(_walk_segments(params, seg_start, seg_start + segments_len))
    if len(raw_segments) > MAX_SEGMENT_DESCRIPTORS:
        raise _unsupported((0x26, 0x08), 8)  # TOO MANY SEGMENT DESCRIPTORS
    cscds = tuple(_parse_cscd(params, HEADER_LEN + i * CSCD_LEN)
                  for i in range(cscd_len // CSCD_LEN))
    segments = tuple(_parse_segment(params, index, offset)
                     for index, offset in enumerate(raw_segments))
    return CopyPlan(None if usage == _USAGE_NO_LIST_ID else params[0], cscds, segments)


def _walk_segments(params: bytes, pos: int, end: int) -> Iterator[int]:
    while pos < end:
        if pos + 4 > end:
            raise SenseError.parameter_list_length_error()
        length = 4 + be(params, pos + 2, 2)
        if pos + length > end:
            raise SenseError.parameter_list_length_error()
        yield pos
        pos += length


def _parse_cscd(params: bytes, offset: int) -> Cscd:
    desc = params[offset : offset + CSCD_LEN]
    if desc[0] != ID_CSCD:
        raise _unsupported((0x26, 0x07), offset)  # UNSUPPORTED TARGET DESCRIPTOR TYPE CODE
    # LU ID TYPE and NUL are ignored (SPC-4 made them obsolete); RELATIVE INITIATOR
    # PORT IDENTIFIER too: the copy manager reaches its CSCDs without a port.
    if desc[1] & 0x1F != 0x00:
        raise SenseError.invalid_field_in_parameter_list(offset + 1, 4)  # not a block device
    code_set, association, kind = desc[4] & 0x0F, (desc[5] >> 4) & 0x03, desc[5] & 0x0F
    length = desc[7]
    designator = None
    if code_set == _CODE_SET_BINARY and association == 0 and kind == _NAA and length <= 20:
        designator = bytes(desc[8 : 8 + length])
    return Cscd(offset, designator, be(desc, 29, 3))


def _parse_segment(params: bytes, index: int, offset: int) -> Segment:
    desc = params[offset : offset + BLOCK_TO_BLOCK_LEN]
    if desc[0] != BLOCK_TO_BLOCK:
        raise _unsupported((0x26, 0x09), offset)  # UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE
    if be(desc, 2, 2) != BLOCK_TO_BLOCK_LEN - 4:
        raise SenseError.invalid_field_in_parameter_list(offset + 2)
    return Segment(index, offset, be(desc, 4, 2), be(desc, 6, 2), bool(desc[1] & 0x02),
                   be(desc, 10, 2), be(desc, 12, 8), be(desc, 20, 8))


class _Busy(Exception):
    """Another copy runs on this LU (see MAX_RUNNING_COPIES)."""


class CopyManager:
    """EXTENDED COPY and RECEIVE COPY RESULTS for one device (``origin``)."""

    def __init__(self, origin: CopyEndpoint, clock: Callable[[], float] = time.monotonic) -> None:
        self.origin = origin
        self.scope: CopyScope = SelfScope(origin)
        self.clock = clock
        self._lock = threading.Lock()
        self._held: dict[int, CopyStatus] = {}  # list id -> status (in progress or ended)
        self._running: dict[int, threading.Event] = {}  # cmd_id -> abort flag

    # -- task management ----------------------------------------------------------

    def abort(self, cmd_ids: tuple[int, ...]) -> None:
        """ABORT TASK (or the commands a reset aborted): stop those copies."""
        with self._lock:
            for cmd_id in cmd_ids:
                flag = self._running.get(cmd_id)
                if flag is not None:
                    flag.set()

    def reset(self) -> None:
        """LUN reset: stop every copy and drop the held results."""
        with self._lock:
            for flag in self._running.values():
                flag.set()
            self._held = {k: v for k, v in self._held.items() if v.status == STATUS_IN_PROGRESS}

    # -- EXTENDED COPY ---------------------------------------------------------------

    def extended_copy(self, cmd: Command, cdb: bytes) -> Result:
        length = be(cdb, 10, 4)
        if length == 0:
            return Result()  # SPC-4: not an error, nothing to do
        if len(cmd.data) < length:
            raise SenseError.invalid_field_in_command_iu()
        plan = parse_parameter_list(cmd.data.read(0, length))
        endpoints = [self._endpoint(cscd) for cscd in plan.cscds]
        try:
            with self._claim(cmd.cmd_id, plan.list_id) as (status, aborted):
                try:
                    for segment in plan.segments:
                        self._run_segment(segment, endpoints, status, aborted)
                        status.segments += 1
                except SenseError:
                    status.status = STATUS_FAILED
                    raise
                status.status = STATUS_DONE
        except _Busy:
            return Result(status=BUSY)
        return Result()

    def _endpoint(self, cscd: Cscd) -> CopyEndpoint | None:
        """The device a CSCD descriptor names, or None when unknown or not allowed
        (reported as UNREACHABLE COPY TARGET when a segment uses it)."""
        if cscd.designator is None:
            return None
        device = self.scope.resolve(cscd.designator)
        if device is None:
            return None
        if device is not self.origin and not self.scope.may_copy(self.origin, device):
            log.warning("EXTENDED COPY refused: copy target %s is not exposed exactly like "
                        "this device (same targets, groups and initiators)",
                        cscd.designator.hex())
            return None
        if cscd.block_length != device.block_size:
            raise SenseError.invalid_field_in_parameter_list(cscd.offset + 29)
        return device

    @contextmanager
    def _claim(self, cmd_id: int, list_id: int | None
               ) -> Iterator[tuple[CopyStatus, threading.Event]]:
        status = CopyStatus(STATUS_IN_PROGRESS)
        aborted = threading.Event()
        with self._lock:
            self._expire()
            held = self._held.get(list_id) if list_id is not None else None
            if held is not None and held.status == STATUS_IN_PROGRESS:
                raise SenseError(ILLEGAL_REQUEST, 0x00, 0x16)  # OPERATION IN PROGRESS
            if len(self._running) >= MAX_RUNNING_COPIES:
                raise _Busy
            if list_id is not None:
                self._held.pop(list_id, None)
                while len(self._held) >= MAX_HELD_COPIES:
                    oldest = min(self._held, key=lambda k: (self._held[k].status ==
                                                            STATUS_IN_PROGRESS,
                                                            self._held[k].ended))
                    del self._held[oldest]
                self._held[list_id] = status
            self._running[cmd_id] = aborted
        try:
            yield status, aborted
        finally:
            with self._lock:
                status.ended = self.clock()
                if status.status == STATUS_IN_PROGRESS:
                    status.status = STATUS_FAILED
                self._running.pop(cmd_id, None)

    def _run_segment(self, seg: Segment, endpoints: list[CopyEndpoint | None],
                     status: CopyStatus, aborted: threading.Event) -> None:
        src = endpoints[seg.source] if seg.source < len(endpoints) else None
        dst = endpoints[seg.destination] if seg.destination < len(endpoints) else None
        if src is None:
            raise copy_aborted(0x08, 0x04, seg.index, seg.offset + 4)  # UNREACHABLE COPY TARGET
        if dst is None:
            raise copy_aborted(0x08, 0x04, seg.index, seg.offset + 6)
        for device, writing in ((src, False), (dst, True)):
            problem = device.copy_check(writing)
            if problem is not None:
                raise copy_aborted(problem.asc, problem.ascq, seg.index)
        unit = dst.block_size if seg.dc else src.block_size
        length = seg.blocks * unit
        if length % src.block_size or length % dst.block_size:
            raise SenseError.invalid_field_in_parameter_list(seg.offset + 10)
        src_blocks, dst_blocks = length // src.block_size, length // dst.block_size
        if seg.source_lba + src_blocks > src.capacity:
            raise copy_aborted(0x00, 0x00, seg.index, seg.offset + 12)
        if seg.destination_lba + dst_blocks > dst.capacity:
            raise copy_aborted(0x00, 0x00, seg.index, seg.offset + 20)
        step = max(CHUNK - CHUNK % max(src.block_size, dst.block_size), src.block_size,
                   dst.block_size)
        offsets = list(range(0, length, step))
        src_start, dst_start = seg.source_lba * src.block_size, seg.destination_lba * dst.block_size
        if src is dst and src_start < dst_start < src_start + length:
            offsets.reverse()  # overlapping, destination after source: copy from the end
        for pos in offsets:
            if aborted.is_set():  # the kernel ignores what an aborted command answers
                raise SenseError(ABORTED_COMMAND, 0x00, 0x00)
            n = min(step, length - pos)
            try:
                data = src.read_blocks((src_start + pos) // src.block_size, n // src.block_size)
            except SenseError as error:
                raise copy_aborted(error.asc, error.ascq, seg.index) from error
            try:
                dst.write_blocks((dst_start + pos) // dst.block_size, data)
            except SenseError as error:
                raise copy_aborted(error.asc, error.ascq, seg.index) from error
            status.bytes_copied += n

    # -- RECEIVE COPY RESULTS ---------------------------------------------------------

    def copy_status(self, list_id: int) -> bytes:
        """COPY STATUS data (SPC-4 6.18.2); a finished copy's status is returned once."""
        with self._lock:
            self._expire()
            status = self._held.get(list_id)
            if status is None:
                raise SenseError.invalid_field_in_cdb(2)
            if status.status != STATUS_IN_PROGRESS:
                del self._held[list_id]
            count, units = status.bytes_copied, 0x00  # bytes
            while count > 0xFFFFFFFF:
                count, units = count >> 10, units + 1  # KiB, MiB, ... (TRANSFER COUNT UNITS)
            data = bytearray(12)
            data[0:4] = (8).to_bytes(4, "big")
            data[4] = status.status & 0x7F  # HDD=0: no held data
            data[5:7] = min(status.segments, 0xFFFF).to_bytes(2, "big")
            data[7] = units
            data[8:12] = count.to_bytes(4, "big")
            return bytes(data)

    def _expire(self) -> None:
        now = self.clock()
        for list_id in [k for k, v in self._held.items()
                        if v.status != STATUS_IN_PROGRESS and now - v.ended > HOLD_SECONDS]:
            del self._held[list_id]

    def operating_parameters(self) -> bytes:
        """OPERATING PARAMETERS data (SPC-4 6.18.4): the limits parse_parameter_list enforces."""
        data = bytearray(44)
        data[4] = 0x00  # SNLID=0: list identifiers are honoured
        data[8:10] = MAX_CSCD_DESCRIPTORS.to_bytes(2, "big")
        data[10:12] = MAX_SEGMENT_DESCRIPTORS.to_bytes(2, "big")
        data[12:16] = MAX_DESCRIPTOR_LIST_LENGTH.to_bytes(4, "big")
        data[16:20] = self.max_segment_length().to_bytes(4, "big")
        # MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT, MAXIMUM STREAM DEVICE TRANSFER
        # SIZE: 0 (no inline data, no held data, no stream devices).
        data[34:36] = MAX_RUNNING_COPIES.to_bytes(2, "big")  # TOTAL CONCURRENT COPIES
        data[36] = MAX_RUNNING_COPIES  # MAXIMUM CONCURRENT COPIES
        data[37] = (self.origin.block_size.bit_length() - 1)  # DATA SEGMENT GRANULARITY
        types = bytes((BLOCK_TO_BLOCK, ID_CSCD))
        data[43] = len(types)
        data += types
        data[0:4] = (len(data) - 4).to_bytes(4, "big")
        return bytes(data)

    def max_segment_length(self) -> int:
        """A block-to-block segment counts at most 65535 blocks (a 2-byte field)."""
        return 0xFFFF * self.origin.block_size

    def third_party_copy_vpd(self) -> bytes:
        """VPD page 8Fh after its header (SPC-4 7.8.17)."""
        commands = bytes((0x83, 1, XCOPY_LID1, 0x84, 2, RCR_COPY_STATUS,
                          RCR_OPERATING_PARAMETERS))
        supported_commands = bytes((len(commands),)) + commands
        parameter_data = (bytes(4) + MAX_CSCD_DESCRIPTORS.to_bytes(2, "big")
                          + MAX_SEGMENT_DESCRIPTORS.to_bytes(2, "big")
                          + MAX_DESCRIPTOR_LIST_LENGTH.to_bytes(4, "big")
                          + bytes(4)  # MAXIMUM INLINE DATA LENGTH
                          + bytes(12))
        supported_descriptors = bytes((2, BLOCK_TO_BLOCK, ID_CSCD))
        general = (MAX_RUNNING_COPIES.to_bytes(4, "big")  # TOTAL CONCURRENT COPIES
                   + MAX_RUNNING_COPIES.to_bytes(4, "big")  # MAXIMUM IDENTIFIED CONCURRENT COPIES
                   + self.max_segment_length().to_bytes(4, "big")
                   + bytes((self.origin.block_size.bit_length() - 1, 0))  # granularities
                   + bytes(18))
        return (_tpc_descriptor(0x0001, supported_commands)
                + _tpc_descriptor(0x0004, supported_descriptors)
                + _tpc_descriptor(0x0008, parameter_data)
                + _tpc_descriptor(0x8001, general))


def _tpc_descriptor(kind: int, body: bytes) -> bytes:
    """A third-party copy descriptor, padded to a multiple of 4 bytes."""
    body = body + bytes(-(len(body) + 4) % 4)
    return kind.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body
