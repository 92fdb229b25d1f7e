"""``tcmu-scst config check|apply|save [FILE]``: scst.conf against the live LIO setup.

* ``check`` parses and validates the file (SCST rules, names, backing files, block
  sizes, dev_config encoding) and shows what apply would do when configfs is readable;
  it changes nothing.
* ``apply`` makes the managed part of LIO match the file (diff, then only the changes,
  all-or-nothing); needs root and configfs.
* ``save`` writes the live managed setup to FILE atomically.
* ``import`` turns targetcli's ``saveconfig.json`` into scst.conf (no kernel needed).

FILE defaults to /etc/tcmu-scst/scst.conf; both the modern syntax and the 0.9.6-era
bracketed format are read (detected, or forced with ``--format``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcmu_scst.kernel.configfs import Configfs

DEFAULT_CONFIG = Path("/etc/tcmu-scst/scst.conf")


ACTIONS = {
    "check": "parse and validate FILE, show what apply would do; changes nothing",
    "apply": "make the managed part of LIO match FILE (diff, all-or-nothing); needs root",
    "save": "write the live managed setup to FILE",
    "import": "turn targetcli's saveconfig.json into scst.conf (stdout, or --output FILE)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # One sub-parser per action, each with a single optional positional: with the
    # action and FILE as two positionals of one parser, argparse takes both at the
    # first one and refuses "check --format legacy FILE" (FILE came after an option).
    actions = parser.add_subparsers(dest="action", required=True)
    for action, help_text in ACTIONS.items():
        sub = actions.add_parser(action, help=help_text, description=help_text)
        _add_action_arguments(sub, action)


def _add_action_arguments(parser: argparse.ArgumentParser, action: str) -> None:
    if action == "import":
        parser.add_argument("file", type=Path, help="targetcli/rtslib saveconfig.json")
        parser.add_argument(
            "-o", "--output", type=Path, default=None, help="write here (mode 0600), not stdout"
        )
        return
    parser.add_argument(
        "file", nargs="?", type=Path, default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}"
    )
    if action != "save":
        parser.add_argument(
            "--format",
            choices=("auto", "modern", "legacy"),
            default="auto",
            help="modern scst.conf or the 0.9.6 [SECTION] format (default: detect)",
        )
    parser.add_argument(
        "--configfs-root",
        type=Path,
        default=None,
        help="configfs mount point (default /sys/kernel/config; for tests)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="record of the LIO objects tcmu-scst owns (default /var/lib/tcmu-scst/lio-state.json)",
    )
    if action == "apply":
        parser.add_argument(
            "--nl-reply-supported",
            type=int,
            default=0,
            help="TCMU nl_reply_supported for new backstores (daemon design; default 0)",
        )
        parser.add_argument("--dry-run", action="store_true", help="only print the plan")


def run(args: argparse.Namespace) -> int:
    from tcmu_scst.scst import commands

    if args.action == "import":
        return commands.import_saveconfig(args.file, args.output)
    cfs = _configfs(args)
    if args.action == "check":
        return commands.check(args.file, args.format, cfs, _state_file(args))
    _need_root(cfs)
    if args.action == "apply":
        return commands.apply(
            args.file,
            args.format,
            cfs,
            _state_file(args),
            nl_reply_supported=args.nl_reply_supported,
            dry_run=args.dry_run,
        )
    return commands.save(args.file, cfs, _state_file(args))


def _state_file(args: argparse.Namespace) -> Path:
    from tcmu_scst.scst.ownership import DEFAULT_STATE_FILE

    return Path(args.state_file) if args.state_file else DEFAULT_STATE_FILE


def _need_root(cfs: Configfs) -> None:
    from tcmu_scst.errors import ConfigError

    if cfs.system and os.geteuid() != 0:
        cfs.ensure_mounted()  # a kernel without configfs says so (root would not help)
        raise ConfigError("changing or reading LIO's configfs needs root; run with sudo")


def _configfs(args: argparse.Namespace) -> Configfs:
    """The configfs tree to use (tests replace this function to hand in a fake)."""
    from tcmu_scst.kernel.configfs import DEFAULT_ROOT, Configfs

    return Configfs(Path(args.configfs_root) if args.configfs_root else DEFAULT_ROOT)
