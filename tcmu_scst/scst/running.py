"""The running SCST model: what the admin shell edits between one-shot invocations.

LIO cannot hold everything an SCST setup has (a 0.9.6 global group with no target
yet, a device opened but exported nowhere is fine, but a group's names with no target
leave no trace in configfs). The running model is therefore kept in the state
directory (default ``/var/lib/tcmu-scst/running.conf``, scst.conf syntax, written
atomically) and every change goes through :meth:`RunningStore.commit`:

  validate -> apply the LIO difference (all-or-nothing, scst.apply) -> store the file.

``tcmu-scst config apply`` stores the file it applied here too. If the file is
missing, unreadable or no longer matches the live tree (targetcli or another tool
changed it since), :meth:`RunningStore.load` rebuilds the model from live state
(scst.save) and says so in :attr:`LoadResult.note`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tcmu_scst.errors import ConfigError, TcmuScstError
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import ApplyResult, apply_config, plan
from tcmu_scst.scst.live import read_live
from tcmu_scst.scst.mapping import map_config
from tcmu_scst.scst.model import ScstConfig, validate
from tcmu_scst.scst.ownership import DEFAULT_STATE_FILE, load_ownership, write_atomically
from tcmu_scst.scst.save import live_config

DEFAULT_RUNNING = Path("/var/lib/tcmu-scst/running.conf")


@dataclass
class LoadResult:
    config: ScstConfig
    note: str | None = None  # set when the model was rebuilt from live state


class RunningStore:
    """Load, change and store the running model against one configfs tree."""

    def __init__(
        self,
        cfs: Configfs,
        path: Path = DEFAULT_RUNNING,
        state_file: Path = DEFAULT_STATE_FILE,
        *,
        nl_reply_supported: int = 0,
    ) -> None:
        self.cfs = cfs
        self.path = path
        self.state_file = state_file
        self.nl_reply_supported = nl_reply_supported

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialize changes between concurrent shells (flock on a file beside the model)."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise ConfigError(
                f"cannot open lock file {lock_path}: {err.strerror}; "
                "check the state directory is writable (run as root)"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self) -> LoadResult:
        """The running model; rebuilt from live state when the file is missing or stale."""
        if not self.path.exists():
            config = self._from_live()
            if not config.devices and not config.targets:
                return LoadResult(config)  # a first start: nothing to rebuild, nothing to say
            return LoadResult(config, f"{self.path} missing: rebuilt from live LIO")
        try:
            config = conf.load(self.path)
        except TcmuScstError as err:
            return LoadResult(self._from_live(), f"{self.path} unreadable ({err}): rebuilt")
        changes = self.pending_changes(config)
        if changes:
            shown = "; ".join(changes[:3]) + ("; ..." if len(changes) > 3 else "")
            return LoadResult(
                self._from_live(),
                f"{self.path} did not match live LIO ({shown}): rebuilt from live state; "
                "0.9.6 groups with no target may be lost",
            )
        return LoadResult(config)

    def pending_changes(self, config: ScstConfig) -> list[str]:
        """The apply steps ``config`` is away from the live tree (their descriptions)."""
        if not self.cfs.available():
            return []
        ownership = load_ownership(self.state_file)
        live = read_live(self.cfs, ownership)
        materialized = {(t.fabric, t.wwn): t.materialized for t in ownership.targets}
        desired = map_config(
            config,
            nl_reply_supported=self.nl_reply_supported,
            hints=live.index_hints(),
            materialized=materialized,
        )
        return [step.description for step in plan(desired, live)]

    def _from_live(self) -> ScstConfig:
        if not self.cfs.available():
            return ScstConfig()
        return live_config(self.cfs, load_ownership(self.state_file))

    def commit(self, config: ScstConfig) -> ApplyResult:
        """Validate, apply to LIO (all-or-nothing) and store ``config`` as the running model."""
        validate(config)
        result = apply_config(
            self.cfs, config, self.state_file, nl_reply_supported=self.nl_reply_supported
        )
        self.store(config)
        return result

    def read_text(self) -> str | None:
        """The stored model file as text (None when absent or unreadable)."""
        try:
            return self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def store(self, config: ScstConfig) -> None:
        """Write the model file only (for changes made to LIO directly, e.g. a new medium)."""
        # 0600: the model may hold CHAP secrets.
        write_atomically(self.path, conf.write(config), mode=0o600)
