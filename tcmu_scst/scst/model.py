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

from tcmu_scst.errors import ConfigError, ErrorCollector
from tcmu_scst.kernel.fabric_table import MANAGED, has
from tcmu_scst.kernel.handler_table import ASSIGNED_HANDLERS, HANDLER_TYPES, TYPE_DISK

DEFAULT_GROUP = "Default"
DEFAULT_GROUP_PREFIX = "Default_"


# LIO fabric name -> SCST target driver name (kernel.fabric_table). Both spellings are
# accepted everywhere.
FABRIC_DRIVERS: dict[str, str] = {f.name: f.scst_driver or f.name for f in MANAGED}
_DRIVER_FABRICS = {driver: fabric for fabric, driver in FABRIC_DRIVERS.items()}
FC_FABRICS = frozenset(f.name for f in MANAGED if f.wwpn_names)

MAX_LUN = 16383  # SAM flat space addressing; LIO accepts more, initiators rarely do.
MAX_NAME_LEN = 223  # iSCSI names are at most 223 bytes (RFC 3720 3.2.6.1).

_WWPN = re.compile(r"^([0-9a-f]{2}:){7}[0-9a-f]{2}$")
_HCTL = re.compile(r"^\d+:\d+:\d+:\d+$")
_BAD_NAME_CHARS = re.compile(r"[\s/]")
# RFC 3720 3.2.6.3 name formats after RFC 3722's case folding (what initiators send):
# iqn.YYYY-MM.reversed.domain[:anything], eui.<16 hex>, naa.<16 or 32 hex>.
_IQN = re.compile(r"^iqn\.\d{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[a-z0-9.:-]*)?$")
_EUI = re.compile(r"^eui\.[0-9a-f]{16}$")
_NAA = re.compile(r"^naa\.([0-9a-f]{16}|[0-9a-f]{32})$")
# Worker threads per device, for the file, the shell, proc and the daemon's SET_THREADS
# (SCST's /proc/scsi_tgt/threads had no bound; past a few hundred only memory grows).
MAX_THREADS = 256
MAX_ACL_TAG = 63  # LIO keeps an ACL tag in 64 bytes with its NUL (MAX_ACL_TAG_SIZE)
# CHAP secrets: RFC 7143 12.1.3 wants at least 12 bytes (96 bits) for a shared secret;
# the Microsoft initiator accepts 12..16 only, so a longer one locks Windows hosts out.
MIN_CHAP_SECRET, MAX_CHAP_SECRET = 12, 16
_FC_PATTERN = re.compile(r"^[0-9a-f:*?]+$")


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


# SCST 3.x ALUA state names -> SPC-4 asymmetric access state (LIO's alua_access_state).
ALUA_STATES: dict[str, int] = {
    "active": 0x0,
    "nonoptimized": 0x1,
    "standby": 0x2,
    "unavailable": 0x3,
    "offline": 0xE,
    "transitioning": 0xF,
}
ALUA_STATE_NAMES = {value: name for name, value in ALUA_STATES.items()}
LIO_DEFAULT_TG = "default_tg_pt_gp"  # LIO's built-in group of every backstore (id 0)
MAX_TG_ID = 0xFFFF  # tg_pt_gp_id is a u16; 0 makes LIO pick an id itself, so 1..65535
_ALUA_NAME = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")


@dataclass
class TargetGroupMember:
    """A TARGET line of a TARGET_GROUP: an SCST target whose ports are in the group."""

    name: str
    rel_tgt_id: int | None = None  # kept for scstadmin; LIO numbers its ports itself
    where: Where = field(default=NOWHERE, compare=False)


@dataclass
class TargetGroup:
    """An ALUA target port group (SCST ``TARGET_GROUP``; a LIO ``alua/`` group)."""

    name: str
    group_id: int = 0
    state: str = "active"
    preferred: bool = False
    targets: list[TargetGroupMember] = field(default_factory=list)
    where: Where = field(default=NOWHERE, compare=False)

    def target(self, name: str) -> TargetGroupMember | None:
        for member in self.targets:
            if member.name == name:
                return member
        return None


@dataclass
class DeviceGroup:
    """SCST's ``DEVICE_GROUP``: devices sharing the same target port groups."""

    name: str
    devices: list[str] = field(default_factory=list)
    target_groups: list[TargetGroup] = field(default_factory=list)
    where: Where = field(default=NOWHERE, compare=False)
    device_lines: list[Where] = field(default_factory=list, compare=False)

    def target_group(self, name: str) -> TargetGroup | None:
        for tg in self.target_groups:
            if tg.name == name:
                return tg
        return None


@dataclass
class ScstConfig:
    """A whole SCST setup."""

    devices: list[Device] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)  # 0.9.6 global groups
    threads: int | None = None
    setup_id: int | None = None
    threads_where: Where = field(default=NOWHERE, compare=False)
    # "FILE:LINE: attr has no effect here: why" for SCST attributes LIO has no use for.
    warnings: list[str] = field(default_factory=list, compare=False)
    # Target drivers named in the file with their own attributes (e.g. "enabled").
    drivers: dict[str, dict[str, str]] = field(default_factory=dict)
    device_groups: list[DeviceGroup] = field(default_factory=list)  # ALUA

    def device_group(self, name: str) -> DeviceGroup | None:
        for dg in self.device_groups:
            if dg.name == name:
                return dg
        return None

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


def is_pattern(name: str) -> bool:
    """Whether an INITIATOR entry is an SCST 3.x pattern, not one exact name.

    Modern SCST matches a group's entries with ``wildcmp``: ``*`` any run of characters,
    ``?`` any one character, a leading ``!`` negates the rest (lio-and-scst.md §2.1).
    """
    return name.startswith("!") or "*" in name or "?" in name


def wildcard_match(pattern: str, name: str) -> bool:
    """Whether ``name`` matches the SCST initiator pattern (exact, case-sensitive, as the
    kernel compares names). Linear backtracking over ``*``: at most len(pattern) *
    len(name) steps, and names are at most 223 bytes."""
    if pattern.startswith("!"):
        return not _glob(pattern[1:], name)
    return _glob(pattern, name)


def _glob(pattern: str, name: str) -> bool:
    p = n = 0
    star_p, star_n = -1, 0
    while n < len(name):
        if p < len(pattern) and pattern[p] in ("?", name[n]) and pattern[p] != "*":
            p, n = p + 1, n + 1
        elif p < len(pattern) and pattern[p] == "*":
            star_p, star_n = p, n
            p += 1
        elif star_p >= 0:
            star_n += 1
            p, n = star_p + 1, star_n
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def group_matches(grp: Group, name: str) -> bool:
    """Whether one of ``grp``'s INITIATOR entries (a name or a pattern) takes ``name``."""
    return any(wildcard_match(e, name) if is_pattern(e) else e == name for e in grp.initiators)


def _pattern_error(pattern: str, fabric: str | None) -> str | None:
    body = pattern[1:] if pattern.startswith("!") else pattern
    if not body:
        return f"initiator pattern {pattern!r} has nothing after '!'"
    if fabric in FC_FABRICS and not _FC_PATTERN.match(body):
        return (
            f"initiator pattern {pattern!r} cannot match an FC WWPN; use lower-case hex, "
            "':', '*' and '?' only, e.g. 21:00:00:24:ff:*"
        )
    return None


def iscsi_name_error(name: str, what: str) -> str | None:
    """Why ``name`` is not an iSCSI name as initiators send it (RFC 3720/3722), or None."""
    if name != name.lower() and iscsi_name_error(name.lower(), what) is None:
        return (
            f"{what} {name!r} has upper-case letters: iSCSI names are case-folded (RFC 3722) "
            f"and LIO compares them exactly; write {name.lower()}"
        )
    if _IQN.match(name) or _EUI.match(name) or _NAA.match(name):
        return None
    return (
        f"{what} {name!r} is not an iSCSI name; write iqn.YYYY-MM.reversed.domain[:id], "
        "eui.<16 hex digits> or naa.<16 or 32 hex digits> (RFC 3720 3.2.6.3)"
    )


def chap_error(user: str, secret: str) -> str | None:
    """Why (user, secret) cannot be a CHAP account, or None."""
    if not user or not secret or any(c.isspace() for c in user + secret):
        return "CHAP user and secret must be single words without blanks"
    size = len(secret.encode())
    if not MIN_CHAP_SECRET <= size <= MAX_CHAP_SECRET:
        return (
            f"CHAP secret of {user} is {size} bytes; use {MIN_CHAP_SECRET} to "
            f"{MAX_CHAP_SECRET} (RFC 7143 wants 12 or more, the Windows initiator at most 16)"
        )
    return None


def threads_error(threads: int | None, lowest: int = 1) -> str | None:
    """Why ``threads`` cannot be the daemon's per-device worker count (None: unset).

    SCST's threads file, the config file and the shell take 1..MAX_THREADS; the daemon's
    own control request also takes 0 (everything on the ring thread): ``lowest=0``.
    """
    if threads is not None and not lowest <= threads <= MAX_THREADS:
        return f"threads {threads} is out of range {lowest}..{MAX_THREADS}"
    return None


def group_name_error(name: str) -> str | None:
    """Why ``name`` cannot name a security group (it becomes the iSCSI ACL tag)."""
    if not name or _BAD_NAME_CHARS.search(name):
        return f"group name {name!r} is empty or contains '/' or white space"
    if len(name.encode()) > MAX_ACL_TAG:
        return (
            f"group name {name[:32]!r}... is {len(name.encode())} bytes; LIO's ACL tag "
            f"holds {MAX_ACL_TAG}: shorten it"
        )
    return None


def initiator_name_error(name: str, fabric: str | None = None) -> str | None:
    """Why ``name`` cannot be an initiator name or pattern (on ``fabric``), or None."""
    if not name:
        return "initiator name is empty"
    if is_pattern(name) and not _BAD_NAME_CHARS.search(name):
        if len(name.encode()) > MAX_NAME_LEN + 1:
            return f"initiator pattern {name[:32]!r}... is longer than {MAX_NAME_LEN} bytes"
        return _pattern_error(name, fabric)
    if _BAD_NAME_CHARS.search(name):
        return f"initiator name {name!r} contains '/' or white space, which LIO cannot store"
    if len(name.encode()) > MAX_NAME_LEN:
        return f"initiator name {name[:32]!r}... is longer than {MAX_NAME_LEN} bytes"
    if fabric in FC_FABRICS and not _WWPN.match(name):
        return (
            f"initiator name {name!r} is not an FC WWPN; "
            "write 8 lower-case hex bytes with colons, e.g. 21:00:00:24:ff:31:4c:48"
        )
    if has(fabric, "iscsi_names") or (fabric is None and not _WWPN.match(name)):
        return iscsi_name_error(name, "initiator name")
    return None


def name_fits_fabric(name: str, fabric: str) -> bool:
    """Whether a global (0.9.6) group member can log in on ``fabric`` at all.

    0.9.6 names are shared by every target driver; a name only ever matches sessions
    of the driver whose name format it has, so an IQN is not expanded onto FC ports.
    """
    if is_pattern(name):
        return has(fabric, "acls")  # a pattern may match names of any fabric with ACLs
    is_wwpn = bool(_WWPN.match(name))
    if fabric in FC_FABRICS:
        return is_wwpn
    if has(fabric, "iscsi_names"):
        return not is_wwpn
    return False  # loopback has no initiator names, only one nexus per TPG


def device_name_error(name: str, handler: str) -> str | None:
    """Why ``name`` cannot be a device name for ``handler``, or None if it can."""
    if handler in ASSIGNED_HANDLERS:
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
    if has(fabric, "iscsi_names") and len(name.encode()) > MAX_NAME_LEN:
        return f"iSCSI target name {name[:32]!r}... is longer than {MAX_NAME_LEN} bytes"
    if has(fabric, "iscsi_names"):
        return iscsi_name_error(name, "iSCSI target name")
    return None


def _check_luns(
    known: set[str], owner: str, luns: list[Lun], where: Where, errors: ErrorCollector
) -> None:
    numbers: dict[int, Lun] = {}
    devices: dict[str, Lun] = {}
    for lun in luns:
        with errors.guard():
            _check_lun(known, owner, lun, where, numbers, devices)
    if luns and 0 not in numbers:
        errors.add(
            where.error(
                f"{owner} has no LUN 0: there must be LUN 0 in each security group; "
                "renumber its LUNs to start at 0"
            )
        )


def _check_lun(
    known: set[str],
    owner: str,
    lun: Lun,
    where: Where,
    numbers: dict[int, Lun],
    devices: dict[str, Lun],
) -> None:
    at = lun.where if lun.where.line else where
    if not 0 <= lun.number <= MAX_LUN:
        raise at.error(f"LUN {lun.number} in {owner} is out of range 0..{MAX_LUN}")
    if lun.number in numbers:
        raise at.error(
            f"LUN {lun.number} is assigned twice in {owner} "
            f"({numbers[lun.number].device} and {lun.device}); give each device its own LUN"
        )
    numbers[lun.number] = lun
    if lun.device not in known:
        raise at.error(
            f"LUN {lun.number} in {owner} names unknown device {lun.device!r}; "
            "define it in a HANDLER section first"
        )
    if lun.device in devices:
        raise at.error(
            f"device {lun.device} is exported twice in {owner} (LUN "
            f"{devices[lun.device].number} and {lun.number}); keep one"
        )
    devices[lun.device] = lun


def _check_group(
    known: set[str], grp: Group, fabric: str | None, owner: str, errors: ErrorCollector
) -> None:
    problem = group_name_error(grp.name)
    if problem is not None:
        errors.add(grp.where.error(problem))
    seen: set[str] = set()
    for index, name in enumerate(grp.initiators):
        at = grp.initiator_lines[index] if index < len(grp.initiator_lines) else grp.where
        problem = initiator_name_error(name, fabric)
        if problem is not None:
            errors.add(at.error(f"{problem} (in {owner})"))
        elif name in seen:
            errors.add(at.error(f"initiator {name} is listed twice in {owner}; remove one"))
        seen.add(name)
    _check_luns(known, owner, grp.luns, grp.where, errors)


def _unique(items: Iterable[tuple[str, Where]], what: str, errors: ErrorCollector) -> None:
    seen: set[str] = set()
    for name, where in items:
        if name in seen:
            errors.add(where.error(f"{what} {name} is defined twice; remove or rename one"))
        seen.add(name)


def _check_device(dev: Device) -> None:
    if dev.handler not in HANDLER_TYPES:
        known = ", ".join(sorted(HANDLER_TYPES))
        raise dev.where.error(f"unknown handler {dev.handler!r}; use one of: {known}")
    problem = device_name_error(dev.name, dev.handler)
    if problem is not None:
        raise dev.where.error(problem)


def _check_target(config: ScstConfig, known: set[str], tgt: Target, errors: ErrorCollector) -> None:
    if tgt.fabric not in FABRIC_DRIVERS:
        raise tgt.where.error(f"unknown fabric {tgt.fabric!r} for target {tgt.name}")
    problem = target_name_error(tgt.name, tgt.fabric)
    if problem is not None:
        errors.add(tgt.where.error(problem))
    _check_luns(known, f"target {tgt.name}", tgt.luns, tgt.where, errors)
    _unique(((g.name, g.where) for g in tgt.groups), f"group of target {tgt.name}:", errors)
    for grp in tgt.groups:
        if is_default_group(grp.name):
            errors.add(
                grp.where.error(
                    f"group name {grp.name} is reserved for the default LUN set; "
                    f"put target {tgt.name}'s default LUNs directly in its TARGET section"
                )
            )
            continue
        _check_group(known, grp, tgt.fabric, f"group {grp.name} of target {tgt.name}", errors)
    if not has(tgt.fabric, "chap_and_portals") and (
        tgt.incoming_users or tgt.outgoing_user or tgt.portals
    ):
        errors.add(
            tgt.where.error(f"target {tgt.name}: CHAP and portals exist only on iSCSI; remove them")
        )
    holders: list[tuple[str, list[tuple[str, str]], Where]] = [
        (f"target {tgt.name}", tgt.incoming_users, tgt.where),
        *((f"group {g.name}", g.incoming_users, g.where) for g in tgt.groups),
    ]
    if tgt.outgoing_user is not None:
        holders.append((f"target {tgt.name}", [tgt.outgoing_user], tgt.where))
    for owner, users, where in holders:
        for user, secret in users:
            problem = chap_error(user, secret)
            if problem is not None:
                errors.add(where.error(f"{problem} ({owner})"))
        if len(users) > 1:
            errors.add(
                where.error(
                    f"{len(users)} IncomingUser accounts for {owner}: LIO keeps one CHAP "
                    "account per initiator; keep one (or split the group)"
                )
            )


def check(config: ScstConfig, errors: ErrorCollector) -> None:
    """Every violation of the rules SCST enforces, into ``errors`` (linear in size)."""
    for dev in config.devices:
        with errors.guard():
            _check_device(dev)
    known = {dev.name for dev in config.devices}
    _unique(((d.name, d.where) for d in config.devices), "device", errors)
    _unique(((g.name, g.where) for g in config.groups), "group", errors)
    _unique(((f"{t.fabric}/{t.name}", t.where) for t in config.targets), "target", errors)
    problem = threads_error(config.threads)
    if problem is not None:
        errors.add(config.threads_where.error(problem))
    for grp in config.groups:
        _check_group(known, grp, None, f"group {grp.name}", errors)
    check_alua(config, errors)
    for tgt in config.targets:
        with errors.guard():
            _check_target(config, known, tgt, errors)


def validate(config: ScstConfig) -> None:
    """Check the rules SCST enforces; raise every violation at once (ConfigErrors)."""
    errors = ErrorCollector()
    check(config, errors)
    errors.raise_if_any()


def alua_name_error(name: str, what: str) -> str | None:
    """Why ``name`` cannot name a device or target group, or None if it can."""
    if not _ALUA_NAME.match(name):
        return f"{what} name {name!r} is not usable; use up to 64 letters, digits or _.:@+-"
    if name == LIO_DEFAULT_TG:
        return f"{what} name {name} is LIO's built-in group of every device; pick another"
    return None


def _check_target_group(config: ScstConfig, dg: DeviceGroup, tg: TargetGroup) -> None:
    owner = f"target group {tg.name} of device group {dg.name}"
    if not 1 <= tg.group_id <= MAX_TG_ID:
        raise tg.where.error(
            f"{owner}: group_id {tg.group_id} is out of range 1..{MAX_TG_ID} "
            "(LIO reserves 0 for its default group); set group_id"
        )
    if tg.state not in ALUA_STATES:
        raise tg.where.error(
            f"{owner}: state {tg.state!r} is not one of {', '.join(ALUA_STATES)}"
        )
    names = {t.name for t in config.targets}
    for member in tg.targets:
        at = member.where if member.where.line else tg.where
        if member.name not in names:
            raise at.error(
                f"{owner} names target {member.name}, which no TARGET_DRIVER defines; "
                "LIO can only group its own ports: define the target or remove the line"
            )
        if member.rel_tgt_id is not None and not 1 <= member.rel_tgt_id <= 0xFFFF:
            raise at.error(f"{owner}: rel_tgt_id {member.rel_tgt_id} is out of range 1..65535")


def check_alua(config: ScstConfig, errors: ErrorCollector) -> None:
    """SCST's DEVICE_GROUP rules plus what LIO's tg_pt_gp files accept (the first
    problem of each device group, every device group checked)."""
    _unique(((d.name, d.where) for d in config.device_groups), "device group", errors)
    grouped: dict[str, str] = {}
    known = {dev.name for dev in config.devices}
    for dg in config.device_groups:
        with errors.guard():
            _check_device_group(config, known, dg, grouped, errors)


def _check_device_group(
    config: ScstConfig,
    known: set[str],
    dg: DeviceGroup,
    grouped: dict[str, str],
    errors: ErrorCollector,
) -> None:
    problem = alua_name_error(dg.name, "device group")
    if problem is not None:
        raise dg.where.error(problem)
    for index, device in enumerate(dg.devices):
        at = dg.device_lines[index] if index < len(dg.device_lines) else dg.where
        if device not in known:
            raise at.error(
                f"device group {dg.name} names unknown device {device!r}; "
                "define it in a HANDLER section first"
            )
        if device in grouped:
            raise at.error(
                f"device {device} is in device group {grouped[device]} and {dg.name}; "
                "a device belongs to one device group"
            )
        grouped[device] = dg.name
    _unique(((t.name, t.where) for t in dg.target_groups), f"target group of {dg.name}:",
            errors)
    ids: dict[int, str] = {}
    members: dict[str, str] = {}
    for tg in dg.target_groups:
        problem = alua_name_error(tg.name, "target group")
        if problem is not None:
            raise tg.where.error(problem)
        _check_target_group(config, dg, tg)
        if tg.group_id in ids:
            raise tg.where.error(
                f"group_id {tg.group_id} is used by target groups {ids[tg.group_id]} and "
                f"{tg.name} of device group {dg.name}; give each its own id"
            )
        ids[tg.group_id] = tg.name
        for member in tg.targets:
            if member.name in members:
                at = member.where if member.where.line else tg.where
                raise at.error(
                    f"target {member.name} is in target groups {members[member.name]} and "
                    f"{tg.name} of device group {dg.name}; a port has one group"
                )
            members[member.name] = tg.name
