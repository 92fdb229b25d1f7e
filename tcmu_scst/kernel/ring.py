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
import struct
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

# Header + request fields + the first iovec, read in one call (tcmu-abi §2.2-2.3):
# len_op, cmd_id, kflags, uflags @0; iov_cnt, iov_bidi_cnt, iov_dif_cnt @8; hole @20;
# cdb_off @24; two u64 pads @32/@40; iov[0] = (base, len) @48.
_ENTRY_ONE_IOV: Final = struct.Struct("<IHBBIII4xQ16xQQ")
# The response written over a slot, from offset 4: cmd_id, kflags, uflags @4-7,
# scsi_status @8, pads @9-11, read_len @12.
_RESPONSE: Final = struct.Struct("<HBBB3xI")
_HEAD_WORD: Final = abi.OFF_MB_CMD_HEAD // 4
_TAIL_WORD: Final = abi.OFF_MB_CMD_TAIL // 4
_IOVEC: Final = abi.IOVEC
_ZEROS: Final = bytes(abi.TCMU_SENSE_BUFFERSIZE)
_CDB_LEN: Final = tuple(abi.cdb_length(op) for op in range(256))


# A pending slot between the published cmd_tail and our read position is a tuple
# (ring offset, length, is_cmd): cheaper than an object on the hot path.
_Slot = tuple[int, int, bool]


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
        # The two indexes are shared with the kernel while it runs: load and store them
        # as single aligned 32-bit accesses. struct's "<I" packs and unpacks byte by
        # byte in CPython, so a concurrent reader could see a torn value (the kernel
        # then walks into never-written, zero-length "entries" and spins forever).
        self._words = self._mv[: abi.MAILBOX_SIZE].cast("I")
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
        self._malformed: list[Command] = []
        self.generation: int = 0  # bumped by reset(); stale completions are dropped

    # -- reading ------------------------------------------------------------------
    @property
    def head(self) -> int:
        """The kernel's producer index (one aligned 4-byte load: acquire on x86)."""
        return int(self._words[_HEAD_WORD])

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
        head = self.head
        pos = self._read_pos
        if pos == head:
            return []
        if head >= self.cmdr_size or head % 8:
            raise RingError(f"kernel cmd_head {head} outside a {self.cmdr_size}-byte ring")
        items: list[RingItem] = []
        new_slots: list[_Slot] = []
        commands: list[Command] = []
        mv = self._mv
        cmdr_off, cmdr_size, data_off, map_size = (
            self.cmdr_off, self.cmdr_size, self.data_off, self.map_size,
        )
        generation = self.generation
        unpack_entry = _ENTRY_ONE_IOV.unpack_from
        cdb_len_of = _CDB_LEN
        while pos != head:
            off = cmdr_off + pos
            # header + request + the first iovec in one call (the common case)
            lo, cmd_id, _kf, _uf, iov_cnt, bidi_cnt, _dif, cdb_off, base0, len0 = unpack_entry(
                mv, off
            )
            op = lo & 7
            length = lo & ~7
            if length < 8 or pos + length > cmdr_size:
                raise RingError(
                    f"ring entry at {pos} has length {length}: entries never wrap and are "
                    f">= 8 bytes; the ring is corrupt"
                )
            if op == 1:  # TCMU_OP_CMD
                cmd = Command(cmd_id, b"")
                cmd.generation = generation
                cmd._sink = self
                problem = ""
                if 48 + 16 * (iov_cnt + bidi_cnt) > length:
                    problem = f"{iov_cnt}+{bidi_cnt} iovecs overflow a {length}-byte entry"
                elif not cmdr_off <= cdb_off < data_off - 8:
                    problem = f"CDB offset {cdb_off} outside the command ring"
                else:
                    opcode = mv[cdb_off]
                    clen = cdb_len_of[opcode] if opcode != 0x7F else mv[cdb_off + 7] + 8
                    if cdb_off + clen > data_off:
                        problem = f"{clen}-byte CDB at {cdb_off} runs past the command ring"
                    else:
                        cmd.cdb = mv[cdb_off : cdb_off + clen].tobytes()
                if problem:
                    pass
                elif iov_cnt == 1 and not bidi_cnt:
                    if base0 < data_off or base0 + len0 > map_size:
                        problem = f"iovec {base0:#x}+{len0} outside the data area"
                    else:
                        cmd.data = DataBuffer([mv[base0 : base0 + len0]], len0)
                elif iov_cnt or bidi_cnt:
                    views: list[memoryview] = []
                    iov_off = off + abi.OFF_REQ_IOV
                    for _ in range(iov_cnt + bidi_cnt):
                        ibase, ilen = _IOVEC.unpack_from(mv, iov_off)
                        iov_off += 16
                        if ibase < data_off or ibase + ilen > map_size:
                            problem = f"iovec {ibase:#x}+{ilen} outside the data area"
                            break
                        views.append(mv[ibase : ibase + ilen])
                    if not problem:
                        cmd.data = DataBuffer(views[:iov_cnt])
                        cmd.bidi_in = DataBuffer(views[iov_cnt:]) if bidi_cnt else None
                if problem:
                    log.error("cmd_id %d: %s; failing the command", cmd_id, problem)
                    cmd.cdb = cmd.cdb or b"\x00"
                    self._malformed.append(cmd)
                items.append(cmd)
                commands.append(cmd)
                new_slots.append((pos, length, True))
            else:
                if op == abi.TCMU_OP_TMR:
                    items.append(self._parse_tmr(off, length))
                elif op != abi.TCMU_OP_PAD:
                    mv[off + abi.OFF_HDR_UFLAGS] |= abi.TCMU_UFLAG_UNKNOWN_OP
                    log.warning("ring entry at %d has unknown op %d: skipped", pos, op)
                new_slots.append((pos, length, False))
            pos = (pos + length) % cmdr_size
        self._read_pos = pos
        with self._lock:
            inflight = self._inflight
            for cmd in commands:
                inflight[cmd.cmd_id] = cmd
            self._slots.extend(new_slots)
            if not new_slots[0][2]:
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

    def _parse_tmr(self, off: int, length: int) -> TmrNotice:
        tmr_type, cmd_cnt = abi.TMR.unpack_from(self._mv, off + abi.OFF_TMR)
        room = (length - abi.OFF_TMR_IDS) // 2
        count = min(cmd_cnt, max(room, 0))
        start = off + abi.OFF_TMR_IDS
        raw = bytes(self._mv[start : start + 2 * count])
        ids = tuple(int.from_bytes(raw[i : i + 2], "little") for i in range(0, len(raw), 2))
        return TmrNotice(tmr_type, ids)

    # -- completing -----------------------------------------------------------------
    def complete(self, cmd: Command, result: Result, *, notify: bool = True) -> None:
        """Post ``result`` for ``cmd`` (any thread) and, with ``notify``, tell the kernel.

        A completion for a command the ring no longer holds (already completed, or
        dropped by a ring reset) is ignored with a log line: writing it would make the
        kernel declare the ring broken (tcmu-abi §2.5, rule 5).
        """
        # Work out the response outside the lock.
        status = result.status & 0xFF
        data_in = result.data_in_len
        uflags = 0
        read_len = 0
        if data_in is not None:
            target = cmd.bidi_in if cmd.bidi_in is not None else cmd.data
            buf_len = target.length
            read_len = data_in if 0 <= data_in < buf_len else (buf_len if data_in > 0 else 0)
            if read_len == 0 and buf_len and status == 0:
                # The kernel treats read_len 0 as "complete normally" and would send
                # the whole buffer, stale bytes included: send zeros instead.
                target.fill_zero()
                read_len = buf_len
            uflags = abi.TCMU_UFLAG_READ_LEN
        mv = self._mv
        with self._lock:
            if cmd.generation != self.generation:
                log.info("cmd_id %d completed after a ring reset: dropped", cmd.cmd_id)
                return
            if self._inflight.get(cmd.cmd_id) is not cmd:
                log.error("cmd_id %d completed twice or unknown: dropped", cmd.cmd_id)
                return
            del self._inflight[cmd.cmd_id]
            slots = self._slots
            if not slots[0][2]:
                self._skip_leading_non_cmd()
            slot_pos, slot_len, _ = slots.popleft()  # the oldest pending CMD slot ("steal" it)
            off = self.cmdr_off + slot_pos
            # cmd_id, kflags (the kernel's 0), uflags, status, pads, read_len in one
            # store; len_op (bytes 0-3) is never touched.
            _RESPONSE.pack_into(mv, off + 4, cmd.cmd_id, 0, uflags, status, read_len)
            if status == CHECK_CONDITION:
                sense = result.sense[: abi.TCMU_SENSE_BUFFERSIZE]
                mv[off + 16 : off + 16 + len(sense)] = sense
                mv[off + 16 + len(sense) : off + 112] = _ZEROS[: 96 - len(sense)]
            self._done_pos = (slot_pos + slot_len) % self.cmdr_size
            if slots and not slots[0][2]:
                self._skip_leading_non_cmd()
            # cmd_tail is stored last, after every response byte (release order on x86),
            # in one aligned 4-byte store.
            self._words[_TAIL_WORD] = self._done_pos
            self._unnotified = True
        if notify:
            self.flush()

    def complete_many(self, done: list[tuple[Command, Result]]) -> None:
        """Post several results without notifying; call :meth:`flush` afterwards."""
        for cmd, result in done:
            self.complete(cmd, result, notify=False)

    def _skip_leading_non_cmd(self) -> None:
        """Move the published tail past PAD/TMR/unknown entries at its front (lock held)."""
        slots = self._slots
        moved = False
        while slots and not slots[0][2]:
            slot_pos, slot_len, _ = slots.popleft()
            self._done_pos = (slot_pos + slot_len) % self.cmdr_size
            moved = True
        if moved:
            self._words[_TAIL_WORD] = self._done_pos
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
