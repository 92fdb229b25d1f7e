"""``tcmu-scst daemon``: the TCMU handler process.

It reacts to the kernel's TCM-USER netlink events and serves one ring per device:

* start-up recovery (tcmu-abi §3.4, §4.3): block netlink, release writers stuck
  waiting for a dead daemon, announce reply support, then for every existing device
  of ours ``block_dev`` -> ``reset_ring`` -> attach -> unblock, and unblock netlink;
* ADDED / REMOVED / RECONFIG answered with exactly the matching ``*_DONE`` and the
  event's DEVICE_ID, after the work is done (the kernel's writer waits for it);
* events for devices whose dev_config names a handler we do not own are left alone;
* SIGTERM/SIGINT: every device drained and closed, reply support withdrawn so that
  configfs writes never hang while no daemon runs.

The main loop is single-threaded (netlink, signals, control socket, hot-plug, timers);
this module is the event handling and the control API, service.devices the devices'
lifecycle (open, serve, swap, close) and service.messages the control protocol.
Devices whose handler never waits on the ring thread (``Handler.shares_ring_loop``:
vdisk and the perf handlers) are served by one shared ring thread (service.ringloop):
with a thread per ring, many devices' threads take turns at the GIL on every event.
Every other device (pass-through: a device that stops answering must not stall the
others) has a ring thread of its own.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tcmu_scst import __version__
from tcmu_scst.errors import ConfigError, HandlerError, TcmuScstError
from tcmu_scst.handler import Handler
from tcmu_scst.kernel import uio
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.dbroot import default_kernel_root, ensure_metadata_dirs
from tcmu_scst.kernel.lio import UserBackstore
from tcmu_scst.kernel.netlink import (
    AddedDevice,
    DeviceEvent,
    ReconfigDevice,
    RemovedDevice,
    TcmuModuleParams,
    TcmuNetlink,
)
from tcmu_scst.service import registry
from tcmu_scst.service.control import DEFAULT_SOCKET, ControlError, ControlServer
from tcmu_scst.service.devices import DeviceSet, DeviceState, ServedDevice, ServedPort
from tcmu_scst.service.hotplug import Hotplug
from tcmu_scst.service.instance import DEFAULT_LOCK, InstanceLock
from tcmu_scst.service.messages import (
    Answer,
    DeviceStatus,
    GetStatus,
    HotplugQuery,
    Ping,
    Pong,
    Request,
    Rescan,
    SetThreads,
    SetTraceLevel,
    Status,
    ThreadsSet,
    TraceLevels,
)
from tcmu_scst.service.ringloop import DEFAULT_SPIN
from tcmu_scst.service.sizewatch import SIZE_WATCH_EVERY, SizeWatch, Watched
from tcmu_scst.service.trace import (
    ROOT,
    CommandTracer,
    TraceDecorations,
    TraceFlags,
    TraceStore,
    effective_mask,
)

log = logging.getLogger(__name__)

# How long a stopping daemon keeps answering netlink for its own configfs writes (a
# hot-plug apply adds or removes a handful of backstores, a size-watch round writes
# dev_size), each answered in milliseconds.
SHUTDOWN_DRAIN_SECONDS = 30.0


def errno_of(err: BaseException) -> int:
    """The negative errno the kernel gets back for a failed request."""
    if isinstance(err, OSError) and err.errno:
        return -err.errno
    cause = err.__cause__
    if isinstance(cause, OSError) and cause.errno:
        return -cause.errno
    if isinstance(err, FileNotFoundError):
        return -errno.ENOENT
    if isinstance(err, HandlerError | ConfigError):
        return -errno.EINVAL
    return -errno.EIO


class Daemon:
    """Owns every TCMU device whose subtype is in the registry."""

    def __init__(
        self,
        *,
        configfs: Configfs | None = None,
        netlink: TcmuNetlink | None = None,
        module_params: TcmuModuleParams | None = None,
        sysfs_uio: Path = uio.SYSFS_UIO,
        dev_dir: Path = uio.DEV_DIR,
        control_socket: Path | None = DEFAULT_SOCKET,
        threads: int = 2,
        open_handler: Callable[[str], Handler] = registry.open_handler,
        owns: Callable[[str], bool] = registry.owns,
        open_port: Callable[[uio.UioInfo], ServedPort] = uio.UioDevice,
        state_file: Path | None = None,
        materialize_every: float = 2.0,
        hotplug: Hotplug | None = None,
        trace_file: Path | None = None,
        decorations: TraceDecorations | None = None,
        lock_file: Path | None = DEFAULT_LOCK,
        quiesce_wait: float = 5.0,
        detach_wait: float = 2.0,
        kernel_root: Path | None = None,
        share_ring_loop: bool = True,
        size_watch_every: float = SIZE_WATCH_EVERY,
        busy_poll: float = DEFAULT_SPIN,
    ) -> None:
        self.cfs = configfs or Configfs()
        self.netlink = netlink if netlink is not None else TcmuNetlink()
        self.params = module_params or TcmuModuleParams()
        self.sysfs_uio = sysfs_uio
        self.dev_dir = dev_dir
        self.control_path = control_socket
        self.trace_levels: dict[str, int] = {}  # SCST trace_level masks set by the shell
        self.trace_file = trace_file  # where the shell keeps them; read at start
        self.decorations = decorations  # the log handler's pid/function/line filter
        self._log_levels: dict[str, int] = {}  # logger levels before 'debug' tracing
        self._seen_threads: int | None = None  # the state file's threads, last read
        self.owns = owns
        self.selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.control: ControlServer | None = None
        # Work other threads hand back to the main loop (e.g. a handler swap's answer).
        self._main_calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self._timer_due: dict[int, float] = {}
        self.reply_supported = False
        # SCST's Default group in LIO "case C" (lio-and-scst.md §2.4): unknown
        # initiators get an ACL with the default LUN map, polled from the main loop.
        self.state_file = state_file
        self.materialize_every = materialize_every
        self.size_watch = SizeWatch(self._size_watched)
        self.size_watch_every = size_watch_every
        self.hotplug = hotplug  # udev events (service.hotplug); None: netlink only
        # One daemon per kernel (service.instance); None only for tests' fakes.
        self.instance = InstanceLock(lock_file) if lock_file is not None else None
        # Where the target core's threads see <dbroot>/pr (kernel.dbroot); None: the
        # real kernel's for the real configfs, nothing for a fake tree.
        self.kernel_root = kernel_root if kernel_root is not None else default_kernel_root(self.cfs)
        self.lifecycle = DeviceSet(
            configfs=self.cfs,
            open_handler=open_handler,
            owns=owns,
            open_port=open_port,
            post=self._later,
            on_open=self._trace_device,
            threads=threads,
            share_ring_loop=share_ring_loop,
            busy_poll=busy_poll,
            quiesce_wait=quiesce_wait,
            detach_wait=detach_wait,
        )
        self.devices = self.lifecycle.served  # (hba, name) -> ServedDevice

    @property
    def threads(self) -> int:
        """Worker threads per device (SCST's scst_threads)."""
        return self.lifecycle.threads

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Take the single-instance lock, join netlink, recover existing devices, open
        the control socket. Raises :class:`AlreadyRunning` before touching the kernel
        if another daemon serves it."""
        if self.instance is not None:
            self.instance.acquire()
        try:
            self._start()
        except BaseException:
            if self.instance is not None:
                self.instance.release()
            raise

    def _start(self) -> None:
        try:
            for path in ensure_metadata_dirs(self.cfs, self.kernel_root):
                log.info("created %s for the target core's PR/ALUA metadata", path)
        except TcmuScstError as err:
            log.warning("%s: PERSISTENT RESERVE OUT will fail with NOT READY", err)
        if self.trace_file is not None:
            try:
                self.trace_levels = TraceStore(self.trace_file).load()
            except ConfigError as err:
                log.warning("trace levels: %s; using SCST's defaults", err)
        self.apply_traces()
        self._adopt_threads(self._state_threads())
        self.netlink.open()
        self.params.set_block_netlink(True)
        try:
            # Completes (EINTR) any configfs write left waiting for a daemon that died;
            # the kernel does not say whether one was pending.
            self.params.reset_netlink()
            self.reply_supported = self.netlink.set_features(True)
            for info in uio.list_devices(self.sysfs_uio, self.dev_dir):
                if self.owns(info.name.subtype):
                    self._recover(info)
        finally:
            self.params.set_block_netlink(False)
        self.selector.register(self.netlink.fileno(), selectors.EVENT_READ, self._on_netlink)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        if self.control_path is not None:
            self.control = ControlServer(self.control_path, self.handle_request)
            self.control.attach(self.selector)
        if self.state_file is not None and self.materialize_every > 0:
            from tcmu_scst.scst.materializer import Materializer

            materializer = Materializer(self.cfs, self.state_file)

            def materialize() -> None:
                for acl in materializer.poll_once():
                    log.info("default group: ACL for %s on %s", acl.initiator, acl.wwn)
                if materializer.last is not None:
                    self._adopt_threads(materializer.last.threads)

            self.every(self.materialize_every, materialize)
        if self.size_watch_every > 0:

            def watch_sizes() -> None:
                self.size_watch.tick()

            self.every(self.size_watch_every, watch_sizes)
        if self.hotplug is not None:
            self.hotplug.start(
                self.selector,
                self.every,
                configfs=self.cfs,
                rescan=self._rescan,
                prune=self._prune_gone,
            )
        log.info("tcmu-scst daemon %s serving %d device(s)", __version__, len(self.devices))

    def _size_watched(self) -> list[Watched]:
        """The devices serving now, for the size watch (service.sizewatch)."""
        return [
            (dev.info.configfs_dir, dev.handler,
             UserBackstore(self.cfs, dev.info.name.hba, dev.info.name.device).set_dev_size)
            for dev in list(self.devices.values())
            if dev.state is DeviceState.SERVING
        ]  # fmt: skip

    def _recover(self, info: uio.UioInfo) -> None:
        """Attach to a device that existed before we started (tcmu-abi §4.3 recipe)."""
        backstore = UserBackstore(self.cfs, info.name.hba, info.name.device)
        try:
            backstore.block()
            backstore.reset_ring(1)  # in-ring commands go back to initiators as BUSY
            self.attach(info)
        except TcmuScstError as err:
            log.error("cannot serve %s after restart: %s", info.configfs_dir, err)
        finally:
            try:
                backstore.unblock()
            except TcmuScstError as err:
                log.error("cannot unblock %s: %s", info.configfs_dir, err)

    def run(self) -> None:
        """The main loop; returns after :meth:`stop` (or a signal) with all devices closed."""
        try:
            while not self._stop.is_set():
                for key, _mask in self.selector.select(timeout=0.5):
                    callback: Callable[[], None] = key.data
                    callback()
                self._run_timers()
                if self.control is not None:
                    self.control.expire()
        finally:
            self.shutdown()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _s, _f: self.stop())

    def shutdown(self) -> None:
        # Our own configfs writes (a hot-plug apply's backstore mkdir/rmdir, a size
        # watch's dev_size) wait in the kernel, uninterruptibly and with no timeout,
        # for this loop's netlink answer (tcmu-abi 3.4): keep answering until they end.
        hotplug = self.hotplug
        if hotplug is not None:
            hotplug.stop_events()

        def own_writes_under_way() -> bool:
            return self.size_watch.busy or (hotplug is not None and hotplug.busy)

        self._serve_netlink_while(own_writes_under_way, SHUTDOWN_DRAIN_SECONDS)
        if hotplug is not None:
            hotplug.close()
        self.lifecycle.wait_for_swaps()
        self._run_main_calls()  # their answers
        self.lifecycle.close()
        if self.reply_supported:
            try:
                # Without a daemon nobody answers: let configfs writes proceed.
                self.netlink.set_features(False)
            except TcmuScstError as err:
                log.warning("could not withdraw netlink reply support: %s", err)
            self.reply_supported = False
            try:
                # A configfs writer that is still waiting for our answer (one past the
                # drain bound, or another process's whose event came after our last
                # read) gets EINTR now instead of waiting in D state for good.
                self.params.release_stuck_writers(grace=0.0)
            except TcmuScstError as err:
                log.warning("could not release configfs writers waiting for us: %s", err)
        if self.control is not None:
            self.control.close()
            self.control = None
        self.selector.close()
        self.netlink.close()
        self._wake_r.close()
        self._wake_w.close()
        if self.instance is not None:
            self.instance.release()

    def _serve_netlink_while(self, busy: Callable[[], bool], bound: float) -> None:
        """Shutdown: answer kernel events (nothing else) while ``busy()``, at most
        ``bound`` seconds; always reads what is already queued once."""
        deadline = time.monotonic() + bound
        while True:
            waiting = busy()
            for key, _mask in self.selector.select(timeout=0.05 if waiting else 0):
                if key.data == self._on_netlink:
                    self._on_netlink()
            self._run_main_calls()  # answers of handler swaps
            if not waiting or time.monotonic() >= deadline:
                return

    def every(self, seconds: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` from the main loop about every ``seconds`` (e.g. materializer)."""
        self.timers.append((seconds, callback))

    def _run_timers(self) -> None:
        now = time.monotonic()
        for i, (period, callback) in enumerate(self.timers):
            if now >= self._timer_due.get(i, 0.0):
                self._timer_due[i] = now + period
                try:
                    callback()
                except TcmuScstError as err:
                    log.error("periodic task failed: %s", err)

    # -- devices (service.devices) -------------------------------------------------------
    def attach(self, info: uio.UioInfo) -> ServedDevice:
        """Open the handler, map the ring and start serving it."""
        return self.lifecycle.attach(info)

    def detach(self, dev: ServedDevice) -> None:
        """Drain, stop serving and close ``dev`` (bounded: see DeviceSet.detach)."""
        self.lifecycle.detach(dev)

    def find(self, event: DeviceEvent) -> ServedDevice | None:
        return self.lifecycle.find(event.hba_index, event.name)

    # -- netlink -----------------------------------------------------------------------------
    def _on_netlink(self) -> None:
        try:
            events = self.netlink.receive()
        except TcmuScstError as err:
            log.error("%s", err)
            self._rescan()
            return
        for event in events:
            self.handle_event(event)

    def handle_event(self, event: DeviceEvent) -> None:
        """Act on one kernel event and answer it (only for devices we own)."""
        subtype = event.dev_config.split("/", 1)[0]
        served = self.find(event)
        if served is None and not self.owns(subtype):
            log.debug("ignoring %s for %s: not our handler", type(event).__name__, event.device)
            return
        status = 0
        try:
            if isinstance(event, AddedDevice):
                # Already served: the udev path (hot-plug rescan) was first.
                if served is None:
                    info = uio.read_info(event.minor, self.sysfs_uio, self.dev_dir)
                    self.attach(info)
            elif isinstance(event, RemovedDevice):
                if served is not None:
                    self.detach(served)
            elif isinstance(event, ReconfigDevice):
                if served is None:
                    raise HandlerError(f"{event.device} is not served by this daemon")
                if self.reconfigure(served, event):
                    return  # a handler swap off the main loop answers when done
        except (TcmuScstError, OSError) as err:
            status = errno_of(err)
            log.error("%s of %s failed: %s", type(event).__name__, event.device, err)
        self._answer(event, status)

    def _answer(self, event: DeviceEvent, status: int) -> None:
        if event.needs_reply and self.reply_supported:
            try:
                self.netlink.reply(event, status)
            except TcmuScstError as err:
                log.error("cannot answer the kernel for %s: %s", event.device, err)

    def reconfigure(self, dev: ServedDevice, event: ReconfigDevice) -> bool:
        """Apply a RECONFIG; True if it is answered later (a handler swap under way)."""
        if event.dev_size is not None:
            new = dev.handler.resize(event.dev_size)
            log.info("%s resized to %d bytes", dev.info.configfs_dir, new)
        elif event.write_cache is not None:
            dev.handler.set_write_cache(event.write_cache)
            state = "on" if event.write_cache else "off"
            log.info("%s write cache %s", dev.info.configfs_dir, state)
        elif event.dev_cfg is not None:
            answer = partial(self._answer, event)
            return self.lifecycle.reopen(dev, event.dev_cfg.strip(), answer)
        return False

    def _later(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the main loop (from any thread)."""
        self._main_calls.put(callback)
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # shutting down: shutdown() runs what is queued

    def _run_main_calls(self) -> None:
        while True:
            try:
                callback = self._main_calls.get_nowait()
            except queue.Empty:
                return
            callback()

    def _rescan(self) -> None:
        """After lost events: attach every device of ours we do not serve yet."""
        for info in uio.list_devices(self.sysfs_uio, self.dev_dir):
            key = (info.name.hba, info.name.device)
            if key not in self.devices and self.owns(info.name.subtype):
                try:
                    self.attach(info)
                except (TcmuScstError, OSError) as err:
                    log.error("cannot serve %s: %s", info.configfs_dir, err)

    def _prune_gone(self) -> None:
        """After a uio remove uevent: let go of served devices whose UIO entry vanished
        (netlink REMOVED normally did it already)."""
        for dev in list(self.devices.values()):
            try:
                now = uio.read_info(dev.info.minor, self.sysfs_uio).name
                # Same backstore (dev_config may have changed through RECONFIG)?
                gone = (now.hba, now.device) != (dev.info.name.hba, dev.info.name.device)
            except (TcmuScstError, OSError):
                gone = True
            if gone:
                log.warning("%s vanished without REMOVED; detaching", dev.info.configfs_dir)
                self.detach(dev)

    def _on_wake(self) -> None:
        try:
            self._wake_r.recv(64)
        except OSError:
            pass
        self._run_main_calls()

    # -- control socket ------------------------------------------------------------------------
    def handle_request(self, request: Request) -> Answer:
        """One control request (service.control, typed by service.messages)."""
        match request:
            case Ping():
                return Pong(__version__, os.getpid())
            case GetStatus():
                return self.status()
            case SetThreads(threads=count):
                self.set_threads(count)
                return ThreadsSet(count)
            case SetTraceLevel(owner=owner, mask=mask):
                self.trace_levels[owner] = mask
                self.apply_traces()
                return TraceLevels(dict(self.trace_levels))
            case Rescan():
                self._rescan()
                return self.status()
            case HotplugQuery(action=action):
                if self.hotplug is None:
                    raise ControlError("hot-plug is off in this daemon")
                return self.hotplug.handle_request(action)
        raise ControlError(f"no handler for {type(request).__name__}")  # pragma: no cover

    def _adopt_threads(self, configured: int | None) -> None:
        """``threads`` from the applied scst.conf (or the shell's /threads) beats the
        command line's --threads: the state file keeps the admin's last word. Read at
        start and then with every materializer poll, so a later ``config apply`` that
        changes it reaches the running devices (the shell also tells us directly)."""
        if configured is None or configured == self._seen_threads:
            return
        self._seen_threads = configured
        if configured != self.threads:
            self.set_threads(configured)

    def _state_threads(self) -> int | None:
        if self.state_file is None:
            return None
        from tcmu_scst.scst.ownership import load_ownership

        try:
            return load_ownership(self.state_file).threads
        except ConfigError as err:
            log.warning("threads: %s; keeping %d", err, self.threads)
            return None

    def set_threads(self, count: int) -> None:
        """Worker threads per device, for every device now and for those opened later."""
        self.lifecycle.set_threads(count)
        log.info("%d worker threads per device", count)

    # -- SCST trace_level (service.trace) ---------------------------------------------------
    def apply_traces(self) -> None:
        """Give every device the tracing its core and handler masks ask for."""
        root = TraceFlags.from_mask(effective_mask(self.trace_levels, ROOT))
        if self.decorations is not None:
            self.decorations.flags = root
        self._set_debug("tcmu_scst", root.debug)
        for dev in self.devices.values():
            self._trace_device(dev)

    def _trace_device(self, dev: ServedDevice) -> None:
        handler = dev.handler
        mask = effective_mask(self.trace_levels, handler.handler_name)
        flags = TraceFlags.from_mask(mask)
        name = dev.info.name.device
        dev.runner.tracer = CommandTracer(name, flags) if flags.per_command else None
        # The handler's own 'debug' bit: its module's logger (the core's bit covers all).
        own = TraceFlags.from_mask(self.trace_levels.get(handler.handler_name, 0))
        self._set_debug(type(handler).__module__, own.debug)

    def _set_debug(self, logger_name: str, on: bool) -> None:
        logger = logging.getLogger(logger_name)
        if on:
            self._log_levels.setdefault(logger_name, logger.level)
            logger.setLevel(logging.DEBUG)
        elif logger_name in self._log_levels:
            logger.setLevel(self._log_levels.pop(logger_name))

    def status(self) -> Status:
        return Status(self.threads, tuple(self.describe_devices()))

    def describe_devices(self) -> list[DeviceStatus]:
        return [dev.status() for dev in self.lifecycle]


def notify_systemd(state: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if set."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as err:
            log.warning("sd_notify failed: %s", err)
