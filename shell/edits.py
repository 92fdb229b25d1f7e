"""The changes the SCST 0.9.6 /proc commands make, as edits of an ScstConfig.

Pure functions: each takes the model, changes it in place and raises ConfigError
(one line: what, why, what to do) when SCST would have refused. The caller works
on a copy and commits it only when the whole edit succeeded.

0.9.6 security groups are global (``ScstConfig.groups``); ``Default`` is built in:
it always exists, cannot be added or deleted, and is created in the model the first
time something is put in it.
"""

from __future__ import annotations

import re

from tcmu_scst.errors import ConfigError
from tcmu_scst.kernel.handler_table import ASSIGNED_HANDLERS
from tcmu_scst.scst.conf import normalize_portal
from tcmu_scst.scst.mapping import DEFAULT_PORTAL
from tcmu_scst.scst.model import (
    DEFAULT_GROUP,
    FABRIC_DRIVERS,
    MAX_LUN,
    Device,
    Group,
    Lun,
    ScstConfig,
    Target,
    chap_error,
    device_name_error,
    group_name_error,
    initiator_name_error,
    target_name_error,
)

_HCTL = re.compile(r"^\d+:\d+:\d+:\d+$")


# ---- groups ---------------------------------------------------------------------------


def group_or_fail(config: ScstConfig, name: str) -> Group:
    """The global group ``name`` (``Default`` is created on demand)."""
    grp = config.group(name)
    if grp is None and name == DEFAULT_GROUP:
        grp = Group(DEFAULT_GROUP)
        config.groups.insert(0, grp)
    if grp is None:
        known = ", ".join(g.name for g in config.groups) or "none besides Default"
        raise ConfigError(f"group {name} does not exist (groups: {known}); add_group {name} first")
    return grp


def add_group(config: ScstConfig, name: str) -> None:
    if name == DEFAULT_GROUP:
        raise ConfigError("Default is the predefined group: it always exists and cannot be added")
    problem = group_name_error(name)  # the config file's rule, one declaration
    if problem is not None:
        raise ConfigError(problem)
    if config.group(name) is not None:
        raise ConfigError(f"group {name} already exists; pick another name")
    config.groups.append(Group(name))


def del_group(config: ScstConfig, name: str) -> None:
    if name == DEFAULT_GROUP:
        raise ConfigError("Default is the predefined group: it cannot be deleted; clear it instead")
    config.groups.remove(group_or_fail(config, name))


# ---- group devices ----------------------------------------------------------------------


def parse_lun(text: str) -> int:
    try:
        number = int(text, 0)
    except ValueError:
        raise ConfigError(f"LUN {text!r} is not a number; write e.g. 0 or 1") from None
    if not 0 <= number <= MAX_LUN:
        raise ConfigError(f"LUN {number} is out of range 0..{MAX_LUN}")
    return number


def add_lun(config: ScstConfig, group: str, device: str, lun: int, read_only: bool) -> None:
    if config.device(device) is None:
        known = ", ".join(d.name for d in config.devices) or "none"
        raise ConfigError(
            f"no device {device} (devices: {known}); open it in /vdisk or /vcdrom or "
            "assign it first"
        )
    grp = group_or_fail(config, group)
    for existing in grp.luns:
        if existing.device == device:
            raise ConfigError(
                f"device {device} is already LUN {existing.number} in group {group}; del it first"
            )
        if existing.number == lun:
            raise ConfigError(
                f"LUN {lun} of group {group} is already {existing.device}; pick a free LUN"
            )
    grp.luns.append(Lun(lun, device, read_only))
    grp.luns.sort(key=lambda item: item.number)


def del_lun(config: ScstConfig, group: str, device: str) -> None:
    grp = group_or_fail(config, group)
    for existing in grp.luns:
        if existing.device == device:
            grp.luns.remove(existing)
            return
    raise ConfigError(f"device {device} is not in group {group}; see 'ls' for its devices")


def clear_luns(config: ScstConfig, group: str) -> None:
    group_or_fail(config, group).luns.clear()


# ---- group names -------------------------------------------------------------------------


def add_name(config: ScstConfig, group: str, name: str) -> None:
    problem = initiator_name_error(name)
    if problem is not None:
        raise ConfigError(problem)
    grp = group_or_fail(config, group)
    if group == DEFAULT_GROUP:
        raise ConfigError(
            "Default takes every initiator no other group names; add names to a named group"
        )
    if name in grp.initiators:
        raise ConfigError(f"name {name} is already in group {group}")
    grp.initiators.append(name)


def del_name(config: ScstConfig, group: str, name: str) -> None:
    grp = group_or_fail(config, group)
    if name not in grp.initiators:
        raise ConfigError(f"name {name} is not in group {group}; see 'ls' for its names")
    grp.initiators.remove(name)


def clear_names(config: ScstConfig, group: str) -> None:
    group_or_fail(config, group).initiators.clear()


# ---- devices --------------------------------------------------------------------------


def add_device(config: ScstConfig, device: Device) -> None:
    problem = device_name_error(device.name, device.handler)
    if problem is not None:
        raise ConfigError(problem)
    existing = config.device(device.name)
    if existing is not None:
        raise ConfigError(
            f"device {device.name} already exists ({existing.handler}); close it first "
            "or pick another name"
        )
    config.devices.append(device)


def remove_device(config: ScstConfig, name: str, handlers: frozenset[str]) -> Device:
    """Drop a device and, as SCST did on unregistration, every LUN that exported it."""
    device = config.device(name)
    if device is None or device.handler not in handlers:
        raise ConfigError(f"no device {name} here; see 'ls' for the open devices")
    config.devices.remove(device)
    for grp in [*config.groups, *(g for t in config.targets for g in t.groups)]:
        grp.luns = [lun for lun in grp.luns if lun.device != name]
    for tgt in config.targets:
        tgt.luns = [lun for lun in tgt.luns if lun.device != name]
    return device


def assign(config: ScstConfig, hctl: str, handler: str) -> None:
    """0.9.6 ``assign H:C:I:L HANDLER``: serve a local SCSI device with a pass-through handler."""
    if not _HCTL.match(hctl):
        raise ConfigError(f"{hctl!r} is not a SCSI address; write H:C:I:L, e.g. 1:0:1:0")
    if handler not in ASSIGNED_HANDLERS:
        known = " ".join(sorted(ASSIGNED_HANDLERS))
        raise ConfigError(f"handler {handler!r} cannot be assigned; use one of: {known}")
    existing = config.device(hctl)
    if existing is not None:
        existing.handler = handler  # re-assigning changes the handler, as in SCST
        return
    config.devices.append(Device(hctl, handler))


# ---- targets ------------------------------------------------------------------------------


def target_or_fail(config: ScstConfig, fabric: str, name: str) -> Target:
    tgt = config.target(fabric, name)
    if tgt is None:
        raise ConfigError(f"no {fabric} target {name}; create it first")
    return tgt


def create_target(config: ScstConfig, fabric: str, name: str) -> None:
    if fabric not in FABRIC_DRIVERS:
        raise ConfigError(f"unknown fabric {fabric}; use one of {', '.join(FABRIC_DRIVERS)}")
    problem = target_name_error(name, fabric)
    if problem is not None:
        raise ConfigError(problem)
    if config.target(fabric, name) is not None:
        raise ConfigError(f"{fabric} target {name} already exists")
    # Disabled until asked: SCST advises configuring access control before enabling.
    tgt = Target(fabric, name, enabled=False)
    config.targets.append(tgt)


def delete_target(config: ScstConfig, fabric: str, name: str) -> None:
    config.targets.remove(target_or_fail(config, fabric, name))


def add_portal(tgt: Target, text: str) -> None:
    portal = normalize_portal(text)
    if portal in tgt.portals:
        raise ConfigError(f"target {tgt.name} already listens on {portal}")
    if tgt.portals == [DEFAULT_PORTAL]:
        # The default a portal-less target gets (explicit once rebuilt from live LIO):
        # the first chosen address replaces it, as LIO refuses both on one port.
        tgt.portals = []
    tgt.portals.append(portal)


def del_portal(tgt: Target, text: str) -> None:
    portal = normalize_portal(text)
    if portal not in tgt.portals:
        raise ConfigError(f"target {tgt.name} has no portal {portal}; see 'ls'")
    tgt.portals.remove(portal)


def check_secret(user: str, secret: str) -> tuple[str, str]:
    problem = chap_error(user, secret)  # the config file's rule, one declaration
    if problem is not None:
        raise ConfigError(problem)
    return user, secret
