"""Everything a shell command needs: the running model, configfs, the daemon, settings.

:meth:`ShellContext.change` is the one way a command changes the setup: copy the
running model, edit the copy, validate, apply the LIO difference all-or-nothing,
store the new model. If anything fails, the old model stays and LIO is as before.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tcmu_scst.errors import ConfigError
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.scst import conf
from tcmu_scst.scst.model import ScstConfig
from tcmu_scst.scst.ownership import DEFAULT_STATE_FILE, Ownership, load_ownership
from tcmu_scst.scst.running import DEFAULT_RUNNING, RunningStore
from tcmu_scst.service import control

from .trace import TraceStore

DEFAULT_SAVE = Path("/etc/tcmu-scst/scst.conf")
Edit = Callable[[ScstConfig], None]


@dataclass
class ShellContext:
    cfs: Configfs
    state_dir: Path = DEFAULT_RUNNING.parent
    control_socket: Path = control.DEFAULT_SOCKET
    sysfs: Path = Path("/sys")
    nl_reply_supported: int = 0
    warn: Callable[[str], None] = print
    store: RunningStore = field(init=False)
    traces: TraceStore = field(init=False)
    config: ScstConfig = field(init=False, default_factory=ScstConfig)
    load_note: str | None = field(init=False, default=None)
    opened: bool = field(init=False, default=False)
    _daemon_warned: bool = field(init=False, default=False)
    _known_text: str | None = field(init=False, default=None)  # the model file we saw

    def __post_init__(self) -> None:
        state_file = (
            DEFAULT_STATE_FILE
            if self.state_dir == DEFAULT_RUNNING.parent
            else self.state_dir / DEFAULT_STATE_FILE.name
        )
        self.store = RunningStore(
            self.cfs,
            self.state_dir / DEFAULT_RUNNING.name,
            state_file,
            nl_reply_supported=self.nl_reply_supported,
        )
        self.traces = TraceStore(self.state_dir / "trace_level.json")

    def open(self) -> None:
        """Load the running model (rebuilt from live LIO when missing or stale)."""
        if self.cfs.system:
            self.cfs.ensure_mounted()  # raises with the reason when this kernel cannot
            if os.geteuid() != 0:
                raise ConfigError(
                    "the shell changes LIO's configfs, which needs root; run with sudo"
                )
        elif not self.cfs.available():
            raise ConfigError(
                f"{self.cfs.target} does not exist; point --configfs-root at a LIO tree"
            )
        result = self.store.load()
        self.config = result.config
        self.load_note = result.note
        # The file as it is now (even stale or absent: None): a later change of it is
        # another shell's commit or a config apply, which the next change must follow.
        self._known_text = self.store.read_text()
        self.opened = True

    def ensure_open(self) -> bool:
        """Open on first use, saying a rebuild note once; True when it opened now.

        Commands that need no kernel (``help``) never call this, so they work on a
        machine without configfs or LIO."""
        if self.opened:
            return False
        self.open()
        if self.load_note:
            self.warn(f"note: {self.load_note}")
        return True

    def ownership(self) -> Ownership:
        return load_ownership(self.store.state_file)

    def change(self, edit: Edit) -> None:
        """Apply ``edit`` to a copy of the model, then commit it (all-or-nothing)."""
        with self.store.locked():
            self._follow_other_shells()
            new = copy.deepcopy(self.config)
            edit(new)
            result = self.store.commit(new)
            self.config = new
            self._known_text = self.store.read_text()
        for warning in result.warnings:
            self.warn(f"warning: {warning}")
        if new.devices and not self._daemon_warned and not self.daemon_running():
            self._daemon_warned = True  # once per session is enough
            self.warn(
                "warning: the tcmu-scst daemon is not running, so I/O to the devices will "
                "hang until it starts: run 'tcmu-scst daemon' (or systemctl start tcmu-scst)"
            )

    def record(self, config: ScstConfig) -> None:
        """Store ``config`` as the model after a change made to LIO directly (a new medium)."""
        with self.store.locked():
            self.store.store(config)
            self.config = config
            self._known_text = self.store.read_text()

    def _follow_other_shells(self) -> None:
        """Another shell or a config apply stored a model since we loaded: edit that one,
        not our old copy."""
        text = self.store.read_text()
        if text is None or text == self._known_text:
            return
        self.config = conf.parse(text, str(self.store.path))
        self._known_text = text
        self.warn(
            "note: the running model was changed by another tcmu-scst shell or a config "
            "apply; reloaded"
        )

    def replace(self, config: ScstConfig) -> None:
        """Make ``config`` the running model and the live setup."""
        self.change(lambda model: _overwrite(model, config))

    def daemon_running(self) -> bool:
        return self.daemon.running()

    @property
    def daemon(self) -> control.ControlClient:
        """The running daemon's control socket (typed requests, service.messages)."""
        return control.ControlClient(self.control_socket)


def _overwrite(model: ScstConfig, new: ScstConfig) -> None:
    model.__dict__.update(copy.deepcopy(new).__dict__)
