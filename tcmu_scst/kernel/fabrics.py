"""LIO fabric objects (targets, TPGs, LUNs, portals, ACLs, mapped LUNs, sessions).

Thin handles over :class:`Configfs` paths: each object knows its path and performs the
kernel-required order (loopback nexus before LUNs; mapped-LUN ``write_protect`` after the
link; TPG ``enable`` last; teardown in reverse). Names are validated only as far as the
kernel needs (configfs-safe, length; colon-form WWPN for FC) because SCST and the kernel
accept free-form initiator names.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tcmu_scst.errors import ConfigError, ConfigfsError
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabric_table import FABRICS, dir_has
from tcmu_scst.kernel.lio import CoreBackstore, validate_object_name
from tcmu_scst.kernel.scsi_nodes import DEV, SYSFS, ScsiNodes, scsi_nodes, wait_for_scsi_nodes

ISCSI_NAME_MAX = 223  # ISCSI_IQN_LEN - 1
FC_FABRICS = tuple(f.directory for f in FABRICS if f.wwpn_names)  # configfs directories
_WWPN_HEX = re.compile(r"^[0-9a-f]{16}$")
_WWPN_COLON = re.compile(r"^([0-9a-f]{2}:){7}[0-9a-f]{2}$")
_LUN_DIR = re.compile(r"^lun_(\d+)$")
_TPG_DIR = re.compile(r"^tpgt_(\d+)$")


def random_alias() -> str:
    """A link name like rtslib's: 10 random hex digits (the kernel ignores it)."""
    return secrets.token_hex(5)


def generate_naa() -> str:
    """A locally administered NAA-5 WWN in LIO's OUI space, as rtslib generates them."""
    return "naa.5001405" + secrets.token_hex(5)[:9]


def normalize_wwpn(text: str) -> str:
    """``21:00:00:24:FF:31:4C:48``, ``naa.21000024ff314c48`` or ``0x2100...`` -> colon form."""
    raw = text.strip().lower()
    for prefix in ("naa.", "0x"):
        if raw.startswith(prefix):
            raw = raw[len(prefix) :]
    hexdigits = raw.replace(":", "")
    if not _WWPN_HEX.match(hexdigits) or (":" in raw and not _WWPN_COLON.match(raw)):
        raise ConfigError(
            f"{text!r} is not a Fibre Channel WWPN: expected 8 bytes of hex such as "
            "21:00:00:24:ff:31:4c:48 or naa.21000024ff314c48"
        )
    return ":".join(hexdigits[i : i + 2] for i in range(0, 16, 2))


def validate_initiator_name(fabric: str, name: str) -> str:
    """Accept any configfs-safe name (SCST accepts free-form names); WWPNs for FC."""
    if fabric in FC_FABRICS:
        return normalize_wwpn(name)
    return validate_object_name(name, "initiator", ISCSI_NAME_MAX)


def portal_name(ip: str, port: int = 3260) -> str:
    """The ``np/`` directory name: ``1.2.3.4:3260`` or ``[::1]:3260``."""
    try:
        addr = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        raise ConfigError(f"portal address {ip!r} is not an IPv4 or IPv6 address") from None
    if not 0 < port < 65536:
        raise ConfigError(f"portal port {port} is outside 1..65535")
    host = f"[{addr}]" if addr.version == 6 else str(addr)
    return f"{host}:{port}"


# ---- sessions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    cid: int
    state: str
    address: str
    transport: str


@dataclass(frozen=True)
class AclSession:
    """One explicit-ACL iSCSI session, parsed from ``acls/<ini>/info``."""

    initiator: str
    alias: str
    sid: int
    isid: str
    tsih: int
    session_type: str
    state: str
    connections: tuple[Connection, ...] = field(default_factory=tuple)


def parse_acl_info(text: str) -> AclSession | None:
    """Parse ``lio_target_nacl_info_show`` output; None when no session is active."""
    if text.startswith("No active iSCSI Session"):
        return None
    values: dict[str, str] = {}
    for key in ("InitiatorName", "InitiatorAlias", "Session State"):
        m = re.search(rf"^{key}:[ \t]*(.*)$", text, re.M)
        values[key] = m.group(1).strip() if m else ""
    sess = re.search(
        r"LIO Session ID:\s*(\d+)\s+ISID:\s*0x([0-9a-fA-F ]+?)\s+TSIH:\s*(\d+)\s+"
        r"SessionType:\s*(\S+)",
        text,
    )
    if sess is None:
        raise ConfigfsError(
            f"cannot parse iSCSI ACL info {text[:80]!r}: no 'LIO Session ID' line "
            "(kernel format changed?)",
            "info",
            errno.EINVAL,
        )
    conns = tuple(
        Connection(int(m.group(1)), m.group(2), m.group(3), m.group(4))
        for m in re.finditer(
            r"CID:\s*(\d+)\s+Connection State:\s*(\S+)\s*\n\s*Address\s+(\S+)\s+(\S+)", text
        )
    )
    return AclSession(
        initiator=values["InitiatorName"],
        alias=values["InitiatorAlias"],
        sid=int(sess.group(1)),
        isid=sess.group(2).replace(" ", "").lower(),
        tsih=int(sess.group(3)),
        session_type=sess.group(4),
        state=values["Session State"],
        connections=conns,
    )


def parse_dynamic_sessions(text: str) -> list[str]:
    """Initiator names in ``dynamic_sessions`` (each "%s\\n" plus a stray NUL)."""
    return [line for line in text.replace("\x00", "").splitlines() if line.strip()]


# ---- objects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedLun:
    mapped_lun: int
    tpg_lun: int | None  # None when the lun_M directory holds no link
    write_protect: bool


class NodeAcl:
    """``<tpg>/acls/<initiator>``: an explicit ACL with its mapped LUNs."""

    def __init__(self, tpg: Tpg, name: str) -> None:
        self.tpg = tpg
        self.name = name
        self.cfs = tpg.cfs

    def __repr__(self) -> str:
        return f"NodeAcl({self.rel!r})"

    @property
    def rel(self) -> str:
        return f"{self.tpg.rel}/acls/{self.name}"

    def map_lun(
        self, mapped_lun: int, tpg_lun: int, write_protect: bool = False, alias: str = ""
    ) -> None:
        """Show TPG LUN ``tpg_lun`` to this initiator as LUN ``mapped_lun``."""
        if mapped_lun < 0 or tpg_lun < 0:
            raise ConfigError(f"LUN numbers must be >= 0 (got {mapped_lun}, {tpg_lun})")
        rel = f"{self.rel}/lun_{mapped_lun}"
        self.cfs.mkdir(rel)
        try:
            self.cfs.symlink(
                f"{self.tpg.rel}/lun/lun_{tpg_lun}", f"{rel}/{alias or random_alias()}"
            )
            # After the link, as rtslib does: before it there is no device entry to update.
            if self.cfs.read(f"{rel}/write_protect") != str(int(write_protect)):
                self.cfs.write(f"{rel}/write_protect", str(int(write_protect)))
        except BaseException:
            self._remove_mapped(mapped_lun)
            raise

    def set_write_protect(self, mapped_lun: int, write_protect: bool) -> None:
        self.cfs.write(f"{self.rel}/lun_{mapped_lun}/write_protect", str(int(write_protect)))

    def unmap_lun(self, mapped_lun: int) -> None:
        self._remove_mapped(mapped_lun)

    def _remove_mapped(self, mapped_lun: int) -> None:
        rel = f"{self.rel}/lun_{mapped_lun}"
        if not self.cfs.exists(rel):
            return
        for name in self.cfs.listdir(rel):
            if self.cfs.is_link(f"{rel}/{name}"):
                self.cfs.unlink(f"{rel}/{name}")
        self.cfs.rmdir(rel)

    def mapped_luns(self) -> dict[int, MappedLun]:
        out: dict[int, MappedLun] = {}
        for name in self.cfs.listdir(self.rel):
            m = _LUN_DIR.match(name)
            if not m:
                continue
            rel = f"{self.rel}/{name}"
            tpg_lun = None
            for entry in self.cfs.listdir(rel):
                if self.cfs.is_link(f"{rel}/{entry}"):
                    target = self.cfs.readlink(f"{rel}/{entry}")
                    lm = _LUN_DIR.match(target.rsplit("/", 1)[-1])
                    tpg_lun = int(lm.group(1)) if lm else None
            wp = self.cfs.read(f"{rel}/write_protect") == "1"
            out[int(m.group(1))] = MappedLun(int(m.group(1)), tpg_lun, wp)
        return out

    def num_cmds(self, mapped_lun: int) -> int:
        """Commands this initiator sent to ``mapped_lun`` (per-mapped-LUN statistics)."""
        rel = f"{self.rel}/lun_{mapped_lun}/statistics/scsi_auth_intr/num_cmds"
        return int(self.cfs.read(rel) or 0)

    # iSCSI-only files (qla2xxx/tcm_fc ACLs have no tag, info or cmdsn_depth)

    @property
    def tag(self) -> str | None:
        rel = f"{self.rel}/tag"
        return self.cfs.read(rel) if self.cfs.exists(rel) else None

    def set_tag(self, tag: str | None) -> None:
        """Free text the kernel ignores (we store the SCST group name); None clears it."""
        if tag is not None and (len(tag.encode()) >= 64 or "\n" in tag):
            raise ConfigError(f"ACL tag {tag!r} must be one line shorter than 64 bytes")
        if tag and tag.startswith("NULL"):
            # The kernel compares only the first 4 bytes with "NULL" and would clear it.
            raise ConfigError(f"ACL tag {tag!r} starts with NULL, which the kernel reads as clear")
        if not self.cfs.exists(f"{self.rel}/tag"):
            raise ConfigError(f"{self.tpg.fabric} ACLs have no tag (iSCSI only)")
        self.cfs.write(f"{self.rel}/tag", tag if tag else "NULL")

    def set_cmdsn_depth(self, depth: int) -> None:
        """Queue depth; a change forces the initiator's session to log in again."""
        if not 1 <= depth <= 512:
            raise ConfigError(f"cmdsn_depth must be 1..512, got {depth}")
        self.cfs.write(f"{self.rel}/cmdsn_depth", str(depth))

    def session(self) -> AclSession | None:
        rel = f"{self.rel}/info"
        return parse_acl_info(self.cfs.read(rel)) if self.cfs.exists(rel) else None

    def set_chap(self, userid: str | None, password: str | None, **mutual: str | None) -> None:
        """CHAP for this explicit ACL (``mutual_userid``/``mutual_password`` optional)."""
        _write_chap(self.cfs, f"{self.rel}/auth", userid, password, mutual)

    def delete(self) -> None:
        for lun in sorted(self.mapped_luns()):
            self._remove_mapped(lun)
        self.cfs.rmdir(self.rel)


def _write_chap(
    cfs: Configfs,
    auth_rel: str,
    userid: str | None,
    password: str | None,
    mutual: dict[str, str | None],
) -> None:
    unknown = set(mutual) - {"mutual_userid", "mutual_password"}
    if unknown:
        raise ConfigError(f"unknown CHAP settings {sorted(unknown)}")
    values = {
        "userid": userid,
        "password": password,
        "userid_mutual": mutual.get("mutual_userid"),
        "password_mutual": mutual.get("mutual_password"),
    }
    for key, value in values.items():
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ConfigError(f"CHAP {key} must be non-empty without whitespace")
        cfs.write(f"{auth_rel}/{key}", value if value is not None else "NULL")


class Tpg:
    """``<fabric>/<wwn>/tpgt_<tag>``: LUNs, attributes and (per fabric) ACLs and portals."""

    def __init__(self, cfs: Configfs, fabric: str, wwn: str, tag: int = 1) -> None:
        self.cfs = cfs
        self.fabric = fabric
        self.wwn = wwn
        self.tag = tag

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.rel!r})"

    @property
    def rel(self) -> str:
        return f"{self.fabric}/{self.wwn}/tpgt_{self.tag}"

    @property
    def exists(self) -> bool:
        return self.cfs.is_dir(self.rel)

    # attributes, parameters

    def attrib(self, key: str) -> str:
        return self.cfs.read(f"{self.rel}/attrib/{key}")

    def set_attrib(self, key: str, value: str | int | bool) -> None:
        self.cfs.write(
            f"{self.rel}/attrib/{key}", str(int(value) if isinstance(value, bool) else value)
        )

    def set_attributes(self, values: dict[str, str | int | bool]) -> None:
        for key, value in values.items():
            self.set_attrib(key, value)

    def param(self, key: str) -> str:
        return self.cfs.read(f"{self.rel}/param/{key}")

    def set_param(self, key: str, value: str) -> None:
        self.cfs.write(f"{self.rel}/param/{key}", value)

    # enable (not on loopback)

    @property
    def has_enable(self) -> bool:
        return self.cfs.exists(f"{self.rel}/enable")

    @property
    def enabled(self) -> bool:
        return not self.has_enable or self.cfs.read(f"{self.rel}/enable") == "1"

    def enable(self) -> None:
        """Open the TPG to initiators; do this after everything else is configured."""
        if self.has_enable:
            self.cfs.write(f"{self.rel}/enable", "1")

    def disable(self) -> None:
        if self.has_enable and self.enabled:
            self.cfs.write(f"{self.rel}/enable", "0")

    # LUNs

    def luns(self) -> dict[int, str | None]:
        """TPG LUN number -> device path (relative to target/), None if unlinked."""
        out: dict[int, str | None] = {}
        for name in self.cfs.listdir(f"{self.rel}/lun"):
            m = _LUN_DIR.match(name)
            if m:
                out[int(m.group(1))] = self._lun_device(f"{self.rel}/lun/{name}")
        return out

    def _lun_device(self, lun_rel: str) -> str | None:
        for entry in self.cfs.listdir(lun_rel):
            if self.cfs.is_link(f"{lun_rel}/{entry}"):
                return self.cfs.readlink(f"{lun_rel}/{entry}")
        return None

    def add_lun(self, lun: int, device: CoreBackstore | str, alias: str = "") -> None:
        """Export ``device`` (a backstore or its path) as TPG LUN ``lun``."""
        if lun < 0:
            raise ConfigError(f"LUN number must be >= 0, got {lun}")
        dev_rel = device.rel if isinstance(device, CoreBackstore) else device
        rel = f"{self.rel}/lun/lun_{lun}"
        self.cfs.mkdir(rel)
        try:
            self.cfs.symlink(dev_rel, f"{rel}/{alias or random_alias()}")
        except BaseException:
            with contextlib.suppress(ConfigfsError):
                self.cfs.rmdir(rel)
            raise

    def remove_lun(self, lun: int) -> None:
        rel = f"{self.rel}/lun/lun_{lun}"
        for entry in self.cfs.listdir(rel):
            if self.cfs.is_link(f"{rel}/{entry}"):
                self.cfs.unlink(f"{rel}/{entry}")
        self.cfs.rmdir(rel)

    def free_lun(self) -> int:
        used = set(self.luns())
        return min(set(range(len(used) + 1)) - used)

    # ACLs

    def acls(self) -> list[NodeAcl]:
        return [NodeAcl(self, n) for n in self.cfs.listdir(f"{self.rel}/acls")]

    def acl(self, name: str) -> NodeAcl:
        return NodeAcl(self, validate_initiator_name(self.fabric, name))

    def add_acl(self, name: str) -> NodeAcl:
        acl = self.acl(name)
        self.cfs.mkdir(acl.rel)
        return acl

    def dynamic_sessions(self) -> list[str]:
        """Demo-mode (dynamic ACL) initiators (iSCSI, qla2xxx); [] where unsupported."""
        rel = f"{self.rel}/dynamic_sessions"
        return parse_dynamic_sessions(self.cfs.read(rel)) if self.cfs.exists(rel) else []

    # teardown

    def delete(self) -> None:
        """Disable, then remove ACLs, LUNs, portals and the TPG itself (reverse order)."""
        if not self.exists:
            return
        self.disable()
        for acl in self.acls():
            acl.delete()
        for lun in sorted(self.luns()):
            self.remove_lun(lun)
        self._before_rmdir()
        self.cfs.rmdir(self.rel)

    def _before_rmdir(self) -> None:
        for portal in self.cfs.listdir(f"{self.rel}/np"):
            self.cfs.rmdir(f"{self.rel}/np/{portal}")


class LoopbackTpg(Tpg):
    """A tcm_loop TPG: one local SCSI host target, its single nexus and its LUNs."""

    def __init__(self, cfs: Configfs, wwn: str, tag: int = 1) -> None:
        super().__init__(cfs, "loopback", wwn, tag)

    @classmethod
    def create(
        cls, cfs: Configfs, wwn: str | None = None, tag: int = 1, nexus: str | None = None
    ) -> LoopbackTpg:
        """Make target and TPG and the nexus (which must exist before any LUN)."""
        wwn = wwn or generate_naa()
        if not wwn.startswith(("naa.", "fc.", "iqn.")):
            raise ConfigError(f"loopback WWN {wwn!r} must start with naa., fc. or iqn.")
        if not 0 <= tag < 32:
            raise ConfigError(f"loopback TPG tag must be 0..31, got {tag}")
        cfs.ensure_fabric("loopback")
        if not cfs.exists(f"loopback/{wwn}"):
            cfs.mkdir(f"loopback/{wwn}")
        tpg = cls(cfs, wwn, tag)
        cfs.mkdir(tpg.rel)
        try:
            tpg.set_nexus(nexus or _same_kind_name(wwn))
        except BaseException:
            with contextlib.suppress(ConfigfsError):
                cfs.rmdir(tpg.rel)
            raise
        return tpg

    @property
    def nexus(self) -> str | None:
        try:
            value = self.cfs.read(f"{self.rel}/nexus")
        except ConfigfsError as err:
            if err.errno == errno.ENODEV:
                return None
            raise
        return value or None

    def set_nexus(self, initiator: str) -> None:
        self.cfs.write(f"{self.rel}/nexus", initiator)

    def drop_nexus(self) -> None:
        """Refused by the kernel (EPERM) while LUNs are linked."""
        if self.nexus is not None:
            self.cfs.write(f"{self.rel}/nexus", "NULL")

    def address(self) -> tuple[int, int, int]:
        """(host, channel, target) of this TPG's local SCSI target."""
        host, channel, target = (int(x) for x in self.cfs.read(f"{self.rel}/address").split(":"))
        return host, channel, target

    def hctl(self, lun: int) -> str:
        host, channel, target = self.address()
        return f"{host}:{channel}:{target}:{lun}"

    def block_device(self, lun: int, sysfs: Path = SYSFS) -> str | None:
        """``/dev/sdX`` of a LUN once the SCSI midlayer has scanned it, else None."""
        return scsi_nodes(self.hctl(lun), sysfs).block

    def wait_for_lun(
        self,
        lun: int,
        *,
        need_block: bool = True,
        timeout: float = 15.0,
        sysfs: Path = SYSFS,
        dev: Path = DEV,
    ) -> ScsiNodes:
        """The local nodes of TPG LUN ``lun`` once the kernel's initiator has them.

        The SCSI scan after :meth:`add_lun` is asynchronous; ``need_block=False`` for
        types without a block node (processor, changer, tape).
        """
        return wait_for_scsi_nodes(
            self.hctl(lun), need_block=need_block, timeout=timeout, sysfs=sysfs, dev=dev
        )

    def _before_rmdir(self) -> None:
        try:
            self.drop_nexus()
        except ConfigfsError as err:
            # 6.1 quirk: when the SCSI scan of a LUN failed (no handler answered), unlinking
            # it does not lower tcm_loop's port count, so "NULL" stays EPERM; rmdir of the
            # TPG still drops the nexus itself.
            if err.errno != errno.EPERM:
                raise

    def delete(self, remove_target: bool = True) -> None:
        super().delete()
        wwn_rel = f"loopback/{self.wwn}"
        if remove_target and self.cfs.exists(wwn_rel) and not _tpgs_in(self.cfs, wwn_rel):
            self.cfs.rmdir(wwn_rel)


def _same_kind_name(wwn: str) -> str:
    # The nexus initiator port must use the same protocol prefix as the target WWN.
    if wwn.startswith("naa."):
        return generate_naa()
    if wwn.startswith("fc."):
        return "fc.5001405" + secrets.token_hex(5)[:9]
    return f"{wwn}:nexus"


def _tpgs_in(cfs: Configfs, wwn_rel: str) -> list[str]:
    return [n for n in cfs.listdir(wwn_rel) if _TPG_DIR.match(n)]


class IscsiTpg(Tpg):
    """An iSCSI TPG: portals, ACLs, CHAP, demo-mode attributes."""

    def __init__(self, cfs: Configfs, iqn: str, tag: int = 1) -> None:
        super().__init__(cfs, "iscsi", iqn, tag)

    @classmethod
    def create(cls, cfs: Configfs, iqn: str, tag: int = 1) -> IscsiTpg:
        """Make the target (if needed) and a disabled TPG ``tag`` under it."""
        validate_object_name(iqn, "iSCSI target", ISCSI_NAME_MAX)
        if not 0 < tag < 65536:
            raise ConfigError(f"iSCSI TPG tag must be 1..65535, got {tag}")
        cfs.ensure_fabric("iscsi")
        if not cfs.exists(f"iscsi/{iqn}"):
            cfs.mkdir(f"iscsi/{iqn}")
        tpg = cls(cfs, iqn, tag)
        cfs.mkdir(tpg.rel)
        return tpg

    def add_portal(self, ip: str, port: int = 3260) -> str:
        """Listen on ``ip:port`` (IPv6 as ``[addr]:port``); unique per IQN across TPGs."""
        name = portal_name(ip, port)
        self.cfs.mkdir(f"{self.rel}/np/{name}")
        return name

    def remove_portal(self, ip: str, port: int = 3260) -> None:
        self.cfs.rmdir(f"{self.rel}/np/{portal_name(ip, port)}")

    def portals(self) -> list[str]:
        return self.cfs.listdir(f"{self.rel}/np")

    def set_demo_mode(self, *, write_protect: bool = False) -> None:
        """Let every initiator log in without CHAP and see every TPG LUN.

        ``generate_node_acls`` makes a dynamic ACL per initiator at login and
        ``cache_dynamic_acls`` keeps it across logins; for labs and tests (the SCST
        mapping writes these attributes itself, per its access-control case).
        """
        self.set_attributes(
            {
                "authentication": 0,
                "generate_node_acls": 1,
                "cache_dynamic_acls": 1,
                "demo_mode_write_protect": write_protect,
            }
        )

    def set_chap(self, userid: str | None, password: str | None, **mutual: str | None) -> None:
        """TPG CHAP credentials: used for demo-mode (dynamic) ACLs only.

        CHAP is enforced only while ``attrib/authentication`` is 1 (set it separately).
        """
        _write_chap(self.cfs, f"{self.rel}/auth", userid, password, mutual)

    def delete(self, remove_target: bool = True) -> None:
        super().delete()
        wwn_rel = f"iscsi/{self.wwn}"
        if remove_target and self.cfs.exists(wwn_rel) and not _tpgs_in(self.cfs, wwn_rel):
            self.cfs.rmdir(wwn_rel)


class FcTpg(Tpg):
    """qla2xxx or tcm_fc (``fc``): colon-form WWPN target with the single ``tpgt_1``."""

    def __init__(self, cfs: Configfs, fabric: str, wwpn: str) -> None:
        if fabric not in FC_FABRICS:
            raise ConfigError(f"FC fabric must be one of {FC_FABRICS}, got {fabric!r}")
        super().__init__(cfs, fabric, normalize_wwpn(wwpn), 1)

    @classmethod
    def create(cls, cfs: Configfs, fabric: str, wwpn: str) -> FcTpg:
        tpg = cls(cfs, fabric, wwpn)
        cfs.ensure_fabric(fabric)
        if not cfs.exists(f"{fabric}/{tpg.wwn}"):
            cfs.mkdir(f"{fabric}/{tpg.wwn}")
        cfs.mkdir(tpg.rel)
        return tpg

    def set_login_only(self, enabled: bool) -> None:
        """qla2xxx demo_mode_login_only: unknown initiators log in but see no LUNs."""
        self.set_attrib("demo_mode_login_only", enabled)

    def delete(self, remove_target: bool = True) -> None:
        super().delete()
        wwn_rel = f"{self.fabric}/{self.wwn}"
        if remove_target and self.cfs.exists(wwn_rel) and not _tpgs_in(self.cfs, wwn_rel):
            self.cfs.rmdir(wwn_rel)


def list_tpgs(cfs: Configfs, fabric: str) -> list[Tpg]:
    """Every TPG of one fabric (nothing if the fabric directory does not exist)."""
    if not cfs.is_dir(fabric):
        return []
    out: list[Tpg] = []
    for wwn in cfs.listdir(fabric):
        if not cfs.is_dir(f"{fabric}/{wwn}") or wwn == "discovery_auth":
            continue
        for name in cfs.listdir(f"{fabric}/{wwn}"):
            m = _TPG_DIR.match(name)
            if not m:
                continue
            tag = int(m.group(1))
            if dir_has(fabric, "nexus"):
                out.append(LoopbackTpg(cfs, wwn, tag))
            elif dir_has(fabric, "chap_and_portals"):
                out.append(IscsiTpg(cfs, wwn, tag))
            elif fabric in FC_FABRICS:
                out.append(FcTpg(cfs, fabric, wwn))
            else:
                out.append(Tpg(cfs, fabric, wwn, tag))
    return out
