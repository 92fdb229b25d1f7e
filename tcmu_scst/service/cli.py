"""``tcmu-scst daemon``: run the TCMU handler in the foreground (systemd Type=notify)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from tcmu_scst.service.trace import DEFAULT_TRACE_FILE, TraceDecorations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 2,
        help="I/O worker threads per device (SCST's scst_threads; default: CPU count)",
    )
    parser.add_argument(
        "--ring-thread-per-device",
        action="store_true",
        help="give every device a ring thread of its own (default: vdisk and perf devices "
        "share one, which takes fewer GIL hand-offs with many LUNs; pass-through devices "
        "always have their own)",
    )
    parser.add_argument(
        "--busy-poll-us",
        type=int,
        default=None,
        help="after serving, the shared ring thread watches the rings this many "
        "microseconds for the next command before it sleeps (0: never; default: 300, "
        "service.ringloop.DEFAULT_SPIN); fewer wake-ups at low queue depth for some CPU",
    )
    parser.add_argument(
        "--control-socket",
        type=Path,
        default=Path("/run/tcmu-scst/control.sock"),
        help="root-only control socket for the shell (default: %(default)s)",
    )
    parser.add_argument(
        "--lock-file",
        type=Path,
        default=Path("/run/tcmu-scst/daemon.lock"),
        help="flock'ed while this daemon runs: a second daemon refuses to start "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=Path("/var/lib/tcmu-scst/lio-state.json"),
        help="tcmu-scst's LIO state file (written by 'config apply' and the shell); the "
        "daemon creates ACLs there for initiators of a default group LIO's demo mode cannot "
        "express (default: %(default)s)",
    )
    parser.add_argument(
        "--hotplug-config",
        type=Path,
        default=Path("/etc/tcmu-scst/scst.conf"),
        help="scst.conf kept applied as pass-through devices come and go (udev events; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--no-hotplug", action="store_true", help="do not listen to udev events"
    )
    parser.add_argument(
        "--trace-file",
        type=Path,
        default=DEFAULT_TRACE_FILE,
        help="SCST trace_level masks, as the shell keeps them (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from tcmu_scst.service.daemon import Daemon, notify_systemd
    from tcmu_scst.service.ringloop import DEFAULT_SPIN

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # trace_level's pid/function/line bits decorate what the daemon logs.
    decorations = TraceDecorations()
    for handler in logging.getLogger().handlers:
        handler.addFilter(decorations)
    if args.threads < 0:
        raise SystemExit("tcmu-scst daemon: error: --threads must be >= 0")
    if args.busy_poll_us is not None and args.busy_poll_us < 0:
        raise SystemExit("tcmu-scst daemon: error: --busy-poll-us must be >= 0")
    hotplug = None
    if not args.no_hotplug:
        from tcmu_scst.service.hotplug import Hotplug

        hotplug = Hotplug(config_path=args.hotplug_config, state_file=args.state_file)
    daemon = Daemon(
        control_socket=args.control_socket,
        lock_file=args.lock_file,
        threads=args.threads,
        share_ring_loop=not args.ring_thread_per_device,
        busy_poll=DEFAULT_SPIN if args.busy_poll_us is None else args.busy_poll_us / 1e6,
        state_file=args.state_file,
        hotplug=hotplug,
        trace_file=args.trace_file,
        decorations=decorations,
    )
    daemon.install_signal_handlers()
    daemon.start()
    notify_systemd("READY=1")
    daemon.run()
    notify_systemd("STOPPING=1")
    return 0
