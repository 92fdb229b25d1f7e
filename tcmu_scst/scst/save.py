"""The live setup back as an SCST model (what ``config save`` writes).

Read from the kernel: devices (decoded from each owned backstore's ``dev_config``),
targets, TPG ``enable``, LUN tables, portals, iSCSI parameters, ACLs with their mapped
LUNs and ``write_protect``, ACL tags. Taken from the state file (LIO cannot hold
them): the SCST target and group each loopback target serves, ACL groups on fabrics
without a tag, the default group's map in case C, CHAP accounts as written in the
file, ``setup_id``/``threads`` and kept target attributes, the ALUA device groups'
names, devices and SCST targets (their ids, states and preference are LIO's, read
back, so a state changed by SET TARGET PORT GROUPS or by hand is saved).

The result is always in the modern per-target form: 0.9.6 global groups come back as
each target's own groups (same semantics: they were expanded into every target).
Materialized ACLs and members of a default group are left out: initiators outside any
named group get the default LUN set anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabric_table import dir_has, has
from tcmu_scst.scst.devconfig import decode_dev_config
from tcmu_scst.scst.live import LiveState, read_live
from tcmu_scst.scst.mapping import FABRIC_DIRS, LioTarget, MappedLun, PatternRule
from tcmu_scst.scst.model import (
    ALUA_STATE_NAMES,
    DEFAULT_GROUP,
    DeviceGroup,
    Group,
    Lun,
    ScstConfig,
    Target,
    TargetGroup,
    TargetGroupMember,
    is_default_group,
    validate,
)
from tcmu_scst.scst.ownership import OwnedTarget, Ownership

_MODEL_FABRIC = {directory: fabric for fabric, directory in FABRIC_DIRS.items()}


def _accounts(raw: Any) -> list[tuple[str, str]]:
    return [(str(u[0]), str(u[1])) for u in raw or []]


def _default_luns(live: LioTarget, owned: OwnedTarget) -> list[Lun]:
    tpg = live.tpg
    if owned.default_case == "B":
        read_only = tpg.attributes.get("demo_mode_write_protect") == "1"
        return [Lun(i, dev, read_only) for i, dev in sorted(tpg.luns.items())]
    if owned.default_case == "C":
        return [
            Lun(number, tpg.luns[tpg_lun], bool(ro))
            for number, tpg_lun, ro in owned.default_map
            if tpg_lun in tpg.luns
        ]
    return []


def _new_group(
    name: str, mapped: Sequence[MappedLun], live: LioTarget, extras: dict[str, Any]
) -> Group:
    grp = Group(name)
    grp.incoming_users = _accounts(extras.get("group_users", {}).get(name))
    grp.luns = [
        Lun(m.number, live.tpg.luns[m.tpg_lun], m.write_protect)
        for m in mapped
        if m.tpg_lun in live.tpg.luns
    ]
    return grp


def _groups(live: LioTarget, owned: OwnedTarget, extras: dict[str, Any]) -> list[Group]:
    groups: dict[str, Group] = {}
    for acl in live.tpg.acls:
        name = acl.group or owned.acl_groups.get(acl.name, "")
        if acl.materialized or not name or is_default_group(name):
            continue
        grp = groups.get(name)
        if grp is None:
            grp = groups[name] = _new_group(name, acl.mapped_luns, live, extras)
        grp.initiators.append(acl.name)
    return [*_pattern_groups(live, owned, extras, groups), *groups.values()]


def _pattern_groups(
    live: LioTarget, owned: OwnedTarget, extras: dict[str, Any], groups: dict[str, Group]
) -> list[Group]:
    """The groups with initiator patterns (kept in the state file: LIO has no pattern
    ACLs), first and in their order; exact members the kernel shows join them."""
    result: list[Group] = []
    for rule in (PatternRule.from_state(r) for r in owned.pattern_rules):
        grp = groups.pop(rule.group, None)
        if grp is None:
            grp = _new_group(rule.group, rule.mapped_luns, live, extras)
        grp.initiators = [*rule.patterns, *grp.initiators]
        result.append(grp)
    return result


def _fabric_target(live: LioTarget, owned: OwnedTarget, extras: dict[str, Any]) -> Target:
    fabric = _MODEL_FABRIC[live.fabric]
    tgt = Target(fabric, owned.scst_target, enabled=live.tpg.enabled)
    tgt.luns = _default_luns(live, owned)
    tgt.groups = _groups(live, owned, extras)
    if has(fabric, "chap_and_portals"):
        tgt.portals = list(live.tpg.portals)
        tgt.incoming_users = _accounts(extras.get("incoming_users"))
        outgoing = extras.get("outgoing_user")
        tgt.outgoing_user = (str(outgoing[0]), str(outgoing[1])) if outgoing else None
    for key, value in (extras.get("attributes") or {}).items():
        tgt.attributes[key] = live.tpg.params.get(key, str(value))
    return tgt


def _loopback(owned_targets: list[tuple[LioTarget, OwnedTarget]], extras: dict[str, Any]) -> Target:
    tgt = Target("loopback", owned_targets[0][1].scst_target, enabled=True)
    for live, owned in owned_targets:
        luns = [Lun(i, dev) for i, dev in sorted(live.tpg.luns.items())]
        if owned.scst_group == DEFAULT_GROUP:
            tgt.luns = luns
            continue
        initiators = list(extras.get("group_initiators", {}).get(owned.scst_group, []))
        tgt.groups.append(Group(owned.scst_group, initiators, luns))
    return tgt


def live_config(cfs: Configfs, ownership: Ownership, live: LiveState | None = None) -> ScstConfig:
    """The owned live setup as a validated SCST model."""
    live = live or read_live(cfs, ownership)
    config = ScstConfig(setup_id=ownership.setup_id, threads=ownership.threads)
    config.drivers = {k: dict(v) for k, v in ownership.driver_attrs.items()}
    for name, backstore in live.backstores.items():
        config.devices.append(decode_dev_config(name, backstore.backstore.dev_config))
    loopback: dict[str, list[tuple[LioTarget, OwnedTarget]]] = {}
    for lio in live.targets:
        owned = ownership.find(lio.fabric, lio.wwn)
        if owned is None:
            continue
        if dir_has(lio.fabric, "nexus"):
            loopback.setdefault(owned.scst_target, []).append((lio, owned))
            continue
        key = f"{_MODEL_FABRIC[lio.fabric]}/{owned.scst_target}"
        config.targets.append(_fabric_target(lio, owned, ownership.target_extras.get(key, {})))
    for scst_target, pairs in loopback.items():
        extras = ownership.target_extras.get(f"loopback/{scst_target}", {})
        config.targets.append(_loopback(pairs, extras))
    config.device_groups = _device_groups(ownership, live, {t.name for t in config.targets})
    validate(config)
    return config


def _device_groups(ownership: Ownership, live: LiveState, targets: set[str]) -> list[DeviceGroup]:
    """The recorded device groups over the live backstores and their LIO groups."""
    out: list[DeviceGroup] = []
    for record in ownership.device_groups:
        devices = [str(d) for d in record.get("devices", []) if d in live.backstores]
        if not devices:
            continue
        dg = DeviceGroup(str(record["name"]), devices)
        groups = {g.name: g for g in live.port_groups.get(devices[0], [])}
        for tg_record in record.get("target_groups", []):
            group = groups.get(str(tg_record["name"]))
            if group is None or group.group_id < 1:
                continue  # removed by hand: nothing to save
            members = [
                TargetGroupMember(str(name), None if rel is None else int(rel))
                for name, rel in tg_record.get("targets", [])
                if name in targets
            ]
            state = ALUA_STATE_NAMES.get(group.state, "transitioning")
            dg.target_groups.append(
                TargetGroup(group.name, group.group_id, state, group.preferred, members)
            )
        out.append(dg)
    return out
