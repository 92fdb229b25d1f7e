"""A fake LIO configfs tree on an ordinary directory, for unit tests.

:class:`FakeConfigfs` is a :class:`~tcmu_scst.kernel.configfs.Configfs` whose six filesystem
primitives emulate what the kernel does on ``mkdir``/``rmdir``/``symlink``/``unlink``/
``write``/``read`` in ``/sys/kernel/config/target``: it creates the default groups and
attribute files, refuses what the kernel refuses (with the kernel's errno, raised as
``OSError`` so the real error translation in ``Configfs`` is exercised) and records every
successful operation in :attr:`FakeConfigfs.log` so tests can assert ordering.

Emulated rules (target_core_*configfs.c, tcm_loop, iscsi_target, tcm_qla2xxx, tcm_fc):

- default groups/files cannot be removed (EPERM); a directory holding user-made children or
  symlinks cannot be removed (ENOTEMPTY); an object that a symlink points at cannot be
  removed (EBUSY; measured on 6.1 for an exported device);
- ``mkdir <fabric>`` autoloads only iscsi and loopback; others need :meth:`modprobe` (EINVAL);
- TPG numbering: ``tpgt_<u16>``; loopback < 32; qla2xxx and tcm_fc only ``tpgt_1``;
- iSCSI: one portal ``ip:port`` per IQN across its TPGs (EINVAL on 6.1); portals only on iSCSI
  (ENOSYS);
- TCMU ``control``: ``,``/newline separated ``key=value``; unknown keys ignored, so a ','
  inside ``dev_config`` silently truncates it; ring sizing refused after enable (EINVAL);
- ``enable``: 1 configures the device (a second 1 is EEXIST), registers a fake UIO name;
- LUN link: target must be a device (EINVAL), enabled (ENODEV), one per LUN (EEXIST);
  ``cmd_time_out`` and ``wwn/vpd_unit_serial`` refused while exported (EINVAL);
- LUN/mapped-LUN link to an object of the wrong kind: EFAULT (measured on 6.1);
- mapped-LUN link: target must be ``lun/lun_L`` of the same TPG (EINVAL), holding a device;
  a TPG LUN link may be removed while mapped LUNs still point at the LUN (allowed on 6.1);
- ALUA target port groups and LUN memberships: see :mod:`tcmu_scst.testing.fake_alua`;
- loopback ``nexus``: read without one is ENODEV, a second one EEXIST, "NULL" drops it but is
  EPERM while LUNs are linked (and, with ``loopback_scan_ok=False``, forever once a LUN was
  linked: 6.1's tcm_loop_port_unlink skips the count when the SCSI device never appeared);
  the initiator prefix must match the WWN's (EINVAL).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tcmu_scst.errors import ConfigfsError
from tcmu_scst.kernel.configfs import AUTOLOADED_FABRICS, FABRIC_MODULES, Configfs
from tcmu_scst.kernel.fabric_table import dir_has
from tcmu_scst.testing.fake_alua import FakeAlua

BACKEND_PLUGINS = ("user", "fileio", "iblock", "pscsi", "rd_mcp")
_HBA_RE = re.compile(r"^(user|fileio|iblock|pscsi|rd_mcp)_(\d+)$")
_LUN_RE = re.compile(r"^lun_(\d+)$")
_TPG_RE = re.compile(r"^tpgt_(\d+)$")
_WWPN_RE = re.compile(r"^([0-9a-fA-F]{2}:){7}[0-9a-fA-F]{2}$")
_LOOPBACK_PREFIXES = ("naa.", "fc.", "iqn.")
_MAX_NAME = 223  # ISCSI_IQN_LEN / TRANSPORT_IQN_LEN minus the NUL

# TCMU control keys, and those that size the ring (refused after enable).
_TCMU_KEYS = frozenset(
    {
        "dev_config",
        "dev_size",
        "hw_block_size",
        "hw_max_sectors",
        "nl_reply_supported",
        "max_data_area_mb",
        "data_pages_per_blk",
        "cmd_ring_size_mb",
    }
)
_RING_KEYS = frozenset({"max_data_area_mb", "data_pages_per_blk", "cmd_ring_size_mb"})
_RECONFIG_ATTRS = frozenset({"dev_config", "dev_size", "emulate_write_cache"})

RW, RO, WO = "rw", "ro", "wo"

_USER_ATTRIB: dict[str, tuple[str, str]] = {
    "hw_pi_prot_type": ("0", RO),
    "hw_block_size": ("512", RO),
    "hw_max_sectors": ("128", RO),
    "hw_queue_depth": ("128", RO),
    "emulate_pr": ("1", RW),
    "alua_support": ("1", RW),
    "pgr_support": ("1", RW),
    "enforce_pr_isids": ("1", RW),
    "force_pr_aptpl": ("0", RW),
    "cmd_time_out": ("30", RW),
    "qfull_time_out": ("-1", RW),
    "max_data_area_mb": ("1024", RO),
    "data_pages_per_blk": ("1", RO),
    "cmd_ring_size_mb": ("8", RO),
    "dev_config": ("", RW),
    "dev_size": ("0", RW),
    "emulate_write_cache": ("0", RW),
    "tmr_notification": ("0", RW),
    "nl_reply_supported": ("0", RW),
}
_SBC_ATTRIB: dict[str, tuple[str, str]] = {
    "block_size": ("512", RW),
    "hw_block_size": ("512", RO),
    "hw_max_sectors": ("16384", RO),
    "hw_queue_depth": ("128", RO),
    "queue_depth": ("128", RW),
    "emulate_write_cache": ("0", RW),
    "emulate_tpu": ("0", RW),
    "emulate_tpws": ("0", RW),
    "is_nonrot": ("0", RW),
    "emulate_pr": ("1", RW),
}

_ISCSI_TPG_ATTRIB = {
    "authentication": "1",
    "login_timeout": "15",
    "netif_timeout": "2",
    "generate_node_acls": "0",
    "default_cmdsn_depth": "64",
    "cache_dynamic_acls": "0",
    "demo_mode_write_protect": "1",
    "prod_mode_write_protect": "0",
    "demo_mode_discovery": "1",
    "default_erl": "0",
    "t10_pi": "0",
    "fabric_prot_type": "0",
    "tpg_enabled_sendtargets": "1",
    "login_keys_workaround": "1",
}
_QLA_TPG_ATTRIB = {
    "generate_node_acls": "1",
    "cache_dynamic_acls": "1",
    "demo_mode_write_protect": "1",
    "prod_mode_write_protect": "0",
    "demo_mode_login_only": "1",
    "fabric_prot_type": "0",
}
_ISCSI_TPG_PARAM = {
    "AuthMethod": "CHAP,None",
    "HeaderDigest": "CRC32C,None",
    "DataDigest": "CRC32C,None",
    "MaxConnections": "1",
    "TargetAlias": "LIO Target",
    "InitialR2T": "Yes",
    "ImmediateData": "Yes",
    "MaxRecvDataSegmentLength": "8192",
    "MaxXmitDataSegmentLength": "262144",
    "MaxBurstLength": "262144",
    "FirstBurstLength": "65536",
    "DefaultTime2Wait": "2",
    "DefaultTime2Retain": "20",
    "MaxOutstandingR2T": "1",
    "DataPDUInOrder": "Yes",
    "DataSequenceInOrder": "Yes",
    "ErrorRecoveryLevel": "0",
    "IFMarker": "No",
    "OFMarker": "No",
    "IFMarkInt": "2048~65535",
    "OFMarkInt": "2048~65535",
}
_ISCSI_ACL_ATTRIB = {
    "dataout_timeout": "3",
    "dataout_timeout_retries": "5",
    "default_erl": "0",
    "nopin_timeout": "15",
    "nopin_response_timeout": "30",
    "random_datain_pdu_offsets": "0",
    "random_datain_seq_offsets": "0",
    "random_r2t_offsets": "0",
    "authentication": "-1",
}
_AUTH_FILES = ("userid", "password", "userid_mutual", "password_mutual")


@dataclass(frozen=True)
class FakeOp:
    """One successful operation: ``op`` is mkdir/rmdir/symlink/unlink/write/modprobe."""

    op: str
    path: str
    value: str = ""


@dataclass
class _Device:
    plugin: str
    hba_index: int
    name: str
    enabled: bool = False
    config: str = ""
    size: int = 0
    max_data_area_mb: int = 1024
    data_pages_per_blk: int = 1
    cmd_ring_size_mb: int = 8
    uio_minor: int = -1
    # fileio only: fd_dev_name, fd_buffered_io (``size`` holds fd_dev_size)
    fd_path: str = ""
    fd_buffered: bool = False


@dataclass
class _Tpg:
    fabric: str
    wwn: str
    tag: int
    nexus: str = ""
    enabled: bool = False
    portals: set[str] = field(default_factory=set)
    port_count: int = 0  # tcm_loop's tl_tpg_port_count


def _fail(code: int, why: str) -> OSError:
    return OSError(code, f"{os.strerror(code)} [fake kernel: {why}]")


def _parse_int(value: str, what: str) -> int:
    try:
        return int(value.strip(), 0)
    except ValueError:
        raise _fail(errno.EINVAL, f"{what}: {value.strip()!r} is not a number") from None


class FakeConfigfs(Configfs):
    """A kernel-like configfs tree rooted at ``root`` (usually pytest's ``tmp_path``)."""

    def __init__(
        self,
        root: Path,
        *,
        loaded_modules: Iterable[str] = (),
        netlink_listener: bool = True,
        loopback_scan_ok: bool = True,
    ) -> None:
        super().__init__(Path(root))
        self.log: list[FakeOp] = []
        self.loaded_modules: set[str] = {"target_core_mod", *loaded_modules}
        # With no TCM-USER listener the kernel fails RECONFIG writes with ESRCH.
        self.netlink_listener = netlink_listener
        # False: the SCSI scan of loopback LUNs fails (no handler answers INQUIRY); then
        # unlinking a LUN leaves tcm_loop's port count up and the nexus cannot be dropped.
        self.loopback_scan_ok = loopback_scan_ok
        # minor -> uio name, like /sys/class/uio/uio<minor>/name.
        self.uio_names: dict[int, str] = {}
        self.netlink_events: list[tuple[str, str]] = []
        self._kernel: set[str] = set()
        self._user_dirs: set[str] = set()
        self._modes: dict[str, str] = {}
        self._devices: dict[str, _Device] = {}
        self._tpgs: dict[str, _Tpg] = {}
        self._loop_hosts: dict[str, int] = {}
        self._next_host = 3
        self.alua = FakeAlua(self)
        self._build_root()

    # ---- inspection helpers for tests ------------------------------------------------

    def ops(self, op: str | None = None) -> list[FakeOp]:
        """The log, optionally only operations of one kind."""
        return [o for o in self.log if op is None or o.op == op]

    def index_of(self, op: str, path_part: str, value: str | None = None) -> int:
        """Position in the log of the first ``op`` on a path containing ``path_part``."""
        for i, o in enumerate(self.log):
            if o.op == op and path_part in o.path and value in (None, o.value):
                return i
        raise AssertionError(f"no {op} on *{path_part}* in the fake configfs log")

    def kernel_set(self, rel: str, text: str) -> None:
        """Change a file's content as the kernel would (sessions, counters): not logged."""
        path = self.path(rel)
        if not path.is_file():
            raise ConfigfsError(f"fake configfs: {rel} is not an attribute file", rel, 2)
        path.write_bytes(text.encode())

    def is_enabled(self, device_rel: str) -> bool:
        dev = self._devices.get(device_rel)
        return bool(dev and dev.enabled)

    # ---- tree building ---------------------------------------------------------------

    def _build_root(self) -> None:
        self.target.mkdir(parents=True, exist_ok=True)
        self._kdir("")
        self._kfile("version", "Target Engine Core ConfigFS Infrastructure v5.0 on Linux", RO)
        self._kfile("dbroot", "/etc/target", RW)
        for d in ("core", "core/alua", "core/alua/lu_gps", "core/alua/lu_gps/default_lu_gp"):
            self._kdir(d)
        self._kfile("core/alua/lu_gps/default_lu_gp/lu_gp_id", "0", RW)
        self._kfile("core/alua/lu_gps/default_lu_gp/members", "", RO)

    def _kdir(self, rel: str) -> None:
        self.path(rel).mkdir(exist_ok=True)
        self._kernel.add(rel)

    def _kfile(self, rel: str, value: str, mode: str = RW) -> None:
        self.path(rel).write_bytes((value + "\n").encode() if value else b"")
        self._kernel.add(rel)
        self._modes[rel] = mode

    def _kgroup(self, rel: str, files: dict[str, str], mode: str = RW) -> None:
        self._kdir(rel)
        for name, value in files.items():
            self._kfile(f"{rel}/{name}", value, mode)

    def _set(self, rel: str, value: str) -> None:
        self.path(rel).write_bytes((value + "\n").encode() if value else b"")

    def _get(self, rel: str) -> str:
        return self.path(rel).read_text().rstrip("\n\x00")

    # ---- path classification -----------------------------------------------------------

    @staticmethod
    def _parts(rel: str) -> list[str]:
        return [p for p in rel.split("/") if p]

    def _tpg_of(self, parts: list[str]) -> str | None:
        """The TPG rel path if ``parts`` lies inside ``<fabric>/<wwn>/tpgt_N``."""
        if len(parts) >= 3 and parts[0] != "core" and _TPG_RE.match(parts[2]):
            rel = "/".join(parts[:3])
            return rel if rel in self._tpgs else None
        return None

    # ---- primitives --------------------------------------------------------------------

    def _do_read(self, path: Path) -> bytes:
        rel = self.relative(path)
        if self._modes.get(rel) == WO:
            raise _fail(errno.EACCES, f"{rel} is write-only")
        parts = self._parts(rel)
        tpg = self._tpg_of(parts) if parts[-1] == "nexus" else None
        if tpg is not None and not self._tpgs[tpg].nexus:
            raise _fail(errno.ENODEV, "loopback TPG has no nexus")
        shown = self.alua.render(rel) if path.is_file() else None
        return shown if shown is not None else super()._do_read(path)

    def _do_write(self, path: Path, data: bytes) -> None:
        rel = self.relative(path)
        if not path.exists():
            raise _fail(errno.ENOENT, f"{rel} does not exist")
        if path.is_dir():
            raise _fail(errno.EISDIR, f"{rel} is a directory")
        if self._modes.get(rel) == RO:
            raise _fail(errno.EACCES, f"{rel} is read-only")
        value = data.decode()
        self._store(rel, value)
        self.log.append(FakeOp("write", rel, value))

    def _do_mkdir(self, path: Path) -> None:
        rel = self.relative(path)
        if path.exists() or path.is_symlink():
            raise _fail(errno.EEXIST, f"{rel} exists")
        if not path.parent.is_dir():
            raise _fail(errno.ENOENT, f"parent of {rel} missing")
        parts = self._parts(rel)
        self._make(rel, parts)
        self.log.append(FakeOp("mkdir", rel))

    def _do_rmdir(self, path: Path) -> None:
        rel = self.relative(path)
        if not path.is_dir() or path.is_symlink():
            raise _fail(errno.ENOTDIR if path.exists() else errno.ENOENT, f"{rel} not a dir")
        if rel in self._kernel:
            raise _fail(errno.EPERM, f"{rel} is a default group made by the kernel")
        for sub in self._walk(path):
            sub_rel = self.relative(sub)
            if sub.is_symlink() or (sub.is_dir() and sub_rel in self._user_dirs):
                raise _fail(errno.ENOTEMPTY, f"{sub_rel} is still inside {rel}")
        # An object some link points at stays until unlinked (EBUSY, measured on 6.1).
        for link in self._all_links():
            if self._link_target_rel(link) == rel:
                raise _fail(errno.EBUSY, f"{rel} is the target of {self.relative(link)}")
        self._destroy(rel, parts=self._parts(rel))
        shutil.rmtree(path)
        self._forget(rel)
        self.log.append(FakeOp("rmdir", rel))

    def _do_symlink(self, target: Path, link: Path) -> None:
        link_rel = self.relative(link)
        target_rel = self.relative(target)
        if link.exists() or link.is_symlink():
            raise _fail(errno.EEXIST, f"{link_rel} exists")
        if not link.parent.is_dir():
            raise _fail(errno.ENOENT, f"parent of {link_rel} missing")
        if not target.is_dir():
            raise _fail(errno.ENOENT, f"link target {target_rel} missing")
        self._check_link(link_rel, target_rel)
        super()._do_symlink(target, link)
        self._linked(link_rel, target_rel)
        self.log.append(FakeOp("symlink", link_rel, target_rel))

    def _do_unlink(self, path: Path) -> None:
        rel = self.relative(path)
        if not path.is_symlink():
            raise _fail(errno.EPERM if path.exists() else errno.ENOENT, f"{rel} is not a link")
        target_rel = self._link_target_rel(path)
        super()._do_unlink(path)
        parts = self._parts(rel)
        tpg = self._tpgs.get("/".join(parts[:3])) if len(parts) == 6 else None
        if tpg is not None and dir_has(tpg.fabric, "nexus") and self.loopback_scan_ok:
            tpg.port_count -= 1
        if len(parts) == 6 and parts[3] == "lun":
            self.alua.lun_unlinked("/".join(parts[:5]))
        if target_rel in self._devices:
            self._refresh_info(target_rel)
        self.log.append(FakeOp("unlink", rel))

    def modprobe(self, module: str) -> None:
        if module not in {*FABRIC_MODULES.values(), "target_core_mod", "target_core_user"}:
            raise ConfigfsError(
                f"cannot load kernel module {module}: not known to the fake configfs", "", 2
            )
        self.loaded_modules.add(module)
        self.log.append(FakeOp("modprobe", module))

    # ---- tree walking ------------------------------------------------------------------

    def _walk(self, path: Path) -> Iterator[Path]:
        for child in path.iterdir():
            yield child
            if child.is_dir() and not child.is_symlink():
                yield from self._walk(child)

    def _all_links(self) -> Iterator[Path]:
        for top in self.target.iterdir():
            if top.is_dir() and top.name != "core":
                for p in self._walk(top):
                    if p.is_symlink():
                        yield p

    def _link_target_rel(self, link: Path) -> str:
        return self.relative(link.parent / os.readlink(link))

    def _forget(self, rel: str) -> None:
        prefix = rel + "/"
        for store in (self._kernel, self._user_dirs):
            for key in [k for k in store if k == rel or k.startswith(prefix)]:
                store.discard(key)
        for key in [k for k in self._modes if k.startswith(prefix)]:
            del self._modes[key]

    # ---- mkdir: what the kernel creates ------------------------------------------------

    def _make(self, rel: str, parts: list[str]) -> None:
        depth = len(parts)
        if parts[0] == "core":
            if depth == 2:
                self._make_hba(rel, parts[1])
            elif depth == 3 and _HBA_RE.match(parts[1]):
                self._make_device(rel, parts[1], parts[2])
            elif self.alua.is_group(parts) and "/".join(parts[:3]) in self._devices:
                self.alua.make_group(rel)
            else:
                raise _fail(errno.EPERM, f"cannot mkdir {rel} here")
            return
        if depth == 1:
            self._make_fabric(rel, parts[0])
        elif depth == 2:
            self._make_wwn(rel, parts[0], parts[1])
        elif depth == 3:
            self._make_tpg(rel, parts[0], parts[1], parts[2])
        elif depth == 5 and parts[3] == "lun" and self._tpg_of(parts):
            self._make_lun(rel, parts[4])
        elif depth == 5 and parts[3] == "np" and self._tpg_of(parts):
            self._make_portal(rel, parts)
        elif depth == 5 and parts[3] == "acls" and self._tpg_of(parts):
            self._make_acl(rel, parts)
        elif depth == 6 and parts[3] == "acls" and self._tpg_of(parts):
            self._make_mapped_lun(rel, parts)
        else:
            raise _fail(errno.EPERM, f"cannot mkdir {rel} here")

    def _user_dir(self, rel: str) -> None:
        self.path(rel).mkdir()
        self._user_dirs.add(rel)

    def _make_hba(self, rel: str, name: str) -> None:
        if not _HBA_RE.match(name):
            raise _fail(errno.EINVAL, f"HBA name {name!r} is not <plugin>_<N>")
        self._user_dir(rel)
        self._kfile(f"{rel}/hba_info", f"HBA Index: {name.split('_')[-1]} plugin: {name}", RO)
        self._kfile(f"{rel}/hba_mode", "0", RW)

    def _make_device(self, rel: str, hba: str, name: str) -> None:
        plugin, index = hba.rsplit("_", 1)
        dev = _Device(plugin=plugin, hba_index=int(index), name=name)
        self._user_dir(rel)
        self._devices[rel] = dev
        self._kfile(f"{rel}/control", "", WO)
        self._kfile(f"{rel}/enable", "0", RW)
        self._kfile(f"{rel}/info", "", RO)
        for f in ("udev_path", "alias", "lba_map"):
            self._kfile(f"{rel}/{f}", "", RW)
        self._kfile(f"{rel}/alua_lu_gp", "default_lu_gp", RW)
        attrib = _USER_ATTRIB if plugin == "user" else _SBC_ATTRIB
        self._kdir(f"{rel}/attrib")
        for key, (value, mode) in attrib.items():
            self._kfile(f"{rel}/attrib/{key}", value, mode)
        if plugin == "user":
            self._kdir(f"{rel}/action")
            self._kfile(f"{rel}/action/block_dev", "unblocked", RW)
            self._kfile(f"{rel}/action/reset_ring", "", WO)
            self._kfile(f"{rel}/action/free_kept_buf", "", WO)
        self._kdir(f"{rel}/wwn")
        self._kfile(f"{rel}/wwn/vpd_unit_serial", "T10 VPD Unit Serial Number: ", RW)
        self._kfile(f"{rel}/wwn/vpd_protocol_identifier", "", RW)
        self._kdir(f"{rel}/pr")
        self._kfile(f"{rel}/pr/res_holder", "No SPC-3 Reservation holder", RO)
        self._kfile(f"{rel}/pr/res_aptpl_metadata", "", WO)
        self._kdir(f"{rel}/alua")
        self.alua.make_group(f"{rel}/alua/default_tg_pt_gp", default=True)
        self._kdir(f"{rel}/statistics")
        for group in ("scsi_dev", "scsi_tgt_dev", "scsi_lu"):
            self._kgroup(f"{rel}/statistics/{group}", {"inst": "0"}, RO)
        self._refresh_info(rel)

    def _make_fabric(self, rel: str, fabric: str) -> None:
        module = FABRIC_MODULES.get(fabric)
        if module is None or (
            fabric not in AUTOLOADED_FABRICS and module not in self.loaded_modules
        ):
            raise _fail(errno.EINVAL, f"fabric {fabric!r} not registered (module not loaded)")
        if module is not None:
            self.loaded_modules.add(module)
        self._user_dir(rel)
        if dir_has(fabric, "chap_and_portals"):  # iSCSI: discovery CHAP
            self._kfile(f"{rel}/lio_version", "Datera Inc. iSCSI Target v4.1.0", RO)
            self._kgroup(f"{rel}/discovery_auth", dict.fromkeys(_AUTH_FILES, ""))
            self._kfile(f"{rel}/discovery_auth/enforce_discovery_auth", "0", RW)
            self._kfile(f"{rel}/discovery_auth/authenticate_target", "0", RO)
        else:
            self._kfile(f"{rel}/version", f"{fabric} fabric module (fake)", RO)

    def _make_wwn(self, rel: str, fabric: str, wwn: str) -> None:
        if len(wwn) > _MAX_NAME:
            raise _fail(errno.EINVAL, "target name too long")
        if dir_has(fabric, "nexus") and not wwn.startswith(_LOOPBACK_PREFIXES):
            raise _fail(errno.EINVAL, f"loopback WWN {wwn!r} must start with naa./fc./iqn.")
        if dir_has(fabric, "wwpn_names") and not _WWPN_RE.match(wwn):
            raise _fail(errno.EINVAL, f"{fabric} WWPN {wwn!r} is not xx:xx:xx:xx:xx:xx:xx:xx")
        self._user_dir(rel)
        self._kdir(f"{rel}/fabric_statistics")
        self._kdir(f"{rel}/param")
        if dir_has(fabric, "iscsi_login"):
            stats = f"{rel}/fabric_statistics"
            self._kgroup(
                f"{stats}/iscsi_login_stats",
                dict.fromkeys(
                    (
                        "accepts",
                        "other_fails",
                        "redirects",
                        "authorize_fails",
                        "authenticate_fails",
                        "negotiate_fails",
                    ),
                    "0",
                ),
                RO,
            )
            self._kgroup(
                f"{stats}/iscsi_tgt_attr",
                {"login_fails": "0", "last_fail_time": "0", "last_fail_type": "0"}
                | {"fail_intr_name": "", "fail_intr_addr_type": "", "fail_intr_addr": ""},
                RO,
            )
        if dir_has(fabric, "nexus"):
            self._loop_hosts[rel] = self._next_host
            self._next_host += 1

    def _make_tpg(self, rel: str, fabric: str, wwn: str, name: str) -> None:
        m = _TPG_RE.match(name)
        if not m:
            raise _fail(errno.EINVAL, f"TPG name {name!r} is not tpgt_<N>")
        tag = int(m.group(1))
        fc = dir_has(fabric, "wwpn_names")  # FC: the one tpgt_1 per WWPN
        limit = 31 if dir_has(fabric, "nexus") else 1 if fc else 0xFFFF
        if tag > limit or (fc and tag != 1):
            raise _fail(errno.EINVAL, f"{fabric} TPG tag {tag} out of range")
        self._user_dir(rel)
        self._tpgs[rel] = _Tpg(fabric=fabric, wwn=wwn, tag=tag)
        for group in ("lun", "acls", "np", "attrib", "param", "auth"):
            self._kdir(f"{rel}/{group}")
        if dir_has(fabric, "nexus"):
            host = self._loop_hosts[f"{fabric}/{wwn}"]
            self._kfile(f"{rel}/nexus", "", RW)
            self._kfile(f"{rel}/transport_status", "online", RW)
            self._kfile(f"{rel}/address", f"{host}:0:{tag}", RO)
            self._kfile(f"{rel}/attrib/fabric_prot_type", "0", RW)
            return
        self._kfile(f"{rel}/enable", "0", RW)
        self._kfile(f"{rel}/rtpi", str(tag), RW)
        if dir_has(fabric, "iscsi_login") or dir_has(fabric, "login_only"):
            self._kfile(f"{rel}/dynamic_sessions", "", RO)
        if dir_has(fabric, "chap_and_portals"):
            for key, value in _ISCSI_TPG_ATTRIB.items():
                self._kfile(f"{rel}/attrib/{key}", value, RW)
            for key, value in _ISCSI_TPG_PARAM.items():
                self._kfile(f"{rel}/param/{key}", value, RW)
            for key in _AUTH_FILES:
                self._kfile(f"{rel}/auth/{key}", "", RW)
            self._kfile(f"{rel}/auth/authenticate_target", "0", RO)
        elif dir_has(fabric, "login_only"):
            for key, value in _QLA_TPG_ATTRIB.items():
                self._kfile(f"{rel}/attrib/{key}", value, RW)

    def _make_lun(self, rel: str, name: str) -> None:
        if not _LUN_RE.match(name):
            raise _fail(errno.EINVAL, f"LUN name {name!r} is not lun_<N>")
        self._user_dir(rel)
        for f in ("alua_tg_pt_gp", "alua_tg_pt_offline", "alua_tg_pt_status"):
            self._kfile(f"{rel}/{f}", "", RW)
        self._kfile(f"{rel}/alua_tg_pt_write_md", "0", RW)
        self._kdir(f"{rel}/statistics")
        for group in ("scsi_port", "scsi_tgt_port", "scsi_transport"):
            self._kgroup(f"{rel}/statistics/{group}", {"inst": "0"}, RO)

    def _make_portal(self, rel: str, parts: list[str]) -> None:
        tpg_rel = "/".join(parts[:3])
        tpg = self._tpgs[tpg_rel]
        if not dir_has(tpg.fabric, "chap_and_portals"):
            raise _fail(errno.ENOSYS, f"{tpg.fabric} has no network portals")
        addr = parts[4]
        if not re.match(r"^(\[[0-9a-fA-F:.]+\]|[0-9.]+):\d{1,5}$", addr):
            raise _fail(errno.EINVAL, f"portal {addr!r} is not <ip>:<port> or [ipv6]:<port>")
        for other_rel, other in self._tpgs.items():
            if other.fabric == tpg.fabric and other.wwn == tpg.wwn and addr in other.portals:
                # Measured on 6.1: EINVAL reaches userspace (the doc's EEXIST does not).
                raise _fail(errno.EINVAL, f"portal {addr} already on {other_rel}")
        self._user_dir(rel)
        tpg.portals.add(addr)
        self._kfile(f"{rel}/iser", "0", RW)
        self._kfile(f"{rel}/cxgbit", "0", RW)

    def _make_acl(self, rel: str, parts: list[str]) -> None:
        tpg = self._tpgs["/".join(parts[:3])]
        name = parts[4]
        if len(name) > _MAX_NAME:
            raise _fail(errno.EINVAL, "initiator name too long")
        if dir_has(tpg.fabric, "wwpn_names") and not _WWPN_RE.match(name):
            raise _fail(errno.EINVAL, f"{tpg.fabric} initiator {name!r} is not a WWPN")
        self._user_dir(rel)
        for group in ("attrib", "auth", "param", "fabric_statistics"):
            self._kdir(f"{rel}/{group}")
        if dir_has(tpg.fabric, "iscsi_login"):
            depth = self._get(f"{'/'.join(parts[:3])}/attrib/default_cmdsn_depth")
            self._kfile(f"{rel}/info", f"No active iSCSI Session for Initiator Endpoint: {name}")
            self._modes[f"{rel}/info"] = RO
            self._kfile(f"{rel}/cmdsn_depth", depth, RW)
            self._kfile(f"{rel}/tag", "", RW)
            for key, value in _ISCSI_ACL_ATTRIB.items():
                self._kfile(f"{rel}/attrib/{key}", value, RW)
            for key in _AUTH_FILES:
                self._kfile(f"{rel}/auth/{key}", "", RW)
            self._kfile(f"{rel}/auth/authenticate_target", "0", RO)

    def _make_mapped_lun(self, rel: str, parts: list[str]) -> None:
        if not _LUN_RE.match(parts[5]):
            raise _fail(errno.EINVAL, f"mapped LUN name {parts[5]!r} is not lun_<N>")
        tpg_rel = "/".join(parts[:3])
        self._user_dir(rel)
        prod_wp = f"{tpg_rel}/attrib/prod_mode_write_protect"
        wp = self._get(prod_wp) if self.path(prod_wp).is_file() else "0"
        self._kfile(f"{rel}/write_protect", wp, RW)
        self._kdir(f"{rel}/statistics")
        self._kgroup(
            f"{rel}/statistics/scsi_auth_intr",
            dict.fromkeys(("num_cmds", "read_mbytes", "write_mbytes", "hs_num_cmds"), "0"),
            RO,
        )
        self._kgroup(f"{rel}/statistics/scsi_att_intr_port", {"port_ident": ""}, RO)

    # ---- rmdir side effects ------------------------------------------------------------

    def _destroy(self, rel: str, parts: list[str]) -> None:
        dev = self._devices.pop(rel, None)
        if dev is not None and dev.enabled:
            self.netlink_events.append(("REMOVED", rel))
            self.uio_names.pop(dev.uio_minor, None)
        tpg = self._tpgs.pop(rel, None)
        if tpg is None and len(parts) == 5 and parts[3] == "np":
            owner = self._tpgs.get("/".join(parts[:3]))
            if owner is not None:
                owner.portals.discard(parts[4])
        if len(parts) == 2 and dir_has(parts[0], "nexus"):
            self._loop_hosts.pop(rel, None)
        if self.alua.is_group(parts):
            self.alua.drop_group(rel)

    # ---- symlink rules -----------------------------------------------------------------

    def _check_link(self, link_rel: str, target_rel: str) -> None:
        parts = self._parts(link_rel)
        tpg_rel = self._tpg_of(parts)
        if tpg_rel is None or len(parts) not in (6, 7):
            raise _fail(errno.EPERM, f"cannot create a link at {link_rel}")
        holder = self.path("/".join(parts[:-1]))
        if len(parts) == 6 and parts[3] == "lun":
            dev = self._devices.get(target_rel)
            if dev is None:
                # Measured on 6.1: the kernel answers EFAULT, not EINVAL.
                raise _fail(errno.EFAULT, f"{target_rel} is not a backstore device")
            if not dev.enabled:
                raise _fail(errno.ENODEV, f"device {target_rel} is not enabled")
            if any(p.is_symlink() for p in holder.iterdir()):
                raise _fail(errno.EEXIST, f"{'/'.join(parts[:5])} already holds a device")
            return
        if len(parts) == 7 and parts[3] == "acls":
            target_parts = self._parts(target_rel)
            is_lun = (
                len(target_parts) == 5
                and target_parts[3] == "lun"
                and _LUN_RE.match(target_parts[4]) is not None
            )
            if not is_lun:
                # Measured on 6.1: a link to a non-LUN object is EFAULT.
                raise _fail(errno.EFAULT, f"{target_rel} is not a TPG LUN")
            if not target_rel.startswith(f"{tpg_rel}/lun/"):
                raise _fail(errno.EINVAL, f"{target_rel} is not a LUN of {tpg_rel}")
            if not any(p.is_symlink() for p in self.path(target_rel).iterdir()):
                raise _fail(errno.ENODEV, f"{target_rel} holds no device")
            if any(p.is_symlink() for p in holder.iterdir()):
                raise _fail(errno.EEXIST, f"{'/'.join(parts[:6])} is already mapped")
            return
        raise _fail(errno.EPERM, f"cannot create a link at {link_rel}")

    def _exported(self, device_rel: str) -> bool:
        return any(self._link_target_rel(link) == device_rel for link in self._all_links())

    def _linked(self, link_rel: str, target_rel: str) -> None:
        parts = self._parts(link_rel)
        tpg = self._tpgs.get("/".join(parts[:3])) if len(parts) == 6 else None
        if tpg is not None and dir_has(tpg.fabric, "nexus"):
            tpg.port_count += 1
        if len(parts) == 6 and parts[3] == "lun":
            self.alua.lun_linked("/".join(parts[:5]), target_rel)
        if target_rel in self._devices:
            self._refresh_info(target_rel)

    # ---- attribute stores --------------------------------------------------------------

    def _store(self, rel: str, value: str) -> None:
        parts = self._parts(rel)
        owner = "/".join(parts[:-1])
        leaf = parts[-1]
        if owner in self._devices:
            self._store_device(owner, leaf, value)
            return
        if len(parts) == 5 and parts[3] == "attrib" and "/".join(parts[:3]) in self._devices:
            self._store_device_attrib("/".join(parts[:3]), leaf, value)
            return
        if owner in self._tpgs:
            self._store_tpg(owner, leaf, value)
            return
        if self.alua.is_group(parts[:-1]):
            self.alua.store_group(owner, leaf, value)
            return
        if leaf == "alua_tg_pt_gp" and len(parts) == 6 and parts[3] == "lun":
            self.alua.store_lun_group(owner, value)
            return
        if len(parts) == 5 and parts[3] == "action" and "/".join(parts[:3]) in self._devices:
            self._store_action("/".join(parts[:3]), leaf, value)
            return
        if leaf == "vpd_unit_serial":
            if self._exported("/".join(parts[:3])):
                # Measured on 6.1: the serial cannot change while the device is exported.
                raise _fail(errno.EINVAL, "unit serial is fixed while LUNs export the device")
            serial = value.strip()
            if len(serial) > 254:
                raise _fail(errno.EOVERFLOW, "unit serial too long")
            self._set(rel, f"T10 VPD Unit Serial Number: {serial}")
            return
        if leaf in ("write_protect", "cmdsn_depth", "iser", "cxgbit"):
            number = _parse_int(value, leaf)
            if leaf == "cmdsn_depth" and not 0 <= number <= 512:
                # Measured on 6.1: 513 is refused, 0 is accepted.
                raise _fail(errno.EINVAL, "cmdsn_depth must be 0..512")
            self._set(rel, str(number) if leaf == "cmdsn_depth" else str(int(bool(number))))
            return
        if leaf == "tag":
            if len(value) >= 64:  # MAX_ACL_TAG_SIZE
                raise _fail(errno.EINVAL, "ACL tag must be shorter than 64 bytes")
            self._set(rel, "" if value.startswith("NULL") else value.rstrip("\n"))
            return
        if len(parts) >= 4 and parts[-2] in ("auth", "discovery_auth") and leaf in _AUTH_FILES:
            # The kernel keeps the text (show() prints "NULL" back) and clears the flag.
            self._set(rel, value.rstrip("\n"))
            self._update_authenticate_target("/".join(parts[:-1]))
            return
        if self._parts(owner)[-1:] == ["attrib"]:
            self._set(rel, str(_parse_int(value, leaf)))
            return
        self._set(rel, value.rstrip("\n"))

    def _update_authenticate_target(self, auth_rel: str) -> None:
        flag = f"{auth_rel}/authenticate_target"
        if self.path(flag).is_file():
            mutual = [self._get(f"{auth_rel}/{k}") for k in ("userid_mutual", "password_mutual")]
            self._set(flag, "1" if all(v and v != "NULL" for v in mutual) else "0")

    def _store_device(self, dev_rel: str, leaf: str, value: str) -> None:
        dev = self._devices[dev_rel]
        if leaf == "control":
            self._apply_control(dev_rel, dev, value)
        elif leaf == "enable":
            if _parse_int(value, "enable") != 1:
                raise _fail(errno.EINVAL, "only 1 may be written to enable")
            if dev.enabled:
                raise _fail(errno.EEXIST, f"{dev_rel} is already enabled")
            if dev.plugin == "fileio":
                self._open_fileio(dev)
            dev.enabled = True
            self._set(f"{dev_rel}/enable", "1")
            if dev.plugin == "user":
                minor = min(set(range(len(self.uio_names) + 1)) - set(self.uio_names))
                dev.uio_minor = minor
                name = f"tcm-user/{dev.hba_index}/{dev.name}"
                self.uio_names[minor] = f"{name}/{dev.config}" if dev.config else name
                self.netlink_events.append(("ADDED", dev_rel))
            self._refresh_info(dev_rel)
        else:
            self._set(f"{dev_rel}/{leaf}", value.rstrip("\n"))

    def _open_fileio(self, dev: _Device) -> None:
        # fd_configure_device: the name is required, the size too for a regular file
        # (which it creates, O_CREAT, when missing).
        if not dev.fd_path:
            raise _fail(errno.EINVAL, "Missing fd_dev_name=")
        backing = Path(dev.fd_path)
        if (not backing.exists() or backing.is_file()) and dev.size <= 0:
            raise _fail(errno.EINVAL, "Missing fd_dev_size=")
        try:
            backing.touch()
        except OSError as err:
            raise _fail(err.errno or errno.EINVAL, f"cannot open {backing}") from None

    def _apply_fileio_control(self, dev: _Device, key: str, arg: str) -> None:
        if key == "fd_dev_name":
            dev.fd_path = arg
        elif key == "fd_dev_size":
            dev.size = _parse_int(arg, key)
        elif key == "fd_buffered_io":
            dev.fd_buffered = _parse_int(arg, key) == 1

    def _apply_control(self, dev_rel: str, dev: _Device, value: str) -> None:
        for token in re.split(r"[,\n]", value):
            key, sep, arg = token.partition("=")
            if sep and dev.plugin == "fileio":
                self._apply_fileio_control(dev, key, arg)
                continue
            if not sep or (dev.plugin == "user" and key not in _TCMU_KEYS):
                continue  # the kernel ignores unknown tokens
            if dev.plugin != "user":
                continue
            if key in _RING_KEYS and dev.enabled:
                raise _fail(errno.EINVAL, f"{key} cannot change after enable")
            if key == "dev_config":
                dev.config = arg[:255]
                self._set(f"{dev_rel}/attrib/dev_config", dev.config)
                continue
            number = _parse_int(arg, key)
            if key == "dev_size":
                dev.size = number
                self._set(f"{dev_rel}/attrib/dev_size", str(number))
            elif key in ("hw_block_size", "hw_max_sectors", "max_data_area_mb"):
                if number <= 0:
                    raise _fail(errno.EINVAL, f"{key} must be > 0")
                self._set(f"{dev_rel}/attrib/{key}", str(number))
                if key == "max_data_area_mb":
                    dev.max_data_area_mb = number
            elif key == "nl_reply_supported":
                self._set(f"{dev_rel}/attrib/nl_reply_supported", str(number))
            elif key == "data_pages_per_blk":
                dev.data_pages_per_blk = number
                self._set(f"{dev_rel}/attrib/data_pages_per_blk", str(number))
            elif key == "cmd_ring_size_mb":
                dev.cmd_ring_size_mb = min(number, 8)
                self._set(f"{dev_rel}/attrib/cmd_ring_size_mb", str(dev.cmd_ring_size_mb))
        self._refresh_info(dev_rel)

    def _store_device_attrib(self, dev_rel: str, leaf: str, value: str) -> None:
        dev = self._devices[dev_rel]
        attr = f"{dev_rel}/attrib/{leaf}"
        if leaf == "cmd_time_out" and self._exported(dev_rel):
            raise _fail(errno.EINVAL, "cmd_time_out cannot change while exported")
        if leaf in _RECONFIG_ATTRS and dev.enabled:
            if not self.netlink_listener:
                raise _fail(errno.ESRCH, "no TCM-USER listener for the RECONFIG event")
            self.netlink_events.append((f"RECONFIG:{leaf}", dev_rel))
        if leaf == "dev_config":
            dev.config = value.rstrip("\n")[:255]
            self._set(attr, dev.config)
            if dev.enabled:
                base = f"tcm-user/{dev.hba_index}/{dev.name}"
                self.uio_names[dev.uio_minor] = f"{base}/{dev.config}" if dev.config else base
        else:
            number = _parse_int(value, leaf)
            if leaf == "dev_size":
                dev.size = number
            self._set(attr, str(number))
        self._refresh_info(dev_rel)

    def _store_action(self, dev_rel: str, leaf: str, value: str) -> None:
        dev = self._devices[dev_rel]
        number = _parse_int(value, leaf)
        if not dev.enabled:
            raise _fail(errno.EINVAL, f"{leaf} needs an enabled device")
        if leaf == "block_dev":
            if number not in (0, 1):
                raise _fail(errno.EINVAL, "block_dev takes 0 or 1")
            self._set(f"{dev_rel}/action/block_dev", "blocked" if number else "unblocked")
        elif leaf == "reset_ring" and number not in (1, 2):
            raise _fail(errno.EINVAL, "reset_ring takes 1 or 2")

    def _store_tpg(self, tpg_rel: str, leaf: str, value: str) -> None:
        tpg = self._tpgs[tpg_rel]
        if leaf == "nexus":
            self._store_nexus(tpg_rel, tpg, value.strip())
        elif leaf == "enable":
            number = _parse_int(value, "enable")
            if number not in (0, 1):
                raise _fail(errno.EINVAL, "enable takes 0 or 1")
            tpg.enabled = bool(number)
            self._set(f"{tpg_rel}/enable", str(number))
        else:
            self._set(f"{tpg_rel}/{leaf}", value.rstrip("\n"))

    def _store_nexus(self, tpg_rel: str, tpg: _Tpg, name: str) -> None:
        if name == "NULL":
            if not tpg.nexus:
                raise _fail(errno.ENODEV, "no nexus to drop")
            if tpg.port_count:
                raise _fail(errno.EPERM, "LUNs are still linked to this TPG")
            tpg.nexus = ""
            self._set(f"{tpg_rel}/nexus", "")
            return
        if tpg.nexus:
            raise _fail(errno.EEXIST, f"nexus {tpg.nexus} already exists")
        prefix = next(p for p in _LOOPBACK_PREFIXES if tpg.wwn.startswith(p))
        if not name.startswith(prefix):
            raise _fail(errno.EINVAL, f"nexus {name!r} must use the WWN's {prefix} prefix")
        tpg.nexus = name
        self._set(f"{tpg_rel}/nexus", name)

    # ---- info ----------------------------------------------------------------------

    def _refresh_info(self, dev_rel: str) -> None:
        dev = self._devices[dev_rel]
        status = "ACTIVATED" if self._exported(dev_rel) else "DEACTIVATED"
        depth = 0  # measured on 6.1: TCMU devices print 0 here, enabled and exported
        block = self._get(f"{dev_rel}/attrib/hw_block_size")
        sectors = self._get(f"{dev_rel}/attrib/hw_max_sectors")
        core = (
            f"Status: {status}  Max Queue Depth: {depth}  SectorSize: {block}  "
            f"HwMaxSectors: {sectors}\n        "
        )
        if dev.plugin == "user":
            backend = (
                f"Config: {dev.config or 'NULL'} Size: {dev.size} "
                f"MaxDataAreaMB: {dev.max_data_area_mb} DataPagesPerBlk: "
                f"{dev.data_pages_per_blk} CmdRingSizeMB: {dev.cmd_ring_size_mb}\n"
            )
        elif dev.plugin == "fileio":
            mode = "Buffered-WCE" if dev.fd_buffered else "O_DSYNC"
            backend = (
                f"TCM FILEIO ID: {dev.hba_index}        File: {dev.fd_path or '(null)'}  "
                f"Size: {dev.size}  Mode: {mode} Async: 0\n"
            )
        else:
            backend = f"{dev.plugin} (fake)\n"
        self.path(f"{dev_rel}/info").write_bytes((core + backend).encode())
