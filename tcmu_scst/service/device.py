"""The per-device runner: ring loop on one thread, blocking I/O on worker threads.

::

    UIO event -> Ring.fetch() -> inline commands: handler on the ring thread
                               -> I/O commands:   queue -> worker threads -> handler
              <- Ring.complete() from either side, Ring.flush() once per batch

The ring loop never blocks on disk: a handler says which commands are cheap
(:meth:`Handler.is_inline`); I/O commands are first tried on the ring thread without
waiting (:meth:`Handler.try_inline`: a page-cache hit through RWF_NOWAIT, a memory
file system), and the ones that would wait go to ``threads`` workers (SCST's
``scst_threads``). With ``threads=0`` everything runs on the ring thread.
"""

from __future__ import annotations

import array
import itertools
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from tcmu_scst.command import CHECK_CONDITION, Command, Result, TmrNotice
from tcmu_scst.errors import UioError
from tcmu_scst.handler import Handler
from tcmu_scst.kernel import fastpath
from tcmu_scst.kernel.ring import Ring
from tcmu_scst.kernel.uio import UioInfo
from tcmu_scst.service import units
from tcmu_scst.service.trace import CommandTracer

log = logging.getLogger(__name__)

#: HARDWARE ERROR / INTERNAL TARGET FAILURE, for a handler that raised.
HANDLER_FAILURE: Final = Result(
    CHECK_CONDITION, bytes([0x70, 0, 0x04, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x44, 0x00, 0, 0, 0, 0])
)


class RingPort(Protocol):
    """The two I/O primitives of a ring plus its mapping (a UioDevice, or a test double)."""

    map: Any

    def fileno(self) -> int: ...

    def read_event(self) -> int | None: ...

    def notify(self) -> None: ...


# The histogram bucket (the size rounded up to a power of 2) of the common sizes.
_BUCKETS: Final = {size: 1 << (size - 1).bit_length() for size in (512, 4096, 65536, 1 << 20)}


class Stats:
    """Counters the control socket and the shell's /sgv and /sessions read.

    Two sets, summed when read: the ring thread's (commands it answers inline) and
    the rest (workers, asynchronous completions, TMRs) under ``lock``. The ring
    thread's are written only under its runner's dispatch lock, one writer at a
    time, so they need no lock of their own: one lock less per ring wakeup.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._commands = 0
        self._errors = 0  # CHECK CONDITION answers
        self.handler_failures = 0  # exceptions escaping a handler
        self.tmrs = 0
        self._histogram: dict[int, int] = {}  # data size rounded up to a power of 2
        self._inline_commands = 0
        self._inline_errors = 0
        self._inline_histogram: dict[int, int] = {}
        # The compiled path's counts, also the ring thread's: commands, and by data
        # size (index k: rounded up to 1 << k bytes), written by C into the array.
        self.compiled_commands = 0
        self.compiled_histogram = array.array("Q", bytes(8 * fastpath.HISTOGRAM_LEN))

    @property
    def commands(self) -> int:
        return self._commands + self._inline_commands + self.compiled_commands

    @property
    def errors(self) -> int:
        return self._errors + self._inline_errors

    @property
    def size_histogram(self) -> dict[int, int]:
        """Commands by data size rounded up to a power of 2 (a copy)."""
        merged = dict(self._histogram)  # (dict() copies in one step under the GIL)
        for bucket, count in dict(self._inline_histogram).items():
            merged[bucket] = merged.get(bucket, 0) + count
        for k, count in enumerate(self.compiled_histogram.tolist()):
            if count:
                merged[1 << k] = merged.get(1 << k, 0) + count
        return merged

    def count(self, cmd: Command, result: Result) -> None:
        """Count one completion from any thread."""
        size = cmd.data.length
        bucket = _bucket(size)
        with self.lock:
            self._commands += 1
            if result.status == CHECK_CONDITION:
                self._errors += 1
            self._histogram[bucket] = self._histogram.get(bucket, 0) + 1

    def count_inline(self, done: list[tuple[Command, Result]]) -> None:
        """Count the ring thread's batch (the caller holds the dispatch lock)."""
        histogram = self._inline_histogram
        buckets = _BUCKETS
        for cmd, result in done:
            size = cmd.data.length
            bucket = buckets.get(size)
            if bucket is None:
                bucket = _bucket(size)
            histogram[bucket] = histogram.get(bucket, 0) + 1
            if result.status == CHECK_CONDITION:
                self._inline_errors += 1
        self._inline_commands += len(done)


def _bucket(size: int) -> int:
    """``size`` rounded up to a power of 2 (0 for none)."""
    return 1 << (size - 1).bit_length() if size > 0 else 0


#: The compiled path notifies the kernel at once after a round that moved this many
#: bytes (the copies took long enough that holding the answers costs more latency than
#: a notify costs CPU); smaller rounds are answered with the wake-up's one notify.
FLUSH_AFTER_BYTES: Final = 256 << 10


class DeviceRunner:
    """Serves one TCMU device: call :meth:`run` on a thread, :meth:`stop` from another."""

    def __init__(self, port: RingPort, handler: Handler, threads: int = 2) -> None:
        if threads < 0:
            raise ValueError("threads must be >= 0")
        self.port = port
        self.handler = handler
        self.threads = threads
        self.ring = Ring(port.map, port.notify)
        self.ring.sink = self  # completions (sync or async) are counted on their way
        self.stats = Stats()
        # SCST trace_level for this device (service.trace); None: nothing per command.
        self.tracer: CommandTracer | None = None
        self._queue: queue.SimpleQueue[Command | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._workers_lock = threading.Lock()
        self._retiring = 0  # workers sent a None that have not taken it yet
        self._worker_ids = itertools.count()
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Held by the ring thread while it takes commands off the ring and dispatches
        # them (inline ones run under it); quiesce() holds it so nothing new starts.
        self._dispatch_lock = threading.Lock()
        self.gone = ""  # why the device stopped being servable, if it did
        # Try I/O commands on the ring thread first (Handler.try_inline): a page-cache
        # hit costs no hand-off to a worker. False: every I/O command goes to one.
        self.try_inline = True
        # The compiled path (tcmu_scst.kernel.fastpath) when built and not switched
        # off; the handler decides per wake-up what it may answer (Handler.plain_plan).
        self.accelerator = fastpath.ACCELERATOR

    # -- lifecycle -----------------------------------------------------------------
    def start_workers(self) -> None:
        with self._workers_lock:
            self._spawn(self.threads)

    def _spawn(self, count: int) -> None:
        for _ in range(count):
            t = threading.Thread(
                target=self._worker, name=f"tcmu-io-{next(self._worker_ids)}", daemon=True
            )
            t.start()
            self._workers.append(t)

    def set_threads(self, count: int) -> None:
        """Change the worker count while serving (SCST's ``/proc/scsi_tgt/threads``).

        New workers start at once; surplus ones leave after the commands queued before
        them (a ``None`` each). With 0, new commands run on the ring thread.
        """
        if count < 0:
            raise ValueError("threads must be >= 0")
        with self._workers_lock:
            if self._stopping.is_set():
                self.threads = count
                return
            running = len(self._workers) - self._retiring
            if count > running:
                self._spawn(count - running)
            self.threads = count
            for _ in range(running - count):
                self._retiring += 1
                self._queue.put(None)

    def run(self) -> None:
        """The ring loop: returns after :meth:`stop` once every command is completed."""
        if not self._workers:
            self.start_workers()
        poller = select.poll()
        poller.register(self.port.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while not self._stopping.is_set():
                # Consume the event first, then drain: no wakeup is lost (tcmu-abi §1.3).
                self.port.read_event()
                self.drain()
                # Only stop() writes the wake pipe, and nothing empties it: once
                # stopping, poll returns at once (a stop() during drain() included).
                if not self._stopping.is_set():
                    poller.poll()
            self.drain()
        except UioError as err:
            # The device went away under us (its uio unregistered without REMOVED, e.g.
            # a hot-unplug): nothing more can be completed; let the daemon let go of it.
            self.gone = str(err)
            log.warning("ring loop stopped: %s", err)
        finally:
            self._shutdown_workers()

    def stop(self) -> None:
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def finish(self) -> None:
        """Let the workers complete what they hold, then stop them (a runner served by
        a shared loop, which calls this instead of :meth:`run` returning)."""
        self._shutdown_workers()

    def _shutdown_workers(self) -> None:
        with self._workers_lock:
            workers = list(self._workers)
            for _ in range(len(workers) - self._retiring):
                self._queue.put(None)
        for t in workers:
            t.join()
        with self._workers_lock:
            self._workers.clear()
            self._retiring = 0
        if not self.gone:
            try:
                self.ring.flush()
            except UioError as err:
                self.gone = str(err)

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)

    def quiesce(self, timeout: float) -> bool:
        """Stop taking commands off the ring and wait until none is in flight.

        In flight means fetched and not completed: inline commands, queued ones, those
        a worker runs and those a handler completes later. True: the handler is
        unreachable until :meth:`resume` (which the caller must call). False: the wait
        timed out (a command is stuck); nothing is held and serving goes on.
        """
        deadline = time.monotonic() + timeout
        if not self._dispatch_lock.acquire(timeout=max(timeout, 0.0)):
            return False
        while self.ring.inflight > 0:
            if time.monotonic() >= deadline:
                self._dispatch_lock.release()
                return False
            time.sleep(0.002)
        return True

    def resume(self) -> None:
        """Undo a successful :meth:`quiesce`: the ring thread takes what queued meanwhile
        (the kernel's notifications are still pending on the UIO fd)."""
        self._dispatch_lock.release()

    # -- the data path -----------------------------------------------------------------
    def drain(self) -> int:
        """Take every new entry off the ring and dispatch it; returns commands taken."""
        with self._dispatch_lock:
            return self._take()

    def try_drain(self) -> int | None:
        """:meth:`drain`, or None at once while :meth:`quiesce` holds the ring (a
        shared loop must not wait for one device's handler swap)."""
        if not self._dispatch_lock.acquire(False):  # (positional: the faster call)
            return None
        try:
            return self._take()
        finally:
            self._dispatch_lock.release()

    def _take(self) -> int:
        """What a wake-up does (dispatch lock held): the compiled path answers the
        leading plain READ/WRITEs it may, then every other entry is dispatched.

        The compiled path goes on with what arrived meanwhile, as long as it serves
        something: one notify for the whole wake-up, as the Python path's batch. Except
        after large transfers (``FLUSH_AFTER_BYTES``): those answers go to the kernel at
        once, or a 1 MiB WRITE would wait for the next ones' copies (0.61x tcmu-runner
        at 1 MiB QD4 in ``vdisk-bench-2026-12-07-1634``, held for the batch).
        """
        served = 0
        accelerator = self.accelerator
        if accelerator is not None and self.try_inline and self.tracer is None:
            plan = self.handler.plain_plan()
            if plan is not None:
                ring = self.ring
                histogram = self.stats.compiled_histogram
                while True:
                    count, moved = ring.serve_plain(accelerator, plan, histogram)
                    if not count:
                        break
                    served += count
                    if moved >= FLUSH_AFTER_BYTES:
                        ring.flush()
                self.stats.compiled_commands += served
        return served + self._dispatch(self.ring.fetch())

    def _dispatch(self, items: list[Command | TmrNotice]) -> int:
        taken = 0
        inline_done: list[tuple[Command, Result]] = []
        tracer = self.tracer
        handler = self.handler
        # Looked up once per batch: every command passes here.
        run_all = self.threads == 0
        is_inline = handler.is_inline
        try_inline = handler.try_inline if self.try_inline else None
        queue_put = self._queue.put
        for item in items:
            if isinstance(item, TmrNotice):
                with self.stats.lock:
                    self.stats.tmrs += 1
                if tracer is not None:
                    tracer.tmr(item)
                self._call_tmr(item)
                continue
            taken += 1
            if tracer is not None:
                tracer.received(item)
            if run_all or is_inline(item):
                result = self._execute(item)
                if result is None:
                    continue  # the handler completes it asynchronously
            else:
                # I/O: on this thread if it needs no waiting, else on a worker.
                if try_inline is None:
                    result = None
                else:
                    try:
                        result = try_inline(item)
                    except Exception:
                        result = self._handler_failed(item)
                if result is None:
                    queue_put(item)
                    continue
            if tracer is not None:
                tracer.completed(item, result)
            inline_done.append((item, result))
        # Inline results go out together: one lock for the counters, one for the
        # ring and one cmd_tail store.
        if inline_done:
            self.stats.count_inline(inline_done)
            self.ring.complete_many(inline_done, notify=True)  # and what workers posted
        else:
            self.ring.flush()
        return taken

    def _worker(self) -> None:
        while True:
            cmd = self._queue.get()
            if cmd is None:
                with self._workers_lock:
                    self._workers.remove(threading.current_thread())
                    if self._retiring:
                        self._retiring -= 1
                return
            result = self._execute(cmd)
            if result is not None:
                self._finish(cmd, result, notify=True)

    def _execute(self, cmd: Command) -> Result | None:
        """``handler.handle(cmd)``; a handler bug becomes HARDWARE ERROR."""
        try:
            return self.handler.handle(cmd)
        except Exception:
            return self._handler_failed(cmd)

    def _handler_failed(self, cmd: Command) -> Result:
        """What a handler that raised on ``cmd`` answers (inside ``except``): HARDWARE
        ERROR, logged and counted."""
        log.exception("handler %s failed on %r", type(self.handler).__name__, cmd)
        with self.stats.lock:
            self.stats.handler_failures += 1
        return HANDLER_FAILURE

    def _finish(self, cmd: Command, result: Result, notify: bool) -> None:
        self.complete(cmd, result, notify=notify)

    def complete(self, cmd: Command, result: Result, *, notify: bool = True) -> None:
        """Where ``cmd.complete(result)`` lands, from any thread (CompletionSink)."""
        self.stats.count(cmd, result)
        tracer = self.tracer
        if tracer is not None:  # before the ring: the buffers are still ours
            tracer.completed(cmd, result)
        try:
            self.ring.complete(cmd, result, notify=notify)
        except UioError as err:
            # The notify write failed: the device is gone; the ring loop stops too.
            if not self.gone:
                self.gone = str(err)
                log.warning("completion notify failed: %s", err)
            self.stop()

    def _call_tmr(self, notice: TmrNotice) -> None:
        try:
            self.handler.on_tmr(notice)
        except Exception:
            log.exception("handler %s failed on %r", type(self.handler).__name__, notice)


def serve_in_thread(
    port: RingPort, handler: Handler, threads: int, name: str, stop_wait: float = 30.0
) -> tuple[DeviceRunner, Callable[[], None]]:
    """Run a :class:`DeviceRunner` for ``port`` on a thread of its own.

    Returns the runner and ``stop``.

    ``stop()`` drains in-flight commands, then closes the runner, the handler and the
    port (which must have ``close()``); after ``stop_wait`` seconds it returns and
    leaves the closing to :func:`close_when_stopped`. For tools and tests that serve one device
    without the daemon (kernel tests, the compliance runner, benchmarks).
    """
    runner = DeviceRunner(port, handler, threads=threads)
    info = getattr(port, "info", None)  # a UioDevice: EXTENDED COPY may reach it
    configfs_dir = info.configfs_dir if isinstance(info, UioInfo) else None
    if configfs_dir is not None:
        units.UNITS.serve(configfs_dir, handler)
    thread = threading.Thread(target=runner.run, name=f"ring-{name}", daemon=True)
    thread.start()

    def stop() -> None:
        if configfs_dir is not None:
            units.UNITS.forget(configfs_dir)
        runner.stop()
        thread.join(stop_wait)
        close_when_stopped(thread, f"ring-{name}", runner.close, handler.close,
                           port.close)  # type: ignore[attr-defined]

    return runner, stop


def close_when_stopped(thread: threading.Thread, what: str, *closers: Callable[[], None]) -> None:
    """Run ``closers`` once ``thread`` (a ring thread told to stop) has ended.

    A command stuck in its handler (a pass-through device that does not answer) keeps
    the ring thread running: closing the handler or the UIO fd under it would turn its
    I/O into EBADF, or into I/O on whatever file reuses the fd number. Then a reaper
    thread closes when the command returns, and the caller goes on.
    """

    def close_all() -> None:
        thread.join()
        for close in closers:
            try:
                close()
            except Exception:
                log.exception("%s: closing after stop failed", what)

    if not thread.is_alive():
        close_all()
        return
    log.warning("%s still runs a command: closing it when the command returns", what)
    threading.Thread(target=close_all, name=f"reap-{what}", daemon=True).start()
