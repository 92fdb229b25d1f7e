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
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.dbroot import kernel_threads_root
from tcmu_scst.service import control
from tests.kernel.daemon_rig import (
    DaemonProcess,
    MiB,
    assert_no_hang_since,
    daemon_argv,
    export,
    kernel_log,
    no_hung_tasks,
    user_backstore,
    vdisk_config,
    verified_writes,
)


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
    assert_no_hang_since(log_before)
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
