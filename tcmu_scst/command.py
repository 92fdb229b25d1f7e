"""One SCSI command as the ring hands it over, and the result a handler gives back.

This is the vocabulary shared by the ring engine (``kernel.ring``), the SCSI emulation
(``scsi``) and the handlers. It imports nothing else from the package.

Data buffers are ``memoryview`` slices of the UIO mapping, one per iovec the kernel
gave. They are only valid until the command is completed; a handler must not keep
them afterwards.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

# SAM status codes (the real values; CHECK CONDITION is 2, not Linux's old >>1 value).
GOOD = 0x00
CHECK_CONDITION = 0x02
CONDITION_MET = 0x04
BUSY = 0x08
RESERVATION_CONFLICT = 0x18
TASK_SET_FULL = 0x28
ACA_ACTIVE = 0x30
TASK_ABORTED = 0x40


class Direction(enum.Enum):
    """Data transfer direction, from the target's point of view."""

    NONE = "none"
    OUT = "out"  # initiator -> target (WRITE): the buffer holds data on arrival
    IN = "in"  # target -> initiator (READ): we fill the buffer
    BIDI = "bidi"


class Result(NamedTuple):
    """What a handler answers for a command.

    ``data_in_len`` is how many bytes of Data-In the handler placed at the start of
    the command's buffer. The ring tells the kernel exactly that many (READ_LEN), so
    bytes the handler did not write never reach the initiator. ``None`` means the
    command transfers no Data-In.

    (A NamedTuple rather than a dataclass: one is built per command on the hot path.)
    """

    status: int = GOOD
    sense: bytes = b""
    data_in_len: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == GOOD


RESULT_GOOD = Result()

# Results are immutable: one GOOD-with-Data-In result per length serves every read
# of that length (building a NamedTuple costs as much as parsing a ring entry).
_DATA_IN_RESULTS: dict[int, Result] = {}
_DATA_IN_RESULTS_MAX = 4096


def data_in_result(length: int) -> Result:
    """GOOD with ``length`` bytes of Data-In (a shared, cached :class:`Result`)."""
    result = _DATA_IN_RESULTS.get(length)
    if result is None:
        if len(_DATA_IN_RESULTS) >= _DATA_IN_RESULTS_MAX:
            _DATA_IN_RESULTS.clear()
        result = _DATA_IN_RESULTS[length] = Result(GOOD, b"", length)
    return result


class DataBuffer:
    """A scatter list over the shared mapping (one memoryview per iovec)."""

    __slots__ = ("views", "length")

    def __init__(self, views: Sequence[memoryview], length: int = -1) -> None:
        self.views: list[memoryview] = views if isinstance(views, list) else list(views)
        self.length: int = length if length >= 0 else sum(map(len, self.views))

    def __len__(self) -> int:
        return self.length

    def slices(self, offset: int = 0, length: int | None = None) -> list[memoryview]:
        """The views covering ``[offset, offset+length)``, for preadv/pwritev."""
        if length is None:
            length = self.length - offset
        if offset < 0 or length < 0 or offset + length > self.length:
            raise ValueError(f"range {offset}+{length} outside a {self.length}-byte buffer")
        if offset == 0 and length == self.length:
            return self.views
        out: list[memoryview] = []
        pos = 0
        end = offset + length
        for view in self.views:
            vlen = len(view)
            if pos + vlen > offset and pos < end:
                lo = max(offset - pos, 0)
                hi = min(end - pos, vlen)
                out.append(view[lo:hi])
            pos += vlen
            if pos >= end:
                break
        return out

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        """Copy ``length`` bytes out of the buffer (Data-Out parameter lists, writes)."""
        return b"".join(bytes(v) for v in self.slices(offset, length))

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> int:
        """Copy ``data`` into the buffer at ``offset``; returns the bytes written.

        Data that does not fit is cut at the end of the buffer (SCSI allocation-length
        semantics); the return value tells how much went in.
        """
        room = max(self.length - offset, 0)
        mv = memoryview(data)[:room]
        done = 0
        for view in self.slices(offset, len(mv)):
            n = len(view)
            view[:] = mv[done : done + n]
            done += n
        return done

    def fill_zero(self, offset: int = 0, length: int | None = None) -> None:
        for view in self.slices(offset, length):
            view[:] = bytes(len(view))

    def preadv(self, fd: int, file_offset: int, offset: int = 0, length: int | None = None) -> int:
        """Read from ``fd`` at ``file_offset`` straight into the buffer; returns bytes read."""
        if offset == 0 and (length is None or length == self.length):
            views, want = self.views, self.length  # the common case: the whole buffer
        else:
            views = self.slices(offset, length)
            want = sum(map(len, views))
        got = os.preadv(fd, views, file_offset)
        while 0 < got < want:  # short read: continue where it stopped
            rest = DataBuffer(views).slices(got)
            n = os.preadv(fd, rest, file_offset + got)
            if n == 0:
                break
            got += n
        return got

    def pwritev(self, fd: int, file_offset: int, offset: int = 0, length: int | None = None) -> int:
        """Write the buffer's bytes to ``fd`` at ``file_offset``; returns bytes written."""
        if offset == 0 and (length is None or length == self.length):
            views, want = self.views, self.length
        else:
            views = self.slices(offset, length)
            want = sum(map(len, views))
        done = os.pwritev(fd, views, file_offset)
        while done < want:
            rest = DataBuffer(views).slices(done)
            done += os.pwritev(fd, rest, file_offset + done)
        return done


EMPTY_BUFFER = DataBuffer(())


class CompletionSink(Protocol):
    """Where a command's result goes: the ring that produced it."""

    def complete(self, cmd: Command, result: Result, *, notify: bool = ...) -> None: ...


class Command:
    """A SCSI command taken off the ring.

    ``data`` covers the first ``iov_cnt`` iovecs: Data-Out contents for a write,
    Data-In space for a read. For bidirectional commands ``bidi_in`` is the Data-In
    part. The direction itself is not in the ring entry; the SCSI layer derives it
    from the CDB.

    :meth:`complete` hands the result back to the ring. It may be called from any
    thread, exactly once.
    """

    __slots__ = ("cmd_id", "cdb", "data", "bidi_in", "generation", "_sink", "_callback")

    def __init__(
        self,
        cmd_id: int,
        cdb: bytes,
        data: DataBuffer = EMPTY_BUFFER,
        bidi_in: DataBuffer | None = None,
        complete: Callable[[Result], None] | None = None,
        sink: CompletionSink | None = None,
        generation: int = 0,
    ) -> None:
        self.cmd_id = cmd_id
        self.cdb = cdb
        self.data = data
        self.bidi_in = bidi_in
        self._callback = complete
        self._sink = sink  # the ring (or a runner in front of it) that takes the result
        self.generation = generation  # the ring generation it came from (see Ring.reset)

    def complete(self, result: Result) -> None:
        """Post the result (thread-safe; exactly once)."""
        if self._sink is not None:
            self._sink.complete(self, result)
        elif self._callback is not None:
            self._callback(result)
        else:
            raise RuntimeError("command is not attached to a ring")

    @property
    def opcode(self) -> int:
        return self.cdb[0]

    def __repr__(self) -> str:
        return f"Command(id={self.cmd_id}, cdb={self.cdb.hex()}, data={self.data.length})"


@dataclass(frozen=True, slots=True)
class TmrNotice:
    """A task-management notification from the ring (informational, tcmu-abi §2.4).

    Every listed command must still be completed normally; the kernel ignores the
    status it gets for an aborted command.
    """

    tmr_type: int
    cmd_ids: tuple[int, ...]
