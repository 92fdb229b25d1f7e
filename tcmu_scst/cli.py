"""The ``tcmu-scst`` command: a thin dispatcher over the package's subcommands.

Each subcommand lives in its own module, which provides ``add_arguments(parser)``
and ``run(args) -> int``. Those modules keep their imports light (heavy or optional
dependencies are imported inside ``run``), so ``tcmu-scst --help`` works anywhere.
``python3 -m tcmu_scst`` runs the same command (``__main__.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from tcmu_scst import __version__
from tcmu_scst.errors import TcmuScstError
from tcmu_scst.lab import cli as lab_cli
from tcmu_scst.scst import cli as config_cli
from tcmu_scst.service import cli as daemon_cli
from tcmu_scst.service import install
from tcmu_scst.shell import cli as shell_cli
from tcmu_scst.shell import proc


class Subcommand(Protocol):
    """What a subcommand module provides (a module satisfies this protocol)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


# name -> (one-line help, module). Order is the order of ``--help``.
SUBCOMMANDS: dict[str, tuple[str, Subcommand]] = {
    "lab": ("boot the real kernel in a microVM: try the target, or --run CMD", lab_cli),
    "daemon": ("serve TCMU devices: netlink events, rings, control", daemon_cli),
    "config": ("scst.conf: check, apply to LIO (diff, all-or-nothing), save", config_cli),
    "install": ("put the udev rule and systemd units in place", install),
    "shell": ("admin shell mirroring SCST 0.9.6's /proc/scsi_tgt", shell_cli),
    "proc": ("perform an SCST 0.9.6 /proc/scsi_tgt write or read", proc),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcmu-scst",
        description="SCST's device handlers and management model on LIO through TCMU.",
    )
    parser.add_argument("--version", action="version", version=f"tcmu-scst {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, module) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_run=module.run)
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return int(run(args) or 0)
    except TcmuScstError as err:
        for line in str(err).splitlines() or [""]:  # ConfigErrors: one line per error
            print(f"tcmu-scst {args.command}: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
