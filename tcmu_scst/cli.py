"""The ``tcmu-scst`` command: a thin dispatcher over the package's subcommands.

Each subcommand lives in its own module, which provides ``add_arguments(parser)``
and ``run(args) -> int``. Those modules keep their imports light (heavy or optional
dependencies are imported inside ``run``), so ``tcmu-scst --help`` works anywhere.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tcmu_scst import __version__
from tcmu_scst.errors import TcmuScstError

# name -> (module, one-line help). Order is the order of ``--help``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "lab": ("tcmu_scst.lab.cli", "boot the real kernel in a microVM: try the target, or --run CMD"),
    "daemon": ("tcmu_scst.service.cli", "serve TCMU devices: netlink events, rings, control"),
    "config": ("tcmu_scst.scst.cli", "scst.conf: check, apply to LIO (diff, all-or-nothing), save"),
    "install": ("tcmu_scst.service.install", "put the udev rule and systemd units in place"),
    "shell": ("tcmu_scst.shell.cli", "admin shell mirroring SCST 0.9.6's /proc/scsi_tgt"),
    "proc": ("tcmu_scst.shell.proc", "perform an SCST 0.9.6 /proc/scsi_tgt write or read"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcmu-scst",
        description="SCST's device handlers and management model on LIO through TCMU.",
    )
    parser.add_argument("--version", action="version", version=f"tcmu-scst {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except TcmuScstError as err:
        print(f"tcmu-scst {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
