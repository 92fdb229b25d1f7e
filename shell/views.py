"""What reading a /proc/scsi_tgt file printed, rebuilt from the model, configfs and daemon.

Each function returns the text (lines joined with newlines, no trailing newline) in
SCST 0.9.6's column formats (lio-and-scst.md §5.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tcmu_scst import __version__
from tcmu_scst.errors import ConfigfsError, TcmuScstError
from tcmu_scst.kernel import handler_table
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabric_table import MANAGED, dir_has
from tcmu_scst.kernel.fabrics import LoopbackTpg
from tcmu_scst.kernel.handler_table import VCDROM, Kind
from tcmu_scst.scst.apply import tpg_handle
from tcmu_scst.scst.devconfig import size_of
from tcmu_scst.scst.model import FABRIC_DRIVERS, Group, ScstConfig
from tcmu_scst.scst.ownership import Ownership
from tcmu_scst.service.messages import DeviceStatus

DEVICE_COLUMN = "Device (host:ch:id:lun or name)"
# SCST 0.9.6's printf formats, kept as written in scst_proc.c.
SCSI_TGT_FORMAT = "%-60s%s"
GROUP_DEVICES_HEADER = "%-60s%s  %s"
GROUP_DEVICES_ROW = "%-60s%4d%12s"
SESSIONS_FORMAT = "%-20s %-45s %-35s %-15s"
SGV_FORMAT = "%-30s %-11s %-11s"
_FABRIC_OF_DIR = {f.directory: f.name for f in MANAGED}  # configfs directory -> model name


def devices_and_handlers(config: ScstConfig) -> str:
    """``/proc/scsi_tgt/scsi_tgt``: every device and its handler."""
    lines = [SCSI_TGT_FORMAT % (DEVICE_COLUMN, "Device handler")]
    lines += [SCSI_TGT_FORMAT % (dev.name, dev.handler) for dev in config.devices]
    return "\n".join(lines)


def group_devices(grp: Group) -> str:
    """``groups/G/devices``."""
    lines = [GROUP_DEVICES_HEADER % (DEVICE_COLUMN, "Virtual lun", "Options")]
    for lun in sorted(grp.luns, key=lambda item: item.number):
        options = "RO" if lun.read_only else ""
        lines.append(GROUP_DEVICES_ROW % (lun.device, lun.number, options))
    return "\n".join(lines)


def group_names(grp: Group) -> str:
    """``groups/G/names``: one name a line."""
    return "\n".join(grp.initiators)


def vdisk_table(config: ScstConfig) -> str:
    """``vdisk/vdisk``: Name, Size(MB), Block size, Options, File name."""
    from tcmu_scst.handlers import vdisk_params

    lines = [vdisk_params.proc_read_header()]
    for dev in config.devices:
        if handler_table.kind_of(dev.handler) is not Kind.VDISK:
            continue
        params = vdisk_params.parse_attributes(dev.handler, dev.name, dev.params)
        lines.append(vdisk_params.proc_read_line(params, size_of(dev)))
    return "\n".join(lines)


def vcdrom_table(config: ScstConfig) -> str:
    """``vcdrom/vcdrom``: Name, Size(MB), File name."""
    from tcmu_scst.handlers import vcdrom_params

    lines = [vcdrom_params.proc_read_header()]
    for dev in config.devices:
        if dev.handler == VCDROM:
            params = vcdrom_params.parse_attributes(dev.name, dev.params)
            lines.append(vcdrom_params.proc_read_line(params, size_of(dev)))
    return "\n".join(lines)


@dataclass(frozen=True)
class SessionRow:
    target: str  # SCST prints the target driver (template) name
    initiator: str
    group: str
    commands: str  # a number, or "-" where LIO keeps no per-session count


def _acl_commands(acl: Any) -> str:
    try:
        return str(sum(acl.num_cmds(number) for number in acl.mapped_luns()))
    except (ConfigfsError, ValueError):
        return "-"


def sessions(cfs: Configfs, ownership: Ownership) -> list[SessionRow]:
    """Sessions of the targets tcmu-scst owns: explicit ACLs, dynamic ones, loopback nexus."""
    rows: list[SessionRow] = []
    for owned in ownership.targets:
        fabric = _FABRIC_OF_DIR.get(owned.fabric, owned.fabric)
        driver = FABRIC_DRIVERS.get(fabric, fabric)
        tpg = tpg_handle(cfs, owned.fabric, owned.wwn)
        if not tpg.exists:
            continue
        if isinstance(tpg, LoopbackTpg):
            nexus = tpg.nexus
            if nexus:
                rows.append(SessionRow(driver, nexus, owned.scst_group, "-"))
            continue
        for acl in tpg.acls():
            # Only iSCSI ACLs show whether their initiator is logged in (acls/<ini>/info).
            if not dir_has(owned.fabric, "iscsi_login") or acl.session() is None:
                continue
            group = acl.tag or owned.acl_groups.get(acl.name) or owned.default_group
            rows.append(SessionRow(driver, acl.name, group, _acl_commands(acl)))
        for name in tpg.dynamic_sessions():
            rows.append(SessionRow(driver, name, owned.default_group, "-"))
    return rows


def sessions_table(rows: Sequence[SessionRow]) -> str:
    lines = [SESSIONS_FORMAT % ("Target name", "Initiator name", "Group name", "Command Count")]
    lines += [SESSIONS_FORMAT % (r.target, r.initiator, r.group, r.commands) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def sgv_table(devices: Sequence[DeviceStatus]) -> str:
    """``sgv``: commands per data size (rounded up to a power of 2), from the daemon.

    TCMU has no sgv_pool: every data buffer lives in the ring's preallocated data area,
    so there is no cache hit rate to show; "Hit" is "-".
    """
    totals: dict[int, int] = {}
    for dev in devices:
        for bucket, count in dev.sizes.items():
            totals[int(bucket)] = totals.get(int(bucket), 0) + count
    lines = [SGV_FORMAT % ("Name", "Hit", "Total")]
    for size in sorted(totals):
        lines.append(SGV_FORMAT % (f"sgv-{size}", "-", totals[size]))
    commands = sum(dev.commands for dev in devices)
    lines.append("")
    lines.append(f"{len(devices)} device(s) served, {commands} command(s) in all")
    return "\n".join(line.rstrip() for line in lines)


def version_text() -> str:
    return "\n".join(
        [
            f"tcmu-scst {__version__} (SCST 0.9.6 /proc interface on LIO through TCMU)",
            "TRACING",
        ]
    )


def error_text(err: TcmuScstError) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
