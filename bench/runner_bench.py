#!/usr/bin/env python3
"""µs per command of the daemon's whole data path on the host (not a test).

The ring emulator plays the kernel; a :class:`DeviceRunner` with the real vdisk FILEIO
handler (a file on /dev/shm, so every READ/WRITE is answered on the ring thread as in
the VM benchmark's tmpfs) serves it exactly as the daemon does: ``drain()`` takes the
batch off the ring, dispatches it, posts the results and writes one notification
(here to a pipe, the syscall the UIO fd costs without the kernel's own work). Only
``drain()`` is timed; the emulator's producing and collecting are not, as in
production the kernel does them. The figure is the ring thread's CPU per command,
the proxy for the VM benchmark's CPU per 1,000 IOPS that needs no VM. Commands
handed to the workers (1 MiB ones) are timed until the last is posted: wall time
per command then, with the workers' copies running in parallel.

The "QD1 loop" job plays one initiator at queue depth 1 against the daemon's
shared ring loop (service.ringloop) on its own thread: each command is announced
through a pipe standing in for the UIO event, and the next one is submitted after
the notify. It reports the ring thread's CPU per command (from
/proc/self/task/TID/schedstat: the wakeup, the syscalls and every opcode between
the event and the notify) and the round trip: the whole per-wakeup cost that
batching hides at depth 32.

Usage: PYTHONPATH=. python3 bench/runner_bench.py [--commands N] [--batch 32] [--profile OUT]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time

from tcmu_scst.handlers.vdisk import VdiskHandler
from tcmu_scst.handlers.vdisk_params import VdiskParams
from tcmu_scst.service.device import DeviceRunner
from tcmu_scst.service.ringloop import SharedRingLoop
from tcmu_scst.testing.ring_emulator import RingEmulator

FILE_SIZE = 64 << 20


class PipePort:
    """A RingPort whose notify is one write(2), like the UIO fd's."""

    def __init__(self, emu: RingEmulator) -> None:
        self.map = emu.map
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.posted = threading.Condition()

    def fileno(self) -> int:
        return self._r

    def read_event(self) -> int | None:
        return None

    def notify(self) -> None:
        os.write(self._w, b"\0\0\0\0")
        try:
            os.read(self._r, 64)  # (untimed in the kernel; here a second syscall, cheap)
        except BlockingIOError:
            pass  # another thread's notify read both
        with self.posted:  # wakes the bench's wait for the workers' completions
            self.posted.notify_all()

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


class EventPort:
    """A RingPort with a UIO-like event: a pipe the initiator writes, the loop
    polls and reads; notify writes another pipe the initiator waits on."""

    def __init__(self, emu: RingEmulator) -> None:
        self.map = emu.map
        self.event_r, self.event_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.done_r, self.done_w = os.pipe2(os.O_CLOEXEC)

    def fileno(self) -> int:
        return self.event_r

    def read_event(self) -> int | None:
        try:
            return int.from_bytes(os.read(self.event_r, 4), "little")
        except BlockingIOError:
            return None

    def notify(self) -> None:
        os.write(self.done_w, b"\0\0\0\0")

    def close(self) -> None:
        for fd in (self.event_r, self.event_w, self.done_r, self.done_w):
            os.close(fd)


def cdb(opcode: int, lba: int, blocks: int) -> bytes:
    """READ(10) or WRITE(10)."""
    return bytes([opcode, 0, *lba.to_bytes(4, "big"), 0, *blocks.to_bytes(2, "big"), 0])


def run(kind: str, total: int, batch: int, block: int, path: str) -> float:
    """µs of drain() per command."""
    emu = RingEmulator(cmdr_size=1 << 20, data_size=max(batch * block * 2, 1 << 20),
                       police=False)
    port = PipePort(emu)
    handler = VdiskHandler(VdiskParams(name="rb", filename=path))
    runner = DeviceRunner(port, handler, threads=2)
    runner.start_workers()
    rng = random.Random(7)
    nblocks = FILE_SIZE // block
    payload = os.urandom(block)
    spent = 0.0
    done = 0
    try:
        while done < total:
            for _ in range(batch):
                lba = rng.randrange(nblocks) * (block // 512)
                if kind == "read":
                    emu.submit(cdb(0x28, lba, block // 512), data_in_len=block)
                elif kind == "write":
                    emu.submit(cdb(0x2A, lba, block // 512), data_out=payload)
                else:
                    emu.submit(bytes(6))  # TEST UNIT READY
            t0 = time.perf_counter()
            runner.drain()
            target = done + batch
            with port.posted:  # some went to the workers: until the last notify
                port.posted.wait_for(lambda t=target: runner.stats.commands >= t, timeout=10)
            spent += time.perf_counter() - t0
            got = emu.handle_completions()
            if len(got) != batch or any(c.status for c in got):
                raise SystemExit(f"{kind}: {len(got)} completions of {batch}, or a failure")
            emu.completions.clear()
            done += batch
    finally:
        runner.finish()
        runner.close()
        handler.close()
        port.close()
    return 1e6 * spent / done


def run_loop_qd1(kind: str, total: int, path: str) -> tuple[float, float]:
    """(ring thread CPU µs, round trip µs) per 4k command at queue depth 1."""
    emu = RingEmulator(cmdr_size=1 << 20, data_size=1 << 20, police=False)
    port = EventPort(emu)
    handler = VdiskHandler(VdiskParams(name="rb", filename=path))
    runner = DeviceRunner(port, handler, threads=2)
    loop = SharedRingLoop()
    thread = threading.Thread(target=loop.run, name="ring-loop", daemon=True)
    thread.start()
    loop.add(runner)
    stat = f"/proc/self/task/{thread.native_id}/schedstat"

    def cpu_ns() -> int:
        with open(stat) as f:
            return int(f.read().split()[0])

    rng = random.Random(7)
    payload = os.urandom(4096)
    opcode = 0x28 if kind == "read" else 0x2A
    cdbs = [cdb(opcode, rng.randrange(FILE_SIZE // 4096) * 8, 8) for _ in range(total)]
    try:
        cpu0, t0 = cpu_ns(), time.perf_counter()
        for one in cdbs:
            if kind == "read":
                emu.submit(one, data_in_len=4096)
            else:
                emu.submit(one, data_out=payload)
            os.write(port.event_w, b"\1\0\0\0")
            os.read(port.done_r, 4)
            got = emu.handle_completions()
            if len(got) != 1 or got[0].status:
                raise SystemExit(f"{kind} QD1 loop: {got!r}")
            emu.completions.clear()
        cpu, wall = cpu_ns() - cpu0, time.perf_counter() - t0
    finally:
        loop.remove(runner)
        loop.stop()
        thread.join()
        loop.close()
        runner.close()
        handler.close()
        port.close()
    return cpu / 1e3 / total, 1e6 * wall / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--profile", help="cProfile the 4k reads into this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        path = os.path.join(tmp, "rb.img")
        with open(path, "wb") as f:
            f.write(os.urandom(FILE_SIZE))
        if args.profile:
            import cProfile

            cProfile.runctx("run('read', args.commands, args.batch, 4096, path)",
                            globals(), {"args": args, "path": path, "run": run},
                            args.profile)
            return
        jobs = [("no-op (TUR)", "noop", 4096, args.batch), ("4k read", "read", 4096, args.batch),
                ("4k write", "write", 4096, args.batch),
                ("4k read QD1", "read", 4096, 1),
                ("1M read QD4", "read", 1 << 20, 4), ("1M write QD4", "write", 1 << 20, 4)]
        for label, kind, block, batch in jobs:
            n = args.commands if block == 4096 else max(args.commands // 50, 200)
            # Best of three rounds: the host is shared.
            best = min(run(kind, n, batch, block, path) for _ in range(3))
            print(f"{label:<14} batch {batch:>2}: {best:8.2f} µs per command", flush=True)
        for kind in ("read", "write"):
            # Median of five rounds: one round trip needs two thread wakeups.
            rounds = sorted(run_loop_qd1(kind, max(args.commands // 5, 2000), path)
                            for _ in range(5))
            cpu, wall = rounds[2]
            print(f"4k {kind:<5} QD1 loop: {cpu:8.2f} µs ring-thread CPU per command "
                  f"(round trip {wall:.2f} µs)", flush=True)


if __name__ == "__main__":
    main()
