"""Nothing hangs, nothing is lost: the product daemon under faults, in the lab guest.

Each test runs ``tcmu-scst daemon`` as a process (as systemd would) serving a vdisk on
a file, exported through tcm_loop with the product's kernel.lio / kernel.fabrics:

* a second daemon refuses to start (one line, non-zero) and the first keeps serving;
* SIGKILL 20 times under a checksummed random-write load (fio crc32c, 4k, QD16), a
  new daemon each time: the writer sees no error, every block verifies, no task is
  left in D state and the kernel logs no lockup;
* SIGSTOP for longer than cmd_time_out, then SIGCONT: the initiator recovers;
* PERSISTENT RESERVE OUT works on a host where nobody made LIO's PR directory (the
  lab's init makes it; the test removes it and lets the daemon's start make it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.dbroot import kernel_threads_root
from tcmu_scst.kernel.fabrics import LoopbackTpg
from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions
from tcmu_scst.service import control

MiB = 1 << 20


@dataclass
class Lun:
    block: str
    sg: str


def daemon_argv(tmp: Path, sock: Path) -> list[str]:
    """The default lock file (/run/tcmu-scst/daemon.lock): one daemon per kernel."""
    return [
        sys.executable, "-m", "tcmu_scst.cli", "daemon", "--threads", "2",
        "--control-socket", str(sock), "--no-hotplug",
        "--state-file", str(tmp / f"{sock.stem}-state.json"),
        "--trace-file", str(tmp / f"{sock.stem}-trace.json"),
    ]


class DaemonProcess:
    """``tcmu-scst daemon`` in a child process, with its control socket under tmp."""

    def __init__(self, tmp: Path) -> None:
        self.sock = tmp / "ctl.sock"
        self.log = tmp / "daemon.log"
        self.argv = daemon_argv(tmp, self.sock)
        self.env = {**os.environ, "PYTHONPATH": os.getcwd()}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not control.daemon_running(self.sock):
            assert self.proc.poll() is None, f"daemon exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "daemon did not come up"
            time.sleep(0.1)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                assert self.proc.wait(90) == 0, self.log.read_text()[-2000:]
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()


def vdisk_config(tmp: Path, name: str, size: int) -> str:
    image = tmp / f"{name}.img"
    with open(image, "wb") as f:
        f.truncate(size)
    return to_dev_config(VdiskParams(name=name, filename=str(image), write_through=True))


def export(stack: contextlib.ExitStack, backstore: UserBackstore) -> Lun:
    """LUN 0 of a new tcm_loop target; waits for its sd and sg nodes."""
    cfs = backstore.cfs
    tpg = LoopbackTpg.create(cfs)
    stack.callback(tpg.delete)
    tpg.add_lun(0, backstore)
    device = Path("/sys/class/scsi_device") / tpg.hctl(0) / "device"
    deadline = time.monotonic() + 30
    while True:
        blocks = sorted(p.name for p in (device / "block").glob("*"))
        sgs = sorted(p.name for p in (device / "scsi_generic").glob("*"))
        if blocks and sgs and Path(f"/dev/{blocks[0]}").exists():
            return Lun(f"/dev/{blocks[0]}", f"/dev/{sgs[0]}")
        assert time.monotonic() < deadline, f"no sd/sg node for {tpg.hctl(0)}"
        time.sleep(0.2)


def user_backstore(
    stack: contextlib.ExitStack, name: str, dev_config: str, size: int, **options: int | None
) -> UserBackstore:
    opts = UserBackstoreOptions(dev_config=dev_config, dev_size=size, **options)  # type: ignore[arg-type]
    backstore = UserBackstore.create(Configfs(), name, opts)
    stack.callback(backstore.delete)
    return backstore


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path)
    yield d
    d.stop()


def no_hung_tasks() -> str:
    hung = subprocess.run(["sh", "-c", "grep -l 'D (disk sleep)' /proc/[0-9]*/status || true"],
                          capture_output=True, text=True)
    return hung.stdout.strip()


def kernel_log() -> list[str]:
    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()


def verified_writes(
    device: str, size: int, rate_iops: int, fault: Callable[[], None], times: int
) -> str:
    """fio's checksummed random writes (4k, QD16) over ``device`` while ``fault`` runs
    ``times`` times; the writer must see no error and a verify pass must find every
    block intact. Returns the writer's output."""
    job = [
        "fio", "--name=faults", f"--filename={device}", "--rw=randwrite", "--bs=4k",
        "--iodepth=16", "--ioengine=libaio", "--direct=1", f"--size={size}",
        "--verify=crc32c", "--verify_state_save=0", "--randseed=1234",
    ]
    writer = subprocess.Popen([*job, "--do_verify=0", f"--rate_iops={rate_iops}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = 0
    try:
        while done < times and writer.poll() is None:
            fault()
            done += 1
        out, _ = writer.communicate(timeout=600)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert done == times, f"fio finished after {done} faults: make the job longer\n{out}"
    assert writer.returncode == 0, out
    assert not re.search(r"err=\s*[1-9]", out), out
    verify = subprocess.run([*job, "--verify_only"], capture_output=True, text=True,
                            timeout=600)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return out


LOCKUP = re.compile(r"blocked for more than|soft lockup|hard LOCKUP|BUG:|hung_task|Oops")


def test_a_second_daemon_refuses_and_the_first_keeps_serving(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    daemon.start()
    with contextlib.ExitStack() as stack:
        bs = user_backstore(stack, "single", vdisk_config(tmp_path, "single", 16 * MiB), 16 * MiB)
        lun = export(stack, bs)
        pattern = os.urandom(MiB)
        with open(lun.block, "r+b", buffering=0) as f:
            f.write(pattern)
        # Same lock (the default one), another control socket: it must not even start.
        second = subprocess.run(daemon_argv(tmp_path, tmp_path / "second.sock"),
                                env=daemon.env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another tcmu-scst daemon" in lines[0], second.stderr
        assert not (tmp_path / "second.sock").exists()
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert control.ControlClient(daemon.sock).ping().pid == daemon.proc.pid
        dropped = Path("/proc/sys/vm/drop_caches")
        dropped.write_text("3\n")
        with open(lun.block, "rb", buffering=0) as f:
            assert f.read(MiB) == pattern
        with open(lun.block, "r+b", buffering=0) as f:
            f.seek(4 * MiB)
            f.write(pattern)
            os.fsync(f.fileno())


def test_sigkill_twenty_times_under_verified_random_writes(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    size = 32 * MiB
    log_before = len(kernel_log())
    daemon.start()
    with contextlib.ExitStack() as stack:
        bs = user_backstore(stack, "crash20", vdisk_config(tmp_path, "crash20", size), size)
        lun = export(stack, bs)

        def kill_and_restart() -> None:
            time.sleep(0.3)  # the restarted daemon serves a while
            daemon.kill()
            time.sleep(0.2)  # commands pile up in the ring with nobody serving it
            daemon.start()

        # Commands in the ring at each restart go back as BUSY (reset_ring) and sd
        # retries them: the writer sees no error.
        out = verified_writes(lun.block, size, 60, kill_and_restart, 20)
    assert no_hung_tasks() == ""
    new = kernel_log()[log_before:]
    assert not [line for line in new if LOCKUP.search(line)], "\n".join(new[-40:])
    assert daemon.starts == 21
    print(f"20 kills, {daemon.starts} daemon starts; fio:\n{out[-1500:]}")


def test_sigstop_longer_than_cmd_time_out_then_the_initiator_recovers(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    size = 16 * MiB
    daemon.start()
    with contextlib.ExitStack() as stack:
        bs = user_backstore(stack, "stopped", vdisk_config(tmp_path, "stopped", size), size,
                            cmd_time_out=3)
        lun = export(stack, bs)
        before = os.urandom(MiB)
        with open(lun.block, "r+b", buffering=0) as f:
            f.write(before)
        daemon.signal(signal.SIGSTOP)
        try:
            # I/O while nobody serves the ring: the kernel times it out (cmd_time_out),
            # sd retries, and the writer may get an error, but it must return.
            stalled = subprocess.Popen(
                ["dd", "if=/dev/zero", f"of={lun.block}", "bs=4k", "count=1", "seek=1024",
                 "oflag=direct", "status=none"], stderr=subprocess.PIPE, text=True)
            time.sleep(8)  # > 2 x cmd_time_out
        finally:
            daemon.signal(signal.SIGCONT)
        stalled.communicate(timeout=120)
        # Recovered: reads see the old data, writes land, the daemon is still the same.
        after = os.urandom(MiB)
        with open(lun.block, "r+b", buffering=0) as f:
            assert f.read(MiB) == before
            f.seek(8 * MiB)
            f.write(after)
            os.fsync(f.fileno())
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        with open(lun.block, "rb", buffering=0) as f:
            f.seek(8 * MiB)
            assert f.read(MiB) == after
        assert daemon.proc is not None and daemon.proc.poll() is None and daemon.starts == 1
    assert no_hung_tasks() == ""


def sg_persist(sg: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sg_persist", *args, sg], capture_output=True, text=True, timeout=60)


def test_persistent_reserve_out_without_the_labs_pr_directory(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    cfs = Configfs()
    dbroot = cfs.read("dbroot").strip()
    metadata = kernel_threads_root() / dbroot.lstrip("/")
    saved = metadata.with_name(metadata.name + ".lab")
    if metadata.exists():
        metadata.rename(saved)  # what the lab's init made: gone, like on a bare host
    try:
        # The daemon's start makes <dbroot>/pr and alua where the kernel looks.
        daemon.start()
        assert (metadata / "pr").is_dir() and (metadata / "alua").is_dir()
        with contextlib.ExitStack() as stack:
            size = 16 * MiB
            bs = user_backstore(stack, "pr", vdisk_config(tmp_path, "pr", size), size)
            lun = export(stack, bs)
            # Without them (a host where nobody made them), the kernel fails PR OUT.
            shutil.rmtree(metadata)
            bare = sg_persist(lun.sg, "--out", "--register", "--param-sark=0x1")
            assert bare.returncode != 0, bare.stdout
            assert "not ready" in (bare.stdout + bare.stderr).lower(), bare.stderr
            daemon.stop()
            daemon.start()  # takes the device over again, and makes the directories
            assert (metadata / "pr").is_dir(), daemon.log.read_text()[-2000:]
            # The failed REGISTER above still registered 0x1 in memory (the kernel writes
            # the APTPL file after): take the key over whatever it is.
            steps = [
                ("--out", "--register-ignore", "--param-sark=0xabc"),
                ("--out", "--reserve", "--param-rk=0xabc", "--prout-type=1"),
                ("--in", "--read-keys"),
                ("--in", "--read-reservation"),
                ("--out", "--release", "--param-rk=0xabc", "--prout-type=1"),
                ("--out", "--register", "--param-rk=0xabc", "--param-sark=0"),
            ]
            outputs = []
            for step in steps:
                done = sg_persist(lun.sg, *step)
                assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"
                outputs.append(done.stdout)
            assert "0xabc" in outputs[2]
            assert "0xabc" in outputs[3] and "Write Exclusive" in outputs[3]
        # The boot unit's `config apply` makes them too (an empty config, once the test's
        # LUN and backstore are gone: nothing to change in LIO).
        shutil.rmtree(metadata)
        empty = tmp_path / "empty.conf"
        empty.write_text("")
        applied = subprocess.run(
            [sys.executable, "-m", "tcmu_scst.cli", "config", "apply", str(empty),
             "--state-file", str(tmp_path / "apply-state.json")],
            env=daemon.env, capture_output=True, text=True, timeout=120,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert (metadata / "pr").is_dir() and (metadata / "alua").is_dir()
    finally:
        if saved.exists():
            shutil.rmtree(metadata, ignore_errors=True)
            saved.rename(metadata)


def test_dev_config_reopens_under_verified_random_writes(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    """RECONFIG of dev_config swaps the handler while initiators write: the daemon
    stops taking commands, lets those in flight finish on the old handler, then swaps;
    none runs on a closed handler (EBADF, or I/O into a file that reused the fd)."""
    size = 32 * MiB
    image = tmp_path / "swap.img"
    with open(image, "wb") as f:
        f.truncate(size)
    configs = [
        to_dev_config(VdiskParams(name="swap", filename=str(image), write_through=wt))
        for wt in (True, False)
    ]
    daemon.start()
    with contextlib.ExitStack() as stack:
        bs = user_backstore(stack, "swap", configs[0], size)
        lun = export(stack, bs)
        swaps = iter(range(1, 11))

        def swap() -> None:
            time.sleep(0.7)
            bs.set_dev_config(configs[next(swaps) % 2])  # waits for the daemon's answer

        verified_writes(lun.block, size, 400, swap, 10)
        status = control.ControlClient(daemon.sock).status()
        [dev] = [d for d in status.devices if d.name == "swap"]
        assert dev.handler_failures == 0 and dev.dev_config == configs[0]
        assert daemon.starts == 1
    log = daemon.log.read_text()
    assert "reopened with" in log and "Bad file descriptor" not in log, log[-3000:]
