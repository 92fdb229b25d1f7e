"""COMPARE AND WRITE is atomic against concurrent overlapping commands on worker threads."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tcmu_scst.command import GOOD, DataBuffer
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi.block import BlockDeviceConfig
from tcmu_scst.scsi.sbc import SbcDevice
from tcmu_scst.testing import scsi_harness as h
from tcmu_scst.testing.memory_backend import MemoryBackend
from tcmu_scst.testing.scsi_harness import run

BS = 512
PAUSE = 0.0005  # widens every window in which another thread could interleave


class SlowRecordingBackend(MemoryBackend):
    """Records (thread, operation, offset, length, start, end) on a logical clock."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.events: list[tuple[int, str, int, int, int, int]] = []
        self._clock = itertools.count()
        self._events_lock = threading.Lock()

    def _tick(self) -> int:
        with self._events_lock:
            return next(self._clock)

    def _record(self, name: str, offset: int, length: int, start: int) -> None:
        end = self._tick()
        with self._events_lock:
            self.events.append((threading.get_ident(), name, offset, length, start, end))

    def write(
        self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0, *, fua: bool = False
    ) -> None:
        start = self._tick()
        time.sleep(PAUSE)
        super().write(offset, length, buf, buf_offset, fua=fua)
        self._record("write", offset, length, start)

    def read_bytes(self, offset: int, length: int) -> bytes:
        start = self._tick()
        data = super().read_bytes(offset, length)
        self._record("read_bytes", offset, length, start)
        time.sleep(PAUSE)  # the gap between CAW's compare and its write
        return data


def violations(backend: SlowRecordingBackend, caw_threads: set[int]) -> int:
    """Writes by other threads that overlap a CAW's read..write window in time and space."""
    events = sorted(backend.events, key=lambda e: e[4])
    windows = []
    by_thread: dict[int, list[tuple[int, str, int, int, int, int]]] = {}
    for event in events:
        by_thread.setdefault(event[0], []).append(event)
    for thread in caw_threads:
        seq = by_thread.get(thread, [])
        for first, second in itertools.pairwise(seq):
            if first[1] == "read_bytes" and second[1] == "write":
                windows.append((thread, first[2], first[3], first[4], second[5]))
    count = 0
    for thread, offset, length, start, end in windows:
        for other in events:
            if other[0] == thread or other[1] != "write":
                continue
            overlap_space = other[2] < offset + length and offset < other[2] + other[3]
            overlap_time = other[4] < end and start < other[5]
            if overlap_space and overlap_time:
                count += 1
    return count


def _hammer(dev: SbcDevice, rounds: int) -> set[int]:
    """CAW threads increment a counter in blocks 0-1; writers hit block 1 and block 3."""
    caw_idents: set[int] = set()
    errors: list[str] = []

    def caw_worker() -> None:
        caw_idents.add(threading.get_ident())
        for _ in range(rounds):
            current = run(dev.execute, h.rw_cdb(op.READ_10, 0, 2), in_len=2 * BS).data
            value = (current[0] + 1) & 0xFF
            reply = run(dev.execute, h.compare_and_write(0, 2),
                        data_out=current + bytes([value]) * (2 * BS))
            if reply.status != GOOD and reply.sense.code != (0xE, 0x1D, 0x00):
                errors.append(f"CAW: {reply.result}")

    def write_worker(lba: int) -> None:
        for index in range(rounds):
            reply = run(dev.execute, h.rw_cdb(op.WRITE_10, lba, 1),
                        data_out=bytes([0x80 | index & 0x7F]) * BS)
            if reply.status != GOOD:
                errors.append(f"WRITE: {reply.result}")

    workers: list[Callable[[], None]] = [caw_worker, caw_worker, caw_worker,
                                         lambda: write_worker(1), lambda: write_worker(3)]
    threads = [threading.Thread(target=w) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    return caw_idents


def test_compare_and_write_excludes_overlapping_writes() -> None:
    backend = SlowRecordingBackend(64 * BS)
    dev = SbcDevice(BlockDeviceConfig(name="caw"), backend)
    caw_threads = _hammer(dev, rounds=25)
    windows = sum(1 for e in backend.events if e[1] == "read_bytes")
    assert windows >= 25  # the CAWs really ran
    assert violations(backend, caw_threads) == 0


@contextmanager
def _no_lock(start: int, end: int) -> Iterator[None]:
    yield


def test_the_checker_catches_a_missing_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the range lock the same workload shows interleaving: the test above can fail."""
    backend = SlowRecordingBackend(64 * BS)
    dev = SbcDevice(BlockDeviceConfig(name="caw"), backend)
    monkeypatch.setattr(dev._locks, "exclusive", _no_lock)
    monkeypatch.setattr(dev._locks, "shared", _no_lock)
    caw_threads = _hammer(dev, rounds=25)
    assert violations(backend, caw_threads) > 0


def test_concurrent_caw_increments_lose_nothing() -> None:
    backend = MemoryBackend(16 * BS)
    dev = SbcDevice(BlockDeviceConfig(name="counter"), backend)
    per_thread, threads_count = 40, 4

    def worker() -> None:
        done = 0
        while done < per_thread:
            current = run(dev.execute, h.rw_cdb(op.READ_10, 0, 1), in_len=BS).data
            counter = int.from_bytes(current[:4], "big")
            new = (counter + 1).to_bytes(4, "big") + bytes(BS - 4)
            if run(dev.execute, h.compare_and_write(0, 1), data_out=current + new).status == GOOD:
                done += 1

    threads = [threading.Thread(target=worker) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert int.from_bytes(backend.data[:4], "big") == per_thread * threads_count
