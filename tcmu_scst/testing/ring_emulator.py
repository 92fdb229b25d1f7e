"""The kernel's side of a TCMU ring, in Python, over an anonymous mapping.

A test double for the ring engine: it produces entries the way Linux 6.1's
``target_core_user`` does and collects completions the way the kernel does, so that
unit tests and benchmarks can drive :class:`tcmu_scst.kernel.ring.Ring` without the
real kernel. Each rule names the tcmu-abi.md section it encodes; the lab's kernel
tests check the same rules against the real kernel.

It also polices the consumer: a completion for an unknown cmd_id breaks the ring
(§2.5 rule 5), a changed ``len_op`` is reported, and free data blocks carry a canary
pattern so that a write outside a command's iovecs is detected.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tcmu_scst.kernel import abi

CANARY = 0xA5  # fill byte of free data blocks ("stale data" for READ_LEN tests)


class QueueFull(Exception):
    """No ring space or data blocks now: the kernel would park it on the qfull queue (§2.5.5)."""


class Refused(Exception):
    """The kernel refuses the command outright: INVALID FIELD IN CDB (§2.5.6)."""


class RingBroken(Exception):
    """The ring is broken (§2.5 rule 5): only reset_ring recovers."""


@dataclass
class Completion:
    """What the initiator receives for one command."""

    cmd_id: int
    status: int
    sense: bytes  # 96 bytes when status is CHECK CONDITION, else b""
    data_in: bytes  # exactly the bytes the kernel copies back to the initiator
    read_len: int | None  # rsp.read_len when TCMU_UFLAG_READ_LEN was set
    uflags: int
    cdb: bytes = b""  # the command's CDB (cmd_ids are reused; the CDB identifies it in tests)


@dataclass
class _Pending:
    cmd_id: int
    offset: int  # ring-relative entry offset
    length: int
    blocks: list[int]
    data_len: int  # Data-Out length (or Data-In length when not bidi)
    in_len: int  # Data-In length
    bidi: bool
    iovs: list[tuple[int, int]] = field(default_factory=list)
    cdb: bytes = b""


class RingEmulator:
    """Producer and completion collector of one TCMU ring (the kernel's part)."""

    def __init__(
        self,
        cmdr_size: int = 64 * 1024,
        data_size: int = 1024 * 1024,
        block_size: int = 4096,
        flags: int = 0xF,
        police: bool = True,
    ) -> None:
        if cmdr_size % abi.TCMU_OP_ALIGN_SIZE:
            raise ValueError("cmdr_size must be a multiple of 8 (§2.1)")
        self.cmdr_size = cmdr_size
        self.block_size = block_size
        self.data_off = abi.MAILBOX_SIZE + cmdr_size
        # The data area starts page aligned in the kernel (§2.6); keep that property.
        self.data_off = -(-self.data_off // mmap.PAGESIZE) * mmap.PAGESIZE
        self.map_size = self.data_off + data_size
        self.map = mmap.mmap(-1, self.map_size)
        self.mv = memoryview(self.map)
        self.nblocks = data_size // block_size
        self._free_blocks = [True] * self.nblocks
        self.mv[self.data_off :] = bytes([CANARY]) * (self.map_size - self.data_off)
        # Mailbox (§2.1): version 2, flags, cmdr_off 128, cmdr_size, head 0; tail 0.
        abi.MB_HEAD_FIELDS.pack_into(
            self.mv, 0, abi.TCMU_MAILBOX_VERSION, flags, abi.MAILBOX_SIZE, cmdr_size, 0
        )
        abi.MB_CMD_TAIL.pack_into(self.mv, abi.OFF_MB_CMD_TAIL, 0)
        self._lock = threading.RLock()
        self.head = 0
        self.last_cleaned = 0  # the kernel's private tail (cmdr_last_cleaned)
        self.pending: dict[int, _Pending] = {}
        self.by_offset: dict[int, tuple[int, int]] = {}  # offset -> (len_op, op) written
        self.completions: list[Completion] = []
        self.broken = False
        self.events = 0  # uio event counter: kernel -> user notifications
        self.notifications = 0  # user -> kernel writes
        self.problems: list[str] = []  # consumer misbehaviour detected
        self.police = police  # canary checks of free data blocks (off for benchmarks)
        self.on_event: Callable[[], None] | None = None  # uio_event_notify() hook

    # -- helpers --------------------------------------------------------------------
    def _space_free(self) -> int:
        # One byte is always kept free; head == tail means empty (§2.5.2).
        used = (self.head - self.last_cleaned) % self.cmdr_size
        return self.cmdr_size - used - 1

    def _alloc_id(self) -> int:
        # cmd_id range 1..65535, lowest free id first (xa_alloc, §2.2).
        for cmd_id in range(1, 0x10000):
            if cmd_id not in self.pending:
                return cmd_id
        raise QueueFull("no free cmd_id")

    def _alloc_blocks(self, nbytes: int) -> list[int]:
        need = -(-nbytes // self.block_size)
        free = [i for i, f in enumerate(self._free_blocks) if f][:need]
        if len(free) < need:
            raise QueueFull("data area full")
        for i in free:
            self._free_blocks[i] = False
        return free

    def _iovs(self, blocks: list[int], nbytes: int) -> list[tuple[int, int]]:
        """Consecutive blocks merge into one iovec (§2.6); bases are mmap offsets."""
        iovs: list[tuple[int, int]] = []
        left = nbytes
        for b in blocks:
            take = min(left, self.block_size)
            base = self.data_off + b * self.block_size
            if iovs and iovs[-1][0] + iovs[-1][1] == base:
                iovs[-1] = (iovs[-1][0], iovs[-1][1] + take)
            else:
                iovs.append((base, take))
            left -= take
        return iovs

    def _place(self, length: int) -> int:
        """Reserve ``length`` bytes at head, writing a PAD first if it would wrap (§2.5.3)."""
        if length > self.cmdr_size // 2:
            raise Refused(f"entry of {length} bytes is too big for the command ring (§2.5.6)")
        need = length
        if self.head + length > self.cmdr_size:
            need += self.cmdr_size - self.head
        if self._space_free() < need:
            raise QueueFull("command ring full")
        if self.head + length > self.cmdr_size:
            pad = self.cmdr_size - self.head
            off = abi.MAILBOX_SIZE + self.head
            self.mv[off : off + pad] = bytes(pad)
            abi.HDR.pack_into(self.mv, off, abi.len_op(pad, abi.TCMU_OP_PAD), 0, 0, 0)
            self.by_offset[self.head] = (abi.len_op(pad, abi.TCMU_OP_PAD), abi.TCMU_OP_PAD)
            self.head = 0
        return self.head

    def _publish(self, length: int) -> None:
        # Advance cmd_head (release) and raise the uio event (§2.5.4, §1.3).
        self.head = (self.head + length) % self.cmdr_size
        abi.MB_CMD_HEAD.pack_into(self.mv, abi.OFF_MB_CMD_HEAD, self.head)
        self.events += 1
        if self.on_event is not None:
            self.on_event()

    # -- producer -----------------------------------------------------------------------
    def submit(
        self,
        cdb: bytes,
        data_out: bytes = b"",
        data_in_len: int = 0,
        *,
        bidi: bool = False,
    ) -> int:
        """Queue one SCSI command; returns its cmd_id.

        ``data_out`` is the Data-Out payload (WRITE); ``data_in_len`` the initiator's
        expected Data-In length (READ). Both together only with ``bidi``.
        """
        with self._lock:
            if self.broken:
                raise RingBroken("ring is broken: new commands fail (§2.5 rule 5)")
            if data_out and data_in_len and not bidi:
                raise ValueError("a non-bidi command has one direction")
            cdb_len = abi.cdb_length(cdb[0], cdb[7] if len(cdb) > 7 else 0)
            if len(cdb) < cdb_len:
                raise ValueError(f"CDB shorter than its opcode's {cdb_len} bytes")
            cdb = cdb[:cdb_len]
            out_len = len(data_out)
            total = out_len + data_in_len
            if total > self.nblocks * self.block_size:
                raise Refused("data larger than the whole data area (§2.5.6)")
            # Data-area blocks first, then ring space (§2.5.1).
            nout = -(-out_len // self.block_size)
            nin = -(-data_in_len // self.block_size)
            blocks = self._alloc_blocks((nout + nin) * self.block_size) if total else []
            try:
                out_blocks = blocks[:nout]
                in_blocks = blocks[len(out_blocks) :]
                out_iovs = self._iovs(out_blocks, out_len) if out_len else []
                in_iovs = self._iovs(in_blocks, data_in_len) if data_in_len else []
                iov_cnt = len(out_iovs) if (bidi or out_len) else len(in_iovs)
                bidi_cnt = len(in_iovs) if bidi else 0
                iovs = (out_iovs + in_iovs) if bidi else (out_iovs or in_iovs)
                base = abi.cmd_entry_base_size(iov_cnt, bidi_cnt)
                length = abi.cmd_entry_size(iov_cnt, bidi_cnt, cdb_len)
                pos = self._place(length)
                cmd_id = self._alloc_id()
            except Exception:
                for b in blocks:
                    self._free_blocks[b] = True
                raise
            off = abi.MAILBOX_SIZE + pos
            self.mv[off : off + length] = bytes(length)  # the kernel zeroes the entry
            lo = abi.len_op(length, abi.TCMU_OP_CMD)
            abi.HDR.pack_into(self.mv, off, lo, cmd_id, 0, 0)
            cdb_off = abi.MAILBOX_SIZE + pos + base  # right after the base part (§2.3)
            abi.REQ.pack_into(self.mv, off + abi.OFF_REQ, iov_cnt, bidi_cnt, 0, cdb_off)
            for i, (ibase, ilen) in enumerate(iovs):
                iov_at = off + abi.OFF_REQ_IOV + i * abi.IOVEC_SIZE
                abi.IOVEC.pack_into(self.mv, iov_at, ibase, ilen)
            self.mv[cdb_off : cdb_off + cdb_len] = cdb
            done = 0
            for ibase, ilen in out_iovs:  # WRITE data is in place when the entry appears
                self.mv[ibase : ibase + ilen] = data_out[done : done + ilen]
                done += ilen
            self.pending[cmd_id] = _Pending(
                cmd_id, pos, length, blocks, out_len, data_in_len, bidi, in_iovs, cdb
            )
            self.by_offset[pos] = (lo, abi.TCMU_OP_CMD)
            self._publish(length)
            return cmd_id

    def submit_tmr(self, tmr_type: int, cmd_ids: list[int]) -> None:
        """Queue a TMR notification listing in-ring aborted commands (§2.4)."""
        with self._lock:
            length = abi.tmr_entry_size(len(cmd_ids))
            pos = self._place(length)
            off = abi.MAILBOX_SIZE + pos
            self.mv[off : off + length] = bytes(length)
            lo = abi.len_op(length, abi.TCMU_OP_TMR)
            abi.HDR.pack_into(self.mv, off, lo, 0, 0, 0)
            abi.TMR.pack_into(self.mv, off + abi.OFF_TMR, tmr_type, len(cmd_ids))
            for i, cid in enumerate(cmd_ids):
                ids_off = off + abi.OFF_TMR_IDS + 2 * i
                self.mv[ids_off : ids_off + 2] = cid.to_bytes(2, "little")
            self.by_offset[pos] = (lo, abi.TCMU_OP_TMR)
            self._publish(length)

    # -- completion collector -------------------------------------------------------------
    def notify(self) -> None:
        """The user wrote 4 bytes to the uio fd: collect completions (§1.3, §2.5.3)."""
        with self._lock:
            self.notifications += 1
            self.handle_completions()

    def handle_completions(self) -> list[Completion]:
        with self._lock:
            new: list[Completion] = []
            if self.broken:
                return new
            tail = abi.MB_CMD_TAIL.unpack_from(self.mv, abi.OFF_MB_CMD_TAIL)[0]
            while self.last_cleaned != tail:
                pos = self.last_cleaned
                off = abi.MAILBOX_SIZE + pos
                lo, cmd_id, _kflags, uflags = abi.HDR.unpack_from(self.mv, off)
                written = self.by_offset.get(pos)
                if written is None or written[0] != lo:
                    self.problems.append(f"len_op at {pos} changed or no entry there")
                    self.broken = True
                    break
                op = written[1]
                length = abi.entry_len(lo)
                if op in (abi.TCMU_OP_PAD, abi.TCMU_OP_TMR):
                    self.last_cleaned = (pos + length) % self.cmdr_size
                    del self.by_offset[pos]
                    continue
                pend = self.pending.get(cmd_id)
                if pend is None:
                    self.problems.append(f"cmd_id {cmd_id} not found, ring is broken")
                    self.broken = True
                    break
                new.append(self._collect(off, pend, uflags))
                self.last_cleaned = (pos + length) % self.cmdr_size
                del self.by_offset[pos]
            self.completions.extend(new)
            if self.police:
                self._check_canary()
            return new

    def _collect(self, off: int, pend: _Pending, uflags: int) -> Completion:
        status = self.mv[off + abi.OFF_RSP_SCSI_STATUS]
        read_len_field = abi.RSP_READ_LEN.unpack_from(self.mv, off + abi.OFF_RSP_READ_LEN)[0]
        sense = b""
        data_in = b""
        read_len: int | None = None
        copy_len = pend.in_len
        read_len_valid = bool(uflags & abi.TCMU_UFLAG_READ_LEN)
        if read_len_valid:  # §2.5 rule 7
            read_len = read_len_field
            copy_len = min(read_len_field, pend.in_len)
        if status == 0x02:
            sense = bytes(self.mv[off + abi.OFF_RSP_SENSE : off + abi.OFF_RSP_SENSE + 96])
        if pend.in_len and (status != 0x02 or read_len_valid):
            # Without READ_LEN the kernel copies the whole buffer, stale bytes included.
            chunks = []
            left = copy_len
            for ibase, ilen in pend.iovs or self._iovs(pend.blocks, pend.in_len):
                take = min(left, ilen)
                chunks.append(bytes(self.mv[ibase : ibase + take]))
                left -= take
            data_in = b"".join(chunks)
        self._release(pend)
        return Completion(pend.cmd_id, status, sense, data_in, read_len, uflags, pend.cdb)

    def _release(self, pend: _Pending) -> None:
        for b in pend.blocks:
            self._free_blocks[b] = True
            start = self.data_off + b * self.block_size
            # Freed pages keep their old bytes in the kernel: that is the stale data
            # READ_LEN protects against. Re-canary so stray writes can be detected.
            if self.police:
                self.mv[start : start + self.block_size] = bytes([CANARY]) * self.block_size
        del self.pending[pend.cmd_id]

    def _check_canary(self) -> None:
        canary = bytes([CANARY]) * self.block_size
        for b, free in enumerate(self._free_blocks):
            if free:
                start = self.data_off + b * self.block_size
                if self.mv[start : start + self.block_size] != canary:
                    self.problems.append(f"data block {b} written while it belonged to no command")
                    self.mv[start : start + self.block_size] = canary

    # -- actions ---------------------------------------------------------------------------------
    def reset_ring(self, how: int = 1) -> list[int]:
        """``action/reset_ring`` (§4.3): fail everything in the ring, head = tail = 0."""
        with self._lock:
            failed = sorted(self.pending)
            for pend in list(self.pending.values()):
                status = 0x08 if how == 1 else 0x02
                self.completions.append(
                    Completion(pend.cmd_id, status, b"", b"", None, 0, pend.cdb)
                )
                self._release(pend)
            self.head = 0
            self.last_cleaned = 0
            self.by_offset.clear()
            abi.MB_CMD_HEAD.pack_into(self.mv, abi.OFF_MB_CMD_HEAD, 0)
            abi.MB_CMD_TAIL.pack_into(self.mv, abi.OFF_MB_CMD_TAIL, 0)
            self.broken = False
            return failed

    def completion(self, cmd_id: int) -> Completion:
        """The last completion collected for ``cmd_id``."""
        for comp in reversed(self.completions):
            if comp.cmd_id == cmd_id:
                return comp
        raise KeyError(cmd_id)

    def close(self) -> None:
        """Unmap; fails with BufferError while a consumer still holds views of the map."""
        self.mv.release()
        self.map.close()
