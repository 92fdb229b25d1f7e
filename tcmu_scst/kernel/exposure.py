"""Who can reach a backstore: the (target port, initiator) pairs LIO exports it through.

EXTENDED COPY names its source and destination by designator, not through a LUN of
the issuing initiator, and TCMU does not tell a handler which initiator sent a
command. The kernel's CVE-2020-28374 was exactly that gap: an XCOPY copying to or
from a LU the initiator could not access. The rule this module serves (see
``service.units``) is therefore about every initiator at once: two backstores may be
copied between only when their :func:`exposure` is the same non-empty set, i.e. every
initiator that reaches one reaches the other, through the same target port group
(fabric, target, TPG), with the same write protection.

An entry's initiator is ``*`` where LIO lets any initiator in: a TPG in demo mode
(``generate_node_acls``), or a fabric without ACLs (loopback, vhost: whoever owns the
local SCSI host). Everything is read from configfs at the time of the copy, so the
answer is the kernel's current truth, whoever configured it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import Tpg, list_tpgs

ANY_INITIATOR = "*"


@dataclass(frozen=True, order=True)
class Access:
    """One way in: through ``fabric/wwn/tpgt_<tpg>``, by ``initiator``."""

    fabric: str
    wwn: str
    tpg: int
    initiator: str
    read_only: bool


def all_tpgs(cfs: Configfs) -> list[Tpg]:
    """Every TPG of every fabric in configfs."""
    return [
        tpg
        for fabric in cfs.listdir()
        if fabric != "core" and cfs.is_dir(fabric)
        for tpg in list_tpgs(cfs, fabric)
    ]


def exposure(cfs: Configfs, device_rel: str) -> frozenset[Access]:
    """Every (port, initiator, write protection) through which ``device_rel``
    (``core/user_N/NAME``) is reachable right now."""
    found: set[Access] = set()
    for tpg in all_tpgs(cfs):
        luns = {lun for lun, dev in tpg.luns().items() if dev == device_rel}
        if not luns:
            continue
        if not cfs.exists(f"{tpg.rel}/attrib/generate_node_acls"):
            # A fabric without demo-mode switch (tcm_loop, vhost) admits any initiator.
            found.add(Access(tpg.fabric, tpg.wwn, tpg.tag, ANY_INITIATOR, False))
        elif tpg.attrib("generate_node_acls") == "1":
            read_only = tpg.attrib("demo_mode_write_protect") == "1"
            found.add(Access(tpg.fabric, tpg.wwn, tpg.tag, ANY_INITIATOR, read_only))
        if not cfs.is_dir(f"{tpg.rel}/acls"):
            continue
        for acl in tpg.acls():
            for mapped in acl.mapped_luns().values():
                if mapped.tpg_lun in luns:
                    found.add(Access(tpg.fabric, tpg.wwn, tpg.tag, acl.name,
                                     mapped.write_protect))
    return frozenset(found)


def same_exposure(cfs: Configfs, a_rel: str, b_rel: str) -> bool:
    """True when ``a_rel`` and ``b_rel`` are exported, and exactly alike (see module doc)."""
    a = exposure(cfs, a_rel)
    return bool(a) and a == exposure(cfs, b_rel)
