"""A block-range lock that makes COMPARE AND WRITE atomic.

Ordinary reads and writes take the range *shared*: they never wait for each other
(SCSI gives overlapping commands no ordering). COMPARE AND WRITE takes it
*exclusive*: it waits for the shared holders that overlap it, and shared requests
that overlap a waiting or running exclusive one wait for it, so a stream of
writes cannot starve it. Exclusive requests are served in arrival order among
overlapping ones, which rules out deadlock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


class RangeLock:
    """Shared/exclusive locking of half-open ranges ``[start, end)``."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._tickets = itertools.count()
        self._shared: dict[int, tuple[int, int]] = {}
        # Exclusive requests, waiting or holding, by arrival ticket.
        self._exclusive: dict[int, tuple[int, int]] = {}

    @contextmanager
    def shared(self, start: int, end: int) -> Iterator[None]:
        span = (start, end)
        with self._cond:
            while self._exclusive and any(
                _overlaps(span, other) for other in self._exclusive.values()
            ):
                self._cond.wait()
            ticket = next(self._tickets)
            self._shared[ticket] = span
        try:
            yield
        finally:
            with self._cond:
                del self._shared[ticket]
                if self._exclusive:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self, start: int, end: int) -> Iterator[None]:
        span = (start, end)
        with self._cond:
            ticket = next(self._tickets)
            self._exclusive[ticket] = span
            while self._blocked(ticket, span):
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                del self._exclusive[ticket]
                self._cond.notify_all()

    def _blocked(self, ticket: int, span: tuple[int, int]) -> bool:
        if any(_overlaps(span, other) for other in self._shared.values()):
            return True
        return any(
            other_ticket < ticket and _overlaps(span, other)
            for other_ticket, other in self._exclusive.items()
        )
