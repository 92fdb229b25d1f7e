"""Which LIO objects tcmu-scst manages, and the SCST facts configfs cannot hold.

Ownership is recorded in two ways:

* **backstores** carry it themselves: a user backstore whose ``dev_config`` starts with
  one of our subtypes (``vdisk/``, ``vcdrom/``, ``dev_*/``; see
  :func:`tcmu_scst.scst.devconfig.owned_dev_config`) is ours; any other backstore
  (targetcli's fileio, tcmu-runner's ``file/``...) is never read, changed or removed;
* **fabric targets** are listed in a JSON state file (default
  ``/var/lib/tcmu-scst/lio-state.json``): LIO has no free-text field on a WWN or TPG
  for every fabric. A target not in the file is foreign and never touched; if the
  config names a target that exists but is foreign, apply refuses.

The same file keeps, per target, what ``config save`` needs to give the SCST view back
(the SCST target and group each LIO object serves, the ACL -> group map on fabrics
without an ACL ``tag``, the default group's map) and the initiators the materializer
created ACLs for. It is written atomically (temp file, fsync, rename, fsync dir).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tcmu_scst.errors import ConfigError

DEFAULT_STATE_FILE = Path("/var/lib/tcmu-scst/lio-state.json")
STATE_VERSION = 1


@dataclass
class OwnedTarget:
    fabric: str  # configfs fabric directory
    wwn: str
    scst_target: str
    scst_group: str = "Default"  # loopback: the group this LIO target serves
    default_group: str = "Default"
    default_case: str = "A"
    default_map: list[list[int]] = field(default_factory=list)  # [lun, tpg_lun, ro]
    acl_groups: dict[str, str] = field(default_factory=dict)  # initiator -> group
    materialized: list[str] = field(default_factory=list)
    # CHAP of materialized ACLs: [userid, password, userid_mutual, password_mutual].
    default_chap: list[str] = field(default_factory=list)
    # Groups with initiator patterns, in SCST order (mapping.PatternRule.to_state), and
    # whether initiators no pattern takes get the default map (False: its set is empty).
    pattern_rules: list[dict[str, Any]] = field(default_factory=list)
    default_open: bool = True


@dataclass
class Ownership:
    targets: list[OwnedTarget] = field(default_factory=list)
    # Model-level facts for "save" that LIO does not hold at all.
    setup_id: int | None = None
    threads: int | None = None
    driver_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    target_extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    # ALUA device groups as the file wrote them (names, devices, target groups and their
    # SCST targets); ids, states and preference are read back from LIO.
    device_groups: list[dict[str, Any]] = field(default_factory=list)

    def find(self, fabric: str, wwn: str) -> OwnedTarget | None:
        for tgt in self.targets:
            if tgt.fabric == fabric and tgt.wwn == wwn:
                return tgt
        return None

    def owns(self, fabric: str, wwn: str) -> bool:
        return self.find(fabric, wwn) is not None


def load_ownership(path: Path) -> Ownership:
    """The recorded state; an absent file means nothing is managed yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Ownership()
    except OSError as err:
        raise ConfigError(f"cannot read state file: {err.strerror}", str(path)) from err
    try:
        data = json.loads(text)
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
        targets = [OwnedTarget(**t) for t in data.get("targets", [])]
        return Ownership(
            targets,
            data.get("setup_id"),
            data.get("threads"),
            data.get("driver_attrs", {}),
            data.get("target_extras", {}),
            data.get("device_groups", []),
        )
    except (ValueError, TypeError, AttributeError) as err:
        raise ConfigError(
            f"state file is damaged ({err}); move it away and remove the old tcmu-scst "
            "targets by hand (targetcli), then apply again",
            str(path),
        ) from err


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path``: temp file in the same dir, fsync, rename, fsync dir."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{path.name}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        raise ConfigError(
            f"cannot write {path}: {err.strerror}; check the directory exists and is writable"
        ) from err


def save_ownership(path: Path, ownership: Ownership) -> None:
    data = {
        "version": STATE_VERSION,
        "targets": [asdict(t) for t in ownership.targets],
        "setup_id": ownership.setup_id,
        "threads": ownership.threads,
        "driver_attrs": ownership.driver_attrs,
        "target_extras": ownership.target_extras,
        "device_groups": ownership.device_groups,
    }
    write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
