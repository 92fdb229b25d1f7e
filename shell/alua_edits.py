"""ALUA device groups as shell edits of an ScstConfig (SCST 3.x's device_groups/ tree).

Pure functions like :mod:`tcmu_scst.shell.edits`: each changes the model in place or
raises a one-line ConfigError; the shell commits the result through ``config apply``'s
all-or-nothing path, where :func:`tcmu_scst.scst.model.validate` checks the rest
(known devices and targets, unique ids, one group per port).
"""

from __future__ import annotations

from tcmu_scst.ascii import is_decimal
from tcmu_scst.errors import ConfigError
from tcmu_scst.scst.model import (
    ALUA_STATES,
    DeviceGroup,
    ScstConfig,
    TargetGroup,
    TargetGroupMember,
    alua_name_error,
)


def device_group(config: ScstConfig, name: str) -> DeviceGroup:
    dg = config.device_group(name)
    if dg is None:
        known = ", ".join(d.name for d in config.device_groups) or "none"
        raise ConfigError(f"device group {name} does not exist (device groups: {known})")
    return dg


def target_group(config: ScstConfig, dg_name: str, name: str) -> TargetGroup:
    dg = device_group(config, dg_name)
    tg = dg.target_group(name)
    if tg is None:
        known = ", ".join(t.name for t in dg.target_groups) or "none"
        raise ConfigError(f"device group {dg_name} has no target group {name} (it has: {known})")
    return tg


def add_device_group(config: ScstConfig, name: str) -> None:
    problem = alua_name_error(name, "device group")
    if problem is not None:
        raise ConfigError(problem)
    if config.device_group(name) is not None:
        raise ConfigError(f"device group {name} already exists; pick another name")
    config.device_groups.append(DeviceGroup(name))


def del_device_group(config: ScstConfig, name: str) -> None:
    config.device_groups.remove(device_group(config, name))


def add_device(config: ScstConfig, dg_name: str, device: str) -> None:
    dg = device_group(config, dg_name)
    if config.device(device) is None:
        raise ConfigError(f"no device {device}; open it first (vdisk open ...)")
    if device in dg.devices:
        raise ConfigError(f"device {device} is already in device group {dg_name}")
    dg.devices.append(device)


def del_device(config: ScstConfig, dg_name: str, device: str) -> None:
    dg = device_group(config, dg_name)
    if device not in dg.devices:
        raise ConfigError(f"device {device} is not in device group {dg_name}")
    dg.devices.remove(device)


def parse_group_id(text: str) -> int:
    if not is_decimal(text):
        raise ConfigError(f"group_id {text!r} is not a decimal number; write 1..65535")
    return int(text)


def add_target_group(config: ScstConfig, dg_name: str, name: str, group_id: str) -> None:
    dg = device_group(config, dg_name)
    problem = alua_name_error(name, "target group")
    if problem is not None:
        raise ConfigError(problem)
    if dg.target_group(name) is not None:
        raise ConfigError(f"target group {name} already exists in device group {dg_name}")
    dg.target_groups.append(TargetGroup(name, parse_group_id(group_id)))


def del_target_group(config: ScstConfig, dg_name: str, name: str) -> None:
    dg = device_group(config, dg_name)
    dg.target_groups.remove(target_group(config, dg_name, name))


def set_state(config: ScstConfig, dg_name: str, name: str, state: str) -> None:
    if state not in ALUA_STATES:
        raise ConfigError(f"state {state!r} is not one of {', '.join(ALUA_STATES)}")
    target_group(config, dg_name, name).state = state


def set_preferred(config: ScstConfig, dg_name: str, name: str, value: str) -> None:
    if value not in ("0", "1"):
        raise ConfigError(f"preferred takes 0 or 1, not {value!r}")
    target_group(config, dg_name, name).preferred = value == "1"


def set_group_id(config: ScstConfig, dg_name: str, name: str, group_id: str) -> None:
    target_group(config, dg_name, name).group_id = parse_group_id(group_id)


def add_target(config: ScstConfig, dg_name: str, name: str, target: str) -> None:
    tg = target_group(config, dg_name, name)
    if tg.target(target) is not None:
        raise ConfigError(f"target {target} is already in target group {name}")
    tg.targets.append(TargetGroupMember(target))


def del_target(config: ScstConfig, dg_name: str, name: str, target: str) -> None:
    tg = target_group(config, dg_name, name)
    member = tg.target(target)
    if member is None:
        raise ConfigError(f"target {target} is not in target group {name}")
    tg.targets.remove(member)
