"""Every LIO fabric tcmu-scst knows: one declaration for the kernel, model and shell layers.

Each row says what the kernel calls the fabric (its configfs directory under
``target/`` and the module that registers it: target_core_register_fabric), what the
config file and the model call it (LIO's fabric module name; SCST's target driver name
is an alias), how its names look (FC fabrics name ports by colon-form WWPN), and
whether tcmu-scst creates targets on it. The rest of the tree derives its maps from
:data:`FABRICS`; nothing else lists fabrics.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fabric:
    name: str  # the model's and the file's name (LIO's fabric module name)
    directory: str  # configfs target/<directory>
    module: str  # kernel module that registers the directory
    scst_driver: str | None = None  # SCST's target driver name (an alias in the file)
    wwpn_names: bool = False  # ports and initiators named by colon-form FC WWPN
    autoloaded: bool = False  # the kernel loads the module on mkdir (iscsi, loopback)
    iscsi_names: bool = False  # iqn./eui./naa. names (RFC 3720 3.2.6.3), 223 bytes at most
    chap_and_portals: bool = False  # TPG auth/, ACL CHAP and np/ portals (iSCSI only)
    acls: bool = True  # initiator ACLs (loopback: one nexus per TPG, no initiator names)
    managed: bool = True  # tcmu-scst creates targets on it (config, shell, import)


FABRICS: tuple[Fabric, ...] = (
    Fabric("iscsi", "iscsi", "iscsi_target_mod", "iscsi", autoloaded=True, iscsi_names=True,
           chap_and_portals=True),
    Fabric("loopback", "loopback", "tcm_loop", "scst_local", autoloaded=True, acls=False),
    Fabric("qla2xxx", "qla2xxx", "tcm_qla2xxx", "qla2x00t", wwpn_names=True),
    Fabric("tcm_fc", "fc", "tcm_fc", "fcst", wwpn_names=True),
    # Known to the kernel helpers (module loading, error hints), not driven here.
    Fabric("vhost", "vhost", "vhost_scsi", managed=False),
    Fabric("srpt", "srpt", "ib_srpt", managed=False),
)

MANAGED: tuple[Fabric, ...] = tuple(f for f in FABRICS if f.managed)


def by_name(name: str) -> Fabric | None:
    return next((f for f in FABRICS if f.name == name), None)


def has(name: str | None, capability: str) -> bool:
    """Whether fabric ``name`` (model name) has ``capability`` (a boolean column)."""
    fabric = by_name(name) if name is not None else None
    return fabric is not None and bool(getattr(fabric, capability))


def by_directory(directory: str) -> Fabric | None:
    return next((f for f in FABRICS if f.directory == directory), None)
