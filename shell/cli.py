"""``tcmu-scst shell``: the SCST 0.9.6 /proc/scsi_tgt tree as an admin shell.

* ``tcmu-scst shell`` — interactive (tab completion, ``help``);
* ``tcmu-scst shell CMD...`` — one command, e.g. ``tcmu-scst shell /vdisk open d1 /img``;
* ``tcmu-scst shell -f SCRIPT`` or commands on stdin — one command a line, stop at the
  first error (``#`` comments and blank lines skipped).

Exit status 0 when every command succeeded, 1 otherwise (the error on stderr).

Test hooks: ``--configfs-root``, ``--state-dir``, ``--control-socket`` and ``--sysfs``
(or the environment variables ``TCMU_SCST_CONFIGFS_ROOT``, ``TCMU_SCST_STATE_DIR``,
``TCMU_SCST_CONTROL_SOCKET``, ``TCMU_SCST_SYSFS``) point the shell elsewhere;
``TCMU_SCST_FAKE_CONFIGFS=1`` uses the fake LIO tree of tcmu_scst.testing on the
configfs root (unit tests only).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tcmu_scst.kernel.configfs import Configfs

    from .app import ScstShell
    from .context import ShellContext

ENV_PREFIX = "TCMU_SCST_"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``shell`` and ``proc``."""
    for option, env, what in (
        ("--configfs-root", "CONFIGFS_ROOT", "configfs mount point (default /sys/kernel/config)"),
        ("--state-dir", "STATE_DIR", "running model and LIO state (default /var/lib/tcmu-scst)"),
        ("--control-socket", "CONTROL_SOCKET", "daemon socket (default /run/tcmu-scst/...)"),
        ("--sysfs", "SYSFS", "sysfs root for local SCSI devices (default /sys)"),
    ):
        parser.add_argument(
            option, type=Path, default=_env_path(env), help=f"{what}; env {ENV_PREFIX}{env}"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", type=Path, help="run the commands of this script")
    parser.add_argument(
        "--history-dir", type=Path, default=_env_path("HISTORY_DIR"),
        help="where an interactive session keeps its command history and preferences "
        f"(default ~/.tcmu-scst); env {ENV_PREFIX}HISTORY_DIR",
    )  # fmt: skip
    parser.add_argument("words", nargs=argparse.REMAINDER, help="one command to run, then exit")
    add_common_arguments(parser)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(ENV_PREFIX + name)
    return Path(value) if value else None


def _configfs(args: argparse.Namespace) -> Configfs:
    """The configfs tree to use (tests replace this function to hand in a fake)."""
    from tcmu_scst.kernel.configfs import DEFAULT_ROOT, Configfs

    root = Path(args.configfs_root) if args.configfs_root else DEFAULT_ROOT
    if os.environ.get(ENV_PREFIX + "FAKE_CONFIGFS") == "1":
        from tcmu_scst.testing.fake_configfs import FakeConfigfs

        return FakeConfigfs(root)
    return Configfs(root)


def make_context(args: argparse.Namespace, warn_to: TextIO | None = None) -> ShellContext:
    """The shell's context, not opened yet: see :meth:`ShellContext.ensure_open`."""
    from tcmu_scst.scst.running import DEFAULT_RUNNING
    from tcmu_scst.service.control import DEFAULT_SOCKET

    from .context import ShellContext

    stream = warn_to or sys.stderr

    def warn(text: str) -> None:
        print(text, file=stream)

    return ShellContext(
        _configfs(args),
        state_dir=args.state_dir or DEFAULT_RUNNING.parent,
        control_socket=args.control_socket or DEFAULT_SOCKET,
        sysfs=args.sysfs or Path("/sys"),
        warn=warn,
    )


def run_lines(shell: ScstShell, lines: Iterable[str], source: str) -> int:
    """Run one command a line; stop at the first error (printed with its line number)."""
    from configshell_fb import ExecutionError

    for number, raw in enumerate(lines, 1):
        try:
            shell.run_cmdline(raw)
        except ExecutionError as err:
            print(f"tcmu-scst shell: {source}:{number}: {err}", file=sys.stderr)
            return 1
        if shell._exit:
            break
    return 0


def run(args: argparse.Namespace) -> int:
    from configshell_fb import ExecutionError

    from .app import ScstShell

    words = [w for w in args.words if w != "--"]
    if words and args.file:
        print("tcmu-scst shell: give either -f SCRIPT or a command, not both", file=sys.stderr)
        return 2
    interactive = not words and not args.file and sys.stdin.isatty()
    # Only a person at the prompt gets readline history (configshell keeps it, with its
    # preferences, in that directory); scripts and one-shot commands leave none.
    history = args.history_dir or Path.home() / ".tcmu-scst"
    shell = ScstShell(make_context(args), str(history) if interactive else None)
    if interactive:
        try:
            shell.open_context()
        except ExecutionError as err:  # the session goes on: help works without a kernel
            print(f"tcmu-scst shell: {err}", file=sys.stderr)
    if words:
        try:
            shell.run_cmdline(" ".join(words))
        except ExecutionError as err:
            print(f"tcmu-scst shell: error: {err}", file=sys.stderr)
            return 1
        return 0
    if args.file:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except OSError as err:
            print(f"tcmu-scst shell: cannot read script {args.file}: {err.strerror}",
                  file=sys.stderr)  # fmt: skip
            return 1
        return run_lines(shell, text.splitlines(), str(args.file))
    if not sys.stdin.isatty():
        return run_lines(shell, sys.stdin, "<stdin>")
    shell.run_interactive()
    return 0
