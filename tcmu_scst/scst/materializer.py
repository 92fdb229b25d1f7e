"""The "Default materializer" (lio-and-scst.md §2.4 case C): ACLs for unknown initiators.

When SCST's default group cannot be expressed with LIO's demo mode (it exports fewer
devices than the TPG, renumbers them or mixes read-only flags), apply leaves demo
mode off and this poller gives every initiator it sees for the first time an explicit
ACL with the default group's LUN map:

* iSCSI: an unknown initiator's login is refused (authorization failure) and the kernel
  counts it in ``fabric_statistics/iscsi_login_stats/authorize_fails`` and keeps its
  name in ``iscsi_tgt_attr/fail_intr_name`` (only the last one). The initiator must log
  in again after the ACL appears (open-iscsi does not retry an authorization failure).
* qla2xxx: ``demo_mode_login_only=1`` lets unknown ports log in with no LUNs; they are
  listed in ``tpgt_1/dynamic_sessions``. ``mkdir acls/<wwpn>`` converts the session in
  place and the mapped LUNs appear live (REPORTED LUNS DATA HAS CHANGED).
* tcm_fc has neither signal: nothing can be materialized there.

The daemon calls :meth:`Materializer.poll_once` periodically. Created ACLs are recorded
in the state file; the next ``config apply`` keeps them (with the then current default
map) while the target stays in case C and drops them otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tcmu_scst.errors import ConfigError, ConfigfsError
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import normalize_wwpn, parse_dynamic_sessions
from tcmu_scst.scst.apply import ApplyError, Step, execute, tpg_handle
from tcmu_scst.scst.mapping import TPG_TAG
from tcmu_scst.scst.model import initiator_name_error
from tcmu_scst.scst.ownership import OwnedTarget, load_ownership, save_ownership

log = logging.getLogger("tcmu_scst.scst.materializer")

LOGIN_FAIL_AUTHORIZE = "4"  # iscsi_tgt_attr/last_fail_type for an authorization failure


@dataclass(frozen=True)
class Materialized:
    fabric: str
    wwn: str
    initiator: str


@dataclass
class Materializer:
    """Polls the owned case-C targets and creates ACLs for new initiators."""

    cfs: Configfs
    state_file: Path
    _seen_fails: dict[tuple[str, str], str] = field(default_factory=dict)

    def poll_once(self) -> list[Materialized]:
        """One pass over every case-C target; returns the ACLs created."""
        ownership = load_ownership(self.state_file)
        created: list[Materialized] = []
        for owned in ownership.targets:
            if owned.default_case != "C":
                continue
            for name in self._unknown_initiators(owned):
                if self._materialize(owned, name):
                    owned.materialized.append(name)
                    created.append(Materialized(owned.fabric, owned.wwn, name))
        if created:
            save_ownership(self.state_file, ownership)
        return created

    # ---- who is new --------------------------------------------------------------

    def _unknown_initiators(self, owned: OwnedTarget) -> list[str]:
        tpg_rel = f"{owned.fabric}/{owned.wwn}/tpgt_{TPG_TAG}"
        if not self.cfs.is_dir(tpg_rel):
            return []
        known = set(self.cfs.listdir(f"{tpg_rel}/acls"))
        if owned.fabric == "iscsi":
            candidates = self._iscsi_refused(owned)
        elif owned.fabric == "qla2xxx":
            text = self._read(f"{tpg_rel}/dynamic_sessions") or ""
            candidates = [self._wwpn(n) for n in parse_dynamic_sessions(text)]
        else:
            candidates = []
        result: list[str] = []
        for name in candidates:
            if not name or name in known or name in result:
                continue
            fabric = {"fc": "tcm_fc"}.get(owned.fabric, owned.fabric)
            problem = initiator_name_error(name, fabric)
            if problem is not None:
                log.warning("not materializing %s on %s: %s", name, owned.wwn, problem)
                continue
            result.append(name)
        return result

    def _iscsi_refused(self, owned: OwnedTarget) -> list[str]:
        stats = f"iscsi/{owned.wwn}/fabric_statistics"
        fails = self._read(f"{stats}/iscsi_login_stats/authorize_fails") or "0"
        key = (owned.fabric, owned.wwn)
        first_poll = key not in self._seen_fails
        changed = self._seen_fails.get(key) != fails
        self._seen_fails[key] = fails
        if not changed or (first_poll and fails == "0"):
            return []
        if self._read(f"{stats}/iscsi_tgt_attr/last_fail_type") not in (LOGIN_FAIL_AUTHORIZE,):
            return []
        name = self._read(f"{stats}/iscsi_tgt_attr/fail_intr_name") or ""
        return [name.strip()] if name.strip() else []

    @staticmethod
    def _wwpn(text: str) -> str:
        try:
            return normalize_wwpn(text)
        except ConfigError:
            return ""

    def _read(self, rel: str) -> str | None:
        try:
            return self.cfs.read(rel)
        except ConfigfsError:
            return None

    # ---- making the ACL ----------------------------------------------------------

    def _materialize(self, owned: OwnedTarget, name: str) -> bool:
        def run(cfs: Configfs) -> None:
            tpg = tpg_handle(cfs, owned.fabric, owned.wwn)
            acl = tpg.add_acl(name)
            if owned.fabric == "iscsi":
                acl.set_tag(owned.default_group)
                if owned.default_chap:
                    user, secret, m_user, m_secret = owned.default_chap
                    acl.set_chap(
                        user,
                        secret,
                        mutual_userid=m_user or None,
                        mutual_password=m_secret or None,
                    )
            for number, tpg_lun, read_only in owned.default_map:
                acl.map_lun(number, tpg_lun, bool(read_only))

        step = Step(f"materialize ACL {name} on {owned.fabric}/{owned.wwn}", run)
        try:
            execute(self.cfs, [step])
        except ApplyError as err:
            log.warning("%s", err)
            return False
        log.info("created ACL %s on %s/%s with %s's LUNs", name, owned.fabric, owned.wwn,
                 owned.default_group)  # fmt: skip
        return True
