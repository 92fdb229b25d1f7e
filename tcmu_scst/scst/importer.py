"""targetcli's save file (``/etc/rtslib-fb-target/saveconfig.json``) -> our SCST model.

rtslib-fb writes one JSON object: ``storage_objects`` (backstores: ``plugin``, ``name``,
``dev``, ``size``, ``write_back``, ``readonly``...) and ``targets`` (``fabric``, ``wwn``,
``tpgs``: ``tag``, ``enable``, ``attributes``, ``parameters``, ``portals``, ``luns``
with ``index`` and ``storage_object`` = ``/backstores/<plugin>/<name>``, ``node_acls``
with ``node_wwn``, ``tag``, CHAP and ``mapped_luns`` ``index``/``tpg_lun``/
``write_protect``). What becomes what:

* ``fileio`` -> ``vdisk_fileio`` (``write_back`` false -> ``write_through 1``),
  ``block`` -> ``vdisk_blockio``, ``readonly`` -> ``read_only 1``, attribute
  ``block_size`` -> ``blocksize``;
* each target -> a ``TARGET`` of its driver (``iscsi``, ``loopback`` -> scst_local,
  ``qla2xxx`` -> qla2x00t, ``tcm_fc`` -> fcst), ``enable`` -> ``enabled``, iSCSI
  parameters and portals kept;
* loopback: the TPG's LUNs are the target's own LUN set (tcm_loop has no ACLs);
* demo mode (``generate_node_acls`` 1): the TPG's LUNs are the target's default LUN
  set at the TPG's numbers (every initiator sees them, as in LIO); the TPG's CHAP
  account becomes the target's ``IncomingUser``;
* each node ACL -> a ``GROUP`` (named by its ``tag``, ACLs with one tag share one group,
  else ``acl<N>``) with its mapped LUNs (``write_protect`` -> ``read_only``) and CHAP.

Refused with the reason, all at once: ``ramdisk`` (we have no RAM store; nullio
discards data), ``pscsi`` (name the device by H:C:I:L in a ``dev_*`` handler by hand),
``user`` backstores (another TCMU handler's), other fabrics, more than one TPG per
target, and whatever SCST's model refuses (e.g. a group without LUN 0).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tcmu_scst.errors import ConfigError, ErrorCollector
from tcmu_scst.kernel.fabric_table import MANAGED, has
from tcmu_scst.kernel.fabrics import normalize_wwpn
from tcmu_scst.scst.catalogue import ISCSI_PARAMS
from tcmu_scst.scst.conf import normalize_portal
from tcmu_scst.scst.model import FC_FABRICS, Device, Group, Lun, ScstConfig, Target, check

# rtslib backstore plugin -> SCST handler.
HANDLERS = {"fileio": "vdisk_fileio", "block": "vdisk_blockio"}
_REFUSED_PLUGINS = {
    "ramdisk": "we have no RAM-backed store (vdisk_nullio discards writes); use a fileio "
    "image on tmpfs instead",
    "rd_mcp": "we have no RAM-backed store (vdisk_nullio discards writes); use a fileio "
    "image on tmpfs instead",
    "pscsi": "name the SCSI device by its H:C:I:L address in a HANDLER dev_disk (dev_tape, "
    "...) section by hand",
    "user": "it is served by another TCMU handler (tcmu-runner); keep it there",
}
# rtslib fabric name -> our fabric (LIO) name; the file is written with SCST's driver names.
FABRICS = {f.name: f.name for f in MANAGED}


class _Importer:
    def __init__(self, source: str) -> None:
        self.source = source
        self.errors = ErrorCollector()
        self.config = ScstConfig()
        self.objects: dict[str, str] = {}  # "/backstores/<plugin>/<name>" -> device name

    def fail(self, message: str) -> None:
        self.errors.add(ConfigError(message, self.source))

    def run(self, data: Mapping[str, Any]) -> ScstConfig:
        for obj in data.get("storage_objects", []):
            with self.errors.guard():
                self.backstore(obj)
        for tgt in data.get("targets", []):
            with self.errors.guard():
                self.target(tgt)
        if not self.errors.errors:
            check(self.config, self.errors)  # SCST's rules, e.g. LUN 0 in each group
        located = ErrorCollector()
        for err in self.errors.errors:  # every message names the save file
            located.add(err if err.source else ConfigError(err.reason, self.source))
        located.raise_if_any()
        return self.config

    def backstore(self, obj: Mapping[str, Any]) -> None:
        plugin, name = str(obj.get("plugin", "")), str(obj.get("name", ""))
        if plugin in _REFUSED_PLUGINS:
            self.fail(f"backstore {plugin}/{name} has no tcmu-scst equivalent: "
                      f"{_REFUSED_PLUGINS[plugin]}")  # fmt: skip
            return
        if plugin not in HANDLERS:
            self.fail(f"backstore {plugin}/{name}: unknown plugin {plugin!r}")
            return
        params = {"filename": str(obj.get("dev", ""))}
        if plugin == "fileio" and obj.get("write_back") is False:
            params["write_through"] = "1"
        if obj.get("readonly"):
            params["read_only"] = "1"
        block_size = int(obj.get("attributes", {}).get("block_size", 512))
        if block_size != 512:  # the logical block size LIO exported
            params["blocksize"] = str(block_size)
        self.config.devices.append(Device(name, HANDLERS[plugin], params))
        self.objects[f"/backstores/{plugin}/{name}"] = name

    def target(self, data: Mapping[str, Any]) -> None:
        fabric_name, wwn = str(data.get("fabric", "")), str(data.get("wwn", ""))
        fabric = FABRICS.get(fabric_name)
        if fabric is None:
            raise ConfigError(
                f"target {fabric_name}/{wwn}: fabric {fabric_name!r} has no SCST target driver "
                f"here; tcmu-scst serves {', '.join(FABRICS)}",
                self.source,
            )
        tpgs = list(data.get("tpgs", []))
        if len(tpgs) != 1:
            raise ConfigError(
                f"target {wwn} has {len(tpgs)} TPGs; an SCST target is one LIO TPG: split it "
                "into targets by hand",
                self.source,
            )
        tpg = tpgs[0]
        name = normalize_wwpn(wwn) if fabric in FC_FABRICS else wwn
        tgt = Target(fabric, name, enabled=bool(tpg.get("enable", True)))
        luns = {int(lun["index"]): self.device_of(wwn, lun) for lun in tpg.get("luns", [])}
        attributes = tpg.get("attributes", {})
        if has(fabric, "nexus"):  # one nexus, no ACLs: the TPG's LUNs are the target's
            tgt.luns = [Lun(i, dev) for i, dev in sorted(luns.items())]
        elif str(attributes.get("generate_node_acls", 0)) == "1":
            ro = str(attributes.get("demo_mode_write_protect", 1)) == "1"
            tgt.luns = [Lun(i, dev, ro) for i, dev in sorted(luns.items())]
            user, secret = tpg.get("chap_userid", ""), tpg.get("chap_password", "")
            if user:
                tgt.incoming_users.append((str(user), str(secret)))
        if has(fabric, "iscsi_login"):
            tgt.attributes = {
                k: str(v) for k, v in tpg.get("parameters", {}).items() if k in ISCSI_PARAMS
            }
        if has(fabric, "chap_and_portals"):
            tgt.portals = [
                normalize_portal(f"{_host(p['ip_address'])}:{p['port']}", self.source)
                for p in tpg.get("portals", [])
            ]
        for number, acl in enumerate(tpg.get("node_acls", [])):
            self.acl(tgt, luns, acl, number)
        self.config.targets.append(tgt)

    def device_of(self, wwn: str, lun: Mapping[str, Any]) -> str:
        path = str(lun.get("storage_object", ""))
        device = self.objects.get(path)
        if device is None:
            raise ConfigError(
                f"target {wwn} LUN {lun.get('index')}: {path} is not a backstore tcmu-scst "
                "imported",
                self.source,
            )
        return device

    def acl(self, tgt: Target, luns: Mapping[int, str], acl: Mapping[str, Any], n: int) -> None:
        group_name = str(acl.get("tag") or f"acl{n}")
        grp = next((g for g in tgt.groups if g.name == group_name), None)
        if grp is None:
            grp = Group(group_name)
            grp.luns = [
                Lun(int(m["index"]), luns[int(m["tpg_lun"])], bool(m.get("write_protect")))
                for m in acl.get("mapped_luns", [])
                if int(m["tpg_lun"]) in luns
            ]
            user = acl.get("chap_userid")
            if user:
                grp.incoming_users.append((str(user), str(acl.get("chap_password", ""))))
            tgt.groups.append(grp)
        node = str(acl.get("node_wwn", ""))
        grp.initiators.append(normalize_wwpn(node) if tgt.fabric in FC_FABRICS else node)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def import_saveconfig(path: Path) -> ScstConfig:
    """The SCST model of a targetcli/rtslib save file; every problem raised at once."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"not a readable JSON save file: {err}", str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("not a targetcli save file (expected a JSON object)", str(path))
    try:
        return _Importer(str(path)).run(data)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"malformed save file entry ({err!r})", str(path)) from None
