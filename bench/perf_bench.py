#!/usr/bin/env python3
"""4 KiB random-read IOPS through tcm_loop: dev_disk_perf next to vdisk NULLIO (not a test).

Runs INSIDE the lab guest (it needs target_core_user), both devices in the same
boot, one after the other, each served by its handler on a DeviceRunner thread of
this process (no daemon), exported through tcm_loop as /dev/sdX, and read with fio
(libaio, O_DIRECT, random 4 KiB reads) at queue depths 1 and 32.

    tcmu-scst lab --run 'python3 bench/perf_bench.py [--runtime 10]'

dev_disk_perf answers every command inline on the ring thread; vdisk NULLIO hands
READs to worker threads like any vdisk. The difference is the cost of that handoff
plus the file-backed handler's bookkeeping; both zero-fill the Data-In buffer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tcmu_scst.handlers.perf import PerfParams  # noqa: E402
from tcmu_scst.handlers.perf import to_dev_config as perf_dev_config  # noqa: E402
from tcmu_scst.handlers.vdisk import VdiskParams  # noqa: E402
from tcmu_scst.handlers.vdisk import to_dev_config as vdisk_dev_config  # noqa: E402
from tests.kernel.tcmu_rig import serve  # noqa: E402

SIZE = 1 << 30


def fio(dev: str, iodepth: int, runtime: int) -> tuple[float, float]:
    """(IOPS, mean completion latency in microseconds) of a 4 KiB random-read run."""
    out = subprocess.run(
        ["fio", "--name=bench", f"--filename={dev}", "--rw=randread", "--bs=4k",
         "--direct=1", "--ioengine=libaio", f"--iodepth={iodepth}", "--numjobs=1",
         "--ramp_time=2", f"--runtime={runtime}", "--time_based", "--output-format=json"],
        capture_output=True, text=True, check=True, timeout=runtime + 120,
    )
    read = json.loads(out.stdout)["jobs"][0]["read"]
    return float(read["iops"]), float(read["clat_ns"]["mean"]) / 1000.0


def measure(label: str, dev_config: str, runtime: int, depths: list[int]) -> list[str]:
    rows = []
    with ExitStack() as stack:
        served = serve(stack, dev_config, SIZE, threads=2)
        assert served.lun is not None and served.lun.block is not None
        for depth in depths:
            iops, lat = fio(served.lun.block, depth, runtime)
            rows.append(f"{label:<22} {depth:>7} {iops:>12,.0f} {lat:>14,.1f}")
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", type=int, default=10, help="seconds per fio run")
    parser.add_argument("--depths", default="1,32", help="fio queue depths, comma-separated")
    args = parser.parse_args()
    if os.environ.get("TCMU_SCST_IN_LAB") != "1":
        print("run me in the lab guest: tcmu-scst lab --run 'python3 bench/perf_bench.py'",
              file=sys.stderr)
        return 2
    depths = [int(d) for d in args.depths.split(",")]
    header = f"{'handler':<22} {'iodepth':>7} {'IOPS':>12} {'mean clat us':>14}"
    print(f"fio 4 KiB randread, O_DIRECT, libaio, {args.runtime} s per run, "
          f"kernel {os.uname().release}, {os.cpu_count()} vCPU")
    print(header, flush=True)
    rows = measure("dev_disk_perf", perf_dev_config(PerfParams("dev_disk_perf", "perf0",
                                                               size=SIZE)), args.runtime, depths)
    rows += measure("vdisk NULLIO", vdisk_dev_config(VdiskParams("null0", nullio=True,
                                                                 size=SIZE)), args.runtime, depths)
    print("\n" + header + "\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
