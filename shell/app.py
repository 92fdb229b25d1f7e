"""The configshell-fb shell around the /proc/scsi_tgt tree.

configshell's parser silently drops text it cannot parse (``add_group a|b`` runs with
``a``; lio-and-scst.md §4). :class:`ScstShell` parses every line with ``parseAll``
first and refuses what does not parse whole; every command's arity is checked by
configshell from the method signature, and each command validates its values.
"""

from __future__ import annotations

import io
import sys
from typing import Any

from configshell_fb import ConfigShell, ExecutionError
from pyparsing import ParseException

from tcmu_scst.errors import TcmuScstError

from .context import ShellContext
from .nodes import Root, execution_error

# Commands that read nothing of the setup: they work on a machine without configfs.
KERNEL_FREE = frozenset({"help", "exit"})


class ScstShell(ConfigShell):  # type: ignore[misc]
    def __init__(self, ctx: ShellContext, preferences_dir: str | None = None) -> None:
        super().__init__(preferences_dir)
        # Console is a Borg bound to the sys.stdout of import time; follow the current one.
        self.con._stdout = sys.stdout
        self.con._stderr = sys.stderr
        self.ctx = ctx
        # Short prompts and no colours by default: output is parsed by scripts.
        self.prefs["color_mode"] = False
        self.prefs["tree_round_nodes"] = False
        # Every session starts at / (as /proc/scsi_tgt has no "current directory"); only
        # the command history carries over (configshell would also restore the path).
        self.prefs["path_history"] = None
        self.prefs["path_history_index"] = 0
        self.root = Root(self, ctx)

    def run_cmdline(self, cmdline: str) -> None:
        line = cmdline.strip()
        if not line or line.startswith("#"):
            return
        try:
            # pyparsing 3 spells it parse_string(parse_all=); 2.4 only parseString.
            if hasattr(self._parser, "parse_string"):
                self._parser.parse_string(line, parse_all=True)
            else:
                self._parser.parseString(line, parseAll=True)
        except ParseException as err:
            raise ExecutionError(
                f"cannot parse {line!r} at column {err.column}: quotes, '|' and blanks "
                "inside values are not accepted; write one plain word per value"
            ) from None
        try:
            if self._parse_cmdline(line)[2] not in KERNEL_FREE:
                self.open_context()
            super().run_cmdline(line)
        except TcmuScstError as err:
            raise execution_error(err) from err

    def open_context(self) -> None:
        """Load the running model on first need (configfs, root); rebuild the tree then."""
        try:
            if self.ctx.ensure_open():
                self.root.refresh()
        except TcmuScstError as err:
            raise execution_error(err) from err

    def _cli_loop(self) -> None:
        # Interactive: an error is printed and the session goes on.
        while not self._exit:
            try:
                super()._cli_loop()
            except ExecutionError as err:
                self.log.error(str(err))


def build_shell(ctx: ShellContext, *, capture: bool = False, **kwargs: Any) -> ScstShell:
    """A shell on ``ctx`` (``capture``: output into ``shell.con._stdout``, a StringIO)."""
    shell = ScstShell(ctx, **kwargs)
    if capture:
        shell.con._stdout = io.StringIO()
    return shell
