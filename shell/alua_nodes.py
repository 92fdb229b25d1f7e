"""The shell's device_groups/ tree: SCST 3.x ALUA device and target groups.

Laid out as SCST's ``/sys/kernel/scst_tgt/device_groups``::

    /device_groups                          add DG | del DG
    /device_groups/DG/devices               add DEVICE | del DEVICE
    /device_groups/DG/target_groups         add TG GROUP_ID | del TG
    /device_groups/DG/target_groups/TG      state STATE | preferred 0|1 | group_id N |
                                            add TARGET | del TARGET

``show`` prints the group in scst.conf syntax. Every change is applied to LIO at once
(a state change is one write to the group's ``alua_access_state``).
"""

from __future__ import annotations

from tcmu_scst.scst.conf import device_group_lines, target_group_lines
from tcmu_scst.scst.model import ALUA_STATES

from . import alua_edits, completion
from .nodes import Node


class DeviceGroups(Node):
    """device_groups/: one directory per DEVICE_GROUP."""

    def __init__(self, parent: Node) -> None:
        super().__init__("device_groups", parent)

    def refresh(self) -> None:
        for child in list(self.children):
            self.remove_child(child)
        for dg in self.config.device_groups:
            DeviceGroupNode(dg.name, self)

    def read(self) -> str:
        groups = self.config.device_groups
        return "\n".join(line for dg in groups for line in device_group_lines(dg))

    def summary(self) -> tuple[str, bool | None]:
        return f"device groups: {len(self.config.device_groups)}", None

    def ui_command_add(self, name: str) -> None:
        """add DG: a new ALUA device group (then add devices and target groups to it)."""
        self.change(lambda c: alua_edits.add_device_group(c, name))

    def ui_command_del(self, name: str) -> None:
        """del DG: delete a device group (its LIO groups go; LUNs return to the default)."""
        self.change(lambda c: alua_edits.del_device_group(c, name))

    def ui_complete_del(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        return completion.matches([d.name for d in self.config.device_groups], text)


class DeviceGroupNode(Node):
    def __init__(self, name: str, parent: DeviceGroups) -> None:
        super().__init__(name, parent)
        DgDevices(self)
        TargetGroups(self)

    def read(self) -> str:
        return "\n".join(device_group_lines(alua_edits.device_group(self.config, self.name)))


class DgDevices(Node):
    """device_groups/DG/devices."""

    def __init__(self, parent: DeviceGroupNode) -> None:
        super().__init__("devices", parent)
        self.dg = parent.name

    def read(self) -> str:
        return "\n".join(alua_edits.device_group(self.config, self.dg).devices)

    def ui_command_add(self, device: str) -> None:
        """add DEVICE: the device's LUNs follow this group's target groups."""
        self.change(lambda c: alua_edits.add_device(c, self.dg, device))

    def ui_complete_add(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        return completion.matches([d.name for d in self.config.devices], text)

    def ui_command_del(self, device: str) -> None:
        """del DEVICE: remove a device from the group (its LIO groups go)."""
        self.change(lambda c: alua_edits.del_device(c, self.dg, device))


class TargetGroups(Node):
    """device_groups/DG/target_groups: one directory per TARGET_GROUP."""

    def __init__(self, parent: DeviceGroupNode) -> None:
        super().__init__("target_groups", parent)
        self.dg = parent.name
        for tg in alua_edits.device_group(self.config, self.dg).target_groups:
            TargetGroupNode(tg.name, self)

    def read(self) -> str:
        dg = alua_edits.device_group(self.config, self.dg)
        return "\n".join(line for tg in dg.target_groups for line in target_group_lines(tg))

    def ui_command_add(self, name: str, group_id: str) -> None:
        """add TG GROUP_ID: a new target port group (state active until set)."""
        self.change(lambda c: alua_edits.add_target_group(c, self.dg, name, group_id))

    def ui_command_del(self, name: str) -> None:
        """del TG: delete a target group (its ports return to LIO's default group)."""
        self.change(lambda c: alua_edits.del_target_group(c, self.dg, name))


class TargetGroupNode(Node):
    """device_groups/DG/target_groups/TG: its attributes and TARGET members."""

    def __init__(self, name: str, parent: TargetGroups) -> None:
        super().__init__(name, parent)
        self.dg = parent.dg

    def read(self) -> str:
        tg = alua_edits.target_group(self.config, self.dg, self.name)
        return "\n".join(target_group_lines(tg))

    def ui_command_state(self, state: str) -> None:
        """state STATE: active, nonoptimized, standby, unavailable, offline, transitioning."""
        self.change(lambda c: alua_edits.set_state(c, self.dg, self.name, state))

    def ui_complete_state(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        return completion.matches(ALUA_STATES, text)

    def ui_command_preferred(self, value: str) -> None:
        """preferred 0|1: the PREF bit REPORT TARGET PORT GROUPS shows."""
        self.change(lambda c: alua_edits.set_preferred(c, self.dg, self.name, value))

    def ui_command_group_id(self, group_id: str) -> None:
        """group_id N: a new id 1..65535 (LIO takes an id once: the group is made again)."""
        self.change(lambda c: alua_edits.set_group_id(c, self.dg, self.name, group_id))

    def ui_command_add(self, target: str) -> None:
        """add TARGET: the LUNs of this SCST target's ports join the group."""
        self.change(lambda c: alua_edits.add_target(c, self.dg, self.name, target))

    def ui_complete_add(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        return completion.matches([t.name for t in self.config.targets], text)

    def ui_command_del(self, target: str) -> None:
        """del TARGET: the target's ports return to LIO's default group."""
        self.change(lambda c: alua_edits.del_target(c, self.dg, self.name, target))
