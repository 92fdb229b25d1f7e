"""The product daemon as a process in the lab guest, and what the fault tests share.

:class:`DaemonProcess` runs ``tcmu-scst daemon`` as systemd would (the default lock
file: one daemon per kernel); :func:`user_backstore` and :func:`export` make a TCMU
backstore and LUN 0 of a tcm_loop target for it; :func:`verified_writes` runs fio's
checksummed random writes while a fault is injected; :func:`no_hung_tasks`,
:func:`kernel_log` and :data:`LOCKUP` check the guest afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config
from tcmu_scst.kernel.configfs import Configfs
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


def assert_no_hang_since(log_before: int) -> None:
    """No task in D state now, and no lockup or hung-task line in the kernel log
    after its first ``log_before`` lines."""
    assert no_hung_tasks() == ""
    new = kernel_log()[log_before:]
    assert not [line for line in new if LOCKUP.search(line)], "\n".join(new[-40:])
