"""A block-range lock that makes COMPARE AND WRITE atomic.

Ordinary reads and writes take the range *shared*: they never wait for each other
(SCSI gives overlapping commands no ordering). COMPARE AND WRITE takes it
*exclusive*: it waits for the shared holders that overlap it, and shared requests
that overlap a waiting or running exclusive one wait for it, so a stream of
writes cannot starve it. Exclusive requests are served in arrival order among
overlapping ones, which rules out deadlock.

The holders are plain objects with ``__enter__``/``__exit__`` rather than
``contextlib`` generators: every I/O command takes one, and that is measurably
cheaper on the hot path.
"""

from __future__ import annotations

import itertools
import threading
from types import TracebackType


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


class _Hold:
    __slots__ = ("_lock", "_span", "_exclusive", "_ticket")

    def __init__(self, lock: RangeLock, span: tuple[int, int], exclusive: bool) -> None:
        self._lock = lock
        self._span = span
        self._exclusive = exclusive
        self._ticket = -1

    def __enter__(self) -> None:
        if self._exclusive:
            self._ticket = self._lock._acquire_exclusive(self._span)
        else:
            self._ticket = self._lock._acquire_shared(self._span)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock._release(self._ticket, self._exclusive)


class RangeLock:
    """Shared/exclusive locking of half-open ranges ``[start, end)``."""

    def __init__(self) -> None:
        # Taken directly where nobody waits or is woken: a Lock's own context manager
        # costs a fraction of the Condition's Python-level one, on every I/O command.
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._tickets = itertools.count()
        self._shared: dict[int, tuple[int, int]] = {}
        # Exclusive requests, waiting or holding, by arrival ticket.
        self._exclusive: dict[int, tuple[int, int]] = {}

    def exclusive_held(self) -> bool:
        """True while an exclusive request waits or holds (a hint: no lock taken)."""
        return bool(self._exclusive)

    def shared(self, start: int, end: int) -> _Hold:
        """``with lock.shared(a, b):`` — coexists with other shared holders."""
        return _Hold(self, (start, end), False)

    def exclusive(self, start: int, end: int) -> _Hold:
        """``with lock.exclusive(a, b):`` — alone on the range."""
        return _Hold(self, (start, end), True)

    def acquire_shared(self, start: int, end: int) -> int:
        """Take a shared hold without a ``with`` block (an I/O that completes on
        another thread, or the flat data path); returns the ticket to give
        :meth:`release_shared`.

        Without the mutex while no exclusive request exists (always, but around a
        COMPARE AND WRITE): the hold is announced first, then exclusive requests are
        looked for. An exclusive request announces itself first (under the mutex),
        then looks at a snapshot of the shared holds; each step is one dict
        operation, atomic under the GIL, so of two racing sides at least one sees
        the other: either this one backs out and waits below, or the exclusive one
        waits until :meth:`release_shared` wakes it.
        """
        span = (start, end)
        ticket = next(self._tickets)
        self._shared[ticket] = span
        if not self._exclusive:
            return ticket
        self.release_shared(ticket)
        return self._acquire_shared(span)

    def release_shared(self, ticket: int) -> None:
        del self._shared[ticket]
        if self._exclusive:  # it may wait for this hold: wake it (under the mutex)
            with self._mutex:
                self._cond.notify_all()

    def _acquire_shared(self, span: tuple[int, int]) -> int:
        with self._mutex:
            if self._exclusive:
                while any(_overlaps(span, other) for other in self._exclusive.values()):
                    self._cond.wait()
            ticket = next(self._tickets)
            self._shared[ticket] = span
            return ticket

    def _acquire_exclusive(self, span: tuple[int, int]) -> int:
        with self._cond:
            ticket = next(self._tickets)
            self._exclusive[ticket] = span
            while self._blocked(ticket, span):
                self._cond.wait()
            return ticket

    def _release(self, ticket: int, exclusive: bool) -> None:
        if not exclusive:
            self.release_shared(ticket)
            return
        with self._mutex:
            del self._exclusive[ticket]
            self._cond.notify_all()

    def _blocked(self, ticket: int, span: tuple[int, int]) -> bool:
        # A snapshot (one C call): acquire_shared adds holds without the mutex.
        if any(_overlaps(span, other) for other in list(self._shared.values())):
            return True
        return any(
            other_ticket < ticket and _overlaps(span, other)
            for other_ticket, other in self._exclusive.items()
        )
