"""``tcmu-scst proc FILE [LINE]``: what ``echo LINE >FILE`` / ``cat FILE`` did under SCST 0.9.6.

FILE is a /proc/scsi_tgt path (``/proc/scsi_tgt/vdisk/vdisk``, ``groups/Default/devices``
...; the prefix is optional). With LINE it performs the write, without it prints
the read form. Old SCST scripts work by replacing ``echo "X" >F`` with
``tcmu-scst proc F "X"``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .cli import add_common_arguments, make_context

if TYPE_CHECKING:
    from .app import ScstShell

PROC_ROOT = "/proc/scsi_tgt"
# Files whose node has another name: the directory of a dev handler holds a file
# of the handler's name (vdisk/vdisk), which is the directory's node itself.
_NUMBER_FILES = frozenset({"threads"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a /proc/scsi_tgt file, e.g. /proc/scsi_tgt/vdisk/vdisk")
    parser.add_argument("line", nargs="*", help="what was echoed to it (none: read it)")
    add_common_arguments(parser)


def node_path(proc_file: str) -> str:
    """The shell node of a /proc/scsi_tgt file."""
    rel = proc_file.strip()
    if rel.startswith(PROC_ROOT):
        rel = rel[len(PROC_ROOT) :]
    parts = [p for p in rel.split("/") if p]
    if parts == ["scsi_tgt"]:
        return "/"
    if len(parts) == 2 and parts[0] == parts[1]:  # vdisk/vdisk, vcdrom/vcdrom
        parts = parts[:1]
    return "/" + "/".join(parts)


def _own_command(node: Any, command: str) -> bool:
    """Whether ``command`` is one of the file's write forms (not a configshell built-in)."""
    if command == "show":
        return False
    for klass in type(node).__mro__:
        if f"ui_command_{command}" in vars(klass):
            return str(klass.__module__).startswith("tcmu_scst.shell")
    return False


def perform(shell: ScstShell, proc_file: str, line: str | None) -> None:
    """Read (``line`` None) or write one /proc/scsi_tgt file; raises ExecutionError."""
    from configshell_fb import ExecutionError

    from tcmu_scst.errors import TcmuScstError

    from .nodes import execution_error

    path = node_path(proc_file)
    if line is not None or path.rsplit("/", 1)[-1] != "help":  # help needs no kernel
        shell.open_context()
    try:
        node = shell.root.get_node(path)
    except ValueError:
        raise ExecutionError(
            f"{proc_file}: no such /proc/scsi_tgt file here; see 'tcmu-scst shell ls'"
        ) from None
    try:
        if line is None:
            node.execute_command("show", [], {})
            return
        words = line.split()
        if path.rsplit("/", 1)[-1] in _NUMBER_FILES:
            words = ["set", *words]
        if not words:
            raise ExecutionError(f"{proc_file}: empty write; see 'tcmu-scst proc {PROC_ROOT}/help'")
        command, params = words[0], words[1:]
        if not _own_command(node, command):
            raise ExecutionError(
                f"{proc_file} does not take {command!r}; see 'tcmu-scst proc {PROC_ROOT}/help'"
            )
        node.execute_command(command, params, {})
        shell.root.refresh()
    except TcmuScstError as err:
        raise execution_error(err) from err


def run(args: argparse.Namespace) -> int:
    from configshell_fb import ExecutionError

    from .app import ScstShell

    shell = ScstShell(make_context(args))
    line = " ".join(args.line) if args.line else None
    try:
        perform(shell, args.file, line)
    except ExecutionError as err:
        print(f"tcmu-scst proc: error: {err}", file=sys.stderr)
        return 1
    return 0
