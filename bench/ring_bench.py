#!/usr/bin/env python3
"""Ring engine throughput, side by side with the floor for Python (not a test).

1. no-op: commands/s through emulator + engine with a handler that does nothing
   (TEST UNIT READY), both with the emulator's cost and for the engine alone.
2. 4 KiB random reads served from a page-cached file by ``os.preadv`` straight into
   the ring's data area, compared with a bare Python loop issuing the same
   ``preadv`` calls into one buffer. The ratio engine/bare is the number to watch
   (issue target: >= 0.5). The emulator plays the kernel; its own cost is excluded
   from the engine's time because in production the kernel does that work.

Usage: python3 bench/ring_bench.py [--commands N] [--file-mb M]
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import tempfile
import time

from tcmu_scst.command import Result
from tcmu_scst.kernel.ring import Ring
from tcmu_scst.testing.ring_emulator import RingEmulator

BLOCK = 4096
BATCH = 32  # commands queued per kernel notification (a QD32 workload)


def bench_noop(total: int) -> tuple[float, float]:
    emu = RingEmulator(cmdr_size=1 << 20, data_size=1 << 20, police=False)
    ring = Ring(emu.map, lambda: None)
    tur = bytes(6)
    good = Result()
    engine = 0.0
    start = time.perf_counter()
    done = 0
    while done < total:
        for _ in range(BATCH):
            emu.submit(tur)
        t0 = time.perf_counter()
        for cmd in ring.fetch():
            ring.complete(cmd, good, notify=False)  # type: ignore[arg-type]
        ring.flush()
        engine += time.perf_counter() - t0
        emu.handle_completions()
        done += BATCH
    wall = time.perf_counter() - start
    emu.completions.clear()
    return done / wall, done / engine


def make_file(path: str, size: int) -> None:
    with open(path, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)
    with open(path, "rb") as f:  # warm the page cache
        while f.read(1 << 22):
            pass


def bench_bare(fd: int, offsets: list[int]) -> float:
    buf = mmap.mmap(-1, BLOCK)
    view = [memoryview(buf)]
    start = time.perf_counter()
    for off in offsets:
        os.preadv(fd, view, off)
    elapsed = time.perf_counter() - start
    view[0].release()
    buf.close()
    return len(offsets) / elapsed


def bench_engine(fd: int, offsets: list[int]) -> float:
    emu = RingEmulator(cmdr_size=1 << 20, data_size=BATCH * BLOCK * 2, police=False)
    ring = Ring(emu.map, lambda: None)
    engine = 0.0
    for i in range(0, len(offsets), BATCH):
        for off in offsets[i : i + BATCH]:
            lba = off // 512
            cdb = bytes([0x28, 0]) + lba.to_bytes(4, "big") + bytes([0, 0, 8, 0])
            emu.submit(cdb, data_in_len=BLOCK)
        t0 = time.perf_counter()
        for cmd in ring.fetch():
            # What a read handler does: LBA from the CDB, preadv into the iovecs.
            lba = int.from_bytes(cmd.cdb[2:6], "big")  # type: ignore[union-attr]
            n = cmd.data.preadv(fd, lba * 512)  # type: ignore[union-attr]
            ring.complete(cmd, Result(0, b"", n), notify=False)  # type: ignore[arg-type]
        ring.flush()
        engine += time.perf_counter() - t0
        emu.handle_completions()
        emu.completions.clear()
    return len(offsets) / engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--file-mb", type=int, default=64)
    args = parser.parse_args()

    wall_rate, engine_rate = bench_noop(args.commands)
    print(
        f"no-op commands/s: {wall_rate:,.0f} (emulator + engine), "
        f"{engine_rate:,.0f} (engine only)"
    )

    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        path = os.path.join(tmp, "bench.img")
        make_file(path, args.file_mb << 20)
        fd = os.open(path, os.O_RDONLY)
        rng = random.Random(42)
        nblocks = (args.file_mb << 20) // BLOCK
        offsets = [rng.randrange(nblocks) * BLOCK for _ in range(args.commands)]
        # Interleave the two measurements twice so neither gets a warmer cache.
        bare1 = bench_bare(fd, offsets)
        eng1 = bench_engine(fd, offsets)
        bare2 = bench_bare(fd, offsets)
        eng2 = bench_engine(fd, offsets)
        os.close(fd)
    bare = max(bare1, bare2)
    eng = max(eng1, eng2)
    print(f"4 KiB random reads/s: bare preadv loop {bare:,.0f}; engine + preadv {eng:,.0f}")
    print(f"ratio engine/bare: {eng / bare:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
