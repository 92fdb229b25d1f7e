"""The daemon's devices from open to close: one :class:`ServedDevice` per TCMU device.

Lifecycle of a device (:class:`DeviceState`)::

    attach ──> SERVING ──(RECONFIG dev_config)──> SWAPPING ──> SERVING
                  │                                  (done or EBUSY)
                  └──(REMOVED, vanished, shutdown)──> LEAVING ──> (closed)

Devices whose handler never waits on the ring thread (``Handler.shares_ring_loop``)
are served by one shared ring thread (service.ringloop); every other device has a
ring thread of its own. Everything here runs on the daemon's main loop except the
handler swap, which runs on a thread of its own and reports back through ``post``.
"""

from __future__ import annotations

import enum
import errno
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from tcmu_scst.errors import HandlerError, TcmuScstError
from tcmu_scst.handler import Handler
from tcmu_scst.kernel import uio
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.lio import UserBackstore
from tcmu_scst.service import units
from tcmu_scst.service.device import DeviceRunner, RingPort, close_when_stopped
from tcmu_scst.service.messages import DeviceStatus
from tcmu_scst.service.ringloop import DEFAULT_SPIN, SharedRingLoop

log = logging.getLogger(__name__)


class ServedPort(RingPort, Protocol):
    """A ring port the daemon can close (a UioDevice; an emulator port in tests)."""

    def close(self) -> None: ...


class DeviceState(enum.Enum):
    SERVING = "serving"
    SWAPPING = "swapping"  # a dev_config RECONFIG is quiescing it / swapping handlers
    LEAVING = "leaving"  # detached: draining, then closed (by a reaper if stuck)


@dataclass
class ServedDevice:
    """One device this daemon serves."""

    info: uio.UioInfo
    port: ServedPort
    runner: DeviceRunner
    thread: threading.Thread | None  # its own ring thread; None: the shared ring loop
    dev_config: str
    state: DeviceState = DeviceState.SERVING

    @property
    def key(self) -> tuple[int, str]:
        return (self.info.name.hba, self.info.name.device)

    @property
    def handler(self) -> Handler:
        return self.runner.handler

    def status(self) -> DeviceStatus:
        stats = self.runner.stats
        with stats.lock:
            return DeviceStatus(
                name=self.info.name.device,
                hba=self.info.name.hba,
                minor=self.info.minor,
                subtype=self.info.name.subtype,
                dev_config=self.dev_config,
                threads=self.runner.threads,
                commands=stats.commands,
                errors=stats.errors,
                handler_failures=stats.handler_failures,
                tmrs=stats.tmrs,
                sizes={str(k): v for k, v in sorted(stats.size_histogram.items())},
            )


class DeviceSet:
    """Opens, serves, swaps and closes the daemon's devices.

    ``post`` runs a callable on the daemon's main loop (from any thread);
    ``on_open`` is called for a device whenever its handler changes (tracing).
    """

    def __init__(
        self,
        *,
        configfs: Configfs,
        open_handler: Callable[[str], Handler],
        owns: Callable[[str], bool],
        open_port: Callable[[uio.UioInfo], ServedPort],
        post: Callable[[Callable[[], None]], None],
        on_open: Callable[[ServedDevice], None] = lambda _dev: None,
        threads: int = 2,
        share_ring_loop: bool = True,
        busy_poll: float = DEFAULT_SPIN,
        quiesce_wait: float = 5.0,
        detach_wait: float = 2.0,
    ) -> None:
        self.cfs = configfs
        self.open_handler = open_handler
        self.owns = owns
        self.open_port = open_port
        self.post = post
        self.on_open = on_open
        self.threads = threads  # worker threads per device, for new devices too
        # One ring thread for every device whose handler allows it (started with the
        # first such device); False: a ring thread per device, as for pass-through.
        self.share_ring_loop = share_ring_loop
        self.busy_poll = busy_poll  # the shared ring thread's (SharedRingLoop.spin)
        # Bounds on the main loop's waits for one device (a command stuck in a
        # pass-through device must not stall every other device's netlink replies).
        self.quiesce_wait = quiesce_wait  # RECONFIG of dev_config
        self.detach_wait = detach_wait  # REMOVED, shutdown: then a reaper closes
        self.served: dict[tuple[int, str], ServedDevice] = {}
        self._swaps: list[threading.Thread] = []
        self._ring_loop: SharedRingLoop | None = None
        self._ring_loop_thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[ServedDevice]:
        return iter(list(self.served.values()))

    def find(self, hba: int, name: str) -> ServedDevice | None:
        return self.served.get((hba, name))

    # -- open ------------------------------------------------------------------------
    def attach(self, info: uio.UioInfo) -> ServedDevice:
        """Open the handler, map the ring and start serving it."""
        if info.name.subtype and not self.owns(info.name.subtype):
            raise HandlerError(f"{info.configfs_dir}: handler {info.name.subtype!r} is not ours")
        if (info.name.hba, info.name.device) in self.served:
            raise HandlerError(f"{info.configfs_dir} is already served")
        handler = self.open_handler(info.name.config)
        try:
            port = self.open_port(info)
        except BaseException:
            handler.close()
            raise
        try:
            runner = DeviceRunner(port, handler, threads=self.threads)
        except BaseException:
            port.close()
            handler.close()
            raise
        thread: threading.Thread | None = None
        if not self._shares_loop(handler):
            thread = threading.Thread(
                target=runner.run, name=f"ring-{info.name.device}", daemon=True
            )
        dev = ServedDevice(info, port, runner, thread, info.name.config)
        self.served[dev.key] = dev
        units.UNITS.serve(info.configfs_dir, handler)  # EXTENDED COPY, ALUA groups
        self.on_open(dev)
        self._ask_for_tmr_notifications(info)
        if thread is None:
            self._ring_loop_for_shared().add(runner)
        else:
            thread.start()
        log.info("serving %s (/dev/uio%d) with %s", info.configfs_dir, info.minor, info.name.config)
        return dev

    def _shares_loop(self, handler: Handler) -> bool:
        # --threads 0 runs every command on the ring thread: then each device keeps
        # its own, or one device's disk I/O would hold up every other device.
        return self.share_ring_loop and handler.shares_ring_loop and self.threads > 0

    def _ring_loop_for_shared(self) -> SharedRingLoop:
        if self._ring_loop is None:
            self._ring_loop = SharedRingLoop(spin=self.busy_poll)
            self._ring_loop_thread = threading.Thread(
                target=self._ring_loop.run, name="ring-shared", daemon=True
            )
            self._ring_loop_thread.start()
        return self._ring_loop

    def _ask_for_tmr_notifications(self, info: uio.UioInfo) -> None:
        """Our handlers act on LUN and target resets (PREVENT MEDIUM REMOVAL is cleared,
        a pass-through device is reset), which the kernel reports only with
        ``attrib/tmr_notification`` = 1 (default 0). Set for every device we serve,
        whoever created it; the attribute may change while the device is exported."""
        backstore = UserBackstore(self.cfs, info.name.hba, info.name.device)
        try:
            if backstore.attrib("tmr_notification").strip() != "1":
                backstore.set_attrib("tmr_notification", 1)
        except (TcmuScstError, OSError) as err:
            log.warning("%s: TMR notifications stay off (%s): resets will not reach the "
                        "handler", info.configfs_dir, err)

    # -- change ----------------------------------------------------------------------
    def set_threads(self, count: int) -> None:
        """Worker threads per device, for every device now and for those opened later."""
        self.threads = count
        for dev in self.served.values():
            dev.runner.set_threads(count)

    def reopen(self, dev: ServedDevice, dev_config: str, answer: Callable[[int], None]) -> bool:
        """RECONFIG of dev_config: open the new handler, swap it in off the main loop.

        Returns False if done in place (the caller answers), True if ``answer`` will
        be called from the main loop once the swap is done or has given up. A second
        RECONFIG while one swap is under way is refused (EBUSY) rather than queued
        behind it.
        """
        if dev.state is not DeviceState.SERVING:
            raise OSError(errno.EBUSY, f"{dev.info.configfs_dir} is {dev.state.value}")
        if dev_config.split("/", 1)[0] != dev.info.name.subtype:
            raise HandlerError(
                f"{dev.info.configfs_dir}: dev_config may not change handler "
                f"({dev.info.name.subtype} -> {dev_config.split('/', 1)[0]})"
            )
        if dev.runner.handler.reconfigure(dev_config):
            dev.dev_config = dev_config  # done in place (e.g. a vcdrom medium change)
            log.info("%s reconfigured in place: %s", dev.info.configfs_dir, dev_config)
            return False
        new_handler = self.open_handler(dev_config)
        runner = dev.runner
        dev.state = DeviceState.SWAPPING

        def swap() -> None:
            # The kernel waits for our reply, but initiators keep sending: stop taking
            # commands off the ring and let every one in flight finish (inline, queued,
            # on a worker, or completed later by the handler) before the old handler
            # goes. Bounded: a command stuck in a device fails the RECONFIG (EBUSY).
            if not runner.quiesce(self.quiesce_wait):
                new_handler.close()
                self.post(partial(finish, -errno.EBUSY))
                return
            try:
                old = runner.handler
                runner.handler = new_handler
                units.UNITS.serve(dev.info.configfs_dir, new_handler)
            finally:
                runner.resume()
            old.close()
            self.post(partial(finish, 0))

        def finish(status: int) -> None:
            if dev.state is DeviceState.SWAPPING:
                dev.state = DeviceState.SERVING
            if status == 0:
                dev.dev_config = dev_config
                self.on_open(dev)
                log.info("%s reopened with %s", dev.info.configfs_dir, dev_config)
            else:
                log.error("%s: commands still in flight after %g s; dev_config unchanged",
                          dev.info.configfs_dir, self.quiesce_wait)
            answer(status)

        thread = threading.Thread(target=swap, name=f"reopen-{dev.info.name.device}",
                                  daemon=True)
        self._swaps = [t for t in self._swaps if t.is_alive()] + [thread]
        thread.start()
        return True

    # -- close -----------------------------------------------------------------------
    def detach(self, dev: ServedDevice) -> None:
        """Drain in-flight commands, stop the ring thread, close everything.

        Waits at most ``detach_wait`` for the ring thread: past that (a command stuck
        in a pass-through device) the handler and port are closed by a reaper once the
        command returns, and the main loop answers the kernel meanwhile.
        """
        dev.state = DeviceState.LEAVING
        units.UNITS.forget(dev.info.configfs_dir)
        self.served.pop(dev.key, None)
        runner = dev.runner
        if dev.thread is not None:
            runner.stop()
            serving = dev.thread
        else:
            # The shared loop's last drain, then the workers finish what they hold:
            # on a thread of its own, so that a stuck command is waited for by the
            # reaper, not by the main loop.
            assert self._ring_loop is not None
            serving = threading.Thread(
                target=partial(self._ring_loop.remove, runner, timeout=None),
                name=f"leave-{dev.info.name.device}", daemon=True,
            )
            serving.start()
        serving.join(self.detach_wait)
        close_when_stopped(serving, dev.info.configfs_dir, runner.close,
                           lambda: runner.handler.close(), dev.port.close)
        log.info("stopped serving %s", dev.info.configfs_dir)

    def wait_for_swaps(self) -> None:
        """Shutdown: every swap under way ends (each gives up after quiesce_wait)."""
        for swap in self._swaps:
            swap.join(self.quiesce_wait + 1.0)
        self._swaps.clear()

    def close(self) -> None:
        """Shutdown: detach every device, then end the shared ring loop's thread."""
        for dev in self:
            self.detach(dev)
        loop, thread = self._ring_loop, self._ring_loop_thread
        if loop is None or thread is None:
            return
        loop.stop()
        thread.join(self.detach_wait)
        if thread.is_alive():
            # A device's leave is still waiting for a stuck command: the loop ends
            # when that is done; its pipe is left to the process's exit.
            log.warning("shared ring loop still busy at shutdown")
        else:
            loop.close()
        self._ring_loop = self._ring_loop_thread = None
