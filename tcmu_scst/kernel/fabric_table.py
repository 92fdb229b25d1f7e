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
    # tcm_loop: the TPG carries one I_T nexus (its ``nexus`` file) and has no ``enable``
    # attribute (tcm_loop's TPG is always on).
    nexus: bool = False
    # RFC 7143 login: negotiation keys in tpgt_N/param/, login statistics that name the
    # initiator a login was refused to (fabric_statistics/iscsi_login_stats), and the
    # ACLs' info file that shows a logged-in session.
    iscsi_login: bool = False
    acl_tags: bool = False  # tcmu-scst tags each ACL with its SCST group (iSCSI)
    # Demo mode (generate_node_acls: unknown initiators get the TPG's LUNs); tcm_fc has
    # none (no demo-mode attributes in its TPG).
    demo_mode: bool = True
    # demo_mode_login_only: unknown initiators log in without LUNs and show in
    # dynamic_sessions (qla2xxx), which is how the materializer learns their names there.
    login_only: bool = False
    managed: bool = True  # tcmu-scst creates targets on it (config, shell, import)


FABRICS: tuple[Fabric, ...] = (
    Fabric("iscsi", "iscsi", "iscsi_target_mod", "iscsi", autoloaded=True, iscsi_names=True,
           chap_and_portals=True, iscsi_login=True, acl_tags=True),
    Fabric("loopback", "loopback", "tcm_loop", "scst_local", autoloaded=True, acls=False,
           nexus=True),
    Fabric("qla2xxx", "qla2xxx", "tcm_qla2xxx", "qla2x00t", wwpn_names=True, login_only=True),
    Fabric("tcm_fc", "fc", "tcm_fc", "fcst", wwpn_names=True, demo_mode=False),
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


def dir_has(directory: str | None, capability: str) -> bool:
    """Whether the fabric in configfs ``target/<directory>`` has ``capability``."""
    fabric = by_directory(directory) if directory is not None else None
    return fabric is not None and bool(getattr(fabric, capability))
