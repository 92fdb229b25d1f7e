#!/usr/bin/env python3
"""fio through tcm_loop: our FILEIO vdisk vs LIO's in-kernel fileio vs tcmu-runner (not a test).

Runs INSIDE the lab guest (root, configfs, target_core_user)::

    tcmu-scst lab --results /tmp/bench --run 'python3 bench/vdisk_bench.py --json /results/b.json'

Every backstore gets a file of the same size on the same tmpfs (/run), is exported
through tcm_loop (the kernel's own initiator, /dev/sdX) and measured with the same fio
jobs: 4 KiB random read/write at QD32 and QD1, 1 MiB sequential read/write at QD4
(libaio, O_DIRECT). The device is written in full first so reads hit allocated blocks.

* ``vdisk-tN``: our vdisk (FILEIO, write-back) served by a DeviceRunner with N worker
  threads in this process (no daemon);
* ``lio-fileio``: target_core_file on a plain file (LIO's defaults);
* ``tcmu-runner``: tcmu-runner 1.5.4's qcow handler on a preallocated qcow2 image (run
  alone: it answers netlink with reply support; skipped with a note when missing).

Prints a table (IOPS for 4 KiB, MiB/s for 1 MiB) and our ratio to each of the others.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tcmu_scst.kernel import uio
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions
from tcmu_scst.lab import lio
from tcmu_scst.service import registry
from tcmu_scst.service.device import serve_in_thread

MiB = 1 << 20
WORK_DIR = Path("/run/vdisk-bench")


@dataclass(frozen=True)
class Job:
    name: str
    rw: str
    bs: str
    iodepth: int
    unit: str  # "IOPS" or "MiB/s"


JOBS = (
    Job("4k randread QD32", "randread", "4k", 32, "IOPS"),
    Job("4k randwrite QD32", "randwrite", "4k", 32, "IOPS"),
    Job("4k randread QD1", "randread", "4k", 1, "IOPS"),
    Job("4k randwrite QD1", "randwrite", "4k", 1, "IOPS"),
    Job("1M read QD4", "read", "1M", 4, "MiB/s"),
    Job("1M write QD4", "write", "1M", 4, "MiB/s"),
)

# A backstore factory: given the undo stack and the size, the configfs path of an
# enabled core device to export.
Factory = Callable[[lio.Teardown, int], Path]


def _serve_vdisk(threads: int) -> Factory:
    def create(stack: lio.Teardown, size: int) -> Path:
        from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config

        image = WORK_DIR / "vdisk.img"
        with open(image, "wb") as f:
            f.truncate(size)
        stack.push("remove vdisk image", lambda: image.unlink(missing_ok=True))
        dev_config = to_dev_config(VdiskParams(name="benchv", filename=str(image)))
        options = UserBackstoreOptions(dev_config=dev_config, dev_size=size,
                                       nl_reply_supported=-1)
        backstore = UserBackstore.create(Configfs(), "benchv", options)
        stack.push("delete benchv", backstore.delete)
        handler = registry.open_handler(dev_config)
        port = uio.UioDevice(uio.find_device(backstore.hba_index, backstore.name))
        _runner, stop = serve_in_thread(port, handler, threads, "benchv")
        stack.push("stop benchv", stop)
        return lio.TARGET / backstore.rel

    return create


def _lio_fileio(stack: lio.Teardown, size: int) -> Path:
    image = WORK_DIR / "fileio.img"
    stack.push("remove fileio image", lambda: image.unlink(missing_ok=True))
    return lio.create_fileio("benchf", image, size, stack)


def _tcmu_runner(stack: lio.Teardown, size: int) -> Path:
    image = WORK_DIR / "runner.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full",
                    str(image), str(size)], check=True)
    stack.push("remove qcow2 image", lambda: image.unlink(missing_ok=True))
    log = open(WORK_DIR / "tcmu-runner.log", "w")  # noqa: SIM115 - closed by the stack
    proc = subprocess.Popen(["tcmu-runner", "--debug"], stdout=log, stderr=subprocess.STDOUT)

    def stop_runner() -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()

    stack.push("stop tcmu-runner", stop_runner)
    time.sleep(2)  # let it register its handlers (netlink) before the device appears
    if proc.poll() is not None:
        raise RuntimeError(f"tcmu-runner exited {proc.returncode}; see {log.name}")
    options = UserBackstoreOptions(dev_config=f"qcow/{image}", dev_size=size)
    backstore = UserBackstore.create(Configfs(), "benchr", options)
    stack.push("delete benchr", backstore.delete)
    return lio.TARGET / backstore.rel


def fio(dev: str, job: Job, runtime: int) -> float:
    argv = ["fio", "--name=b", f"--filename={dev}", f"--rw={job.rw}", f"--bs={job.bs}",
            f"--iodepth={job.iodepth}", "--ioengine=libaio", "--direct=1", "--time_based",
            f"--runtime={runtime}", "--ramp_time=1", "--randrepeat=0", "--norandommap",
            "--output-format=json"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True,
                          timeout=runtime * 4 + 60)
    result = json.loads(proc.stdout[proc.stdout.index("{"):])["jobs"][0]
    side = result["read"] if "read" in job.rw else result["write"]
    if job.unit == "IOPS":
        return float(side["iops"])
    return float(side["bw_bytes"]) / MiB


def measure(label: str, factory: Factory, size: int, runtime: int) -> dict[str, float]:
    print(f"== {label}", flush=True)
    with lio.Teardown() as stack:
        path = factory(stack, size)
        lun = lio.export_loop(path, 0, stack)
        assert lun.block is not None
        # Fill the device: reads must hit written blocks on every backstore.
        subprocess.run(["dd", "if=/dev/zero", f"of={lun.block}", "bs=1M", "oflag=direct",
                        f"count={size // MiB}", "status=none"], check=True)
        numbers: dict[str, float] = {}
        for job in JOBS:
            numbers[job.name] = fio(lun.block, job, runtime)
            print(f"   {job.name:<18} {numbers[job.name]:>10.0f} {job.unit}", flush=True)
    return numbers


def table(results: dict[str, dict[str, float]], ours: str) -> str:
    labels = list(results)
    others = [lab for lab in labels if lab != ours]
    head = f"| {'workload':<24} | " + " | ".join(f"{lab:>12}" for lab in labels)
    head += "".join(f" | {ours}/{o}" for o in others) + " |"
    rows = [head, "|" + "---|" * (1 + len(labels) + len(others))]
    for job in JOBS:
        cells = [f"{results[lab].get(job.name, float('nan')):>12.0f}" for lab in labels]
        ratios = []
        for other in others:
            theirs = results[other].get(job.name, 0.0)
            ratios.append(f"{results[ours][job.name] / theirs:.2f}" if theirs else "-")
        rows.append(f"| {job.name + ' ' + job.unit:<24} | " + " | ".join(cells)
                    + "".join(f" | {r}" for r in ratios) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--runtime", type=int, default=10, help="seconds per fio job")
    parser.add_argument("--threads", default="1,2,4",
                        help="worker thread counts to try for our vdisk (comma list)")
    parser.add_argument("--only", default="vdisk,lio,runner",
                        help="which backstores to run (comma list of vdisk, lio, runner)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    size = args.size_mb * MiB
    only = set(args.only.split(","))
    results: dict[str, dict[str, float]] = {}
    counts = [int(t) for t in args.threads.split(",")]
    if "vdisk" in only:
        for n in counts:
            results[f"vdisk-t{n}"] = measure(f"our vdisk, {n} threads", _serve_vdisk(n),
                                             size, args.runtime)
    if "lio" in only:
        results["lio-fileio"] = measure("LIO fileio", _lio_fileio, size, args.runtime)
    if "runner" in only:
        if shutil.which("tcmu-runner") is None:
            print("tcmu-runner not installed on the host: apt-get install tcmu-runner")
        else:
            results["tcmu-runner"] = measure("tcmu-runner qcow", _tcmu_runner, size,
                                             args.runtime)
    if not results:
        return 1
    ours = max((lab for lab in results if lab.startswith("vdisk")),
               key=lambda lab: results[lab]["4k randread QD32"], default=next(iter(results)))
    print(f"\nour best thread count: {ours}")
    print(table(results, ours))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
