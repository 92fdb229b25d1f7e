"""Asymmetric logical unit access (SPC-4 5.16) as far as a TCMU handler can answer it.

On LIO the target core keeps the target port groups of a TCMU device (configfs
``core/user_N/NAME/alua/*``, a LUN's ``alua_tg_pt_gp``), enforces their access states
before a command reaches userspace (standby: NOT READY 04/0B for media access...)
and queues ASYMMETRIC ACCESS STATE CHANGED on a transition. INQUIRY, REPORT TARGET
PORT GROUPS and SET TARGET PORT GROUPS are passed to the handler: this module answers
them from a :class:`PortGroupSource` (``kernel.alua`` reads the kernel's groups).

One thing cannot be answered per port: TCMU does not say through which target port a
command came, so VPD page 83h names the target port group only when every port of the
LU is in one group, and the relative target port only when the LU has one port.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from tcmu_scst.scsi.sense import SenseError


class AccessState(IntEnum):
    """ASYMMETRIC ACCESS STATE values (SPC-4 table 31), as LIO's configfs writes them."""

    ACTIVE_OPTIMIZED = 0x0
    ACTIVE_NONOPTIMIZED = 0x1
    STANDBY = 0x2
    UNAVAILABLE = 0x3
    LBA_DEPENDENT = 0x4
    OFFLINE = 0xE
    TRANSITIONING = 0xF


#: The SUPPORTED bits of a descriptor's byte 1 for each state (T_SUP ... AO_SUP).
SUPPORT_BITS = {
    AccessState.TRANSITIONING: 0x80,
    AccessState.OFFLINE: 0x40,
    AccessState.LBA_DEPENDENT: 0x10,
    AccessState.UNAVAILABLE: 0x08,
    AccessState.STANDBY: 0x04,
    AccessState.ACTIVE_NONOPTIMIZED: 0x02,
    AccessState.ACTIVE_OPTIMIZED: 0x01,
}
#: States SET TARGET PORT GROUPS may ask for (SPC-4 6.41: not LBA dependent,
#: offline or transitioning).
SETTABLE = frozenset({AccessState.ACTIVE_OPTIMIZED, AccessState.ACTIVE_NONOPTIMIZED,
                      AccessState.STANDBY, AccessState.UNAVAILABLE})

STATUS_NONE = 0x00
STATUS_BY_STPG = 0x01
STATUS_IMPLICIT = 0x02

_ASSOC_TARGET_PORT = 0x10
_TYPE_RELATIVE_PORT = 0x4
_TYPE_PORT_GROUP = 0x5
_CODE_SET_BINARY = 0x1


@dataclass(frozen=True)
class PortGroup:
    """One target port group of a logical unit, with the ports it holds."""

    group_id: int
    state: int
    preferred: bool = False
    implicit: bool = True
    explicit: bool = True
    supported: int = 0xDF  # every state LIO implements
    status: int = STATUS_NONE
    ports: tuple[int, ...] = ()  # relative target port identifiers


class PortGroupSource(Protocol):
    """Where the groups live (the kernel's configfs, or a test double)."""

    def groups(self) -> list[PortGroup]:
        """The groups holding at least one port of this logical unit."""
        ...

    def set_state(self, group_id: int, state: AccessState) -> None:
        """Move a group to ``state``; raises ``OSError`` or a tcmu-scst error on failure."""
        ...


def tpgs(groups: list[PortGroup]) -> int:
    """INQUIRY byte 5 TPGS field (bits 5-4): 01b implicit, 10b explicit, 11b both."""
    implicit = any(g.implicit for g in groups)
    explicit = any(g.explicit for g in groups)
    return (0x10 if implicit else 0) | (0x20 if explicit else 0)


def report_target_port_groups(groups: list[PortGroup], extended: bool,
                              implicit_transition_time: int = 0) -> bytes:
    """REPORT TARGET PORT GROUPS parameter data (SPC-4 6.36)."""
    body = bytearray()
    for group in sorted(groups, key=lambda g: g.group_id):
        body += bytes((
            (0x80 if group.preferred else 0) | (group.state & 0x0F),
            group.supported & 0xDF,
        ))
        body += group.group_id.to_bytes(2, "big") + bytes((0, group.status, 0,
                                                           len(group.ports)))
        for port in group.ports:
            body += bytes(2) + port.to_bytes(2, "big")
    if extended:
        header = bytes((0x10, min(implicit_transition_time, 0xFF), 0, 0))
        return (len(body) + 4).to_bytes(4, "big") + header + bytes(body)
    return len(body).to_bytes(4, "big") + bytes(body)


def parse_set_target_port_groups(params: bytes, groups: list[PortGroup]
                                 ) -> list[tuple[int, AccessState]]:
    """The (group id, state) changes of a SET TARGET PORT GROUPS list (SPC-4 6.41)."""
    if len(params) < 4 or (len(params) - 4) % 4:
        raise SenseError.parameter_list_length_error()
    known = {g.group_id: g for g in groups}
    changes: list[tuple[int, AccessState]] = []
    for offset in range(4, len(params), 4):
        value = params[offset] & 0x0F
        group_id = int.from_bytes(params[offset + 2 : offset + 4], "big")
        group = known.get(group_id)
        if group is None or not group.explicit:
            raise SenseError.invalid_field_in_parameter_list(offset + 2)
        if value not in SETTABLE or not group.supported & SUPPORT_BITS[AccessState(value)]:
            raise SenseError.invalid_field_in_parameter_list(offset, 3)
        changes.append((group_id, AccessState(value)))
    return changes


def port_designators(groups: list[PortGroup]) -> bytes:
    """VPD 83h designators of the port the command came through, where port-independent:
    the target port group when all ports share one, the relative port when there is one."""
    out = b""
    ports = [p for g in groups for p in g.ports]
    if len(ports) == 1:
        out += bytes((_CODE_SET_BINARY, _ASSOC_TARGET_PORT | _TYPE_RELATIVE_PORT, 0, 4, 0, 0))
        out += ports[0].to_bytes(2, "big")
    if len(groups) == 1:
        out += bytes((_CODE_SET_BINARY, _ASSOC_TARGET_PORT | _TYPE_PORT_GROUP, 0, 4, 0, 0))
        out += groups[0].group_id.to_bytes(2, "big")
    return out
