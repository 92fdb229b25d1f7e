"""SCST model -> desired LIO state (lio-and-scst.md §2.4), independent of configfs.

Per SCST target (iSCSI, qla2xxx, tcm_fc) one LIO WWN with ``tpgt_1``:

* TPG LUN table = every device exported to that target by the default LUN set or by
  a group with at least one member there, one TPG LUN per device;
* one explicit ACL per group member, with the group's numbering, ``write_protect``
  for READ_ONLY and (iSCSI) ``tag`` = group name; first group naming an initiator wins;
* the default set decides the TPG mode:

  - case A, default set empty: no demo mode (iSCSI also hides the target from
    SendTargets: ``demo_mode_discovery=0``; qla2xxx logs unknown ports in with no LUNs:
    ``demo_mode_login_only=1``);
  - case B, the default set covers the whole TPG table at the same numbers with one RO
    flag for its disks: demo mode with ``demo_mode_write_protect`` = that flag;
  - case C, otherwise: no demo mode (qla2xxx: login_only) and the materializer
    (:mod:`tcmu_scst.scst.materializer`) creates an ACL with :attr:`LioTarget.default_map`
    for each unknown initiator it sees.

ALUA (SCST ``DEVICE_GROUP``): each ``TARGET_GROUP`` becomes an ``alua/<name>`` group of
every device of the device group (``tg_pt_gp_id`` = group_id, ``alua_access_state``,
``preferred``), and every TPG LUN of those devices in a LIO target serving one of the
group's SCST targets joins it (``alua_tg_pt_gp``); other LUNs stay in LIO's
``default_tg_pt_gp``.

Loopback (scst_local) has one nexus per TPG and no ACLs, so each SCST group and the
default set become a LIO loopback target of their own (§1.4), LUNs at the group's numbers;
the default set's target exists even while it has no LUN.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from typing import Any, Literal

from tcmu_scst.kernel.fabric_table import MANAGED, has
from tcmu_scst.kernel.handler_table import VCDROM
from tcmu_scst.scst import devconfig
from tcmu_scst.scst.catalogue import ISCSI_PARAMS
from tcmu_scst.scst.model import (
    ALUA_STATES,
    DEFAULT_GROUP,
    LIO_DEFAULT_TG,
    Device,
    Group,
    ScstConfig,
    Target,
    default_for,
    groups_for,
    is_pattern,
    name_fits_fabric,
    wildcard_match,
)

# Model fabric name -> configfs fabric directory (kernel.fabric_table).
FABRIC_DIRS: dict[str, str] = {f.name: f.directory for f in MANAGED}
DEFAULT_PORTAL = "0.0.0.0:3260"
TPG_TAG = 1
_NAA_LOOPBACK = re.compile(r"^naa\.[0-9a-f]{16}$")

DefaultCase = Literal["A", "B", "C", "loopback"]
# (fabric dir, wwn) -> {device: TPG LUN index} of the live state, to keep indices stable.
IndexHints = Mapping[tuple[str, str], Mapping[str, int]]


@dataclass(frozen=True)
class Backstore:
    """One TCMU user backstore (one SCST device)."""

    name: str
    dev_config: str
    dev_size: int
    hw_block_size: int
    nl_reply_supported: int
    cmd_time_out: int | None = None  # None: the kernel's default (30 s)
    tmr_notification: bool = False  # pass-through handlers act on aborts and resets


@dataclass(frozen=True)
class MappedLun:
    number: int  # the LUN the initiator sees
    tpg_lun: int  # index in the TPG LUN table
    write_protect: bool = False


@dataclass(frozen=True)
class Chap:
    userid: str
    password: str
    userid_mutual: str = ""
    password_mutual: str = ""


@dataclass
class Acl:
    name: str
    group: str  # SCST group name (the ACL tag on iSCSI)
    mapped_luns: list[MappedLun] = field(default_factory=list)
    chap: Chap | None = None
    materialized: bool = False  # made for an unknown initiator (case C), not by the file


@dataclass
class Tpg:
    tag: int = TPG_TAG
    attributes: dict[str, str] = field(default_factory=dict)  # attrib/
    params: dict[str, str] = field(default_factory=dict)  # param/ (iSCSI)
    auth: Chap | None = None  # auth/ (demo-mode credentials, iSCSI)
    luns: dict[int, str] = field(default_factory=dict)  # TPG LUN index -> device name
    portals: list[str] = field(default_factory=list)
    acls: list[Acl] = field(default_factory=list)
    nexus: str | None = None  # loopback only
    enabled: bool = True


@dataclass(frozen=True)
class PatternRule:
    """A group with SCST initiator patterns: what the materializer gives a matching name.

    LIO matches ACL names exactly (lio-and-scst.md §2.2), so a pattern cannot be an ACL;
    an initiator that logs in and matches gets an explicit ACL with the group's map.
    """

    group: str
    patterns: tuple[str, ...]
    mapped_luns: tuple[MappedLun, ...]
    chap: Chap | None = None

    def matches(self, name: str) -> bool:
        return any(wildcard_match(p, name) for p in self.patterns)

    def to_state(self) -> dict[str, Any]:
        """The JSON form kept in the state file (ownership.OwnedTarget.pattern_rules)."""
        return {
            "group": self.group,
            "patterns": list(self.patterns),
            "map": [[m.number, m.tpg_lun, int(m.write_protect)] for m in self.mapped_luns],
            "chap": list(astuple(self.chap)) if self.chap else [],
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> PatternRule:
        chap = data.get("chap") or []
        return cls(
            str(data["group"]),
            tuple(str(p) for p in data["patterns"]),
            tuple(MappedLun(int(n), int(t), bool(ro)) for n, t, ro in data["map"]),
            Chap(*(str(c) for c in chap)) if chap else None,
        )


def materialized_acl(
    name: str,
    rules: Sequence[PatternRule],
    default: PatternRule | None,
) -> Acl | None:
    """The ACL an unknown initiator gets: the first pattern group that matches it, else
    the default group's map (``default``; None when the default set is empty, case A:
    such an initiator stays refused, as modern iSCSI-SCST refuses it)."""
    for rule in rules:
        if rule.matches(name):
            return Acl(name, rule.group, list(rule.mapped_luns), rule.chap, True)
    if default is None:
        return None
    return Acl(name, default.group, list(default.mapped_luns), default.chap, True)


@dataclass
class LioTarget:
    fabric: str  # configfs fabric directory (iscsi, loopback, qla2xxx, fc)
    wwn: str
    tpg: Tpg
    scst_target: str  # the SCST target this LIO target serves
    scst_group: str = DEFAULT_GROUP  # loopback: the SCST group this LIO target serves
    default_case: DefaultCase = "A"
    default_group: str = DEFAULT_GROUP
    default_map: list[MappedLun] = field(default_factory=list)  # case C materializer map
    default_chap: Chap | None = None  # CHAP for materialized ACLs (case C)
    # Groups with initiator patterns (SCST order): case C, their members are materialized.
    pattern_rules: list[PatternRule] = field(default_factory=list)
    default_open: bool = True  # False: the default set is empty, only patterns materialize

    def default_rule(self) -> PatternRule | None:
        return default_rule(self.default_group, self.default_map, self.default_chap,
                            self.default_open)  # fmt: skip


def default_rule(
    group: str, mapped: Sequence[MappedLun], chap: Chap | None, is_open: bool
) -> PatternRule | None:
    """The default group as the materializer's catch-all (None: nobody else gets in)."""
    return PatternRule(group, ("*",), tuple(mapped), chap) if is_open else None


@dataclass(frozen=True)
class PortGroup:
    """One ALUA target port group of a backstore (``alua/<name>``)."""

    name: str
    group_id: int
    state: int  # SPC-4 asymmetric access state, as alua_access_state holds it
    preferred: bool = False


# (fabric dir, wwn, TPG LUN index): one LUN of one LIO target.
LunKey = tuple[str, str, int]


@dataclass
class DesiredState:
    backstores: list[Backstore] = field(default_factory=list)
    targets: list[LioTarget] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    port_groups: dict[str, list[PortGroup]] = field(default_factory=dict)  # device -> groups
    lun_groups: dict[LunKey, str] = field(default_factory=dict)  # absent: default group

    def lun_group(self, key: LunKey) -> str:
        return self.lun_groups.get(key, LIO_DEFAULT_TG)

    def target(self, fabric: str, wwn: str) -> LioTarget | None:
        for tgt in self.targets:
            if tgt.fabric == fabric and tgt.wwn == wwn:
                return tgt
        return None


def derived_naa(*parts: str) -> str:
    """A stable loopback WWN ``naa.5001405<9 hex>`` (LIO's OUI prefix) from ``parts``."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return f"naa.5001405{digest[:9]}"


def _chap(users: list[tuple[str, str]], mutual: tuple[str, str] | None) -> Chap | None:
    if not users:
        return None
    user, secret = users[0]
    m_user, m_secret = mutual if mutual is not None else ("", "")
    return Chap(user, secret, m_user, m_secret)


def _entries(target: Target, grp: Group, own: set[int]) -> list[str]:
    """The INITIATOR entries of ``grp`` that can apply on ``target``'s fabric."""
    if id(grp) in own:
        return grp.initiators
    return [n for n in grp.initiators if name_fits_fabric(n, target.fabric)]


def _members(target: Target, groups: Sequence[Group]) -> list[tuple[str, Group]]:
    """(exact initiator name, group) in SCST order: the first group whose entries take the
    name wins, so a name listed in a later group but matched by an earlier group's
    pattern belongs to the earlier group, as in SCST's lookup."""
    own = {id(g) for g in target.groups}
    entries = [(grp, _entries(target, grp, own)) for grp in groups]
    patterns = [(grp, [e for e in names if is_pattern(e)]) for grp, names in entries]
    exact = [(grp, {e for e in names if not is_pattern(e)}) for grp, names in entries]
    seen: dict[str, Group] = {}
    for _, names in entries:
        for name in names:
            if is_pattern(name) or name in seen:
                continue
            seen[name] = next(
                g
                for (g, ex), (_, pats) in zip(exact, patterns, strict=True)
                if name in ex or any(wildcard_match(p, name) for p in pats)
            )
    return list(seen.items())


def _pattern_groups(target: Target, groups: Sequence[Group]) -> list[tuple[Group, list[str]]]:
    """The groups with initiator patterns on ``target`` and their patterns, in order."""
    own = {id(g) for g in target.groups}
    result: list[tuple[Group, list[str]]] = []
    for grp in groups:
        found = [e for e in _entries(target, grp, own) if is_pattern(e)]
        if found:
            result.append((grp, found))
    return result


def _assign_indices(
    devices: list[str], preferred: list[dict[str, int]], hint: Mapping[str, int]
) -> dict[str, int]:
    """Give each device a TPG LUN index: live index, then preferred numbers, then free."""
    result: dict[str, int] = {}
    used: set[int] = set()
    wanted = set(devices)
    for source in [dict(hint), *preferred]:
        # Walk the source, not every device: linear in the config's size overall.
        for dev, number in source.items():
            if dev in wanted and dev not in result and number not in used:
                result[dev] = number
                used.add(number)
    free = 0
    for dev in devices:
        if dev not in result:
            while free in used:
                free += 1
            result[dev] = free
            used.add(free)
    return result


def _classify(default: Group, tpg_devices: list[str], devices: Mapping[str, Device]) -> DefaultCase:
    if not default.luns:
        return "A"
    if {lun.device for lun in default.luns} != set(tpg_devices):
        return "C"
    disk_flags = {lun.read_only for lun in default.luns if devices[lun.device].is_disk}
    # Demo-mode RO only covers disks: a read-only non-disk LUN (tape...) needs ACLs.
    non_disk_ro = any(
        lun.read_only and not devices[lun.device].is_disk and devices[lun.device].handler
        != VCDROM for lun in default.luns
    )  # fmt: skip
    return "B" if len(disk_flags) <= 1 and not non_disk_ro else "C"


def _tpg_attributes(fabric: str, case: str, read_only: bool, chap: bool) -> dict[str, str]:
    if has(fabric, "chap_and_portals"):  # CHAP, and SendTargets discovery on the portals
        attrs = {
            "authentication": "1" if chap else "0",
            "generate_node_acls": "1" if case == "B" else "0",
            "demo_mode_discovery": "0" if case == "A" else "1",
            "prod_mode_write_protect": "0",
        }
        if case == "B":
            # cache_dynamic_acls is left alone: with generate_node_acls=1 the kernel
            # (6.1) keeps it at 1 whatever is written, so it would never compare equal.
            attrs["demo_mode_write_protect"] = "1" if read_only else "0"
        return attrs
    if has(fabric, "login_only"):
        attrs = {
            "generate_node_acls": "1",
            "demo_mode_login_only": "0" if case == "B" else "1",
            "prod_mode_write_protect": "0",
        }
        if case == "B":
            attrs["demo_mode_write_protect"] = "1" if read_only else "0"
        return attrs
    return {}  # tcm_fc: no demo mode, nothing to set


def _fabric_target(
    config: ScstConfig,
    target: Target,
    devices: Mapping[str, Device],
    hints: IndexHints,
    materialized: Sequence[str],
    warnings: list[str],
) -> LioTarget:
    fabric_dir = FABRIC_DIRS[target.fabric]
    default = default_for(config, target)
    ordered = groups_for(config, target)
    members = _members(target, ordered)
    pattern_groups = _pattern_groups(target, ordered)
    exported = [lun.device for lun in default.luns]
    # One entry per group, not per member: a group of N members would be walked N times.
    distinct = list(
        {id(grp): grp for grp in [*(g for _, g in members), *(g for g, _ in pattern_groups)]}
        .values()
    )  # fmt: skip
    for grp in distinct:
        exported += [lun.device for lun in grp.luns]
    tpg_devices = list(dict.fromkeys(exported))
    case = _classify(default, tpg_devices, devices)
    if pattern_groups and case != "C":
        # Demo mode would give a pattern's initiators every LUN and an empty default set
        # refuses everyone: only the materializer can tell a matching name (case C).
        case = "C"
    default_numbers = {lun.device: lun.number for lun in default.luns}
    group_numbers = [{lun.device: lun.number for lun in grp.luns} for grp in distinct]
    hint = {} if case == "B" else hints.get((fabric_dir, target.name), {})
    index = _assign_indices(tpg_devices, [default_numbers, *group_numbers], hint)

    target_chap = _chap(target.incoming_users, target.outgoing_user)
    tpg = Tpg(enabled=target.enabled and config.drivers.get(target.fabric, {}).get(
        "enabled", "1") != "0")  # fmt: skip
    tpg.luns = {index[dev]: dev for dev in tpg_devices}
    disk_ro = any(lun.read_only for lun in default.luns if devices[lun.device].is_disk)
    tpg.attributes = _tpg_attributes(target.fabric, case, disk_ro, target_chap is not None)
    if has(target.fabric, "iscsi_login"):
        tpg.params = {k: v for k, v in target.attributes.items() if k in ISCSI_PARAMS}
    if has(target.fabric, "chap_and_portals"):
        tpg.portals = list(target.portals) or [DEFAULT_PORTAL]
        if case == "B":
            tpg.auth = target_chap
        if any(grp.incoming_users for _, grp in members):
            tpg.attributes["authentication"] = "1"

    def mapping_of(grp: Group) -> list[MappedLun]:
        return [MappedLun(lun.number, index[lun.device], lun.read_only) for lun in grp.luns]

    for name, grp in members:
        chap = _chap(grp.incoming_users, target.outgoing_user) or target_chap
        tpg.acls.append(Acl(name, grp.name, mapping_of(grp), chap))
    lio = LioTarget(fabric_dir, target.name, tpg, target.name, default_case=case)
    lio.default_group = default.name
    if case == "C":
        lio.default_map = mapping_of(default)
        lio.default_chap = target_chap
        lio.default_open = bool(default.luns)
        lio.pattern_rules = [
            PatternRule(
                grp.name,
                tuple(found),
                tuple(mapping_of(grp)),
                _chap(grp.incoming_users, target.outgoing_user) or target_chap,
            )
            for grp, found in pattern_groups
        ]
        named = {name for name, _ in members}
        for name in materialized:
            if name not in named:
                acl = materialized_acl(name, lio.pattern_rules, lio.default_rule())
                if acl is not None:  # no longer matched by anything: the ACL goes
                    tpg.acls.append(acl)
    if not has(target.fabric, "demo_mode") and case != "A":
        warnings.append(
            f"{target.fabric} target {target.name}: LIO's {target.fabric} has no demo mode and "
            f"no login hook, so initiators outside named groups do not get {default.name}'s "
            "LUNs; name them"
        )
    return lio


def _loopback_targets(config: ScstConfig, target: Target, warnings: list[str]) -> list[LioTarget]:
    result: list[LioTarget] = []
    default = default_for(config, target)
    # The default unit always exists, even with no LUN yet: a declared target is a LIO
    # target (named as the file names it), and Default's LUNs added later reach it.
    units: list[tuple[str, Group]] = [(DEFAULT_GROUP, default)]
    units += [(grp.name, grp) for grp in target.groups]
    for group_name, grp in units:
        is_default = grp is default
        if is_default and _NAA_LOOPBACK.match(target.name):
            wwn = target.name
        else:
            wwn = derived_naa("loopback", target.name, group_name)
        nexus = next((n for n in grp.initiators if _NAA_LOOPBACK.match(n)), None)
        tpg = Tpg(nexus=nexus or derived_naa("nexus", target.name, group_name))
        tpg.luns = {lun.number: lun.device for lun in grp.luns}
        if any(lun.read_only for lun in grp.luns):
            warnings.append(
                f"loopback target {target.name} group {group_name}: READ_ONLY LUNs are not "
                "write-protected (tcm_loop has no ACLs); set read_only on the device instead"
            )
        lio = LioTarget("loopback", wwn, tpg, target.name, group_name, "loopback")
        lio.default_group = default.name
        result.append(lio)
    return result


def map_config(
    config: ScstConfig,
    *,
    nl_reply_supported: int = 0,
    hints: IndexHints | None = None,
    materialized: Mapping[tuple[str, str], Sequence[str]] | None = None,
    size_of: Callable[[Device], int] = devconfig.size_of,
) -> DesiredState:
    """The LIO objects that realize ``config`` (validated beforehand)."""
    hints = hints or {}
    materialized = materialized or {}
    state = DesiredState()
    devices = {dev.name: dev for dev in config.devices}
    for dev in config.devices:
        state.backstores.append(
            Backstore(
                dev.name,
                devconfig.encode_dev_config(dev, config.setup_id or 0),
                size_of(dev),
                devconfig.block_size_of(dev),
                nl_reply_supported,
                cmd_time_out=0 if dev.handler in devconfig.NO_KERNEL_TIMEOUT else None,
                tmr_notification=dev.handler in devconfig.REAL_PASSTHROUGH,
            )
        )
    for target in config.targets:
        if has(target.fabric, "nexus"):
            state.targets += _loopback_targets(config, target, state.warnings)
            continue
        fabric_dir = FABRIC_DIRS[target.fabric]
        names = materialized.get((fabric_dir, target.name), ())
        state.targets.append(_fabric_target(config, target, devices, hints, names, state.warnings))
    _port_groups(config, state)
    return state


def _port_groups(config: ScstConfig, state: DesiredState) -> None:
    for dg in config.device_groups:
        for tg in dg.target_groups:
            group = PortGroup(tg.name, tg.group_id, ALUA_STATES[tg.state], tg.preferred)
            for device in dg.devices:
                state.port_groups.setdefault(device, []).append(group)
            members = {m.name for m in tg.targets}
            for lio in state.targets:
                if lio.scst_target not in members:
                    continue
                for index, device in lio.tpg.luns.items():
                    if device in dg.devices:
                        state.lun_groups[(lio.fabric, lio.wwn, index)] = tg.name
