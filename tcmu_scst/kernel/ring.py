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
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Final

from tcmu_scst.command import (
    CHECK_CONDITION,
    EMPTY_BUFFER,
    Command,
    CompletionSink,
    DataBuffer,
    Result,
    TmrNotice,
)
from tcmu_scst.errors import RingError
from tcmu_scst.kernel import abi
from tcmu_scst.kernel.fastpath import PlainPlan

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
# CDB length by opcode; 0 for VARIABLE LENGTH (0x7F), whose length is byte 7 + 8.
_CDB_LEN: Final = tuple(
    0 if op == abi.VARIABLE_LENGTH_CMD else abi.cdb_length(op) for op in range(256)
)
_SLACK_LEN: Final = _ENTRY_ONE_IOV.size
_SLACK: Final = bytes(_SLACK_LEN)
# One-iovec buffers kept for reuse (see Ring._buffer): enough for a deep queue of
# any command sizes; a ring that needs more just rebuilds some.
_BUFFER_CACHE_SIZE: Final = 4096


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
        # Ring positions of the CMD entries read and not yet answered, oldest first.
        # Everything between two of them (PAD, TMR, unknown ops) needs no answer, so
        # cmd_tail is always the oldest of these, or the read position when none is.
        self._pending: deque[int] = deque()
        self._inflight: dict[int, Command] = {}
        self._unnotified: bool = False
        self._malformed: list[Command] = []
        self._buffers: dict[int, DataBuffer] = {}  # iov_base -> one-iovec buffer
        self.generation: int = 0  # bumped by reset(); stale completions are dropped
        # Where the commands' complete() goes: this ring, or a runner in front of it
        # (set once, before the first fetch, instead of on every command).
        self.sink: CompletionSink = self

    # -- reading ------------------------------------------------------------------
    @property
    def head(self) -> int:
        """The kernel's producer index (one aligned 4-byte load: acquire on x86)."""
        return int(self._words[_HEAD_WORD])

    def has_entries(self) -> bool:
        """True when the kernel produced entries that :meth:`fetch` has not taken yet
        (one aligned 4-byte load; for the thread that fetches)."""
        return self._words[_HEAD_WORD] != self._read_pos

    def has_inflight(self) -> bool:
        """True while a command taken off the ring is not completed (no lock: a hint)."""
        return bool(self._inflight)

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
        head = self._words[_HEAD_WORD]  # (the head property, inline: once per wakeup)
        pos = self._read_pos
        if pos == head:
            return []
        cmdr_size = self.cmdr_size
        if head >= cmdr_size or head % 8:
            raise RingError(f"kernel cmd_head {head} outside a {cmdr_size}-byte ring")
        items: list[RingItem] = []
        pending: list[int] = []
        mv = self._mv
        cmdr_off = self.cmdr_off
        while pos != head:
            # The new entries up to head, or up to the end of the ring when the kernel
            # wrapped (a PAD fills the end then, §2.5.3), copied out in one call: their
            # CDBs and iovecs are ours from here on, whatever overwrites the slots.
            # Slack after them lets one struct call read a full entry's worth even at
            # a short PAD or TMR that ends the span: the ring's own next bytes when
            # the ring goes on (stale or being written: never parsed as entries),
            # zeros at its end (never a byte of the data area).
            end = head if head > pos else cmdr_size
            if end + _SLACK_LEN <= cmdr_size:
                span = mv[cmdr_off + pos : cmdr_off + end + _SLACK_LEN].tobytes()
            else:
                span = mv[cmdr_off + pos : cmdr_off + end].tobytes() + _SLACK
            self._parse_span(span, end - pos, pos, items, pending)
            pos = end % cmdr_size
        with self._lock:
            self._read_pos = pos
            queue = self._pending
            # cmd_tail moves only past leading PAD/TMR entries: not while an older CMD
            # is unanswered, nor when the first new entry is a CMD.
            moves = not queue and not (pending and pending[0] == self._done_pos)
            queue.extend(pending)
            if moves:
                self._publish_tail()
        if self._malformed:
            # The kernel never produces these; if it ever does, fail the command
            # rather than touch memory it did not give us.
            bad = self._malformed[:]
            self._malformed.clear()
            self.complete_many([(cmd, _INTERNAL_FAILURE) for cmd in bad])
            bad_ids = set(map(id, bad))
            items = [i for i in items if id(i) not in bad_ids]
        return items

    def serve_plain(
        self, accelerator: ModuleType, plan: PlainPlan, histogram: Any
    ) -> tuple[int, int]:
        """Answer the leading plain READ/WRITE entries with the compiled path
        (:mod:`tcmu_scst.kernel.fastpath`): ``(commands, bytes moved)``. Ring thread only.

        Only while no command taken earlier is unanswered: each response then goes in
        its entry's own slot, the one out-of-order completion would give it. cmd_tail
        moves past them in one store after their bytes; the caller flushes.
        """
        pos = self._read_pos
        head = self._words[_HEAD_WORD]
        if self._pending or head == pos:  # (no lock: only this thread adds)
            return 0, 0
        new_pos, served, moved = accelerator.serve_plain(
            self._mv, self.cmdr_off, self.cmdr_size, pos, head, plan.fd, plan.block_size,
            plan.blocks, plan.max_blocks, plan.writes_ok, plan.fua_ok, plan.rwf_flags,
            plan.max_read_bytes, plan.reject10, plan.reject16, histogram,
        )
        if new_pos != pos:  # served commands, or skipped PADs
            with self._lock:
                self._read_pos = new_pos
                self._publish_tail()
        return int(served), int(moved)

    def _parse_span(
        self, span: bytes, span_len: int, pos: int, items: list[RingItem], pending: list[int]
    ) -> None:
        """Parse the entries copied out of ring positions ``[pos, pos + span_len)``.

        The hot path: one ``struct`` call per entry reads the header, the request and
        the first iovec; a command with at most one iovec and its CDB in its entry
        (all the kernel produces but scattered and bidirectional buffers) is built
        right here, its buffer a cached view. Commands enter ``_inflight`` before
        anyone can complete them: nobody sees them until ``fetch`` returns.
        """
        # Where the span sits in the mapping, for the absolute offsets the kernel
        # writes (cdb_off and iov_base are offsets from the start of the mapping).
        span_base = self.cmdr_off + pos
        unpack_entry = _ENTRY_ONE_IOV.unpack_from
        cdb_len_of = _CDB_LEN
        buffers = self._buffers
        inflight = self._inflight
        generation = self.generation
        sink = self.sink
        rel = 0
        while rel < span_len:
            lo, cmd_id, _kf, _uf, iov_cnt, bidi_cnt, _dif, cdb_off, base0, len0 = unpack_entry(
                span, rel
            )
            length = lo & ~7
            entry_end = rel + length
            if length < 8 or entry_end > span_len:
                raise RingError(
                    f"ring entry at {pos + rel} has length {length}: entries never wrap, "
                    "never cross cmd_head and are >= 8 bytes; the ring is corrupt"
                )
            if lo & 7 == abi.TCMU_OP_CMD:
                cdb_at = cdb_off - span_base  # in the span
                data: DataBuffer | None = None
                if iov_cnt <= 1 and not bidi_cnt and rel + 48 + 16 * iov_cnt <= cdb_at < entry_end:
                    opcode = span[cdb_at]
                    cdb_end = cdb_at + (cdb_len_of[opcode] or span[cdb_at + 7] + 8)
                    if cdb_end <= entry_end:  # else the slow path says why
                        if iov_cnt == 0:
                            data = EMPTY_BUFFER
                        else:
                            data = buffers.get(base0)
                            if data is None or data.length != len0:
                                data = self._buffer(base0, len0)
                if data is not None:
                    cmd = Command(cmd_id, span[cdb_at:cdb_end], data, None, None, sink, generation)
                else:
                    cmd = self._parse_command(span, rel, span_base)
                inflight[cmd_id] = cmd
                items.append(cmd)
                pending.append(pos + rel)
            elif lo & 7 == abi.TCMU_OP_TMR:
                items.append(self._parse_tmr(span_base + rel, length))
            elif lo & 7 != abi.TCMU_OP_PAD:
                self._mv[span_base + rel + abi.OFF_HDR_UFLAGS] |= abi.TCMU_UFLAG_UNKNOWN_OP
                log.warning("ring entry at %d has unknown op %d: skipped", pos + rel, lo & 7)
            rel = entry_end

    def _parse_command(self, span: bytes, rel: int, span_base: int) -> Command:
        """Any CMD entry, every field checked (scattered, bidirectional, or malformed)."""
        fields = _ENTRY_ONE_IOV.unpack_from(span, rel)
        lo, cmd_id, _kf, _uf, iov_cnt, bidi_cnt, _dif, cdb_off = fields[:8]
        length = lo & ~7
        cdb = b"\x00"
        problem = ""
        views: list[memoryview] = []
        if 48 + 16 * (iov_cnt + bidi_cnt) > length:
            problem = f"{iov_cnt}+{bidi_cnt} iovecs overflow a {length}-byte entry"
        else:
            cdb_rel = cdb_off - span_base
            opcode = span[cdb_rel] if rel + 48 <= cdb_rel < rel + length else -1
            if opcode >= 0:
                clen = _CDB_LEN[opcode] or span[cdb_rel + 7] + 8
            if opcode >= 0 and cdb_rel + clen <= rel + length:
                cdb = span[cdb_rel : cdb_rel + clen]
            else:
                cdb, problem = self._read_cdb(cdb_off)
            if not problem:
                views, problem = self._read_iovecs(span, rel, iov_cnt + bidi_cnt)
        cmd = Command(cmd_id, cdb, EMPTY_BUFFER, None, None, self.sink, self.generation)
        if problem:
            log.error("cmd_id %d: %s; failing the command", cmd_id, problem)
            self._malformed.append(cmd)
        elif views:
            cmd.data = DataBuffer(views[:iov_cnt])
            cmd.bidi_in = DataBuffer(views[iov_cnt:]) if bidi_cnt else None
        return cmd

    def _read_cdb(self, cdb_off: int) -> tuple[bytes, str]:
        """A CDB outside its entry (the kernel never does that): checked, from the map."""
        if not self.cmdr_off <= cdb_off < self.data_off - 8:
            return b"\x00", f"CDB offset {cdb_off} outside the command ring"
        mv = self._mv
        opcode = mv[cdb_off]
        clen = _CDB_LEN[opcode] or mv[cdb_off + 7] + 8
        if cdb_off + clen > self.data_off:
            return b"\x00", f"{clen}-byte CDB at {cdb_off} runs past the command ring"
        return mv[cdb_off : cdb_off + clen].tobytes(), ""

    def _read_iovecs(self, span: bytes, rel: int, count: int) -> tuple[list[memoryview], str]:
        views: list[memoryview] = []
        iov_off = rel + abi.OFF_REQ_IOV
        for _ in range(count):
            ibase, ilen = _IOVEC.unpack_from(span, iov_off)
            iov_off += 16
            if ibase < self.data_off or ibase + ilen > self.map_size:
                return [], f"iovec {ibase:#x}+{ilen} outside the data area"
            views.append(self._mv[ibase : ibase + ilen])
        return views, ""

    def _buffer(self, base: int, length: int) -> DataBuffer | None:
        """The one-iovec buffer at ``base``, kept for reuse.

        The kernel hands out the lowest free data blocks first, so the same few
        (base, length) pairs come back all the time; a buffer is only a view of the
        mapping, immutable, and so shareable by commands that are never in flight at
        the same time over the same bytes. Bounded: cleared when it grows large.
        """
        if base < self.data_off or base + length > self.map_size:
            return None  # outside the data area: _parse_command says why
        if len(self._buffers) >= _BUFFER_CACHE_SIZE:
            self._buffers.clear()
        buf = self._buffers[base] = DataBuffer([self._mv[base : base + length]], length)
        return buf

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
        self.complete_many(((cmd, result),), notify=notify)

    def complete_many(
        self, done: Iterable[tuple[Command, Result]], *, notify: bool = False
    ) -> None:
        """Post several results under one lock and one ``cmd_tail`` store.

        Without ``notify`` the kernel is not told; call :meth:`flush` afterwards
        (the ring loop does, once per batch). With it, it is as :meth:`flush` does.
        """
        mv = self._mv
        cmdr_off = self.cmdr_off
        pack_response = _RESPONSE.pack_into
        read_len_flag = abi.TCMU_UFLAG_READ_LEN
        with self._lock:
            inflight = self._inflight
            oldest = self._pending.popleft
            posted = False
            for cmd, (status, sense, data_in) in done:
                cmd_id = cmd.cmd_id
                if inflight.get(cmd_id) is not cmd:
                    self._drop(cmd)
                    continue
                del inflight[cmd_id]
                status &= 0xFF
                if data_in is None:
                    uflags = read_len = 0
                else:
                    uflags = read_len_flag
                    if 0 < data_in <= cmd.data.length and cmd.bidi_in is None:
                        read_len = data_in  # the common case, decided inline
                    else:
                        read_len = self._read_len(cmd, status, data_in)
                # The oldest pending CMD slot takes the response ("steals" it, §2.5).
                off = cmdr_off + oldest()
                # cmd_id, kflags (the kernel's 0), uflags, status, pads, read_len in one
                # store; len_op (bytes 0-3) is never touched.
                pack_response(mv, off + 4, cmd_id, 0, uflags, status, read_len)
                if status == CHECK_CONDITION:
                    sense = sense[: abi.TCMU_SENSE_BUFFERSIZE]
                    mv[off + 16 : off + 16 + len(sense)] = sense
                    mv[off + 16 + len(sense) : off + 112] = _ZEROS[: 96 - len(sense)]
                posted = True
            if posted:
                self._publish_tail()
            if notify:  # flush() without taking the lock again
                notify = self._unnotified
                self._unnotified = False
        if notify:
            self._notify_kernel()

    def _publish_tail(self) -> None:
        """Move cmd_tail to the oldest unanswered command, or to the read position
        (lock held). Entries before it are answered CMDs and PAD/TMR entries."""
        tail = self._pending[0] if self._pending else self._read_pos
        if tail != self._done_pos:
            self._done_pos = tail
            # cmd_tail is stored last, after every response byte (release order on
            # x86), in one aligned 4-byte store.
            self._words[_TAIL_WORD] = tail
            self._unnotified = True

    def _drop(self, cmd: Command) -> None:
        if cmd.generation != self.generation:
            log.info("cmd_id %d completed after a ring reset: dropped", cmd.cmd_id)
        else:
            log.error("cmd_id %d completed twice or unknown: dropped", cmd.cmd_id)

    @staticmethod
    def _read_len(cmd: Command, status: int, data_in: int) -> int:
        """READ_LEN for a Data-In completion: exactly what the handler produced."""
        target = cmd.bidi_in if cmd.bidi_in is not None else cmd.data
        buf_len = target.length
        if 0 < data_in <= buf_len:
            return data_in
        if data_in > 0:
            return buf_len
        if buf_len and status == 0:
            # The kernel treats read_len 0 as "complete normally" and would send the
            # whole buffer, stale bytes included: send zeros instead.
            target.fill_zero()
            return buf_len
        return 0

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
            self._pending.clear()
            self.generation += 1
            self._read_pos = 0
            self._done_pos = 0
            self._unnotified = False
        return dropped
