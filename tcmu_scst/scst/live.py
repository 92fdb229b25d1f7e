"""Read the part of the live LIO tree that tcmu-scst manages into mapping's data types.

Only owned objects are read (see :mod:`tcmu_scst.scst.ownership`): user backstores
whose ``dev_config`` carries one of our subtypes, and the fabric targets listed in the
state file. Attribute and parameter values are read only for the keys we manage, so
a kernel that adds files changes nothing here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tcmu_scst.errors import ConfigError, ConfigfsError
from tcmu_scst.kernel import alua
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabric_table import dir_has
from tcmu_scst.kernel.lio import UserBackstore
from tcmu_scst.scst.devconfig import owned_dev_config
from tcmu_scst.scst.mapping import (
    TPG_TAG,
    Acl,
    Backstore,
    Chap,
    LioTarget,
    LunKey,
    MappedLun,
    PortGroup,
    Tpg,
)
from tcmu_scst.scst.ownership import OwnedTarget, Ownership

_LUN = re.compile(r"^lun_(\d+)$")
# Every TPG attribute mapping may set; only these are read and compared.
MANAGED_TPG_ATTRS = (
    "authentication",
    "generate_node_acls",
    "demo_mode_discovery",
    "demo_mode_write_protect",
    "prod_mode_write_protect",
    "cache_dynamic_acls",
    "demo_mode_login_only",
)


@dataclass
class LiveBackstore:
    backstore: Backstore
    rel: str  # core/user_N/<name>
    enabled: bool


@dataclass
class LiveState:
    backstores: dict[str, LiveBackstore] = field(default_factory=dict)
    # Further owned backstores with a name already seen (only removal is possible).
    duplicates: list[LiveBackstore] = field(default_factory=list)
    targets: list[LioTarget] = field(default_factory=list)
    # TPG LUN index -> backstore rel path, for LUNs pointing at foreign backstores.
    foreign_luns: dict[tuple[str, str], dict[int, str]] = field(default_factory=dict)
    # ALUA: owned backstore -> its own groups (id -1: no valid id yet); LUN -> group.
    port_groups: dict[str, list[PortGroup]] = field(default_factory=dict)
    lun_groups: dict[LunKey, str] = field(default_factory=dict)

    def target(self, fabric: str, wwn: str) -> LioTarget | None:
        for tgt in self.targets:
            if tgt.fabric == fabric and tgt.wwn == wwn:
                return tgt
        return None

    def index_hints(self) -> dict[tuple[str, str], dict[str, int]]:
        return {
            (t.fabric, t.wwn): {dev: index for index, dev in t.tpg.luns.items()}
            for t in self.targets
        }


def _int(text: str, default: int = 0) -> int:
    try:
        return int(text.strip(), 0)
    except ValueError:
        return default


def _read_optional(cfs: Configfs, rel: str) -> str | None:
    try:
        return cfs.read(rel)
    except ConfigfsError:
        return None


def _clean_secret(text: str | None) -> str:
    return "" if text in (None, "NULL") else str(text)


def read_chap(cfs: Configfs, auth_rel: str) -> Chap | None:
    values = [_clean_secret(_read_optional(cfs, f"{auth_rel}/{n}"))
              for n in ("userid", "password", "userid_mutual", "password_mutual")]  # fmt: skip
    if not values[0] and not values[1]:
        return None
    return Chap(*values)


def read_backstores(cfs: Configfs, state: LiveState) -> None:
    if not cfs.exists("core"):
        return
    for dev in UserBackstore.all(cfs):
        dev_config = _read_optional(cfs, f"{dev.rel}/attrib/dev_config") or ""
        if not owned_dev_config(dev_config):
            continue
        live = LiveBackstore(
            Backstore(
                dev.name,
                dev_config,
                _int(dev.attrib("dev_size")),
                _int(dev.attrib("hw_block_size"), 512),
                _int(_read_optional(cfs, f"{dev.rel}/attrib/nl_reply_supported") or "0"),
            ),
            dev.rel,
            dev.enabled,
        )
        if dev.name in state.backstores:
            state.duplicates.append(live)
        else:
            state.backstores[dev.name] = live
            state.port_groups[dev.name] = read_port_groups(cfs, dev.rel)


def read_port_groups(cfs: Configfs, device_rel: str) -> list[PortGroup]:
    groups = []
    for name in alua.own_groups(cfs, device_rel):
        group_id, access_state, preferred = alua.read_group(cfs, device_rel, name)
        number = -1 if group_id is None else group_id
        groups.append(PortGroup(name, number, access_state, preferred))
    return groups


def _device_of(cfs: Configfs, lun_rel: str) -> str | None:
    """The backstore rel path a TPG LUN links to (None for an empty LUN dir)."""
    for name in cfs.listdir(lun_rel):
        if cfs.is_link(f"{lun_rel}/{name}"):
            return cfs.readlink(f"{lun_rel}/{name}")
    return None


def _read_acl(cfs: Configfs, acl_rel: str, name: str, owned: OwnedTarget) -> Acl:
    tag = _read_optional(cfs, f"{acl_rel}/tag")
    group = tag if tag and tag != "NULL" else owned.acl_groups.get(name, "")
    acl = Acl(name, group, materialized=name in owned.materialized)
    for entry in cfs.listdir(acl_rel):
        match = _LUN.match(entry)
        if not match or not cfs.is_dir(f"{acl_rel}/{entry}"):
            continue
        mapped_rel = f"{acl_rel}/{entry}"
        tpg_lun = -1
        for link in cfs.listdir(mapped_rel):
            if cfs.is_link(f"{mapped_rel}/{link}"):
                lun_match = _LUN.match(cfs.readlink(f"{mapped_rel}/{link}").rsplit("/", 1)[-1])
                tpg_lun = int(lun_match.group(1)) if lun_match else -1
        protect = _read_optional(cfs, f"{mapped_rel}/write_protect") == "1"
        acl.mapped_luns.append(MappedLun(int(match.group(1)), tpg_lun, protect))
    acl.mapped_luns.sort(key=lambda m: m.number)
    if cfs.exists(f"{acl_rel}/auth"):
        acl.chap = read_chap(cfs, f"{acl_rel}/auth")
    return acl


def read_target(
    cfs: Configfs, owned: OwnedTarget, devices: dict[str, str], state: LiveState
) -> LioTarget | None:
    """One owned target as it is now; ``devices`` maps backstore rel path -> name."""
    base = f"{owned.fabric}/{owned.wwn}"
    tpg_rel = f"{base}/tpgt_{TPG_TAG}"
    if not cfs.is_dir(base):
        return None
    tpg = Tpg()
    lio = LioTarget(owned.fabric, owned.wwn, tpg, owned.scst_target, owned.scst_group)
    lio.default_group = owned.default_group
    if not cfs.is_dir(tpg_rel):
        tpg.enabled = False
        tpg.tag = 0  # marks "no TPG yet"
        return lio
    for key in MANAGED_TPG_ATTRS:
        value = _read_optional(cfs, f"{tpg_rel}/attrib/{key}")
        if value is not None:
            tpg.attributes[key] = value
    if cfs.exists(f"{tpg_rel}/param"):
        for key in cfs.listdir(f"{tpg_rel}/param"):
            value = _read_optional(cfs, f"{tpg_rel}/param/{key}")
            if value is not None:
                tpg.params[key] = value
    if dir_has(owned.fabric, "chap_and_portals"):
        tpg.auth = read_chap(cfs, f"{tpg_rel}/auth")
    enable = _read_optional(cfs, f"{tpg_rel}/enable")
    tpg.enabled = enable != "0"
    if dir_has(owned.fabric, "nexus"):
        tpg.nexus = _read_optional(cfs, f"{tpg_rel}/nexus") or None
    for entry in cfs.listdir(f"{tpg_rel}/lun"):
        match = _LUN.match(entry)
        if not match:
            continue
        target = _device_of(cfs, f"{tpg_rel}/lun/{entry}")
        index = int(match.group(1))
        if target is not None and target in devices:
            tpg.luns[index] = devices[target]
            group = alua.lun_group(cfs, f"{tpg_rel}/lun/{entry}")
            if group is not None:
                state.lun_groups[(owned.fabric, owned.wwn, index)] = group
        else:
            state.foreign_luns.setdefault((owned.fabric, owned.wwn), {})[index] = target or ""
    if cfs.exists(f"{tpg_rel}/np"):
        tpg.portals = cfs.listdir(f"{tpg_rel}/np")
    if cfs.exists(f"{tpg_rel}/acls"):
        for name in cfs.listdir(f"{tpg_rel}/acls"):
            if cfs.is_dir(f"{tpg_rel}/acls/{name}"):
                tpg.acls.append(_read_acl(cfs, f"{tpg_rel}/acls/{name}", name, owned))
    return lio


def find_backstore(cfs: Configfs, name: str) -> UserBackstore:
    """The configured user backstore named ``name`` (looked up when a step runs)."""
    for dev in UserBackstore.all(cfs):
        if dev.name == name and cfs.read(f"{dev.rel}/attrib/dev_config"):
            return dev
    raise ConfigError(f"backstore {name} vanished while applying; apply again")


def read_live(cfs: Configfs, ownership: Ownership) -> LiveState:
    state = LiveState()
    read_backstores(cfs, state)
    devices = {b.rel: name for name, b in state.backstores.items()}
    for owned in ownership.targets:
        lio = read_target(cfs, owned, devices, state)
        if lio is not None:
            state.targets.append(lio)
    return state
