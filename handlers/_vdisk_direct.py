"""O_DIRECT I/O that works for any request, aligned or not.

Direct I/O needs the file offset, the length and every memory segment aligned to
the device's logical block size. The ring's data area is page aligned, so most
commands qualify and go straight to ``preadv``/``pwritev``; the rest (a 512-byte
block on a 4 KiB-sector disk, a ``bytes`` object from WRITE SAME, an odd iovec)
go through an aligned bounce buffer (anonymous mmap: page aligned). An unaligned
write is a read-modify-write of the partial units at its ends, so every write
holds a range lock over the aligned units it touches: two writers sharing a unit
must not each write back the other's stale bytes.

SCST 0.9.6 ignored O_DIRECT ("doesn't work currently"); this module is why ours
does.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ._vdisk_sys import buffer_address


class RangeLock:
    """Mutual exclusion over byte ranges: holders of overlapping ranges take turns."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: list[tuple[int, int]] = []

    def _overlaps(self, start: int, end: int) -> bool:
        return any(s < end and start < e for s, e in self._held)

    @contextmanager
    def hold(self, start: int, end: int) -> Iterator[None]:
        with self._cond:
            while self._overlaps(start, end):
                self._cond.wait()
            self._held.append((start, end))
        try:
            yield
        finally:
            with self._cond:
                self._held.remove((start, end))
                self._cond.notify_all()


def _floor(value: int, align: int) -> int:
    return value - value % align


def _ceil(value: int, align: int) -> int:
    return _floor(value + align - 1, align)


def _copy_views(dst: Sequence[memoryview], src: memoryview) -> None:
    """Scatter ``src`` over the ``dst`` segments (their total length equals len(src))."""
    pos = 0
    for view in dst:
        n = len(view)
        view[:] = src[pos : pos + n]
        pos += n


def _gather_views(src: Sequence[memoryview], dst: memoryview) -> None:
    pos = 0
    for view in src:
        n = len(view)
        dst[pos : pos + n] = view
        pos += n


def _zero(views: Sequence[memoryview], skip: int) -> None:
    """Zero everything after the first ``skip`` bytes of ``views``."""
    pos = 0
    for view in views:
        n = len(view)
        if pos + n > skip:
            lo = max(skip - pos, 0)
            view[lo:] = bytes(n - lo)
        pos += n


def _skip(views: Sequence[memoryview], done: int) -> list[memoryview]:
    out: list[memoryview] = []
    pos = 0
    for view in views:
        n = len(view)
        if pos + n > done:
            out.append(view[max(done - pos, 0) :])
        pos += n
    return out


class DirectIO:
    """Reads and writes on an O_DIRECT descriptor, bouncing what is not aligned.

    ``buffered_fd`` (the same file without O_DIRECT) serves only the bytes past the
    last whole alignment unit of a regular file whose size is not a multiple of
    ``align``: a direct write there would have to extend the file. A block device
    (``block_device``) is written direct everywhere.
    The ``flags`` given to :meth:`write` go to every ``pwritev`` (RWF_DSYNC for FUA).
    """

    def __init__(
        self, fd: int, buffered_fd: int, align: int, *, block_device: bool = False
    ) -> None:
        self.fd = fd
        self.buffered_fd = buffered_fd
        self.align = align
        #: A block device never grows and its fstat size is 0: every unit goes direct.
        self.block_device = block_device
        self.locks = RangeLock()
        self.bounced = 0  # requests that went through a bounce buffer (tests, stats)
        # Direct I/O straight from/to the caller's memory needs the kernel to pin its
        # pages; should some mapping refuse (EFAULT), we bounce everything from then on.
        self.zero_copy = True

    # -- alignment -------------------------------------------------------------

    def is_aligned(self, offset: int, views: Sequence[memoryview]) -> bool:
        a = self.align
        if offset % a or not self.zero_copy:
            return False
        for view in views:
            addr = buffer_address(view)
            if addr is None or addr % a or len(view) % a:
                return False
        return True

    # -- read ------------------------------------------------------------------

    def read(self, offset: int, views: Sequence[memoryview]) -> int:
        """Fill ``views`` from ``offset``; bytes past the end of the file read as zeros.

        Returns how many bytes the file held (less than asked: it ends early)."""
        length = sum(len(v) for v in views)
        if length == 0:
            return 0
        if not self.is_aligned(offset, views):
            return self._bounce_read(offset, views, length)
        try:
            return self._direct_read(offset, views, length)
        except OSError as exc:
            if exc.errno != errno.EFAULT:
                raise
            self.zero_copy = False
            return self._bounce_read(offset, views, length)

    def _direct_read(self, offset: int, views: Sequence[memoryview], length: int) -> int:
        got = 0
        rest: list[memoryview] = list(views)
        while got < length:
            n = os.preadv(self.fd, rest, offset + got)
            if n == 0:
                break  # end of file: the rest reads as zeros
            got += n
            if got < length and got % self.align:
                # An unaligned short read happens only at the end of the file; what
                # follows cannot be read direct, so let the bounce path finish it.
                return got + self._bounce_read(offset + got, _skip(views, got), length - got)
            rest = _skip(views, got)
        if got < length:
            _zero(views, got)
        return got

    def _bounce_read(self, offset: int, views: Sequence[memoryview], length: int) -> int:
        self.bounced += 1
        a0 = _floor(offset, self.align)
        a1 = _ceil(offset + length, self.align)
        bounce = aligned_buffer(a1 - a0)
        got = self._pread_full(bounce, a0)  # a short read leaves the buffer's zeros
        _copy_views(views, bounce[offset - a0 : offset - a0 + length])
        return max(0, min(length, got - (offset - a0)))

    def _pread_full(self, bounce: memoryview, file_offset: int) -> int:
        """Direct read into a page-aligned buffer until it is full or the file ends."""
        total = len(bounce)
        got = 0
        while got < total:
            n = os.preadv(self.fd, [bounce[got:]], file_offset + got)
            got += n
            if n == 0 or n % self.align:
                break
        return got

    # -- write -----------------------------------------------------------------

    def write(self, offset: int, views: Sequence[memoryview], flags: int) -> None:
        length = sum(len(v) for v in views)
        if length == 0:
            return
        a0 = _floor(offset, self.align)
        a1 = _ceil(offset + length, self.align)
        with self.locks.hold(a0, a1):
            # Units past the file's last whole unit cannot be written direct without
            # growing the file; they go through the page cache.
            # (Issue 14: a block device's st_size is 0, so every BLOCKIO write went
            # through the page cache: GOOD even with the disk offline.)
            direct_end = a1 if self.block_device else min(
                a1, _floor(os.fstat(self.fd).st_size, self.align))
            if self.is_aligned(offset, views) and offset + length <= direct_end:
                try:
                    pwritev_all(self.fd, views, offset, flags)
                    return
                except OSError as exc:
                    if exc.errno != errno.EFAULT:
                        raise
                    self.zero_copy = False  # redo it all through a bounce buffer
            self.bounced += 1
            if direct_end > offset:
                self._rmw(offset, views, min(offset + length, direct_end), flags)
            split = max(direct_end - offset, 0)
            if split < length:
                tail = _skip(views, split)
                pwritev_all(self.buffered_fd, tail, offset + split, flags)

    def _rmw(self, offset: int, views: Sequence[memoryview], end: int, flags: int) -> None:
        """Write ``views``' first ``end - offset`` bytes at ``offset`` via a bounce buffer."""
        a = self.align
        a0 = _floor(offset, a)
        a1 = _ceil(end, a)
        mv = aligned_buffer(a1 - a0)
        # Bring in the old contents of the partial units at either end.
        if offset != a0:
            _pread_unit(self.fd, mv[0:a], a0)
        if end != a1 and (a1 - a != a0 or offset == a0):
            _pread_unit(self.fd, mv[a1 - a0 - a : a1 - a0], a1 - a)
        _gather_views(_take(views, end - offset), mv[offset - a0 : end - a0])
        pwritev_all(self.fd, [mv], a0, flags)


def aligned_buffer(size: int) -> memoryview:
    """A zeroed, page-aligned buffer (anonymous mmap), freed when the last view goes."""
    # Not closed explicitly: slices handed to preadv/pwritev may still be referenced,
    # and closing an mmap with live exports raises BufferError.
    return memoryview(mmap.mmap(-1, size))


def _take(views: Sequence[memoryview], length: int) -> list[memoryview]:
    out: list[memoryview] = []
    pos = 0
    for view in views:
        if pos >= length:
            break
        out.append(view[: length - pos])
        pos += len(out[-1])
    return out


def _pread_unit(fd: int, unit: memoryview, file_offset: int) -> None:
    n = os.preadv(fd, [unit], file_offset)
    if n < len(unit):
        unit[n:] = bytes(len(unit) - n)


def pwritev_all(fd: int, views: Sequence[memoryview], offset: int, flags: int) -> None:
    """``pwritev`` until everything is written (short writes continue where they stop)."""
    length = sum(len(v) for v in views)
    done = 0
    rest: list[memoryview] = list(views)
    while done < length:
        n = os.pwritev(fd, rest, offset + done, flags)
        if n <= 0:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        done += n
        rest = _skip(views, done)
