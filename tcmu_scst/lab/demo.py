"""The try-it-now target, run INSIDE the lab guest: ``python3 -m tcmu_scst.lab.demo``.

The product's own path, end to end: the tcmu-scst daemon (on a thread) serves a
FILEIO vdisk on a sparse file through TCMU, and a small scst.conf (that vdisk as LUN 0
of an iSCSI target whose Default group everyone gets) is applied exactly as
``tcmu-scst config apply`` would. Stops on a line on stdin, EOF, or SIGTERM: an empty
config is applied (which removes every object the demo made), then the daemon stops.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from tcmu_scst.errors import TcmuScstError

DEMO_IQN = "iqn.2003-01.org.tcmu-scst:demo"
DEMO_SIZE = 1 << 30  # 1 GiB, sparse, in guest RAM (tmpfs) only as far as written
DEMO_DIR = Path("/run/tcmu-scst-demo")

DEMO_CONF = """\
# The lab demo: one FILEIO vdisk, exported to every initiator over iSCSI.
HANDLER vdisk_fileio {{
    DEVICE disk0 {{
        filename {image}
    }}
}}
TARGET_DRIVER iscsi {{
    TARGET {iqn} {{
        LUN 0 disk0
        enabled 1
    }}
}}
"""


def demo_config_text(image: Path, iqn: str = DEMO_IQN) -> str:
    return DEMO_CONF.format(image=image, iqn=iqn)


def start_demo_target(stack: ExitStack) -> None:
    """Start the daemon, apply the demo config; undo both through ``stack``."""
    from tcmu_scst.kernel.configfs import Configfs
    from tcmu_scst.scst import conf
    from tcmu_scst.scst.apply import apply_config
    from tcmu_scst.service.daemon import Daemon

    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    image = DEMO_DIR / "disk0.img"
    with open(image, "wb") as f:
        f.truncate(DEMO_SIZE)
    state = DEMO_DIR / "lio-state.json"
    daemon = Daemon(control_socket=DEMO_DIR / "control.sock", threads=2, state_file=state)
    daemon.start()
    loop = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    loop.start()

    def stop_daemon() -> None:
        daemon.stop()
        loop.join(30)

    stack.callback(stop_daemon)
    text = demo_config_text(image)
    (DEMO_DIR / "scst.conf").write_text(text)
    cfs = Configfs()
    apply_config(cfs, conf.parse(text, str(DEMO_DIR / "scst.conf")), state)

    def clear() -> None:
        # An empty config removes everything the demo made (declarative apply).
        apply_config(cfs, conf.parse("", "empty"), state)

    stack.callback(clear)


def connect_help(host_port: int, iqn: str = DEMO_IQN) -> str:
    """What to type on the host to reach the demo target."""
    portal = "127.0.0.1" if host_port == 3260 else f"127.0.0.1:{host_port}"
    return "\n".join(
        [
            f"iSCSI target {iqn} is listening on the host at {portal}.",
            "LUN 0 is a 1 GiB FILEIO vdisk served from userspace by the tcmu-scst daemon",
            f"(TCMU), set up from {DEMO_DIR}/scst.conf.",
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
        with ExitStack() as stack:
            start_demo_target(stack)
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
