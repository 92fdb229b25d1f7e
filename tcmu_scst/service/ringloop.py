"""One thread serving the rings of many devices, instead of a ring thread per device.

Each :class:`~tcmu_scst.service.device.DeviceRunner` normally runs its own loop
(``runner.run()`` on a thread of its own). With many devices those threads take
turns at the GIL on every UIO event, and each switch costs more than the commands it
serves. A :class:`SharedRingLoop` polls every device's UIO fd from one thread and
drains the ready rings there; each runner keeps its worker threads for the I/O that
would block (``Handler.try_inline`` declines it), which complete from their threads
as before.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time

from tcmu_scst.errors import UioError
from tcmu_scst.kernel.ring import Ring
from tcmu_scst.service.device import DeviceRunner

log = logging.getLogger(__name__)

#: How often a quiesced runner's ring is looked at again (a handler swap lasts
#: milliseconds to seconds; the ring's commands wait for it either way).
_DEFERRED_RETRY_MS = 5

#: Busy polling, seconds (see SharedRingLoop.spin). Measured in the lab VM at 4 KiB
#: QD1 (vdisk-bench-2026-12-07-0858): 0.68x tcmu-runner without, 1.15x with 300 us,
#: 1.24x with 1 ms, each at less CPU per I/O than sleeping in poll(): the wake-up
#: (a context switch into the process) costs more than the wait. 300 us bounds what
#: a command of sparse traffic can cost.
DEFAULT_SPIN = 300e-6


class SharedRingLoop:
    """Call :meth:`run` on a thread; :meth:`add` and :meth:`remove` runners from others."""

    def __init__(self, spin: float = DEFAULT_SPIN) -> None:
        self._lock = threading.Lock()
        self._runners: dict[int, DeviceRunner] = {}  # UIO fd -> runner
        self._leaving: list[tuple[DeviceRunner, threading.Event]] = []
        self._stopping = False
        # Bumped (under the lock) by every change above: the loop looks at the set
        # of runners again only then, not on every wake-up.
        self._version = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        #: Busy polling: after a wake-up that served a ring, and when no served ring
        #: has a command in flight (on a worker, or completing asynchronously: those
        #: threads need the GIL this loop would hold), watch the rings' heads for up to
        #: this many seconds before sleeping in poll() (0: never). Only the wait is
        #: skipped: a new entry is then taken through poll() and the event read as
        #: always, so no wake-up is lost.
        self.spin = spin

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # already due to wake up

    def add(self, runner: DeviceRunner) -> None:
        """Serve ``runner``'s ring from this loop (its workers start now)."""
        runner.start_workers()
        with self._lock:
            self._runners[runner.port.fileno()] = runner
            self._version += 1
        self._wake()

    def remove(self, runner: DeviceRunner, timeout: float | None = 30.0) -> bool:
        """Stop serving ``runner``: a last drain on the loop, then its workers finish
        every command they hold. False if the loop did not let go within ``timeout``
        (None: wait as long as it takes)."""
        done = threading.Event()
        with self._lock:
            self._runners.pop(runner.port.fileno(), None)
            self._leaving.append((runner, done))
            self._version += 1
        self._wake()
        released = done.wait(timeout)
        runner.finish()
        return released

    def stop(self) -> None:
        """End :meth:`run` once every runner was removed."""
        with self._lock:
            self._stopping = True
            self._version += 1
        self._wake()

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)

    def run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        served: dict[int, DeviceRunner] = {}
        # Rings whose event was consumed while their runner was quiesced (a handler
        # swap): drained again every few milliseconds until it resumes.
        deferred: set[int] = set()
        seen_version = -1
        spun = False  # a ring was served since the last poll (busy polling, see spin)
        while True:
            if self._version != seen_version:  # (read without the lock: a hint)
                with self._lock:
                    if self._stopping and not self._runners and not self._leaving:
                        break
                    seen_version = self._version
                    wanted = dict(self._runners)
                    leaving, self._leaving = self._leaving, []
                for fd in served.keys() - wanted.keys():
                    poller.unregister(fd)
                for runner, done in leaving:
                    self._drain(runner, wait=True)  # what arrived before it was removed
                    done.set()
                for fd, runner in wanted.items():
                    if served.get(fd) is runner:
                        continue
                    # New (an fd number may come back for another device: by identity).
                    poller.register(fd, select.POLLIN)
                    if self._drain(runner) is None:  # entries queued before it was added
                        deferred.add(fd)
                served = wanted
                deferred &= served.keys()
            if deferred:  # (rare: tested before copying the set on every wakeup)
                for fd in list(deferred):
                    drained = self._drain(served[fd], event=False)
                    if drained is not None:
                        deferred.discard(fd)
                    if drained is False:
                        self._forget(fd)
            if spun and not deferred:
                spun = False
                self._watch([runner.ring for runner in served.values()])
            for fd, _mask in poller.poll(_DEFERRED_RETRY_MS if deferred else None):
                if fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 64)
                    except BlockingIOError:
                        pass
                    continue
                ready = served.get(fd)
                if ready is None:
                    continue
                spun = self.spin > 0
                drained = self._drain(ready)
                if drained is None:
                    deferred.add(fd)
                elif not drained:
                    self._forget(fd)

    def _watch(self, rings: list[Ring]) -> bool:
        """Busy polling: wait for up to :attr:`spin` seconds for an entry on one of
        ``rings`` (the caller then polls as always). False, at once, when a ring has
        a command in flight: its worker needs the GIL to complete it."""
        if not self.spin or any(ring.has_inflight() for ring in rings):
            return False
        end = time.monotonic() + self.spin
        while time.monotonic() < end:
            if any(ring.has_entries() for ring in rings):
                break  # poll() returns at once: the kernel's event is due
        return True

    def _forget(self, fd: int) -> None:
        """A device whose ring is gone: not polled again (the daemon detaches it)."""
        with self._lock:
            self._runners.pop(fd, None)
            self._version += 1

    @staticmethod
    def _drain(
        runner: DeviceRunner, *, event: bool = True, wait: bool = False
    ) -> bool | None:
        """Consume the event, then drain (no wakeup is lost). False if the device is
        gone; None if its runner is quiesced (drain it again later) unless ``wait``."""
        if runner.gone:
            return False
        try:
            if event:
                runner.port.read_event()
            if wait:
                runner.drain()
            elif runner.try_drain() is None:
                return None
        except UioError as err:
            runner.gone = str(err)
            log.warning("ring of %s stopped: %s", type(runner.handler).__name__, err)
            return False
        return True
