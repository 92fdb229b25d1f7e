"""The ALUA part of an apply plan: target port groups and LUN memberships.

Kernel order (see :mod:`tcmu_scst.kernel.alua`): a group goes away after the LUNs that
go away and before its backstore (configfs refuses to remove a device holding groups);
a group comes after its backstore is created and enabled (the state needs it), and a
LUN joins its group after the LUN is linked. A group whose ``group_id`` changes is
removed and made again (the kernel takes an id once). State changes to an active state
run before those to an inactive one, so swapping two groups' states never leaves every
path inactive for a moment.
"""

from __future__ import annotations

from collections.abc import Callable

from tcmu_scst.kernel import alua
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.scst.live import LiveState, find_backstore
from tcmu_scst.scst.mapping import DesiredState, LunKey, PortGroup
from tcmu_scst.scst.model import ALUA_STATE_NAMES

Action = Callable[[Configfs], None]
Planned = tuple[str, Action]
_ACTIVE = (0x0, 0x1)  # active/optimized, active/non-optimized


def _device_rel(cfs: Configfs, name: str) -> str:
    """The live backstore rel path of owned device ``name`` (looked up when run)."""
    return find_backstore(cfs, name).rel


def _state(value: int) -> str:
    return ALUA_STATE_NAMES.get(value, f"{value:#x}")


def _remove(device: str, name: str) -> Planned:
    def run(cfs: Configfs) -> None:
        alua.remove_group(cfs, _device_rel(cfs, device), name)

    return f"remove ALUA group {name} of {device}", run


def _create(device: str, group: PortGroup) -> Planned:
    def run(cfs: Configfs) -> None:
        rel = _device_rel(cfs, device)
        alua.create_group(cfs, rel, group.name, group.group_id, group.state, group.preferred)

    text = (
        f"create ALUA group {group.name} (id {group.group_id}, {_state(group.state)}"
        f"{', preferred' if group.preferred else ''}) of {device}"
    )
    return text, run


def _update(device: str, group: PortGroup) -> Planned:
    def run(cfs: Configfs) -> None:
        alua.set_group(cfs, _device_rel(cfs, device), group.name, group.state, group.preferred)

    text = f"ALUA group {group.name} of {device}: {_state(group.state)}"
    return text + (", preferred" if group.preferred else ""), run


def _join(key: LunKey, name: str) -> Planned:
    fabric, wwn, index = key

    def run(cfs: Configfs) -> None:
        alua.set_lun_group(cfs, f"{fabric}/{wwn}/tpgt_1/lun/lun_{index}", name)

    return f"LUN {index} of {fabric}/{wwn} joins ALUA group {name}", run


def plan_removals(desired: DesiredState, live: LiveState, recreated: set[str]) -> list[Planned]:
    """Groups that go: not wanted any more, new id, or their backstore is re-created."""
    steps: list[Planned] = []
    for device, groups in live.port_groups.items():
        wanted = {g.name: g for g in desired.port_groups.get(device, [])}
        for group in groups:
            want = wanted.get(group.name)
            if device in recreated or want is None or want.group_id != group.group_id:
                steps.append(_remove(device, group.name))
    return steps


def plan_creations(
    desired: DesiredState,
    live: LiveState,
    recreated: set[str],
    unchanged_lun: Callable[[LunKey, str], bool],
) -> list[Planned]:
    """Groups to make or change, then LUN memberships; ``unchanged_lun(key, device)``
    tells whether the LUN stays as it is (a new or re-linked LUN starts in the default)."""
    made: list[Planned] = []
    changed: list[tuple[int, Planned]] = []
    fresh: set[tuple[str, str]] = set()
    for device, groups in desired.port_groups.items():
        have = {} if device in recreated else {g.name: g for g in live.port_groups.get(device, [])}
        for group in groups:
            old = have.get(group.name)
            if old is None or old.group_id != group.group_id:
                made.append(_create(device, group))
                fresh.add((device, group.name))
            elif (old.state, old.preferred) != (group.state, group.preferred):
                changed.append((0 if group.state in _ACTIVE else 1, _update(device, group)))
    joins: list[Planned] = []
    for target in desired.targets:
        for index, device in sorted(target.tpg.luns.items()):
            key = (target.fabric, target.wwn, index)
            want = desired.lun_group(key)
            if unchanged_lun(key, device) and (device, want) not in fresh:
                current = live.lun_groups.get(key, alua.DEFAULT_GROUP)
            else:
                current = alua.DEFAULT_GROUP  # a new LUN, or its group was made again
            if want != current:
                joins.append(_join(key, want))
    changed.sort(key=lambda item: item[0])
    return [*made, *(step for _, step in changed), *joins]
