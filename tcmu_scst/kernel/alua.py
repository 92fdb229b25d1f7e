"""The kernel's ALUA target port groups of a backstore (LIO configfs), for the handler.

LIO keeps, for a backstore whose ``attrib/alua_support`` is 1 (a TCMU device's
default), its target port groups under ``core/<hba>/<dev>/alua/<group>`` (a
``default_tg_pt_gp`` always, more by ``mkdir``), each LUN's group in the LUN's
``alua_tg_pt_gp`` file, and the port's relative target port identifier in
``statistics/scsi_port/indx``. The core enforces the groups' access states before a
command reaches the TCMU ring and reports ASYMMETRIC ACCESS STATE CHANGED; the
handler answers INQUIRY, REPORT and SET TARGET PORT GROUPS (``scsi.alua``) from what
:class:`KernelPortGroups` reads here.

A state written to ``alua_access_state`` is an implicit transition for the kernel,
so a SET TARGET PORT GROUPS needs the group's ``alua_access_type`` to allow implicit
transitions too (3, LIO's default); the status then reads "altered by implicit ALUA".
"""

from __future__ import annotations

import re

from tcmu_scst.ascii import is_decimal
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.exposure import all_tpgs
from tcmu_scst.scsi.alua import SUPPORT_BITS, AccessState, PortGroup

DEFAULT_GROUP = "default_tg_pt_gp"
_GROUP_LINE = re.compile(r"^TG Port Alias:\s*(\S+)", re.MULTILINE)  # the group's name
# alua_support_<state> files and the state they declare.
_SUPPORT_FILES = {
    "alua_support_transitioning": AccessState.TRANSITIONING,
    "alua_support_offline": AccessState.OFFLINE,
    "alua_support_lba_dependent": AccessState.LBA_DEPENDENT,
    "alua_support_unavailable": AccessState.UNAVAILABLE,
    "alua_support_standby": AccessState.STANDBY,
    "alua_support_active_nonoptimized": AccessState.ACTIVE_NONOPTIMIZED,
    "alua_support_active_optimized": AccessState.ACTIVE_OPTIMIZED,
}


def _access_type(text: str) -> tuple[bool, bool]:
    """(implicit, explicit) from ``alua_access_type`` (a number or LIO's words)."""
    text = text.strip()
    if is_decimal(text):
        value = int(text)
        return bool(value & 1), bool(value & 2)
    lowered = text.lower()
    return "implicit" in lowered, "explicit" in lowered


def _status(text: str) -> int:
    lowered = text.lower()
    if "explicit" in lowered or "stpg" in lowered:
        return 0x01
    if "implicit" in lowered:
        return 0x02
    return 0x00


class KernelPortGroups:
    """``scsi.alua.PortGroupSource`` over LIO's configfs for one backstore."""

    def __init__(self, cfs: Configfs, device_rel: str) -> None:
        self.cfs = cfs
        self.device_rel = device_rel

    def _ports(self) -> dict[str, list[int]]:
        """group name -> relative target port ids of this backstore's LUNs in it."""
        out: dict[str, list[int]] = {}
        for tpg in all_tpgs(self.cfs):
            for lun, dev in tpg.luns().items():
                if dev != self.device_rel:
                    continue
                lun_rel = f"{tpg.rel}/lun/lun_{lun}"
                match = _GROUP_LINE.search(self.cfs.read(f"{lun_rel}/alua_tg_pt_gp"))
                if match is None:
                    continue  # a LUN in no group (the kernel allows unbinding)
                rtpi = int(self.cfs.read(f"{lun_rel}/statistics/scsi_port/indx").strip())
                out.setdefault(match.group(1), []).append(rtpi)
        return out

    def _group_rel(self, name: str) -> str:
        return f"{self.device_rel}/alua/{name}"

    def groups(self) -> list[PortGroup]:
        ports = self._ports()
        out = []
        for name in self.cfs.listdir(f"{self.device_rel}/alua"):
            if name not in ports:
                continue
            rel = self._group_rel(name)
            group_id = self.cfs.read(f"{rel}/tg_pt_gp_id").strip()
            implicit, explicit = _access_type(self.cfs.read(f"{rel}/alua_access_type"))
            supported = 0
            for leaf, state in _SUPPORT_FILES.items():
                if self.cfs.read(f"{rel}/{leaf}").strip() == "1":
                    supported |= SUPPORT_BITS[state]
            out.append(PortGroup(
                group_id=int(group_id or 0),
                state=int(self.cfs.read(f"{rel}/alua_access_state").strip()),
                preferred=self.cfs.read(f"{rel}/preferred").strip() == "1",
                implicit=implicit,
                explicit=explicit,
                supported=supported,
                status=_status(self.cfs.read(f"{rel}/alua_access_status")),
                ports=tuple(sorted(ports[name])),
            ))
        return out

    def set_state(self, group_id: int, state: AccessState) -> None:
        for name in self.cfs.listdir(f"{self.device_rel}/alua"):
            rel = self._group_rel(name)
            if int(self.cfs.read(f"{rel}/tg_pt_gp_id").strip() or 0) == group_id:
                self.cfs.write(f"{rel}/alua_access_state", str(int(state)))
                return
        raise LookupError(f"{self.device_rel}: no target port group {group_id}")


# ---- managing groups (config apply) ------------------------------------------------
#
# target_core_configfs.c / target_core_alua.c on 6.1: ``mkdir alua/NAME`` makes a group
# with no valid id (``tg_pt_gp_id`` reads empty); the id is accepted once (EINVAL after)
# and must be unique per device; ``alua_access_state`` needs a valid id and a configured
# (enabled) device; a LUN's ``alua_tg_pt_gp`` takes a group name (ENODEV if there is no
# such group with a valid id) or NULL (back to the default group); removing a group
# moves its LUNs back to the default group, and a device with groups of its own cannot
# be removed (configfs: ENOTEMPTY) until they are.


def alias_of(text: str) -> str | None:
    """The group name in a LUN's ``alua_tg_pt_gp`` text (None for a LUN in no group)."""
    match = _GROUP_LINE.search(text)
    return match.group(1) if match else None


def lun_group(cfs: Configfs, lun_rel: str) -> str | None:
    return alias_of(cfs.read(f"{lun_rel}/alua_tg_pt_gp"))


def set_lun_group(cfs: Configfs, lun_rel: str, name: str) -> None:
    cfs.write(f"{lun_rel}/alua_tg_pt_gp", name)


def own_groups(cfs: Configfs, device_rel: str) -> list[str]:
    """The groups made by mkdir under a backstore (all but the default group)."""
    rel = f"{device_rel}/alua"
    if not cfs.exists(rel):
        return []
    return [n for n in cfs.listdir(rel) if n != DEFAULT_GROUP and cfs.is_dir(f"{rel}/{n}")]


def read_group(cfs: Configfs, device_rel: str, name: str) -> tuple[int | None, int, bool]:
    """(id or None while it has no valid id, access state, preferred) of one group."""
    rel = f"{device_rel}/alua/{name}"
    text = cfs.read(f"{rel}/tg_pt_gp_id").strip()
    state = int(cfs.read(f"{rel}/alua_access_state").strip() or 0)
    return (int(text) if is_decimal(text) else None), state, cfs.read(f"{rel}/preferred") == "1"


def create_group(
    cfs: Configfs, device_rel: str, name: str, group_id: int, state: int, preferred: bool
) -> None:
    """mkdir, id (once), preference, then the state (needs the id and an enabled device)."""
    rel = f"{device_rel}/alua/{name}"
    cfs.mkdir(rel)
    cfs.write(f"{rel}/tg_pt_gp_id", str(group_id))
    if preferred:
        cfs.write(f"{rel}/preferred", "1")
    if state != int(AccessState.ACTIVE_OPTIMIZED):
        cfs.write(f"{rel}/alua_access_state", str(state))


def set_group(cfs: Configfs, device_rel: str, name: str, state: int, preferred: bool) -> None:
    rel = f"{device_rel}/alua/{name}"
    _, live_state, live_preferred = read_group(cfs, device_rel, name)
    if live_preferred != preferred:
        cfs.write(f"{rel}/preferred", str(int(preferred)))
    if live_state != state:
        cfs.write(f"{rel}/alua_access_state", str(state))


def remove_group(cfs: Configfs, device_rel: str, name: str) -> None:
    """Move the group's LUNs back to the default group (journaled), then rmdir it."""
    for tpg in all_tpgs(cfs):
        for lun, dev in tpg.luns().items():
            lun_rel = f"{tpg.rel}/lun/lun_{lun}"
            if dev == device_rel and lun_group(cfs, lun_rel) == name:
                set_lun_group(cfs, lun_rel, DEFAULT_GROUP)
    cfs.rmdir(f"{device_rel}/alua/{name}")


def remove_own_groups(cfs: Configfs, device_rel: str) -> None:
    for name in own_groups(cfs, device_rel):
        remove_group(cfs, device_rel, name)
