"""The logical units this process serves, tied to their kernel objects: EXTENDED COPY
between them (and the rule that guards it), and their ALUA target port groups.

ALUA: every served device answers INQUIRY TPGS, VPD 83h port designators and REPORT
/ SET TARGET PORT GROUPS from the kernel's groups of its backstore
(``kernel.alua.KernelPortGroups``); the kernel enforces the states.

Each served block device (an ``SbcDevice``) has a copy manager (``scsi.xcopy``);
by itself it can only copy within its own LU. :data:`DOMAIN` lets it reach the
other devices of this process by their NAA designator, under one access rule:

    A copy received by device A may read or write device B only when A and B are
    exported through exactly the same (fabric, target, TPG, initiator) pairs with
    the same write protection (``kernel.exposure``), read from configfs at the
    time of the copy.

TCMU does not say which initiator sent the EXTENDED COPY, so the rule must hold for
every initiator: whoever can send a command to A can then also reach B, the same
way, with the same rights; nobody gains access to a LU through a copy (the hole of
the kernel's CVE-2020-28374). Any other case is refused with COPY ABORTED /
UNREACHABLE COPY TARGET, the answer for a CSCD the copy manager cannot reach.
"""

from __future__ import annotations

import logging
import threading
import time

from tcmu_scst.errors import TcmuScstError
from tcmu_scst.handler import Handler
from tcmu_scst.kernel.alua import KernelPortGroups
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.exposure import same_exposure
from tcmu_scst.scsi.alua import AccessState, PortGroup, PortGroupSource
from tcmu_scst.scsi.sbc import SbcDevice
from tcmu_scst.scsi.spc import SpcDevice
from tcmu_scst.scsi.xcopy import CopyEndpoint

log = logging.getLogger(__name__)

#: Seconds the access rule may take to read configfs before a copy is refused.
COPY_RULE_TIMEOUT = 5.0


class ServedUnits:
    """The devices served by this process, by configfs directory."""

    def __init__(self, cfs: Configfs | None = None) -> None:
        self.cfs = cfs or Configfs()
        self._lock = threading.Lock()
        self._devices: dict[str, SbcDevice] = {}  # configfs dir (core/user_N/NAME) -> device

    def serve(self, configfs_dir: str, handler: Handler) -> None:
        """``handler`` now serves ``configfs_dir`` (attach, or a handler swapped in)."""
        device = getattr(handler, "device", None)
        if isinstance(device, SpcDevice):
            device.attach_port_groups(CachedPortGroups(KernelPortGroups(self.cfs, configfs_dir)))
        with self._lock:
            self._devices.pop(configfs_dir, None)
            if isinstance(device, SbcDevice):
                self._devices[configfs_dir] = device
                device.copies.scope = _Scope(self, device)

    def forget(self, configfs_dir: str) -> None:
        with self._lock:
            self._devices.pop(configfs_dir, None)

    def _locate(self, device: CopyEndpoint) -> str | None:
        with self._lock:
            return next((d for d, dev in self._devices.items() if dev is device), None)

    def resolve(self, designator: bytes) -> SbcDevice | None:
        with self._lock:
            devices = list(self._devices.values())
        return next((d for d in devices if d.copy_designator() == designator), None)

    def may_copy(self, origin: CopyEndpoint, other: CopyEndpoint) -> bool:
        a, b = self._locate(origin), self._locate(other)
        if a is None or b is None:
            return False
        # Read on a helper thread: configfs may be blocked by a LUN being linked (see
        # CachedPortGroups); past COPY_RULE_TIMEOUT the copy is refused, never allowed.
        verdict: list[bool] = []

        def decide() -> None:
            try:
                verdict.append(same_exposure(self.cfs, a, b))
            except (TcmuScstError, OSError) as err:
                log.warning("EXTENDED COPY: cannot read the exports of %s and %s (%s); "
                            "refused", a, b, err)

        reader = threading.Thread(target=decide, name="xcopy-rule", daemon=True)
        reader.start()
        reader.join(COPY_RULE_TIMEOUT)
        return bool(verdict) and verdict[0]


class CachedPortGroups:
    """The kernel's groups as last read; every read runs on a thread of its own.

    A command must never block on configfs: tcm_loop scans a new LUN (INQUIRY, VPD 83h,
    REPORT TARGET PORT GROUPS from scsi_dh_alua) inside the ``symlink`` that links it,
    which holds the LUN directory's lock, so reading that directory from the command
    would wait for the command itself. A command finding the cache older than
    ``max_age`` seconds (by default: always) starts a read, or joins the one under way,
    and waits for it at most ``wait`` seconds (a read takes milliseconds); past that it
    gets the last groups read.
    """

    def __init__(self, source: PortGroupSource, max_age: float = 0.0,
                 wait: float = 0.5) -> None:
        self.source = source
        self.max_age = max_age
        self.wait = wait
        self._lock = threading.Lock()
        self._groups: list[PortGroup] = []
        self._read_at: float | None = None
        self._reading: threading.Event | None = None

    def groups(self) -> list[PortGroup]:
        with self._lock:
            stale = self._read_at is None or time.monotonic() - self._read_at > self.max_age
        if stale:
            self.refresh().wait(self.wait)
        with self._lock:
            return list(self._groups)

    def set_state(self, group_id: int, state: AccessState) -> None:
        self.source.set_state(group_id, state)
        self.refresh().wait(self.wait)

    def refresh(self) -> threading.Event:
        """Start reading the groups again (unless a read is under way); set when done."""
        with self._lock:
            if self._reading is not None:
                return self._reading
            done = self._reading = threading.Event()
        threading.Thread(target=self._read, args=(done,), name="alua-groups",
                         daemon=True).start()
        return done

    def _read(self, done: threading.Event) -> None:
        try:
            groups: list[PortGroup] | None = self.source.groups()
        except Exception as err:  # configfs changed under us: keep the last answer
            log.warning("reading the target port groups failed: %s", err)
            groups = None
        with self._lock:
            if groups is not None:  # a failed read is retried by the next command
                self._groups = groups
                self._read_at = time.monotonic()
            self._reading = None
        done.set()


class _Scope:
    """One device's view of the domain (``scsi.xcopy.CopyScope``)."""

    def __init__(self, domain: ServedUnits, device: SbcDevice) -> None:
        self.domain = domain
        self.device = device

    def resolve(self, designator: bytes) -> CopyEndpoint | None:
        if designator == self.device.copy_designator():
            return self.device
        return self.domain.resolve(designator)

    def may_copy(self, origin: CopyEndpoint, other: CopyEndpoint) -> bool:
        return origin is other or self.domain.may_copy(origin, other)


#: The process's devices (the daemon and the in-process runners of tests and tools).
UNITS = ServedUnits()
