"""Hot-plug in the daemon: udev events for ``uio`` and ``scsi`` devices (issue 7).

The daemon already attaches user backstores on the kernel's netlink ADDED; this is
the safety net and the pass-through auto-export:

* ``uio`` add of a ``tcm-user/...`` device: after a short settle time the daemon
  attaches every owned device it does not serve yet (e.g. one created while netlink
  events were lost); ``uio`` remove: served devices whose UIO entry vanished are let go;
* ``scsi`` add/remove of a ``scsi_device``: the config file is resolved against the
  SCSI devices present (:mod:`tcmu_scst.scst.hotplug_rules`); when the pass-through
  devices it yields differ from the live ones, the whole file is applied through the
  ordinary declarative apply (backstore + LUNs on add; LUNs + backstore on remove).

The apply runs on a worker thread: creating or removing a backstore makes the kernel
send netlink events that the main loop must answer while the apply waits. Applies are
serialized with ``flock`` on :data:`DEFAULT_LOCK` (the boot unit takes the same lock).

Events come from a pyudev monitor whose ``fileno()`` sits in the daemon's selector.
Where udevd does not run (no ``/run/udev/control``) the monitor listens to the raw
kernel uevents instead; without pyudev or netlink, only the periodic audit remains.
Run as ``python3 -m tcmu_scst.service.hotplug notify ACTION SUBSYSTEM`` (what the udev
rule does where systemd does not run) it pokes a running daemon instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import selectors
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tcmu_scst.errors import ConfigError, TcmuScstError
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.handler_table import ASSIGNED_HANDLERS
from tcmu_scst.kernel.lio import UserBackstore
from tcmu_scst.scst import hotplug_rules, legacy_conf
from tcmu_scst.service.messages import HotplugAction, HotplugStatus

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/etc/tcmu-scst/scst.conf")
DEFAULT_LOCK = Path("/run/tcmu-scst/apply.lock")
UDEV_CONTROL = Path("/run/udev/control")  # exists while udevd runs
SUBSYSTEMS = ("uio", "scsi")
TCM_USER_PREFIX = "tcm-user/"


@dataclass(frozen=True)
class UdevEvent:
    """The part of a uevent the daemon looks at."""

    action: str  # add, remove, change, bind, ...
    subsystem: str
    sys_name: str  # uio3, 2:0:0:0, host2, target2:0:0
    devtype: str  # scsi_device, scsi_host, scsi_target; "" for uio
    uio_name: str = ""  # sysfs "name" of a uio device (tcm-user/...), if readable


class EventSource(Protocol):
    """A pyudev Monitor, or a test double with the same two methods."""

    def fileno(self) -> int: ...

    def poll(self, timeout: float | None = None) -> Any: ...


def event_of(device: Any) -> UdevEvent:
    """A pyudev Device (as a monitor yields it) -> :class:`UdevEvent`."""
    uio_name = ""
    if device.subsystem == "uio" and device.action != "remove":
        try:
            uio_name = str(device.attributes.asstring("name"))
        except (KeyError, OSError, UnicodeDecodeError):
            uio_name = ""  # gone again, or not readable: the rescan will tell
    return UdevEvent(
        action=str(device.action or ""),
        subsystem=str(device.subsystem or ""),
        sys_name=str(device.sys_name or ""),
        devtype=str(device.device_type or ""),
        uio_name=uio_name,
    )


def monitor_source(udev_control: Path = UDEV_CONTROL) -> str:
    """``udev`` where udevd runs (processed events), else ``kernel`` (raw uevents)."""
    return "udev" if udev_control.exists() else "kernel"


def open_monitor(udev_control: Path = UDEV_CONTROL) -> EventSource:
    """A started pyudev monitor on the uio and scsi subsystems."""
    try:
        import pyudev
    except ImportError as err:
        raise ConfigError(f"pyudev is not installed ({err}); pip install pyudev") from err
    source = monitor_source(udev_control)
    try:
        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context, source=source)
        for subsystem in SUBSYSTEMS:
            monitor.filter_by(subsystem)
        monitor.start()
    except (ImportError, OSError, ValueError) as err:
        raise ConfigError(f"cannot listen to {source} uevents: {err}") from err
    log.info("hot-plug: listening to %s uevents for %s", source, ", ".join(SUBSYSTEMS))
    source_obj: EventSource = monitor
    return source_obj


def live_passthrough(cfs: Configfs) -> frozenset[str]:
    """Names (addresses) of the live user backstores that are our pass-through devices."""
    names: set[str] = set()
    for dev in UserBackstore.all(cfs):
        try:
            subtype = cfs.read(f"{dev.rel}/attrib/dev_config").split("/", 1)[0]
        except TcmuScstError:
            continue  # removed while we looked
        if subtype in ASSIGNED_HANDLERS:
            names.add(dev.name)
    return frozenset(names)


def load_config(path: Path, sysfs: Path = hotplug_rules.SYSFS) -> hotplug_rules.Resolution:
    """The config file resolved against the SCSI devices under ``sysfs``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file: {err}", str(path)) from err
    find, present = hotplug_rules.sysfs_lookup(sysfs)
    if legacy_conf.looks_legacy(text):
        config = legacy_conf.parse_legacy(text, str(path))
        return hotplug_rules.resolve(config, find, present)
    return hotplug_rules.resolve(hotplug_rules.parse(text, str(path)), find, present)


class ApplyLock:
    """``flock`` on a lock file, shared with the boot unit (``flock(1)``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


Apply = Callable[[Configfs, hotplug_rules.Resolution], None]


def apply_resolution(cfs: Configfs, resolution: hotplug_rules.Resolution, state: Path) -> None:
    """The ordinary declarative apply of the resolved config."""
    from tcmu_scst.scst.apply import apply_config

    result = apply_config(cfs, resolution.config, state)
    for step in result.steps:
        log.info("hot-plug: %s", step.description)


class Hotplug:
    """udev events -> rescans and pass-through applies, driven by the daemon's loop."""

    def __init__(
        self,
        *,
        config_path: Path = DEFAULT_CONFIG,
        state_file: Path | None = None,
        sysfs: Path = hotplug_rules.SYSFS,
        lock_path: Path = DEFAULT_LOCK,
        open_source: Callable[[], EventSource] = open_monitor,
        apply: Apply | None = None,
        settle: float = 1.0,
        audit_every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from tcmu_scst.scst.ownership import DEFAULT_STATE_FILE

        self.config_path = config_path
        self.state_file = state_file or DEFAULT_STATE_FILE
        self.sysfs = sysfs
        self.lock = ApplyLock(lock_path)
        self.open_source = open_source
        self.apply = apply or (lambda cfs, res: apply_resolution(cfs, res, self.state_file))
        self.settle = settle
        self.audit_every = audit_every
        self.clock = clock
        self.source: EventSource | None = None
        self.cfs: Configfs | None = None
        self._selector: selectors.BaseSelector | None = None
        self._rescan: Callable[[], None] = lambda: None
        self._prune: Callable[[], None] = lambda: None
        self.rescan_due: float | None = None
        self.prune_due: float | None = None
        self.check_due: float | None = None
        self._worker: threading.Thread | None = None
        self._failed_for: frozenset[str] | None = None  # desired set of a failed apply
        self.events_seen = 0
        self.applies = 0
        self.last_error = ""

    # -- wiring ------------------------------------------------------------------------
    def start(
        self,
        selector: selectors.BaseSelector,
        every: Callable[[float, Callable[[], None]], None],
        *,
        configfs: Configfs,
        rescan: Callable[[], None],
        prune: Callable[[], None],
    ) -> None:
        """Register with the daemon's loop; a missing event source is not fatal."""
        self.cfs = configfs
        self._rescan, self._prune = rescan, prune
        self._selector = selector
        try:
            self.source = self.open_source()
        except TcmuScstError as err:
            log.warning("hot-plug events unavailable (%s); auditing every %gs instead",
                        err, self.audit_every)  # fmt: skip
        if self.source is not None:
            selector.register(self.source.fileno(), selectors.EVENT_READ, self.on_readable)
        every(min(0.25, self.settle), self.tick)
        every(self.audit_every, self.audit)
        self.check_due = self.clock()  # devices may have come or gone while we were down

    def stop_events(self) -> None:
        """Shutdown, first step: no new check starts; one under way goes on (the
        daemon keeps answering netlink for it until it is done)."""
        self.check_due = self.rescan_due = self.prune_due = None
        if self.source is not None and self._selector is not None:
            try:
                self._selector.unregister(self.source.fileno())
            except (KeyError, ValueError, OSError):
                pass
        self.source = None

    def close(self, wait: float = 5.0) -> None:
        # An apply still running here waits past the daemon's drain bound; the daemon
        # then releases its netlink wait (EINTR), and the apply's recorded intent lets
        # the next apply clean up (scst.apply).
        self.stop_events()
        if self._worker is not None:
            self._worker.join(wait)

    # -- events ------------------------------------------------------------------------
    def on_readable(self) -> None:
        """Drain the monitor without blocking; act on each event."""
        if self.source is None:
            return
        for _ in range(256):  # bounded: a storm must not starve netlink
            device = self.source.poll(0)
            if device is None:
                return
            self.handle(event_of(device))

    def handle(self, event: UdevEvent) -> None:
        self.events_seen += 1
        due = self.clock() + self.settle
        scsi_change = event.action in ("add", "remove", "bind", "unbind", "change")
        if event.subsystem == "uio":
            # An unreadable name (gone again, raced) also rescans: the rescan decides.
            ours = not event.uio_name or event.uio_name.startswith(TCM_USER_PREFIX)
            if event.action == "add" and ours:
                self.rescan_due = due
            elif event.action == "remove":
                self.prune_due = due
        elif event.subsystem == "scsi" and event.devtype in ("scsi_device", "") and scsi_change:
            # Debounce: a host scan or rmmod brings a burst; act once it is quiet.
            self.check_due = due
            self._failed_for = None

    def request_check(self) -> None:
        """Check now (control socket, udev notify without systemd)."""
        self.check_due = self.clock()
        self.rescan_due = self.clock()
        self._failed_for = None

    def tick(self) -> None:
        now = self.clock()
        if self.rescan_due is not None and now >= self.rescan_due:
            self.rescan_due = None
            self._rescan()
        if self.prune_due is not None and now >= self.prune_due:
            self.prune_due = None
            self._prune()
        if self.check_due is not None and now >= self.check_due and not self.busy:
            self.check_due = None
            self._worker = threading.Thread(target=self._check, name="hotplug", daemon=True)
            self._worker.start()

    def audit(self) -> None:
        """Periodic safety net for lost events (cheap: sysfs and configfs reads)."""
        if self.check_due is None:
            self.check_due = self.clock()

    @property
    def busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def wait_idle(self, timeout: float = 60.0) -> None:
        if self._worker is not None:
            self._worker.join(timeout)

    # -- the check (worker thread) -----------------------------------------------------
    def _check(self) -> None:
        try:
            self.check_once()
        except Exception as err:  # a worker must log, never die silently
            # e.g. configfs not mounted yet: logged once, retried by the next event/audit.
            self._record_failure(f"check failed: {err}", None)

    def check_once(self) -> bool:
        """Apply the config if the pass-through devices differ; True if it applied."""
        if self.cfs is None or not self.config_path.exists():
            return False
        try:
            resolution = load_config(self.config_path, self.sysfs)
        except TcmuScstError as err:
            self._record_failure(f"{self.config_path} not applied: {err}", None)
            return False
        desired = resolution.passthrough_addresses
        live = live_passthrough(self.cfs)
        if desired == live or desired == self._failed_for:
            return False
        if not self.lock.try_acquire():
            log.info("hot-plug: another apply holds %s; retrying", self.lock.path)
            self.check_due = self.clock() + self.settle
            return False
        try:
            for warning in resolution.warnings:
                log.warning("hot-plug: %s", warning)
            log.info("hot-plug: pass-through devices %s -> %s; applying %s",
                     sorted(live), sorted(desired), self.config_path)  # fmt: skip
            self.apply(self.cfs, resolution)
        except TcmuScstError as err:
            self._record_failure(f"apply of {self.config_path} failed: {err}", desired)
            return False
        finally:
            self.lock.release()
        self.applies += 1
        self._failed_for = None
        self.last_error = ""
        return True

    def _record_failure(self, message: str, desired: frozenset[str] | None) -> None:
        # Do not retry the same outcome on every audit; the next event retries.
        self._failed_for = desired
        if message != self.last_error:
            log.error("hot-plug: %s", message)
        self.last_error = message

    # -- control socket ----------------------------------------------------------------
    def handle_request(self, action: HotplugAction) -> HotplugStatus:
        """The control socket's ``hotplug`` request: look now (CHECK), then report."""
        if action is HotplugAction.CHECK:
            self.request_check()
        return HotplugStatus(
            listening=self.source is not None,
            config=str(self.config_path),
            events=self.events_seen,
            applies=self.applies,
            busy=self.busy,
            last_error=self.last_error,
        )


def notify(action: str, subsystem: str, socket_path: Path | None = None) -> int:
    """What the udev rule runs without systemd: tell a running daemon to look."""
    from tcmu_scst.service import control

    path = socket_path or control.DEFAULT_SOCKET
    client = control.ControlClient(path)
    try:
        if subsystem == "uio":
            client.rescan()
        else:
            client.hotplug(HotplugAction.CHECK)
    except TcmuScstError as err:
        # udev logs stderr; a missing daemon is not udev's failure.
        print(f"tcmu-scst hot-plug notify ({action} {subsystem}): {err}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[0] != "notify":
        print("usage: python3 -m tcmu_scst.service.hotplug notify ACTION SUBSYSTEM",
              file=sys.stderr)  # fmt: skip
        return 2
    return notify(args[1], args[2])


if __name__ == "__main__":
    sys.exit(main())
