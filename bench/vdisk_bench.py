#!/usr/bin/env python3
"""fio through tcm_loop: tcmu-scst's FILEIO vdisk vs tcmu-runner vs LIO's in-kernel fileio.

One command, run on the host from the worktree root (boots the lab guest once, under
the shared VM lock, and writes ``bench/results/vdisk-bench-<date>.{md,json}``)::

    python3 bench/vdisk_bench.py [--runtime 10] [--rounds 3] [--variants t2,t2-workers] [--profile]

With ``--rounds N`` each job runs N times on each backstore and the table shows the
round of median IOPS (``--pick best``: the best one); every round is in the .json.

Inside the guest (root, configfs, target_core_user) it runs with ``--in-guest``.

Every backstore gets files of the same size on the same tmpfs (/run), is exported
through tcm_loop (the kernel's own initiator, /dev/sdX) and measured with the same fio
jobs (libaio, O_DIRECT, ``--runtime`` s each after 1 s ramp; the devices are written
in full first so reads hit allocated blocks):

* 4 KiB random read and write at QD32, 1 MiB sequential read and write at QD4, 4 KiB
  random read at QD1, on one 256 MiB LUN;
* the scale job: 8 LUNs of 64 MiB served by ONE process, 8 fio jobs (one per LUN),
  4 KiB random read at QD32 each; aggregate IOPS.

Backstores:

* ``tcmu-scst``: our vdisk (FILEIO at its defaults) served by a separate process
  (this script's ``--serve`` mode: one DeviceRunner per LUN, as the daemon does), so
  its CPU time and RSS are measured alone;
* ``tcmu-runner``: tcmu-runner 1.5.4's qcow handler on a ``preallocation=metadata``
  qcow2 image, started WITHOUT ``--debug`` (its default log level 3, as packaged:
  ``--debug`` logs every command and made it look 10x slower than it is);
* ``lio-fileio``: target_core_file on a plain file (LIO's defaults).

Both user-space backstores get the same ``control`` options (ring size, max sectors).
For every job: IOPS, p50/p99 completion latency (fio clat), and for the two daemons
CPU % per 1,000 IOPS; their RSS with 1 and with 8 LUNs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import functools
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The package served: this worktree's, or (a variant's @SRC) another checkout's.
SRC = os.environ.get("VDISK_BENCH_SRC") or str(REPO)
sys.path.insert(0, SRC)

from tcmu_scst.kernel import uio  # noqa: E402
from tcmu_scst.kernel.configfs import Configfs  # noqa: E402
from tcmu_scst.kernel.fabrics import LoopbackTpg  # noqa: E402
from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions  # noqa: E402

MiB = 1 << 20
WORK_DIR = Path("/run/vdisk-bench")
VM_LOCK = "/tmp/tcmu-scst-vm.lock"
SINGLE_SIZE = 256 * MiB
SCALE_LUNS = 8
SCALE_SIZE = 64 * MiB
OURS, RUNNER, KERNEL = "tcmu-scst", "tcmu-runner", "lio-fileio"


@dataclass(frozen=True)
class Job:
    name: str
    rw: str
    bs: str
    iodepth: int
    luns: int = 1


JOBS = (
    Job("4k randread QD32", "randread", "4k", 32),
    Job("4k randwrite QD32", "randwrite", "4k", 32),
    Job("1M read QD4", "read", "1M", 4),
    Job("1M write QD4", "write", "1M", 4),
    Job("4k randread QD1", "randread", "4k", 1),
)
SCALE_JOB = Job(f"{SCALE_LUNS} LUNs 4k randread QD32", "randread", "4k", 32, SCALE_LUNS)


@dataclass(frozen=True)
class Variant:
    """How our daemon serves: ``t2-shared`` (the daemon's default: one thread polls
    every device's ring, service.ringloop; 2 workers per device, I/O tried on the ring
    thread first), ``t2`` (a ring thread per device: ``--ring-thread-per-device``),
    ``t2-workers`` (every I/O command handed to a worker: the path before try_inline);
    ``-py`` serves without the compiled path (``TCMU_SCST_COMPILED=0``: every command
    in Python); ``@DIR`` serves with the package of another checkout (``git worktree
    add DIR COMMIT``), to compare commits in one boot."""

    threads: int
    try_inline: bool = True
    src: str = ""
    shared: bool = False
    spin_us: int | None = None  # -shared-spinUS: SharedRingLoop.spin (None: its default)
    compiled: bool = True  # False (-py): TCMU_SCST_COMPILED=0

    @classmethod
    def parse(cls, text: str) -> Variant:
        spec, _, src = text.partition("@")
        compiled = not spec.endswith("-py")
        spec = spec.removesuffix("-py")
        spec, _, spin = spec.partition("-spin")
        count, _, rest = spec.removeprefix("t").partition("-")
        if (not count.isdigit() or rest not in ("", "workers", "shared")
                or (spin and (not spin.isdigit() or rest != "shared"))):
            raise SystemExit(f"bad variant {text!r}: want "
                             "tN[-workers|-shared[-spinUS]][-py][@DIR] (e.g. t2)")
        return cls(int(count), rest != "workers", src, rest == "shared",
                   int(spin) if spin else None, compiled)

    @property
    def name(self) -> str:
        how = "-shared" if self.shared else "" if self.try_inline else "-workers"
        spin = "" if self.spin_us is None else f"-spin{self.spin_us}"
        py = "" if self.compiled else "-py"
        return f"t{self.threads}{how}{spin}{py}" + (f"@{self.src}" if self.src else "")


@dataclass
class Figures:
    """One job on one backstore."""

    iops: float
    p50_us: float
    p99_us: float
    cpu_pct_per_kiops: float | None = None  # the serving process's CPU, None for LIO


@dataclass
class Backstore:
    label: str
    jobs: dict[str, Figures] = field(default_factory=dict)  # the one counted per job
    rounds: dict[str, list[Figures]] = field(default_factory=dict)  # every round's
    rss_mib: dict[int, float] = field(default_factory=dict)  # LUN count -> RSS


# -- a daemon process we measure ---------------------------------------------------


class Process:
    """A child whose CPU time and RSS come from /proc."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _user_options(dev_config: str, size: int, *, replies: bool) -> UserBackstoreOptions:
    # The same ring for both daemons (the kernel's defaults through our layer).
    return UserBackstoreOptions(dev_config=dev_config, dev_size=size,
                                nl_reply_supported=None if replies else -1)


def _user_backstores(stack: contextlib.ExitStack, cfs: Configfs, names: list[str],
                     configs: list[str], size: int, *, replies: bool) -> list[str]:
    rels = []
    for name, dev_config in zip(names, configs, strict=True):
        backstore = UserBackstore.create(cfs, name,
                                         _user_options(dev_config, size, replies=replies))
        stack.callback(backstore.delete)
        rels.append(backstore.rel)
    return rels


def _image(stack: contextlib.ExitStack, name: str, size: int) -> Path:
    image = WORK_DIR / name
    stack.callback(image.unlink, missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(size)
    return image


def setup_ours(stack: contextlib.ExitStack, cfs: Configfs, count: int, size: int,
               variant: Variant, tag: str) -> tuple[list[str], Process]:
    from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config

    names = [f"bv{tag}_{i}" for i in range(count)]
    configs = [to_dev_config(VdiskParams(name=name,
                                         filename=str(_image(stack, f"{name}.img", size))))
               for name in names]
    rels = _user_backstores(stack, cfs, names, configs, size, replies=False)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--variants", variant.name,
         *names],
        stdout=subprocess.PIPE, env={**os.environ, "VDISK_BENCH_SRC": variant.src or str(REPO),
             **({} if variant.compiled else {"TCMU_SCST_COMPILED": "0"})},
    )
    daemon = Process(proc)
    stack.callback(daemon.stop)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("the serving process did not start; see its output above")
    return rels, daemon


def setup_runner(stack: contextlib.ExitStack, cfs: Configfs, count: int, size: int,
                 ) -> tuple[list[str], Process]:
    log = stack.enter_context(open(WORK_DIR / "tcmu-runner.log", "w"))  # noqa: SIM115
    # No --debug: tcmu-runner at its packaged log level (3, info), as users run it.
    proc = subprocess.Popen(["tcmu-runner"], stdout=log, stderr=subprocess.STDOUT)
    daemon = Process(proc)
    stack.callback(daemon.stop)
    time.sleep(2)  # it registers its handlers over netlink before a device may appear
    if proc.poll() is not None:
        raise RuntimeError(f"tcmu-runner exited {proc.returncode}; see {log.name}")
    configs = []
    for i in range(count):
        image = WORK_DIR / f"r{i}.qcow2"
        stack.callback(image.unlink, missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                        "preallocation=metadata", str(image), str(size)], check=True)
        configs.append(f"qcow/{image}")
    names = [f"br{i}" for i in range(count)]
    return _user_backstores(stack, cfs, names, configs, size, replies=True), daemon


def setup_kernel(stack: contextlib.ExitStack, cfs: Configfs, count: int, size: int,
                 ) -> tuple[list[str], None]:
    index = 0
    while cfs.exists(f"core/fileio_{index}"):
        index += 1
    hba = f"core/fileio_{index}"
    cfs.mkdir(hba)
    stack.callback(cfs.rmdir, hba)
    rels = []
    for i in range(count):
        image = _image(stack, f"f{i}.img", size)
        rel = f"{hba}/bf{i}"
        cfs.mkdir(rel)
        stack.callback(cfs.rmdir, rel)
        cfs.write(f"{rel}/control", f"fd_dev_name={image},fd_dev_size={size}")
        cfs.write(f"{rel}/enable", "1")
        rels.append(rel)
    return rels, None


def export(stack: contextlib.ExitStack, cfs: Configfs, rels: list[str], size: int) -> list[str]:
    """Every backstore as a LUN of one tcm_loop target; their /dev/sdX, filled."""
    tpg = LoopbackTpg.create(cfs)
    stack.callback(tpg.delete)
    for lun, rel in enumerate(rels):
        tpg.add_lun(lun, rel)
    blocks = []
    deadline = time.monotonic() + 30
    for lun in range(len(rels)):
        while (block := tpg.block_device(lun)) is None or not os.path.exists(block):
            if time.monotonic() > deadline:
                raise RuntimeError(f"LUN {lun} of {tpg.rel} got no block device")
            time.sleep(0.1)
        blocks.append(block)
    for block in blocks:
        # Reads must hit written blocks on every backstore (qcow2 clusters allocated).
        subprocess.run(["dd", "if=/dev/zero", f"of={block}", "bs=1M", "oflag=direct",
                        f"count={size // MiB}", "status=none"], check=True)
    return blocks


# -- fio -----------------------------------------------------------------------------


def fio(devices: list[str], job: Job, runtime: int, daemon: Process | None,
        profile: Path | None = None) -> Figures:
    argv = ["fio", f"--rw={job.rw}", f"--bs={job.bs}", f"--iodepth={job.iodepth}",
            "--ioengine=libaio", "--direct=1", "--time_based", f"--runtime={runtime}",
            "--ramp_time=1", "--randrepeat=0", "--norandommap", "--group_reporting",
            "--output-format=json"]
    for i, dev in enumerate(devices):
        argv += [f"--name=j{i}", f"--filename={dev}"]
    spy = None
    if profile is not None and daemon is not None:
        # Sampled stacks of the serving process (collapsed format: one line per
        # stack with its count), for the whole job.
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(daemon.proc.pid),
                                "--duration", str(runtime + 1), "--rate", "250",
                                "--nonblocking", "--threads", "--format", "raw",
                                "-o", str(profile)], stdout=subprocess.DEVNULL)
    cpu0 = daemon.cpu_seconds() if daemon else 0.0
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=True,
                          timeout=runtime * 4 + 60)
    if spy is not None:
        spy.wait(60)
    wall = time.monotonic() - t0
    cpu = daemon.cpu_seconds() - cpu0 if daemon else 0.0
    result = json.loads(proc.stdout[proc.stdout.index("{"):])["jobs"][0]
    side = result["read"] if "read" in job.rw else result["write"]
    pct = side["clat_ns"].get("percentile", {})
    iops = float(side["iops"])
    per_kiops = (100 * cpu / wall) / (iops / 1000) if daemon and iops else None
    return Figures(iops, pct.get("50.000000", 0) / 1000, pct.get("99.000000", 0) / 1000,
                   per_kiops)


def setup(stack: contextlib.ExitStack, cfs: Configfs, label: str, variant: Variant, tag: str,
          luns: int, size: int) -> tuple[list[str], Process | None]:
    if label.startswith(OURS):
        return setup_ours(stack, cfs, luns, size, variant, tag)
    if label == RUNNER:
        return setup_runner(stack, cfs, luns, size)
    return setup_kernel(stack, cfs, luns, size)


def measure(backstores: dict[str, Variant], runtime: int, only: set[str], rounds: int,
            profile_dir: Path | None = None, pick: str = "median") -> dict[str, Backstore]:
    """Every job on every backstore. The single-LUN backstores all exist at once and
    each job runs on each of them in turn (``rounds`` times; ``pick``: the round of
    median IOPS counted, or the best): the host's load drifts, and figures taken
    minutes apart are not comparable. The 8-LUN job takes turns round by round too,
    each backstore's 8 LUNs set up for its turn (8 LUNs each would not fit together)."""
    cfs = Configfs()
    out = {label: Backstore(label) for label in backstores}

    def run(label: str, job: Job, blocks: list[str], daemon: Process | None) -> None:
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{label}-{job.name}")
        spy = (profile_dir / f"profile-{slug}.txt"
               if profile_dir and label.startswith(OURS) else None)
        fig = fio(blocks, job, runtime, daemon, spy)
        figs = out[label].rounds.setdefault(job.name, [])
        figs.append(fig)
        ranked = sorted(figs, key=lambda f: f.iops)
        # The median round (the lower middle one of an even count), or the best.
        out[label].jobs[job.name] = ranked[(len(ranked) - 1) // 2 if pick == "median" else -1]
        cpu = f"{fig.cpu_pct_per_kiops:6.1f}" if fig.cpu_pct_per_kiops else "     -"
        print(f"   {label[:34]:<34} {job.name:<24} {fig.iops:>7.0f} IOPS  p50 {fig.p50_us:>7.0f}"
              f"  p99 {fig.p99_us:>7.0f} us  cpu%/kIOPS {cpu}", flush=True)

    singles = [job for job in JOBS if job.name in only]
    if singles:
        print("== 1 LUN per backstore, every backstore at once", flush=True)
        with contextlib.ExitStack() as stack:
            served = {}
            for k, (label, variant) in enumerate(backstores.items()):
                rels, daemon = setup(stack, cfs, label, variant, str(k), 1, SINGLE_SIZE)
                served[label] = (export(stack, cfs, rels, SINGLE_SIZE), daemon)
            for job in singles:
                for _ in range(rounds):
                    for label, (blocks, daemon) in served.items():
                        run(label, job, blocks, daemon)
            for label, (_blocks, daemon) in served.items():
                if daemon is not None:
                    out[label].rss_mib[1] = daemon.rss_mib()
    if SCALE_JOB.name in only:
        # Round by round, each backstore in turn (set up afresh for its turn): rounds
        # of one backstore minutes before another's measured the host's drift as much
        # as the backstores (0.83x and 0.97x in two boots on the same code).
        for r in range(rounds):
            for k, (label, variant) in enumerate(backstores.items()):
                print(f"== {label}, {SCALE_LUNS} LUNs, round {r + 1}/{rounds}", flush=True)
                with contextlib.ExitStack() as stack:
                    rels, daemon = setup(stack, cfs, label, variant, str(k), SCALE_LUNS,
                                         SCALE_SIZE)  # fmt: skip
                    blocks = export(stack, cfs, rels, SCALE_SIZE)
                    run(label, SCALE_JOB, blocks, daemon)
                    if daemon is not None:
                        out[label].rss_mib[SCALE_LUNS] = daemon.rss_mib()
    return out


def table(results: dict[str, Backstore]) -> str:
    labels = [lab for lab in results if lab.startswith(OURS)]
    labels += [lab for lab in (RUNNER, KERNEL) if lab in results]
    # Every variant of ours against tcmu-runner, the main one against LIO too.
    pairs = [(lab, RUNNER) for lab in labels if lab.startswith(OURS) and RUNNER in results]
    if OURS in results and KERNEL in results:
        pairs.append((OURS, KERNEL))
    head = ("| job | " + " | ".join(f"{lab} IOPS" for lab in labels)
            + "".join(f" | {a} / {b}" for a, b in pairs)
            + " | " + " | ".join(f"{lab} p50/p99 µs" for lab in labels)
            + " | " + " | ".join(f"{lab} CPU%/kIOPS" for lab in labels if lab != KERNEL)
            + " |")
    ncols = 1 + 2 * len(labels) + len(pairs) + len([lab for lab in labels if lab != KERNEL])
    rows = [head, "|" + "---|" * ncols]
    for job in (*JOBS, SCALE_JOB):
        if not all(job.name in results[lab].jobs for lab in labels):
            continue
        figs = [results[lab].jobs[job.name] for lab in labels]
        cells = [f"{f.iops:.0f}" for f in figs]
        cells += [f"{results[a].jobs[job.name].iops / results[b].jobs[job.name].iops:.2f}"
                  if results[b].jobs[job.name].iops else "-" for a, b in pairs]
        cells += [f"{f.p50_us:.0f} / {f.p99_us:.0f}" for f in figs]
        cells += [f"{f.cpu_pct_per_kiops:.1f}" if f.cpu_pct_per_kiops else "-"
                  for lab, f in zip(labels, figs, strict=True) if lab != KERNEL]
        rows.append(f"| {job.name} | " + " | ".join(cells) + " |")
    rss = [f"{lab}: {b.rss_mib.get(1, float('nan')):.0f} MiB with 1 LUN, "
           f"{b.rss_mib.get(SCALE_LUNS, float('nan')):.0f} MiB with {SCALE_LUNS}"
           + (f" ({(b.rss_mib[SCALE_LUNS] - b.rss_mib[1]) / (SCALE_LUNS - 1):.1f} MiB per "
              "extra LUN)" if 1 in b.rss_mib and SCALE_LUNS in b.rss_mib else "")
           for lab, b in results.items() if b.rss_mib]
    return "\n".join(rows) + ("\n\nRSS: " + "; ".join(rss) if rss else "")


# -- the modes -----------------------------------------------------------------------


def serve(names: list[str], variant: Variant) -> int:
    """The measured daemon: one DeviceRunner per named device until SIGTERM."""
    from tcmu_scst.handler import Handler
    from tcmu_scst.service import registry
    from tcmu_scst.service.device import serve_in_thread

    # Threads inherit the mask: SIGTERM waits for sigwait below, nobody else takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    devices = []
    for name in names:
        info = next(i for i in uio.list_devices() if i.name.device == name)
        devices.append((uio.UioDevice(info), registry.open_handler(info.name.config)))
    stops: list[Callable[[], None]] = []
    if variant.shared:
        from tcmu_scst.service.device import DeviceRunner
        from tcmu_scst.service.ringloop import SharedRingLoop

        loop = SharedRingLoop()
        if variant.spin_us is not None:
            loop.spin = variant.spin_us / 1e6
        thread = threading.Thread(target=loop.run, name="ring-shared", daemon=True)
        thread.start()

        def leave(runner: DeviceRunner, port: uio.UioDevice, handler: Handler) -> None:
            loop.remove(runner)
            runner.close()
            handler.close()
            port.close()

        def end() -> None:
            loop.stop()
            thread.join(30)

        for port, handler in devices:
            runner = DeviceRunner(port, handler, threads=variant.threads)
            loop.add(runner)
            stops.append(functools.partial(leave, runner, port, handler))
        stops.append(end)
    else:
        for (port, handler), name in zip(devices, names, strict=True):
            runner, stop = serve_in_thread(port, handler, variant.threads, name)
            runner.try_inline = variant.try_inline
            stops.append(stop)
    try:
        from tcmu_scst.kernel import fastpath
    except ImportError:  # a checkout from before the compiled path
        compiled = False
    else:
        compiled = fastpath.ACCELERATOR is not None
    if compiled != variant.compiled:
        print(f"vdisk_bench: {variant.name}: the compiled path is "
              f"{'on' if compiled else 'off (not built in ' + SRC + '?)'}", file=sys.stderr)
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM})
    for stop in stops:
        stop()
    return 0


def in_guest(args: argparse.Namespace) -> int:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    # A tmpfs of our own: room for every backstore's image at once, whatever /run's size.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2304m", "vdisk-bench", str(WORK_DIR)],
                   check=True)
    try:
        return _in_guest(args)
    finally:
        subprocess.run(["umount", str(WORK_DIR)], check=False)


def _in_guest(args: argparse.Namespace) -> int:
    only = {j.name for j in (*JOBS, SCALE_JOB)}
    if args.quick:
        only = {JOBS[0].name, SCALE_JOB.name}
    if args.jobs:
        only = {name for name in only
                if any(part.strip() in name for part in args.jobs.split(","))}
    labels = [lab for lab in args.only.split(",") if lab]
    if RUNNER in labels and shutil.which("tcmu-runner") is None:
        print("tcmu-runner is not installed: apt-get install tcmu-runner (on the host)")
        labels.remove(RUNNER)
    profile_dir = args.out if args.profile and args.out.is_dir() else None
    variants = [Variant.parse(v) for v in args.variants.split(",") if v]
    backstores: dict[str, Variant] = {}
    for lab in labels:
        if lab != OURS:
            backstores[lab] = variants[0]
            continue
        for i, variant in enumerate(variants):
            backstores[OURS if i == 0 else f"{OURS}:{variant.name}"] = variant
    results = measure(backstores, args.runtime, only, args.rounds, profile_dir, args.pick)
    stamp = datetime.datetime.now(datetime.UTC)
    text = table(results)
    header = (f"# vdisk benchmark {stamp:%Y-%m-%d %H:%M} UTC\n\n"
              f"`python3 bench/vdisk_bench.py --runtime {args.runtime} --rounds "
              f"{args.rounds} --pick {args.pick} --variants {args.variants}`; "
              f"tcmu-scst = variant "
              f"{variants[0].name}; guest kernel "
              f"{platform.release()}, {os.cpu_count()} vCPUs "
              f"(QEMU TCG), load {os.getloadavg()[0]:.1f}; fio libaio O_DIRECT via tcm_loop, "
              f"backing on tmpfs, {args.runtime} s per job after 1 s ramp, "
              f"{args.pick} of {args.rounds} round(s) by IOPS (every round in the .json), "
              "backstores taking turns job by job.\n\n")
    print("\n" + text)
    if args.out.is_dir():
        name = f"vdisk-bench-{stamp:%Y-%m-%d-%H%M}"
        (args.out / f"{name}.md").write_text(header + text + "\n")
        (args.out / f"{name}.json").write_text(
            json.dumps({lab: asdict(b) for lab, b in results.items()}, indent=2))
        print(f"\nwritten to {args.out}/{name}.md")
    return 0


def on_host(args: argparse.Namespace, argv: list[str]) -> int:
    """Boot the lab guest once (under the shared VM lock) and run the bench in it."""
    results = REPO / "bench" / "results"
    # Quoted: a --jobs list with spaces ("4k randread QD1") reached the guest split into
    # words, and only its first word ("4k", "8") was taken as the filter.
    inner = shlex.join(["python3", "bench/vdisk_bench.py", "--in-guest", "--out", "/results",
                        *argv])
    cmd = [sys.executable, "-m", "tcmu_scst", "lab", "--results", str(results),
           "--timeout", "1800", "--run", inner]
    with open(VM_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run(cmd, cwd=REPO).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runtime", type=int, default=10, help="seconds per fio job")
    parser.add_argument("--variants", default="t2-shared",
                        help="how our daemon serves, comma list; the first is 'tcmu-scst': "
                        "tN-shared = the daemon's default (one ring thread for every vdisk, "
                        "N worker threads per device, I/O tried on the ring thread first); "
                        "tN = a ring thread per device (--ring-thread-per-device); "
                        "tN-workers = that, with every I/O on a worker")
    parser.add_argument("--only", default=f"{OURS},{RUNNER},{KERNEL}",
                        help="backstores to run (comma list)")
    parser.add_argument("--quick", action="store_true",
                        help="only 4k randread QD32 and the scale job")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run each job this many times on each backstore")
    parser.add_argument("--pick", choices=("median", "best"), default="median",
                        help="which round of each job the table shows (by IOPS): the "
                        "median (the lower middle one of an even count) or the best")
    parser.add_argument("--jobs", default="",
                        help="only the jobs whose name contains one of these (comma list)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy our serving process during each job (profile-*.txt)")
    parser.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("/results"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.names, Variant.parse(args.variants))
    if args.in_guest:
        return in_guest(args)
    return on_host(args, argv)


if __name__ == "__main__":
    sys.exit(main())
