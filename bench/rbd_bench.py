#!/usr/bin/env python3
"""fio through tcm_loop on Ceph RBD: tcmu-scst's vdisk_rbd vs tcmu-runner's handler_rbd.so.

One command, run on the host from the worktree root (boots the lab guest once, under
the shared VM lock, and writes ``bench/results/rbd-bench-<date>.md``)::

    python3 bench/rbd_bench.py [--runtime 10]

In the guest: one single-node cluster (``tcmu_scst.testing.ceph``: 1 monitor, 1
memstore OSD, loopback), two images of the same size in one pool, one served by our
handler (a separate process, 2 workers per device, as ``vdisk_bench.py --serve``), one
by tcmu-runner (cfgstring ``rbd/POOL/IMAGE;conf=PATH``, no ``--debug``), both at their
defaults (ours: librbd cache on, write-back). Both LUNs are written in full first, then
each of the five single-LUN jobs of ``vdisk_bench.py`` runs on one, then the other.
Needs ``apt-get install tcmu-runner`` besides Ceph.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import vdisk_bench as vb

from tcmu_scst.kernel.configfs import Configfs

IMAGE_SIZE = 256 * vb.MiB
WORK = Path("/run/rbd-bench")
OURS, RUNNER = "tcmu-scst vdisk_rbd", "tcmu-runner rbd"


def _ours(stack: contextlib.ExitStack, cfs: Configfs, conf: Path) -> tuple[str, vb.Process]:
    from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config

    config = to_dev_config(VdiskParams(name="rbdours", filename=f"rbd:rbd/ours:conf={conf}"))
    [rel] = vb._user_backstores(stack, cfs, ["rbdours"], [config], IMAGE_SIZE, replies=False)
    proc = subprocess.Popen([sys.executable, str(Path(vb.__file__)), "--serve", "--variants",
                             "t2", "rbdours"], stdout=subprocess.PIPE)
    daemon = vb.Process(proc)
    stack.callback(daemon.stop)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("our serving process did not start")
    return rel, daemon


def _runner(stack: contextlib.ExitStack, cfs: Configfs, conf: Path) -> tuple[str, vb.Process]:
    log = stack.enter_context(open(WORK / "tcmu-runner.log", "w"))  # noqa: SIM115
    proc = subprocess.Popen(["tcmu-runner"], stdout=log, stderr=subprocess.STDOUT)
    daemon = vb.Process(proc)
    stack.callback(daemon.stop)
    time.sleep(2)  # it registers its handlers over netlink before a device may appear
    if proc.poll() is not None:
        raise RuntimeError(f"tcmu-runner exited {proc.returncode}; see {log.name}")
    [rel] = vb._user_backstores(stack, cfs, ["rbdrunner"], [f"rbd/rbd/runner;conf={conf}"],
                                IMAGE_SIZE, replies=True)
    return rel, daemon


def in_guest(runtime: int, out: Path) -> int:
    from tcmu_scst.testing.ceph import CephCluster

    WORK.mkdir(parents=True, exist_ok=True)
    cfs = Configfs()
    results: dict[str, dict[str, vb.Figures]] = {OURS: {}, RUNNER: {}}
    with CephCluster(WORK / "ceph", memstore_bytes=1536 * vb.MiB) as ceph, \
            contextlib.ExitStack() as stack:
        ceph.create_pool("rbd")
        for image in ("ours", "runner"):
            ceph.rbd("create", "--size", f"{IMAGE_SIZE // vb.MiB}M", f"rbd/{image}")
        rel_ours, ours = _ours(stack, cfs, ceph.conf)
        rel_runner, runner = _runner(stack, cfs, ceph.conf)
        dev_ours, dev_runner = vb.export(stack, cfs, [rel_ours, rel_runner], IMAGE_SIZE)
        for job in vb.JOBS:
            for label, dev, daemon in ((OURS, dev_ours, ours), (RUNNER, dev_runner, runner)):
                results[label][job.name] = vb.fio([dev], job, runtime, daemon)
                print(f"{job.name:20} {label:20} {results[label][job.name].iops:8.0f} IOPS",
                      flush=True)
    stamp = datetime.datetime.now(datetime.UTC)
    rows = [f"| job | {OURS} IOPS | {RUNNER} IOPS | ratio | {OURS} p50/p99 µs | "
            f"{RUNNER} p50/p99 µs | {OURS} CPU%/kIOPS | {RUNNER} CPU%/kIOPS |",
            "|---|---|---|---|---|---|---|---|"]
    for job in vb.JOBS:
        a, b = results[OURS][job.name], results[RUNNER][job.name]
        rows.append(f"| {job.name} | {a.iops:.0f} | {b.iops:.0f} | "
                    f"{a.iops / b.iops if b.iops else 0:.2f} | {a.p50_us:.0f} / {a.p99_us:.0f} | "
                    f"{b.p50_us:.0f} / {b.p99_us:.0f} | {a.cpu_pct_per_kiops or 0:.1f} | "
                    f"{b.cpu_pct_per_kiops or 0:.1f} |")
    text = "\n".join(rows)
    header = (f"# RBD benchmark {stamp:%Y-%m-%d %H:%M} UTC\n\n`python3 bench/rbd_bench.py "
              f"--runtime {runtime}`; guest kernel {platform.release()}, {os.cpu_count()} "
              f"vCPUs (QEMU TCG); one memstore OSD on loopback; {IMAGE_SIZE // vb.MiB} MiB "
              f"images; fio libaio O_DIRECT via tcm_loop, {runtime} s per job after 1 s "
              "ramp, the two LUNs taking turns job by job.\n\n")
    print("\n" + text)
    if out.is_dir():
        path = out / f"rbd-bench-{stamp:%Y-%m-%d-%H%M}.md"
        path.write_text(header + text + "\n")
        print(f"\nwritten to {path}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runtime", type=int, default=10, help="seconds per fio job")
    parser.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("/results"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_guest:
        if shutil.which("tcmu-runner") is None:
            print("tcmu-runner is not installed: apt-get install tcmu-runner (on the host)")
            return 1
        return in_guest(args.runtime, args.out)
    inner = f"python3 bench/rbd_bench.py --in-guest --out /results --runtime {args.runtime}"
    cmd = [sys.executable, "-m", "tcmu_scst", "lab", "--results",
           str(vb.REPO / "bench" / "results"), "--timeout", "1800", "--run", inner]
    with open(vb.VM_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run(cmd, cwd=vb.REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
