"""The try-it-now target, run INSIDE the lab guest: ``python3 -m tcmu_scst.lab.demo``.

Today it exports a LIO fileio backstore on a sparse file over iSCSI in demo mode.
When the project's TCMU daemon exists, swap :func:`create_demo_backstores` for one that
starts it and returns its user_N device(s): nothing else here needs to change.
Stops (and removes every configfs object) on a line on stdin, EOF, or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tcmu_scst.errors import TcmuScstError
from tcmu_scst.lab.lio import Teardown, create_fileio, export_iscsi_demo

DEMO_IQN = "iqn.2003-01.org.tcmu-scst:demo"
DEMO_SIZE = 1 << 30  # 1 GiB, sparse, in guest RAM (tmpfs) only as far as written
DEMO_DIR = Path("/run/tcmu-scst-demo")


def create_demo_backstores(stack: Teardown) -> list[Path]:
    """THE backstore(s) the demo exports: swap in the TCMU vdisk here."""
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    return [create_fileio("demo0", DEMO_DIR / "disk0.img", DEMO_SIZE, stack)]


def connect_help(host_port: int, iqn: str = DEMO_IQN) -> str:
    """What to type on the host to reach the demo target."""
    portal = "127.0.0.1" if host_port == 3260 else f"127.0.0.1:{host_port}"
    return "\n".join(
        [
            f"iSCSI target {iqn} (LUN 0) is listening on the host at {portal}.",
            "From the host, with libiscsi-bin:",
            f"    iscsi-ls iscsi://{portal}",
            f"    iscsi-inq iscsi://{portal}/{iqn}/0",
            f"    iscsi-readcapacity16 iscsi://{portal}/{iqn}/0",
            "or with open-iscsi (discovery would advertise the guest's own address,",
            "10.0.2.15, which the host cannot reach: create the node record by hand):",
            f"    iscsiadm -m node -o new -T {iqn} -p {portal}",
            f"    iscsiadm -m node -T {iqn} -p {portal} --login",
            "Press Ctrl-C to stop the target and the VM.",
        ]
    )


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host-port", type=int, default=3260)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        with Teardown() as stack:
            export_iscsi_demo(DEMO_IQN, create_demo_backstores(stack), stack)
            print(connect_help(args.host_port), flush=True)
            sys.stdin.readline()  # the host writes a line on Ctrl-C
            print("tcmu-scst demo: removing the target", flush=True)
    except TcmuScstError as err:
        print(f"tcmu-scst demo: error: {err}", file=sys.stderr, flush=True)
        return 1
    print("tcmu-scst demo: target removed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
