"""Eight LUNs at once under one daemon, in the lab guest (issue 14).

* Data-area pressure: 8 vdisks whose TCMU data area is 8 MiB each (``max_data_area_mb``)
  get fio's 1 MiB writes at QD32 all at once, 32 MiB in flight per LUN: the kernel
  parks what does not fit in its qfull queue. Nothing stalls, fio sees no error and
  its verify pass finds every block.
* Restart: the same 8 LUNs under fio's checksummed random writes (4k, QD16 over all
  eight) while the daemon is restarted (SIGTERM, then a new one) and killed (SIGKILL,
  then a new one). Probes on each LUN time how long its I/O stood still; the test
  prints the figures and asserts only that every LUN resumed, the writer saw no error
  and every block verifies.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import re
import subprocess
import threading
import time
from pathlib import Path

from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config
from tests.kernel.daemon_rig import (
    DaemonProcess,
    Lun,
    MiB,
    assert_no_hang_since,
    export,
    kernel_log,
    user_backstore,
    verified_writes,
)

LUNS = 8


def eight_luns(stack: contextlib.ExitStack, tmp: Path, size: int, **options: int) -> list[Lun]:
    luns = []
    for index in range(LUNS):
        image = tmp / f"load{index}.img"
        with open(image, "wb") as f:
            f.truncate(size)
        config = to_dev_config(VdiskParams(name=f"load{index}", filename=str(image)))
        luns.append(export(stack, user_backstore(stack, f"load{index}", config, size, **options)))
    return luns


def test_eight_luns_1mib_writes_at_qd32_with_a_small_data_area(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    log_before = len(kernel_log())
    daemon.start()
    with contextlib.ExitStack() as stack:
        luns = eight_luns(stack, tmp_path, 48 * MiB, max_data_area_mb=8)
        job = ["fio", "--ioengine=libaio", "--direct=1", "--bs=1M", "--iodepth=32",
               "--rw=randwrite", "--size=32M", "--verify=crc32c", "--verify_fatal=1",
               "--verify_state_save=0", "--randseed=14", "--group_reporting"]
        for index, lun in enumerate(luns):  # one job per LUN: all eight at once
            job += [f"--name=lun{index}", f"--filename={lun.block}"]
        done = subprocess.run(job, capture_output=True, text=True, timeout=900)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-3000:]
        assert not re.search(r"err=\s*[1-9]", out), out[-3000:]
        assert "verify" not in done.stderr.lower(), done.stderr[-2000:]
        assert daemon.proc is not None and daemon.proc.poll() is None and daemon.starts == 1
    assert_no_hang_since(log_before)
    print(f"8 LUNs x 32 MiB of 1 MiB writes at QD32, 8 MiB data areas:\n{out[-1200:]}")


class Probe(threading.Thread):
    """4 KiB O_DIRECT writes in a loop (every 50 ms) at ``offset`` of one LUN, outside
    fio's area, each completion timed."""

    def __init__(self, device: str, offset: int) -> None:
        super().__init__(daemon=True)
        self.device, self.offset = device, offset
        self.ends: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        page = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
        page.write(os.urandom(4096))
        fd = os.open(self.device, os.O_WRONLY | os.O_DIRECT)
        try:
            while not self.stop.is_set():
                try:
                    os.pwritev(fd, [page], self.offset)
                except OSError as err:
                    self.errors.append(f"{self.device}: {err}")
                self.ends.append(time.monotonic())
                time.sleep(0.05)
        finally:
            os.close(fd)
            page.close()

    def wait_for_a_write_after(self, moment: float, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ends or self.ends[-1] <= moment:
            assert time.monotonic() < deadline, f"{self.device}: no write completed after"
            time.sleep(0.05)

    def stall(self, since: float, until: float) -> float:
        """The longest time without a completed write between ``since`` and the first
        completion after ``until``: how long this LUN stood still."""
        ends = list(self.ends)
        window = [since] + [e for e in ends if since < e <= until]
        window += [e for e in ends if e > until][:1]
        return max(b - a for a, b in itertools.pairwise(window))


def test_restart_with_eight_luns_under_io_resumes_every_lun(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    log_before = len(kernel_log())
    daemon.start()
    with contextlib.ExitStack() as stack:
        luns = eight_luns(stack, tmp_path, 8 * MiB)
        probes = [Probe(lun.block, 6 * MiB) for lun in luns]
        for probe in probes:
            probe.start()
        windows: list[tuple[str, float, float]] = []
        kinds = iter(["SIGTERM + start", "SIGKILL + start"])

        def restart() -> None:
            time.sleep(2)  # I/O runs on all eight first
            kind = next(kinds)
            moment = time.monotonic()
            if kind.startswith("SIGTERM"):
                daemon.stop()
            else:
                daemon.kill()
            daemon.start()
            up = time.monotonic()
            for probe in probes:  # every LUN resumed: a write completed after the start
                probe.wait_for_a_write_after(up)
            windows.append((kind, moment, up))

        # fio over all eight block devices (4 MiB each), checksummed.
        devices = ":".join(lun.block for lun in luns)
        out = verified_writes(devices, LUNS * 4 * MiB, 250, restart, 2)
        for probe in probes:
            probe.stop.set()
        for probe in probes:
            probe.join(60)
        assert not [e for p in probes for e in p.errors], [e for p in probes for e in p.errors]
    assert daemon.starts == 3
    assert_no_hang_since(log_before)
    for kind, moment, up in windows:
        stalls = [p.stall(moment, up) for p in probes]
        print(f"restart ({kind}) with 8 LUNs under I/O: the new daemon served "
              f"{up - moment:.2f} s after the stop began; longest time without a completed "
              f"write per LUN: max {max(stalls):.2f} s ({', '.join(f'{s:.2f}' for s in stalls)})")
    print(out[-800:])
