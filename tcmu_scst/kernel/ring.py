"""The userspace (consumer) side of a TCMU command ring.

The kernel produces entries at ``cmd_head``; we read them with a private tail, copy
out each command's CDB and iovecs at once (the response overlays the request, and
another command's completion may reuse the slot), and later complete commands in any
order by writing into the *oldest not-yet-completed* CMD slot and advancing
``cmd_tail`` past it (tcmu-abi §2.5). The kernel only notices completions when we
write to the UIO fd; :meth:`Ring.flush` does that once per batch.

The engine works on any writable buffer laid out like the UIO mapping: the real
``mmap`` of ``/dev/uioN`` or the emulator's anonymous mapping in tests. It never
touches a byte of the data area outside the iovecs of a command it was given
(touching any other data page makes the kernel raise SIGBUS, tcmu-abi §2.6).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from tcmu_scst.command import CHECK_CONDITION, Command, DataBuffer, Result, TmrNotice
from tcmu_scst.errors import RingError
from tcmu_scst.kernel import abi

log = logging.getLogger(__name__)

# Capabilities we rely on: out-of-order completion and READ_LEN (no stale Data-In).
REQUIRED_FLAGS: Final = abi.TCMU_MAILBOX_FLAG_CAP_OOOC | abi.TCMU_MAILBOX_FLAG_CAP_READ_LEN

# Fixed-format sense for a command the ring itself must fail (malformed entry):
# HARDWARE ERROR / INTERNAL TARGET FAILURE (44h/00h). Built here because the kernel
# layer does not depend on the SCSI layer.
_INTERNAL_FAILURE: Final = Result(
    CHECK_CONDITION, bytes([0x70, 0, 0x04, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x44, 0x00, 0, 0, 0, 0])
)

RingItem = Command | TmrNotice


class _Slot:
    """One entry between the published ``cmd_tail`` and our read position."""

    __slots__ = ("length", "offset", "is_cmd")

    def __init__(self, offset: int, length: int, is_cmd: bool) -> None:
        self.offset = offset  # ring-relative
        self.length = length
        self.is_cmd = is_cmd


class Ring:
    """Consumer of one TCMU ring mapped at ``buffer``.

    ``notify`` is called (without arguments) to tell the kernel that ``cmd_tail``
    moved; for a real device it writes 4 bytes to the UIO fd.

    Thread safety: :meth:`fetch` is called by one thread (the ring loop);
    :meth:`complete` and :meth:`flush` may be called from any thread.
    """

    def __init__(self, buffer: Any, notify: Callable[[], None]) -> None:
        self._mv = memoryview(buffer).cast("B")
        self._notify_kernel = notify
        size = len(self._mv)
        if size < abi.MAILBOX_SIZE:
            raise RingError(f"mapping of {size} bytes is smaller than the TCMU mailbox")
        version, flags, cmdr_off, cmdr_size, head = abi.MB_HEAD_FIELDS.unpack_from(self._mv, 0)
        if version != abi.TCMU_MAILBOX_VERSION:
            raise RingError(
                f"TCMU mailbox version {version}, expected {abi.TCMU_MAILBOX_VERSION}: "
                "this kernel's target_core_user speaks another ring protocol"
            )
        if flags & REQUIRED_FLAGS != REQUIRED_FLAGS:
            raise RingError(
                f"TCMU mailbox flags {flags:#x} lack out-of-order completion or READ_LEN "
                "(needs Linux >= 5.x); refusing to serve: stale data could leak"
            )
        if cmdr_off != abi.MAILBOX_SIZE:
            raise RingError(f"command ring at offset {cmdr_off}, expected {abi.MAILBOX_SIZE}")
        if cmdr_size % abi.TCMU_OP_ALIGN_SIZE or cmdr_off + cmdr_size > size or cmdr_size == 0:
            raise RingError(f"command ring size {cmdr_size} does not fit a {size}-byte mapping")
        tail = abi.MB_CMD_TAIL.unpack_from(self._mv, abi.OFF_MB_CMD_TAIL)[0]
        if head >= cmdr_size or tail >= cmdr_size or head % 8 or tail % 8:
            raise RingError(
                f"ring indexes out of range (head {head}, tail {tail}, size {cmdr_size})"
            )
        self.flags: int = flags
        self.cmdr_off: int = cmdr_off
        self.cmdr_size: int = cmdr_size
        self.data_off: int = cmdr_off + cmdr_size
        self.map_size: int = size
        self._lock = threading.Lock()
        self._read_pos: int = tail  # next entry to read
        self._done_pos: int = tail  # published cmd_tail
        self._slots: deque[_Slot] = deque()
        self._inflight: dict[int, Command] = {}
        self._unnotified: bool = False
        self._serial: int = 0
        self._malformed: list[Command] = []
        self.generation: int = 0  # bumped by reset(); stale completions are dropped

    # -- reading ------------------------------------------------------------------
    @property
    def head(self) -> int:
        """The kernel's producer index (a plain 4-byte load is acquire on x86)."""
        return int(abi.MB_CMD_HEAD.unpack_from(self._mv, abi.OFF_MB_CMD_HEAD)[0])

    @property
    def tail(self) -> int:
        """The published completion index (``mailbox.cmd_tail``)."""
        return self._done_pos

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def fetch(self) -> list[RingItem]:
        """Take every new entry off the ring: commands and TMR notices, in ring order.

        PAD entries are skipped; entries with an op we do not know are flagged
        ``TCMU_UFLAG_UNKNOWN_OP`` and skipped (tcmu-abi §2.5).
        """
        items: list[RingItem] = []
        head = self.head
        if head >= self.cmdr_size or head % 8:
            raise RingError(f"kernel cmd_head {head} outside a {self.cmdr_size}-byte ring")
        mv = self._mv
        pos = self._read_pos
        new_slots: list[_Slot] = []
        while pos != head:
            off = self.cmdr_off + pos
            word = abi.HDR.unpack_from(mv, off)[0]
            op = word & abi.TCMU_OP_MASK
            length = word & ~abi.TCMU_OP_MASK
            if length < abi.HDR_SIZE or pos + length > self.cmdr_size:
                raise RingError(
                    f"ring entry at {pos} has length {length}: entries never wrap and are "
                    f">= 8 bytes; the ring is corrupt"
                )
            if op == abi.TCMU_OP_CMD:
                items.append(self._parse_cmd(off, length))
                new_slots.append(_Slot(pos, length, True))
            else:
                if op == abi.TCMU_OP_TMR:
                    items.append(self._parse_tmr(off, length))
                elif op != abi.TCMU_OP_PAD:
                    mv[off + abi.OFF_HDR_UFLAGS] |= abi.TCMU_UFLAG_UNKNOWN_OP
                    log.warning("ring entry at %d has unknown op %d: skipped", pos, op)
                new_slots.append(_Slot(pos, length, False))
            pos = (pos + length) % self.cmdr_size
        self._read_pos = pos
        if new_slots:
            with self._lock:
                for item in items:
                    if isinstance(item, Command):
                        self._inflight[item.cmd_id] = item
                self._slots.extend(new_slots)
                self._skip_leading_non_cmd()
        if self._malformed:
            # The kernel never produces these; if it ever does, fail the command
            # rather than touch memory it did not give us.
            for cmd in self._malformed:
                self.complete(cmd, _INTERNAL_FAILURE, notify=False)
            bad = set(map(id, self._malformed))
            self._malformed.clear()
            items = [i for i in items if id(i) not in bad]
        return items

    def _parse_cmd(self, off: int, length: int) -> Command:
        mv = self._mv
        cmd_id = abi.HDR.unpack_from(mv, off)[1]
        iov_cnt, bidi_cnt, _dif, cdb_off = abi.REQ.unpack_from(mv, off + abi.OFF_REQ)
        base = abi.OFF_REQ_IOV + abi.IOVEC_SIZE * (iov_cnt + bidi_cnt)
        self._serial += 1
        cmd = Command(cmd_id, b"", serial=self._serial)
        cmd.complete = self._completer(cmd)
        problem = ""
        if base > length:
            problem = f"{iov_cnt}+{bidi_cnt} iovecs overflow a {length}-byte entry"
        elif not self.cmdr_off <= cdb_off < self.data_off:
            problem = f"CDB offset {cdb_off} outside the command ring"
        else:
            opcode = mv[cdb_off]
            byte7 = mv[cdb_off + 7] if cdb_off + 7 < self.data_off else 0
            cdb_len = abi.cdb_length(opcode, byte7)
            if cdb_off + cdb_len > self.data_off:
                problem = f"{cdb_len}-byte CDB at {cdb_off} runs past the command ring"
            else:
                cmd.cdb = bytes(mv[cdb_off : cdb_off + cdb_len])
        views: list[memoryview] = []
        if not problem:
            iov_off = off + abi.OFF_REQ_IOV
            for _ in range(iov_cnt + bidi_cnt):
                ibase, ilen = abi.IOVEC.unpack_from(mv, iov_off)
                iov_off += abi.IOVEC_SIZE
                if ibase < self.data_off or ibase + ilen > self.map_size:
                    problem = f"iovec {ibase:#x}+{ilen} outside the data area"
                    break
                views.append(mv[ibase : ibase + ilen])
        if problem:
            log.error("cmd_id %d: %s; failing it with INTERNAL TARGET FAILURE", cmd_id, problem)
            cmd.cdb = cmd.cdb or b"\x00"
            self._malformed.append(cmd)
            return cmd
        cmd.data = DataBuffer(views[:iov_cnt])
        cmd.bidi_in = DataBuffer(views[iov_cnt:]) if bidi_cnt else None
        return cmd

    def _parse_tmr(self, off: int, length: int) -> TmrNotice:
        tmr_type, cmd_cnt = abi.TMR.unpack_from(self._mv, off + abi.OFF_TMR)
        room = (length - abi.OFF_TMR_IDS) // 2
        count = min(cmd_cnt, max(room, 0))
        start = off + abi.OFF_TMR_IDS
        raw = bytes(self._mv[start : start + 2 * count])
        ids = tuple(int.from_bytes(raw[i : i + 2], "little") for i in range(0, len(raw), 2))
        return TmrNotice(tmr_type, ids)

    # -- completing -----------------------------------------------------------------
    def _completer(self, cmd: Command) -> Callable[[Result], None]:
        generation = self.generation

        def complete(result: Result) -> None:
            self.complete(cmd, result, generation=generation)

        return complete

    def complete(
        self, cmd: Command, result: Result, *, notify: bool = True, generation: int | None = None
    ) -> None:
        """Post ``result`` for ``cmd`` (any thread) and, with ``notify``, tell the kernel.

        A completion for a command the ring no longer holds (already completed, or
        dropped by a ring reset) is ignored with a log line: writing it would make the
        kernel declare the ring broken (tcmu-abi §2.5, rule 5).
        """
        with self._lock:
            if generation is not None and generation != self.generation:
                log.info("cmd_id %d completed after a ring reset: dropped", cmd.cmd_id)
                return
            if self._inflight.get(cmd.cmd_id) is not cmd:
                log.error("cmd_id %d completed twice or unknown: dropped", cmd.cmd_id)
                return
            del self._inflight[cmd.cmd_id]
            self._skip_leading_non_cmd()
            slot = self._slots.popleft()  # the oldest pending CMD slot ("steal" it)
            self._write_response(self.cmdr_off + slot.offset, cmd, result)
            self._done_pos = (slot.offset + slot.length) % self.cmdr_size
            self._skip_leading_non_cmd()
            # cmd_tail is stored last, after every response byte (release order).
            abi.MB_CMD_TAIL.pack_into(self._mv, abi.OFF_MB_CMD_TAIL, self._done_pos)
            self._unnotified = True
        if notify:
            self.flush()

    def _write_response(self, off: int, cmd: Command, result: Result) -> None:
        mv = self._mv
        status = result.status & 0xFF
        uflags = 0
        read_len = 0
        sense, data_in = result.sense, result.data_in_len
        if data_in is not None:
            buf_len = cmd.bidi_in.length if cmd.bidi_in is not None else cmd.data.length
            read_len = max(0, min(data_in, buf_len))
            if read_len == 0 and buf_len and status == 0:
                # The kernel treats read_len 0 as "complete normally" and would send
                # the whole buffer, stale bytes included: send zeros instead.
                target = cmd.bidi_in if cmd.bidi_in is not None else cmd.data
                target.fill_zero()
                read_len = buf_len
            uflags |= abi.TCMU_UFLAG_READ_LEN
        # hdr.cmd_id and uflags; len_op (bytes 0-3) and kflags are never touched.
        abi.HDR_CMD_ID.pack_into(mv, off + abi.OFF_HDR_CMD_ID, cmd.cmd_id)
        mv[off + abi.OFF_HDR_UFLAGS] = uflags
        mv[off + abi.OFF_RSP_SCSI_STATUS] = status
        abi.RSP_READ_LEN.pack_into(mv, off + abi.OFF_RSP_READ_LEN, read_len)
        if status == CHECK_CONDITION:
            sense = sense[: abi.TCMU_SENSE_BUFFERSIZE]
            mv[off + abi.OFF_RSP_SENSE : off + abi.OFF_RSP_SENSE + abi.TCMU_SENSE_BUFFERSIZE] = (
                sense + bytes(abi.TCMU_SENSE_BUFFERSIZE - len(sense))
            )

    def _skip_leading_non_cmd(self) -> None:
        """Move the published tail past PAD/TMR/unknown entries at its front (lock held)."""
        slots = self._slots
        moved = False
        while slots and not slots[0].is_cmd:
            slot = slots.popleft()
            self._done_pos = (slot.offset + slot.length) % self.cmdr_size
            moved = True
        if moved:
            abi.MB_CMD_TAIL.pack_into(self._mv, abi.OFF_MB_CMD_TAIL, self._done_pos)
            self._unnotified = True

    def flush(self) -> bool:
        """Tell the kernel about completions posted since the last flush (one write).

        Returns True if a notification was sent.
        """
        with self._lock:
            if not self._unnotified:
                return False
            self._unnotified = False
        self._notify_kernel()
        return True

    # -- recovery -----------------------------------------------------------------
    def reset(self) -> list[Command]:
        """Forget the ring's contents after the kernel's ``action/reset_ring``.

        The kernel has completed everything in the ring itself and set head and tail
        to 0; so do we. Returns the commands that were in flight; their later
        completions are dropped (tcmu-abi §4.3).
        """
        with self._lock:
            dropped = list(self._inflight.values())
            self._inflight.clear()
            self._slots.clear()
            self.generation += 1
            self._read_pos = 0
            self._done_pos = 0
            self._unnotified = False
        return dropped
