"""Diff the desired LIO state against the live one and apply only the difference.

Declarative: every owned object the desired state does not name is removed (an empty
config clears the setup); foreign objects are never touched (see
:mod:`tcmu_scst.scst.ownership`). The plan is a list of :class:`Step` in the order the
kernel needs (lio-and-scst.md §1.8):

  removals, newest layer first: TPG disable -> mapped LUNs -> ACLs -> portals -> TPG
  LUNs -> TPGs/targets -> backstores; then creations: backstores (enabled) -> targets ->
  TPG attributes/params/auth -> loopback nexus -> LUNs -> portals -> ACLs -> mapped
  LUNs (write_protect after the link) -> TPG enable.

:func:`execute` runs the steps through a :class:`~tcmu_scst.scst.journal.Journal`; on
the first kernel error it undoes what was done and raises, so the tree is as before.
Applying the same config twice plans zero steps.

What is compared: backstore ``dev_config`` and block size (a change re-creates the
backstore and its LUNs; ``dev_size`` is left to the daemon's resize handling), TPG
attributes and ``param/`` values the config sets, TPG and ACL CHAP, LUN tables,
portals, ACLs, mapped LUNs and ``write_protect``, ACL tags, TPG ``enable``, the
loopback nexus (a change re-creates that loopback target). An iSCSI parameter removed
from the file keeps its last value until the target is re-created.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from pathlib import Path

from tcmu_scst.errors import ConfigError, ConfigfsError
from tcmu_scst.kernel.alua import remove_own_groups
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabric_table import dir_has
from tcmu_scst.kernel.fabrics import (
    FcTpg,
    IscsiTpg,
    LoopbackTpg,
    NodeAcl,
    Tpg,
    parse_dynamic_sessions,
)
from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions
from tcmu_scst.scst import alua_plan
from tcmu_scst.scst.journal import Journal
from tcmu_scst.scst.live import LiveBackstore, LiveState, find_backstore, read_live
from tcmu_scst.scst.mapping import (
    Acl,
    Backstore,
    Chap,
    DesiredState,
    LioTarget,
    LunKey,
    MappedLun,
    map_config,
)
from tcmu_scst.scst.mapping import Tpg as TpgState
from tcmu_scst.scst.model import ScstConfig
from tcmu_scst.scst.ownership import OwnedTarget, Ownership, load_ownership, save_ownership

Action = Callable[[Configfs], None]


@dataclass
class Step:
    """One planned change: a line for humans and the action that performs it."""

    description: str
    action: Action = field(repr=False)


class ApplyError(ConfigfsError):
    """A kernel error stopped the apply; everything done before it was undone."""


def alias_for(*parts: str) -> str:
    """A stable 10-hex link name (the kernel ignores it; stability keeps diffs empty)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


def tpg_handle(cfs: Configfs, fabric: str, wwn: str) -> Tpg:
    if dir_has(fabric, "chap_and_portals"):
        return IscsiTpg(cfs, wwn)
    if dir_has(fabric, "nexus"):
        return LoopbackTpg(cfs, wwn)
    return FcTpg(cfs, fabric, wwn)


def _split_portal(portal: str) -> tuple[str, int]:
    host, _, port = portal.rpartition(":")
    return host, int(port)


# ---- steps ---------------------------------------------------------------------------


def _delete_target(live: LioTarget) -> Step:
    def run(cfs: Configfs) -> None:
        tpg = tpg_handle(cfs, live.fabric, live.wwn)
        if tpg.exists:
            tpg.delete()  # disable, ACLs, LUNs, portals/nexus, TPG, then the WWN
        elif cfs.exists(f"{live.fabric}/{live.wwn}"):
            cfs.rmdir(f"{live.fabric}/{live.wwn}")

    return Step(f"remove {live.fabric} target {live.wwn}", run)


def _create_target(desired: LioTarget) -> Step:
    def run(cfs: Configfs) -> None:
        if dir_has(desired.fabric, "chap_and_portals"):
            IscsiTpg.create(cfs, desired.wwn)
        elif dir_has(desired.fabric, "nexus"):
            LoopbackTpg.create(cfs, desired.wwn, nexus=desired.tpg.nexus)
        else:
            FcTpg.create(cfs, desired.fabric, desired.wwn)

    return Step(f"create {desired.fabric} target {desired.wwn} tpgt_1", run)


def _write_chap(tpg_or_acl: IscsiTpg | NodeAcl, chap: Chap | None) -> None:
    if chap is None:
        tpg_or_acl.set_chap(None, None, mutual_userid=None, mutual_password=None)
        return
    tpg_or_acl.set_chap(
        chap.userid,
        chap.password,
        mutual_userid=chap.userid_mutual or None,
        mutual_password=chap.password_mutual or None,
    )


def _remove_backstore(live: LiveBackstore) -> Step:
    def run(cfs: Configfs) -> None:
        hba, name = live.rel.removeprefix("core/user_").split("/", 1)
        remove_own_groups(cfs, live.rel)  # configfs keeps a device holding groups
        UserBackstore(cfs, int(hba), name).delete()

    return Step(f"remove backstore {live.rel}", run)


def _create_backstore(backstore: Backstore) -> Step:
    options = UserBackstoreOptions(
        dev_config=backstore.dev_config,
        dev_size=backstore.dev_size,
        hw_block_size=backstore.hw_block_size,
        nl_reply_supported=backstore.nl_reply_supported,
        cmd_time_out=backstore.cmd_time_out,
    )

    def run(cfs: Configfs) -> None:
        created = UserBackstore.create(cfs, backstore.name, options)
        if backstore.tmr_notification:
            created.set_attrib("tmr_notification", 1)

    return Step(f"create backstore {backstore.name} ({backstore.dev_config})", run)


def _create_acl(fabric: str, wwn: str, name: str) -> Step:
    def run(cfs: Configfs) -> None:
        handle = tpg_handle(cfs, fabric, wwn)
        acl = handle.add_acl(name)
        rel = f"{handle.rel}/dynamic_sessions"
        if cfs.exists(rel) and name in parse_dynamic_sessions(cfs.read(rel)):
            # mkdir converted a live dynamic ACL in place, keeping its demo-mode LUNs:
            # rmdir + mkdir gives a clean explicit ACL (the initiator logs in again).
            cfs.rmdir(acl.rel)
            cfs.mkdir(acl.rel)

    return Step(f"create ACL {name} in {fabric}/{wwn}", run)


# ---- planning ------------------------------------------------------------------------


@dataclass
class _Planner:
    desired: DesiredState
    live: LiveState
    removals: list[Step] = field(default_factory=list)
    creations: list[Step] = field(default_factory=list)
    enables: list[Step] = field(default_factory=list)
    rebuilt: set[tuple[str, str]] = field(default_factory=set)

    def plan(self) -> list[Step]:
        recreated = self._changed_backstores()
        rebuilt: set[int] = set()
        for live in self.live.targets:
            want = self.desired.target(live.fabric, live.wwn)
            if want is None or self._must_rebuild(live, want):
                self.removals.append(_delete_target(live))
                if want is not None:
                    rebuilt.add(id(want))
                    self.rebuilt.add((live.fabric, live.wwn))
        for want in self.desired.targets:
            live_tgt = self.live.target(want.fabric, want.wwn)
            if live_tgt is None or id(want) in rebuilt:
                self._new_target(want)
            else:
                self._update_target(live_tgt, want, recreated)
        self._alua(recreated)
        self._backstores(recreated)
        return [*self.removals, *self.creations, *self.enables]

    def _alua(self, recreated: set[str]) -> None:
        def unchanged(key: LunKey, device: str) -> bool:
            fabric, wwn, index = key
            live = self.live.target(fabric, wwn)
            return (
                live is not None
                and (fabric, wwn) not in self.rebuilt
                and live.tpg.luns.get(index) == device
                and device not in recreated
            )

        for text, action in alua_plan.plan_removals(self.desired, self.live, recreated):
            self.removals.append(Step(text, action))
        planned = alua_plan.plan_creations(self.desired, self.live, recreated, unchanged)
        self.creations += [Step(text, action) for text, action in planned]

    # backstores

    def _changed_backstores(self) -> set[str]:
        changed: set[str] = set()
        for want in self.desired.backstores:
            have = self.live.backstores.get(want.name)
            if have is None:
                continue
            same = (
                have.backstore.dev_config == want.dev_config
                and have.backstore.hw_block_size == want.hw_block_size
                and have.enabled
            )
            if not same:
                changed.add(want.name)
        return changed

    def _backstores(self, recreated: set[str]) -> None:
        wanted = {b.name for b in self.desired.backstores}
        for live in self.live.duplicates:
            self.removals.append(_remove_backstore(live))
        for name, live in self.live.backstores.items():
            if name not in wanted or name in recreated:
                self.removals.append(_remove_backstore(live))
        creations = [
            _create_backstore(b)
            for b in self.desired.backstores
            if b.name not in self.live.backstores or b.name in recreated
        ]
        self.creations[0:0] = creations  # backstores before any target needs them

    # targets

    def _must_rebuild(self, live: LioTarget, want: LioTarget) -> bool:
        if live.tpg.tag == 0:
            return True  # WWN without TPG
        return dir_has(live.fabric, "nexus") and live.tpg.nexus != want.tpg.nexus

    def _new_target(self, want: LioTarget) -> None:
        self.creations.append(_create_target(want))
        empty = LioTarget(want.fabric, want.wwn, TpgState(enabled=False), "")
        empty.tpg.nexus = want.tpg.nexus
        self._update_target(empty, want, set(), new=True)

    def _update_target(
        self, live: LioTarget, want: LioTarget, recreated: set[str], new: bool = False
    ) -> None:
        fabric, wwn = want.fabric, want.wwn
        where = f"{fabric}/{wwn}"
        lt, wt = live.tpg, want.tpg

        def on(text: str, action: Callable[..., object], *args: object) -> Step:
            return Step(text, lambda cfs: _call(action, tpg_handle(cfs, fabric, wwn), args))

        has_enable = not dir_has(fabric, "nexus")  # tcm_loop's TPG has no enable attribute
        if lt.enabled and not wt.enabled and has_enable:
            self.removals.insert(0, on(f"disable {where}", Tpg.disable))

        # TPG LUNs that go away or change device (also when the backstore is re-created).
        stale = {i for i, dev in lt.luns.items() if wt.luns.get(i) != dev or dev in recreated}
        stale |= set(self.live.foreign_luns.get((fabric, wwn), {}))
        want_acls = {a.name: a for a in wt.acls}
        live_acls = {a.name: a for a in lt.acls}
        for name, acl in live_acls.items():
            if name not in want_acls:
                self.removals.append(on(f"remove ACL {name} of {where}", _delete_acl, name))
                continue
            wanted_map = {m.number: m for m in want_acls[name].mapped_luns}
            for mapped in acl.mapped_luns:
                keep = wanted_map.get(mapped.number)
                if keep is None or keep.tpg_lun != mapped.tpg_lun or mapped.tpg_lun in stale:
                    text = f"unmap LUN {mapped.number} of ACL {name} in {where}"
                    self.removals.append(on(text, _unmap, name, mapped.number))
        for portal in lt.portals:
            if portal not in wt.portals:
                text = f"remove portal {portal} of {where}"
                self.removals.append(on(text, _remove_portal, portal))
        for index in sorted(stale):
            self.removals.append(on(f"remove LUN {index} of {where}", Tpg.remove_lun, index))

        # Creations, in kernel order.
        for key, value in wt.attributes.items():
            if lt.attributes.get(key) != value:
                self.creations.append(on(f"{where} {key}={value}", Tpg.set_attrib, key, value))
        for key, value in wt.params.items():
            if lt.params.get(key) != value:
                self.creations.append(on(f"{where} {key}={value}", Tpg.set_param, key, value))
        chap = dir_has(fabric, "chap_and_portals")
        if chap and wt.auth != lt.auth and not (new and wt.auth is None):
            self.creations.append(on(f"set CHAP of {where}", _tpg_chap, wt.auth))
        for index, dev in sorted(wt.luns.items()):
            if index not in lt.luns or index in stale:
                text = f"export {dev} as LUN {index} of {where}"
                self.creations.append(on(text, _add_lun, index, dev))
        for portal in wt.portals:
            if portal not in lt.portals:
                self.creations.append(on(f"add portal {portal} to {where}", _add_portal, portal))
        for name, acl_want in want_acls.items():
            self._acl(fabric, wwn, live_acls.get(name), acl_want, stale, on)
        if wt.enabled and (not lt.enabled or new) and has_enable:
            self.enables.append(on(f"enable {where}", Tpg.enable))

    def _acl(
        self,
        fabric: str,
        wwn: str,
        live: Acl | None,
        want: Acl,
        stale: set[int],
        on: Callable[..., Step],
    ) -> None:
        name = want.name
        if live is None:
            self.creations.append(_create_acl(fabric, wwn, name))
        if dir_has(fabric, "acl_tags") and (live is None or live.group != want.group):
            self.creations.append(on(f"tag ACL {name} {want.group}", _tag, name, want.group))
        live_chap = live.chap if live is not None else None
        chap = dir_has(fabric, "chap_and_portals")
        if chap and live_chap != want.chap and (live is not None or want.chap is not None):
            self.creations.append(on(f"set CHAP of ACL {name}", _acl_chap, name, want.chap))
        have = {m.number: m for m in live.mapped_luns} if live else {}
        for mapped in want.mapped_luns:
            old = have.get(mapped.number)
            if old is not None and old.tpg_lun == mapped.tpg_lun and old.tpg_lun not in stale:
                if old.write_protect != mapped.write_protect:
                    wp = int(mapped.write_protect)
                    text = f"write_protect={wp} on LUN {mapped.number} of {name}"
                    self.creations.append(on(text, _write_protect, name, mapped))
                continue
            text = f"map LUN {mapped.tpg_lun} as {mapped.number} for {name} in {fabric}/{wwn}"
            self.creations.append(on(text, _map, name, mapped))


def _call(action: Callable[..., object], tpg: Tpg, args: tuple[object, ...]) -> None:
    action(tpg, *args)


def _delete_acl(tpg: Tpg, name: str) -> None:
    tpg.acl(name).delete()


def _unmap(tpg: Tpg, name: str, number: int) -> None:
    tpg.acl(name).unmap_lun(number)


def _remove_portal(tpg: Tpg, portal: str) -> None:
    tpg.cfs.rmdir(f"{tpg.rel}/np/{portal}")


def _tpg_chap(tpg: Tpg, chap: Chap | None) -> None:
    _write_chap(_as_iscsi(tpg), chap)


def _add_lun(tpg: Tpg, index: int, device: str) -> None:
    tpg.add_lun(index, find_backstore(tpg.cfs, device), alias_for(tpg.rel, str(index)))


def _add_portal(tpg: Tpg, portal: str) -> None:
    ip, port = _split_portal(portal)
    _as_iscsi(tpg).add_portal(ip, port)


def _tag(tpg: Tpg, name: str, group: str) -> None:
    tpg.acl(name).set_tag(group or None)


def _acl_chap(tpg: Tpg, name: str, chap: Chap | None) -> None:
    _write_chap(tpg.acl(name), chap)


def _write_protect(tpg: Tpg, name: str, mapped: MappedLun) -> None:
    tpg.acl(name).set_write_protect(mapped.number, mapped.write_protect)


def _as_iscsi(tpg: Tpg) -> IscsiTpg:
    assert isinstance(tpg, IscsiTpg)
    return tpg


def _map(tpg: Tpg, name: str, mapped: MappedLun) -> None:
    tpg.acl(name).map_lun(
        mapped.number,
        mapped.tpg_lun,
        mapped.write_protect,
        alias_for(tpg.rel, name, str(mapped.number)),
    )


def plan(desired: DesiredState, live: LiveState) -> list[Step]:
    """The steps that turn ``live`` into ``desired`` (empty when they already match)."""
    return _Planner(desired, live).plan()


def check_foreign(cfs: Configfs, desired: DesiredState, ownership: Ownership) -> None:
    """Refuse to take over targets someone else created (targetcli, another tool)."""
    for tgt in desired.targets:
        if cfs.exists(f"{tgt.fabric}/{tgt.wwn}") and not ownership.owns(tgt.fabric, tgt.wwn):
            raise ConfigError(
                f"{tgt.fabric} target {tgt.wwn} already exists but was not created by "
                "tcmu-scst; remove it (targetcli) or rename the target in the config"
            )


def execute(cfs: Configfs, steps: list[Step]) -> int:
    """Run ``steps`` all-or-nothing; returns the number of configfs changes made."""
    journal = Journal(cfs)
    for step in steps:
        try:
            step.action(journal)
        except (ConfigfsError, ConfigError) as err:
            problems = journal.rollback()
            undone = "undone" if not problems else f"undo incomplete: {'; '.join(problems)}"
            raise ApplyError(
                f"apply failed at '{step.description}': {err} (all changes {undone})",
                getattr(err, "path", ""),
                getattr(err, "errno", 0),
            ) from err
    return journal.operations


def record_ownership(desired: DesiredState, ownership: Ownership) -> Ownership:
    """The ownership record after ``desired`` was applied."""
    targets: list[OwnedTarget] = []
    for tgt in desired.targets:
        targets.append(
            OwnedTarget(
                fabric=tgt.fabric,
                wwn=tgt.wwn,
                scst_target=tgt.scst_target,
                scst_group=tgt.scst_group,
                default_group=tgt.default_group,
                default_case=tgt.default_case,
                default_map=[[m.number, m.tpg_lun, int(m.write_protect)] for m in tgt.default_map],
                acl_groups={a.name: a.group for a in tgt.tpg.acls if not a.materialized},
                materialized=[a.name for a in tgt.tpg.acls if a.materialized],
                default_chap=list(astuple(tgt.default_chap)) if tgt.default_chap else [],
                pattern_rules=[rule.to_state() for rule in tgt.pattern_rules],
                default_open=tgt.default_open,
            )
        )
    return Ownership(
        targets,
        ownership.setup_id,
        ownership.threads,
        ownership.driver_attrs,
        ownership.target_extras,
        ownership.device_groups,
    )


# ---- the whole operation -------------------------------------------------------------


@dataclass
class ApplyResult:
    steps: list[Step]
    operations: int  # configfs changes made (0 for a dry run or an unchanged setup)
    warnings: list[str]


def _model_extras(config: ScstConfig, ownership: Ownership) -> None:
    """Keep what "save" needs and LIO cannot hold (see ownership.py)."""
    ownership.setup_id = config.setup_id
    ownership.threads = config.threads
    ownership.driver_attrs = {k: dict(v) for k, v in config.drivers.items()}
    ownership.target_extras = {
        f"{t.fabric}/{t.name}": {
            "incoming_users": [list(u) for u in t.incoming_users],
            "outgoing_user": list(t.outgoing_user) if t.outgoing_user else None,
            "attributes": dict(t.attributes),
            "group_users": {g.name: [list(u) for u in g.incoming_users] for g in t.groups},
            "group_initiators": {g.name: list(g.initiators) for g in t.groups},
        }
        for t in config.targets
    }
    ownership.device_groups = [
        {
            "name": dg.name,
            "devices": list(dg.devices),
            "target_groups": [
                {"name": tg.name, "targets": [[m.name, m.rel_tgt_id] for m in tg.targets]}
                for tg in dg.target_groups
            ],
        }
        for dg in config.device_groups
    ]


def apply_config(
    cfs: Configfs,
    config: ScstConfig,
    state_file: Path,
    *,
    nl_reply_supported: int = 0,
    dry_run: bool = False,
) -> ApplyResult:
    """Make the owned part of LIO match ``config``; all-or-nothing."""
    ownership = load_ownership(state_file)
    live = read_live(cfs, ownership)
    materialized = {(t.fabric, t.wwn): t.materialized for t in ownership.targets}
    desired = map_config(
        config,
        nl_reply_supported=nl_reply_supported,
        hints=live.index_hints(),
        materialized=materialized,
    )
    check_foreign(cfs, desired, ownership)
    steps = plan(desired, live)
    if dry_run:
        return ApplyResult(steps, 0, desired.warnings)
    final = record_ownership(desired, ownership)
    _model_extras(config, final)
    if steps:
        # Record the targets about to be created first, so a crash mid-way leaves them
        # owned (the next apply cleans up) instead of foreign.
        intent = record_ownership(desired, ownership)
        intent.targets += [t for t in ownership.targets if not intent.owns(t.fabric, t.wwn)]
        save_ownership(state_file, intent)
    try:
        operations = execute(cfs, steps)
    except ApplyError:
        save_ownership(state_file, ownership)
        raise
    save_ownership(state_file, final)
    return ApplyResult(steps, operations, desired.warnings)
