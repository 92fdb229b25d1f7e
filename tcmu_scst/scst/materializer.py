"""The "Default materializer" (lio-and-scst.md §2.4 case C): ACLs for unknown initiators.

When SCST's default group cannot be expressed with LIO's demo mode (it exports fewer
devices than the TPG, renumbers them or mixes read-only flags), apply leaves demo
mode off and this poller gives every initiator it sees for the first time an explicit
ACL with the default group's LUN map:

* iSCSI: an unknown initiator's login is refused (authorization failure) and the kernel
  logs "iSCSI Initiator Node: <name> is not authorized to access iSCSI target portal
  group: <tpgt>." to /dev/kmsg. That line is the signal used: on Linux 6.1 (lab) the
  per-target ``iscsi_tgt_attr/fail_intr_name`` reads "Unknown" after such a refusal
  (a second "negotiate" failure of the same login overwrites it), so it is only used
  when it holds a real name with ``last_fail_type`` = authorize. The log line does not
  name the target IQN, so the ACL is made on every case-C iSCSI target: exactly what
  SCST would give that initiator on any of them (the default LUN set). The initiator
  must log in again after the ACL appears (open-iscsi does not retry this failure).
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
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tcmu_scst.errors import ConfigError, ConfigfsError
from tcmu_scst.kernel.configfs import DEFAULT_ROOT, Configfs
from tcmu_scst.kernel.fabric_table import by_directory, dir_has
from tcmu_scst.kernel.fabrics import normalize_wwpn, parse_dynamic_sessions
from tcmu_scst.scst.apply import ApplyError, Step, execute, tpg_handle
from tcmu_scst.scst.mapping import (
    TPG_TAG,
    Acl,
    Chap,
    MappedLun,
    PatternRule,
    default_rule,
    materialized_acl,
)
from tcmu_scst.scst.model import initiator_name_error
from tcmu_scst.scst.ownership import OwnedTarget, Ownership, load_ownership, save_ownership

log = logging.getLogger("tcmu_scst.scst.materializer")

LOGIN_FAIL_AUTHORIZE = "4"  # iscsi_tgt_attr/last_fail_type for an authorization failure
_REFUSED = re.compile(
    r"iSCSI Initiator Node: (\S+) is not authorized to access iSCSI target portal group: "
    r"(\d+)\."
)


class KernelLog:
    """New /dev/kmsg messages since the previous call (the first call: the whole buffer)."""

    def __init__(self, path: Path = Path("/dev/kmsg")) -> None:
        self.path = path
        self._fd: int | None = None

    def new_messages(self) -> list[str]:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as err:
                log.warning("cannot read %s (%s): no iSCSI login refusals seen", self.path, err)
                return []
        messages: list[str] = []
        while True:
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                return messages
            except BrokenPipeError:
                continue  # records were overwritten before we read them
            if not record:
                return messages
            messages.append(record.decode("utf-8", "replace").split(";", 1)[-1].strip())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def refused_initiators(messages: list[str]) -> list[str]:
    """Initiator names the iSCSI target refused for lack of an ACL (tpgt_1: ours)."""
    names: list[str] = []
    for message in messages:
        match = _REFUSED.search(message)
        if match and match.group(2) == str(TPG_TAG) and match.group(1) not in names:
            names.append(match.group(1))
    return names


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
    # Source of kernel log messages; None: /dev/kmsg on the real tree, nothing otherwise.
    kernel_log: Callable[[], list[str]] | None = None
    _seen_fails: dict[tuple[str, str], str] = field(default_factory=dict)
    _refused: list[str] = field(default_factory=list)
    #: The state file as the last poll read it (the daemon follows its ``threads``).
    last: Ownership | None = None

    def __post_init__(self) -> None:
        if self.kernel_log is None and self.cfs.root == DEFAULT_ROOT:
            self.kernel_log = KernelLog().new_messages

    def poll_once(self) -> list[Materialized]:
        """One pass over every case-C target; returns the ACLs created."""
        ownership = self.last = load_ownership(self.state_file)
        self._refused = refused_initiators(self.kernel_log()) if self.kernel_log else []
        created: list[Materialized] = []
        for owned in ownership.targets:
            if owned.default_case != "C":
                continue
            rules = [PatternRule.from_state(r) for r in owned.pattern_rules]
            default = _default_rule(owned)
            for name in self._unknown_initiators(owned):
                acl = materialized_acl(name, rules, default)
                if acl is None:
                    log.info("%s matches no initiator pattern of %s and its default set is "
                             "empty: left refused", name, owned.wwn)  # fmt: skip
                    continue
                if self._materialize(owned, acl):
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
        if dir_has(owned.fabric, "iscsi_login"):
            candidates = [*self._refused, *self._iscsi_refused(owned)]
        elif dir_has(owned.fabric, "login_only"):
            text = self._read(f"{tpg_rel}/dynamic_sessions") or ""
            candidates = [self._wwpn(n) for n in parse_dynamic_sessions(text)]
        else:
            candidates = []
        result: list[str] = []
        for name in candidates:
            if not name or name in known or name in result:
                continue
            table = by_directory(owned.fabric)
            fabric = table.name if table is not None else owned.fabric
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
        name = (self._read(f"{stats}/iscsi_tgt_attr/fail_intr_name") or "").strip()
        return [name] if name and name != "Unknown" else []

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

    def _materialize(self, owned: OwnedTarget, wanted: Acl) -> bool:
        name = wanted.name

        def run(cfs: Configfs) -> None:
            tpg = tpg_handle(cfs, owned.fabric, owned.wwn)
            acl = tpg.add_acl(name)
            if dir_has(owned.fabric, "acl_tags"):
                acl.set_tag(wanted.group)
            chap = wanted.chap
            if chap is not None and dir_has(owned.fabric, "chap_and_portals"):
                acl.set_chap(
                    chap.userid,
                    chap.password,
                    mutual_userid=chap.userid_mutual or None,
                    mutual_password=chap.password_mutual or None,
                )
            for mapped in wanted.mapped_luns:
                acl.map_lun(mapped.number, mapped.tpg_lun, mapped.write_protect)

        step = Step(f"materialize ACL {name} on {owned.fabric}/{owned.wwn}", run)
        try:
            execute(self.cfs, [step])
        except ApplyError as err:
            log.warning("%s", err)
            return False
        log.info("created ACL %s on %s/%s with %s's LUNs", name, owned.fabric, owned.wwn,
                 wanted.group)  # fmt: skip
        return True


def _default_rule(owned: OwnedTarget) -> PatternRule | None:
    """The default group's map as the catch-all rule (None: case A with patterns)."""
    chap = Chap(*owned.default_chap) if owned.default_chap else None
    mapped = [MappedLun(n, t, bool(ro)) for n, t, ro in owned.default_map]
    return default_rule(owned.default_group, mapped, chap, owned.default_open)
