"""SCST's management model as pure data: devices, targets, security groups, LUNs.

The model holds both generations of SCST access control:

* 0.9.6 (procfs era): security groups are **global** (``ScstConfig.groups``); the
  built-in ``Default`` group and the optional ``Default_<target>`` groups give the LUNs
  of initiators no named group claims.
* modern (sysfs era): every target has its own default LUN set (``Target.luns``) and
  its own groups (``Target.groups``).

A config may use both; the rules for one target are (see :func:`groups_for` and
:func:`default_for`): the target's own groups come first, then the global groups, each
in creation order, and the first group naming an initiator wins. The default LUN set
is the target's ``luns`` if it has any, else ``Default_<target>`` if that group
exists, else the global ``Default``.

Nothing here touches the system; :func:`validate` checks the rules SCST enforces
(LUN 0 in every group, no duplicate LUNs or devices in a group, known devices, valid
names) and raises a :class:`~tcmu_scst.errors.ConfigError` naming where the faulty
item was defined.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from tcmu_scst.errors import ConfigError

DEFAULT_GROUP = "Default"
DEFAULT_GROUP_PREFIX = "Default_"

# SCST device handler names (modern spelling) -> SCSI peripheral device type.
HANDLER_TYPES: dict[str, int] = {
    "vdisk_fileio": 0x00,
    "vdisk_blockio": 0x00,
    "vdisk_nullio": 0x00,
    "vdisk_rbd": 0x00,
    "vcdrom": 0x05,
    "dev_disk": 0x00,
    "dev_disk_perf": 0x00,
    "dev_tape": 0x01,
    "dev_tape_perf": 0x01,
    "dev_processor": 0x03,
    "dev_cdrom": 0x05,
    "dev_modisk": 0x07,
    "dev_modisk_perf": 0x07,
    "dev_changer": 0x08,
    "dev_raid": 0x0C,
}
VDISK_HANDLERS = frozenset(
    {"vdisk_fileio", "vdisk_blockio", "vdisk_nullio", "vdisk_rbd", "vcdrom"}
)
# Pass-through handlers name their devices by the local SCSI address H:C:I:L.
PASSTHROUGH_HANDLERS = frozenset(HANDLER_TYPES) - VDISK_HANDLERS
TYPE_DISK = 0x00

# LIO fabric name -> SCST target driver name. Both spellings are accepted everywhere.
FABRIC_DRIVERS: dict[str, str] = {
    "iscsi": "iscsi",
    "loopback": "scst_local",
    "qla2xxx": "qla2x00t",
    "tcm_fc": "fcst",
}
_DRIVER_FABRICS = {driver: fabric for fabric, driver in FABRIC_DRIVERS.items()}
FC_FABRICS = frozenset({"qla2xxx", "tcm_fc"})

MAX_LUN = 16383  # SAM flat space addressing; LIO accepts more, initiators rarely do.
MAX_NAME_LEN = 223  # iSCSI names are at most 223 bytes (RFC 3720 3.2.6.1).

_WWPN = re.compile(r"^([0-9a-f]{2}:){7}[0-9a-f]{2}$")
_HCTL = re.compile(r"^\d+:\d+:\d+:\d+$")
_BAD_NAME_CHARS = re.compile(r"[\s/]")


@dataclass(frozen=True)
class Where:
    """Where an item was defined: file and line (both empty for API-built items)."""

    source: str = ""
    line: int = 0

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, self.source, self.line)


NOWHERE = Where()


@dataclass
class Device:
    """One SCST device: a name, its handler and the handler's parameters (as text)."""

    name: str
    handler: str
    params: dict[str, str] = field(default_factory=dict)
    where: Where = field(default=NOWHERE, compare=False)

    @property
    def scsi_type(self) -> int:
        return HANDLER_TYPES[self.handler]

    @property
    def is_disk(self) -> bool:
        return self.scsi_type == TYPE_DISK


@dataclass
class Lun:
    """One LUN of a group or of a target's default set."""

    number: int
    device: str
    read_only: bool = False
    where: Where = field(default=NOWHERE, compare=False)


@dataclass
class Group:
    """A security group: initiator names and the LUNs they see."""

    name: str
    initiators: list[str] = field(default_factory=list)
    luns: list[Lun] = field(default_factory=list)
    # CHAP accounts (user, secret) for this group's members; overrides the target's.
    incoming_users: list[tuple[str, str]] = field(default_factory=list)
    where: Where = field(default=NOWHERE, compare=False)
    initiator_lines: list[Where] = field(default_factory=list, compare=False)


@dataclass
class Target:
    """One SCST target of one fabric (LIO fabric name, see :data:`FABRIC_DRIVERS`)."""

    fabric: str
    name: str
    enabled: bool = True
    luns: list[Lun] = field(default_factory=list)  # modern default LUN set
    groups: list[Group] = field(default_factory=list)  # modern per-target groups
    incoming_users: list[tuple[str, str]] = field(default_factory=list)
    outgoing_user: tuple[str, str] | None = None
    portals: list[str] = field(default_factory=list)  # iSCSI "ip:port"; empty = default
    attributes: dict[str, str] = field(default_factory=dict)  # passed through (iSCSI params)
    where: Where = field(default=NOWHERE, compare=False)


@dataclass
class ScstConfig:
    """A whole SCST setup."""

    devices: list[Device] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)  # 0.9.6 global groups
    threads: int | None = None
    setup_id: int | None = None
    # Target drivers named in the file with their own attributes (e.g. "enabled").
    drivers: dict[str, dict[str, str]] = field(default_factory=dict)

    def device(self, name: str) -> Device | None:
        for dev in self.devices:
            if dev.name == name:
                return dev
        return None

    def group(self, name: str) -> Group | None:
        for grp in self.groups:
            if grp.name == name:
                return grp
        return None

    def target(self, fabric: str, name: str) -> Target | None:
        for tgt in self.targets:
            if tgt.fabric == fabric and tgt.name == name:
                return tgt
        return None


def fabric_of(driver_or_fabric: str, where: Where = NOWHERE) -> str:
    """The LIO fabric name for an LIO fabric or SCST target driver name."""
    if driver_or_fabric in FABRIC_DRIVERS:
        return driver_or_fabric
    if driver_or_fabric in _DRIVER_FABRICS:
        return _DRIVER_FABRICS[driver_or_fabric]
    known = ", ".join(sorted(set(FABRIC_DRIVERS) | set(_DRIVER_FABRICS)))
    raise where.error(f"unknown target driver {driver_or_fabric!r}; use one of: {known}")


def is_default_group(name: str) -> bool:
    return name == DEFAULT_GROUP or name.startswith(DEFAULT_GROUP_PREFIX)


def groups_for(config: ScstConfig, target: Target) -> list[Group]:
    """The named groups of ``target`` in SCST lookup order (first match wins)."""
    global_named = [g for g in config.groups if not is_default_group(g.name)]
    return [*target.groups, *global_named]


def default_for(config: ScstConfig, target: Target) -> Group:
    """The group giving the LUNs of initiators no named group claims on ``target``."""
    if target.luns:
        return Group(DEFAULT_GROUP, [], list(target.luns), where=target.where)
    per_target = config.group(DEFAULT_GROUP_PREFIX + target.name)
    if per_target is not None:
        return per_target
    builtin = config.group(DEFAULT_GROUP)
    if builtin is not None:
        return builtin
    return Group(DEFAULT_GROUP)


def initiator_name_error(name: str, fabric: str | None = None) -> str | None:
    """Why ``name`` cannot be an initiator name (on ``fabric``), or None if it can."""
    if not name:
        return "initiator name is empty"
    if _BAD_NAME_CHARS.search(name):
        return f"initiator name {name!r} contains '/' or white space, which LIO cannot store"
    if len(name.encode()) > MAX_NAME_LEN:
        return f"initiator name {name[:32]!r}... is longer than {MAX_NAME_LEN} bytes"
    if fabric in FC_FABRICS and not _WWPN.match(name):
        return (
            f"initiator name {name!r} is not an FC WWPN; "
            "write 8 lower-case hex bytes with colons, e.g. 21:00:00:24:ff:31:4c:48"
        )
    return None


def name_fits_fabric(name: str, fabric: str) -> bool:
    """Whether a global (0.9.6) group member can log in on ``fabric`` at all.

    0.9.6 names are shared by every target driver; a name only ever matches sessions
    of the driver whose name format it has, so an IQN is not expanded onto FC ports.
    """
    is_wwpn = bool(_WWPN.match(name))
    if fabric in FC_FABRICS:
        return is_wwpn
    if fabric == "iscsi":
        return not is_wwpn
    return False  # loopback has no initiator names, only one nexus per TPG


def device_name_error(name: str, handler: str) -> str | None:
    """Why ``name`` cannot be a device name for ``handler``, or None if it can."""
    if handler in PASSTHROUGH_HANDLERS:
        if not _HCTL.match(name):
            return f"pass-through device {name!r} must be named by its address H:C:I:L"
        return None
    if not name:
        return "device name is empty"
    if re.search(r"[\s/,:]", name):
        return (
            f"device name {name!r} contains '/', ',', ':' or white space, "
            "which a LIO backstore name cannot hold"
        )
    if len(name) > 64:
        return f"device name {name[:32]!r}... is longer than 64 characters"
    return None


def target_name_error(name: str, fabric: str) -> str | None:
    """Why ``name`` cannot name a target on ``fabric``, or None if it can."""
    if not name or _BAD_NAME_CHARS.search(name):
        return f"target name {name!r} is empty or contains '/' or white space"
    if fabric in FC_FABRICS and not _WWPN.match(name):
        return (
            f"{fabric} target {name!r} is not a port WWPN; write 8 lower-case hex bytes "
            "with colons, e.g. 21:00:00:24:ff:31:4c:48"
        )
    if fabric == "iscsi" and len(name.encode()) > MAX_NAME_LEN:
        return f"iSCSI target name {name[:32]!r}... is longer than {MAX_NAME_LEN} bytes"
    return None


def _check_luns(config: ScstConfig, owner: str, luns: list[Lun], where: Where) -> None:
    numbers: dict[int, Lun] = {}
    devices: dict[str, Lun] = {}
    for lun in luns:
        at = lun.where if lun.where.line else where
        if not 0 <= lun.number <= MAX_LUN:
            raise at.error(f"LUN {lun.number} in {owner} is out of range 0..{MAX_LUN}")
        if lun.number in numbers:
            raise at.error(
                f"LUN {lun.number} is assigned twice in {owner} "
                f"({numbers[lun.number].device} and {lun.device}); give each device its own LUN"
            )
        if config.device(lun.device) is None:
            raise at.error(
                f"LUN {lun.number} in {owner} names unknown device {lun.device!r}; "
                "define it in a HANDLER section first"
            )
        if lun.device in devices:
            raise at.error(
                f"device {lun.device} is exported twice in {owner} (LUN "
                f"{devices[lun.device].number} and {lun.number}); keep one"
            )
        numbers[lun.number] = lun
        devices[lun.device] = lun
    if luns and 0 not in numbers:
        raise where.error(
            f"{owner} has no LUN 0: there must be LUN 0 in each security group; "
            "renumber its LUNs to start at 0"
        )


def _check_group(config: ScstConfig, grp: Group, fabric: str | None, owner: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(grp.initiators):
        at = grp.initiator_lines[index] if index < len(grp.initiator_lines) else grp.where
        problem = initiator_name_error(name, fabric)
        if problem is not None:
            raise at.error(f"{problem} (in {owner})")
        if name in seen:
            raise at.error(f"initiator {name} is listed twice in {owner}; remove one")
        seen.add(name)
    _check_luns(config, owner, grp.luns, grp.where)


def _unique(items: Iterable[tuple[str, Where]], what: str) -> None:
    seen: set[str] = set()
    for name, where in items:
        if name in seen:
            raise where.error(f"{what} {name} is defined twice; remove or rename one")
        seen.add(name)


def validate(config: ScstConfig) -> None:
    """Check the rules SCST enforces; raise the first violation as a ConfigError."""
    for dev in config.devices:
        if dev.handler not in HANDLER_TYPES:
            known = ", ".join(sorted(HANDLER_TYPES))
            raise dev.where.error(f"unknown handler {dev.handler!r}; use one of: {known}")
        problem = device_name_error(dev.name, dev.handler)
        if problem is not None:
            raise dev.where.error(problem)
    _unique(((d.name, d.where) for d in config.devices), "device")
    _unique(((g.name, g.where) for g in config.groups), "group")
    _unique(((f"{t.fabric}/{t.name}", t.where) for t in config.targets), "target")
    if config.threads is not None and not 1 <= config.threads <= 1024:
        raise ConfigError(f"threads {config.threads} is out of range 1..1024")
    for grp in config.groups:
        _check_group(config, grp, None, f"group {grp.name}")
    for tgt in config.targets:
        if tgt.fabric not in FABRIC_DRIVERS:
            raise tgt.where.error(f"unknown fabric {tgt.fabric!r} for target {tgt.name}")
        problem = target_name_error(tgt.name, tgt.fabric)
        if problem is not None:
            raise tgt.where.error(problem)
        _check_luns(config, f"target {tgt.name}", tgt.luns, tgt.where)
        _unique(((g.name, g.where) for g in tgt.groups), f"group of target {tgt.name}:")
        for grp in tgt.groups:
            if is_default_group(grp.name):
                raise grp.where.error(
                    f"group name {grp.name} is reserved for the default LUN set; "
                    f"put target {tgt.name}'s default LUNs directly in its TARGET section"
                )
            _check_group(config, grp, tgt.fabric, f"group {grp.name} of target {tgt.name}")
        if tgt.fabric != "iscsi" and (tgt.incoming_users or tgt.outgoing_user or tgt.portals):
            raise tgt.where.error(
                f"target {tgt.name}: CHAP and portals exist only on iSCSI; remove them"
            )
        holders: list[tuple[str, list[tuple[str, str]], Where]] = [
            (f"target {tgt.name}", tgt.incoming_users, tgt.where),
            *((f"group {g.name}", g.incoming_users, g.where) for g in tgt.groups),
        ]
        for owner, users, where in holders:
            if len(users) > 1:
                raise where.error(
                    f"{len(users)} IncomingUser accounts for {owner}: LIO keeps one CHAP "
                    "account per initiator; keep one (or split the group)"
                )

