"""A bound on how long an asynchronous backend operation may keep a command.

librados fails an operation the cluster does not answer after
``rados_osd_op_timeout``, but only operations it has sent: librbd also queues I/O
internally, and there nothing times out. A write that needs the image's exclusive
lock while the header's watch is broken (an OSD that stopped answering for longer
than the watch's ping timeout) waits "until the watch is registered again", i.e. as
long as the cluster is away. A command left in the ring that long makes the Linux
initiator time it out, abort it and reset the LUN, and its writer sits in D state.

So each operation gets a deadline of its own, checked by one watchdog thread (not a
thread per command): whichever comes first, the backend's completion or the
deadline, answers; the other is ignored. An operation answered by its deadline is
*abandoned*: the backend still owns it (its buffer is the backend's copy, never the
ring's), and :attr:`Deadlines.abandoned` counts them until the backend finishes them,
so the handler can refuse new I/O meanwhile (nothing new is queued behind them, and
no newer write can overtake a stale one), and the backend can replace a client that
no longer finishes anything (:attr:`Deadlines.on_abandon`). The abandoned operations
of a replaced backend are *retired* (:meth:`Deadlines.retire_abandoned`): no longer
counted, and once the last of them ends, whoever replaced it is told, so that it
can release what the old backend holds.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: The watchdog's resolution: a deadline is answered at most this late.
TICK = 0.25


class Retired:
    """Abandoned operations of a replaced backend: ``on_drained`` runs (on the thread
    of the last one's completion) once they all ended."""

    __slots__ = ("ops", "on_drained")

    def __init__(self, ops: set[Op], on_drained: Callable[[], None]) -> None:
        self.ops = ops
        self.on_drained = on_drained


class Op:
    """One operation under a deadline: :meth:`claim` by whoever answers first."""

    __slots__ = ("_owner", "_claimed", "_abandoned", "_retired", "on_expire")

    def __init__(self, owner: Deadlines, on_expire: Callable[[], None]) -> None:
        self._owner = owner
        self._claimed = False
        self._abandoned = False
        self._retired: Retired | None = None
        self.on_expire = on_expire

    def claim(self) -> bool:
        """The backend finished the operation: True when it is still unanswered (the
        caller answers now), False when the deadline answered it already."""
        return self._owner._settle(self)


class Deadlines:
    """Deadlines of ``timeout`` seconds (None: none at all) for backend operations."""

    def __init__(self, timeout: float | None, name: str,
                 clock: Callable[[], float] = time.monotonic, *, watchdog: bool = True) -> None:
        """``watchdog=False``: no thread; the caller runs :meth:`expire_due` (a test on
        a fake clock, which a watchdog would race)."""
        self.timeout = timeout
        self._name = name
        self._clock = clock
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, Op]] = []
        self._seq = itertools.count()
        self._abandoned: set[Op] = set()
        self._closed = False
        self._watchdog = watchdog
        #: Called (on the watchdog thread) each time operations were abandoned.
        self.on_abandon: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None

    @property
    def abandoned(self) -> int:
        """Operations answered by their deadline that the backend has not finished."""
        return len(self._abandoned)

    def retire_abandoned(self, on_drained: Callable[[], None]) -> int:
        """Stop counting the abandoned operations (their backend was fenced off and
        replaced); ``on_drained`` runs once the last of them ended (at once, on this
        thread, when there are none). Returns how many there were."""
        with self._lock:
            ops, self._abandoned = self._abandoned, set()
            if ops:
                group = Retired(ops, on_drained)
                for op in ops:
                    op._retired = group
        if not ops:
            on_drained()
        return len(ops)

    def start(self, on_expire: Callable[[], None]) -> Op:
        """Register an operation about to be submitted; ``on_expire`` answers it if the
        deadline passes first (it runs on the watchdog thread)."""
        op = Op(self, on_expire)
        if self.timeout is None:
            return op
        with self._lock:
            idle = not self._heap
            heapq.heappush(self._heap, (self._clock() + self.timeout, next(self._seq), op))
            if self._thread is None and self._watchdog and not self._closed:
                self._thread = threading.Thread(target=self._watch, daemon=True,
                                                name=f"deadline-{self._name}")
                self._thread.start()
            if idle:  # every deadline is as long: only an idle watchdog must look again
                self._lock.notify()
        return op

    def _settle(self, op: Op) -> bool:
        drained: Callable[[], None] | None = None
        with self._lock:
            if not op._claimed:
                op._claimed = True  # its heap entry is skipped when it comes up
                return True
            if op._abandoned:
                op._abandoned = False
                group = op._retired
                if group is not None:
                    group.ops.discard(op)
                    if not group.ops:
                        drained = group.on_drained
                else:
                    self._abandoned.discard(op)
                    if not self._abandoned:
                        log.warning("%s: the backend finished every abandoned operation",
                                    self._name)
        if drained is not None:
            drained()
        return False

    def expire_due(self) -> int:
        """Answer every operation whose deadline has passed; returns how many."""
        due: list[Op] = []
        with self._lock:
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                op = heapq.heappop(self._heap)[2]
                if not op._claimed:
                    op._claimed = op._abandoned = True
                    self._abandoned.add(op)
                    due.append(op)
        for op in due:
            try:
                op.on_expire()
            except Exception:  # the watchdog must go on answering the others
                log.exception("%s: answering an operation past its deadline failed", self._name)
        if due:
            log.warning("%s: %d operation(s) got no answer from the backend within %g s: "
                        "answered as timed out, left to the backend", self._name, len(due),
                        self.timeout)
            if self.on_abandon is not None:
                self.on_abandon()
        return len(due)

    def _watch(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (not self._heap or self._heap[0][0] > self._clock()):
                    wait = self._heap[0][0] - self._clock() if self._heap else None
                    self._lock.wait(wait)
                if self._closed:
                    return
            self.expire_due()
            # Under load a deadline comes due for every operation (most of them long
            # answered): look at most every TICK seconds, not once per operation.
            with self._lock:
                if not self._closed:
                    self._lock.wait(TICK)

    def close(self) -> None:
        """Stop the watchdog (operations still pending are no longer bounded)."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
