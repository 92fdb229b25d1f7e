"""``tcmu-scst lab``: boot the real kernel in a microVM.

``--run CMD`` runs CMD as root in the guest (current directory, host file tree) and
exits with its status. Without --run: the try-it-now demo, an iSCSI target reachable
from the host on 127.0.0.1:3260 until Ctrl-C. Imports stay light (see tcmu_scst.cli).
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_TIMEOUT = 3600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", metavar="CMD",
        help="shell command to run as root in the guest, in the current directory; "
        "exit with its status",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS",
        help=f"kill the guest after this long (default: {DEFAULT_TIMEOUT:g} with --run, "
        "none for the demo)",
    )
    parser.add_argument(
        "--memory", type=int, default=3072, metavar="MB", help="guest RAM (default 3072)"
    )
    parser.add_argument(
        "--forward", action="append", default=[], metavar="HOSTPORT:GUESTPORT",
        help="forward a TCP port of 127.0.0.1 to the guest (repeatable)",
    )
    parser.add_argument(
        "--results", type=Path, default=Path("results"), metavar="DIR",
        help="host directory mounted writable at /results in the guest (default ./results)",
    )
    parser.add_argument(
        "--port", type=int, default=3260, metavar="HOSTPORT",
        help="demo only: host port forwarded to the guest's iSCSI port (default 3260)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the QEMU command line and the boot log"
    )


def run(args: argparse.Namespace) -> int:
    from tcmu_scst.lab import runner
    from tcmu_scst.lab.vm import PortForward

    forwards = [PortForward.parse(f) for f in args.forward]
    if args.run is None:
        from tcmu_scst.lab import demo_host

        return demo_host.run_demo(
            host_port=args.port,
            memory_mb=args.memory,
            extra_forwards=forwards,
            results_dir=args.results,
            timeout=args.timeout,
            verbose=args.verbose,
        )
    return runner.run_command(
        args.run,
        timeout=args.timeout if args.timeout is not None else DEFAULT_TIMEOUT,
        memory_mb=args.memory,
        forwards=forwards,
        results_dir=args.results,
        verbose=args.verbose,
    )
