"""The per-device runner: real poll loop and worker threads over the emulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tcmu_scst.command import CHECK_CONDITION, GOOD, Command, DataBuffer, Result, TmrNotice
from tcmu_scst.errors import UioError
from tcmu_scst.handler import Handler
from tcmu_scst.kernel import abi
from tcmu_scst.service.device import DeviceRunner, Stats
from tcmu_scst.testing.emulator_port import EmulatorPort
from tcmu_scst.testing.ring_emulator import RingEmulator

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0])
TUR = bytes(6)
BOOM = bytes([0xC1]) + bytes(9)


class MemoryDisk(Handler):
    """A 512-byte-block disk in memory; READ/WRITE(10) on workers, the rest inline."""

    handler_name = "test"

    def __init__(self) -> None:
        self.blocks = bytearray(512 * 64)
        self.threads_seen: set[str] = set()
        self.tmrs: list[TmrNotice] = []
        self.gate = threading.Event()
        self.gate.set()

    def is_inline(self, cmd: Command) -> bool:
        return cmd.opcode not in (0x28, 0x2A)

    def handle(self, cmd: Command) -> Result | None:
        self.threads_seen.add(threading.current_thread().name)
        if cmd.opcode == 0xC1:
            raise RuntimeError("handler bug")
        if cmd.opcode in (0x28, 0x2A):
            self.gate.wait(5)
            lba = int.from_bytes(cmd.cdb[2:6], "big")
            n = int.from_bytes(cmd.cdb[7:9], "big") * 512
            if cmd.opcode == 0x28:
                cmd.data.write(self.blocks[lba * 512 : lba * 512 + n])
                return Result(data_in_len=n)
            self.blocks[lba * 512 : lba * 512 + n] = cmd.data.read(0, n)
        return Result()

    def on_tmr(self, notice: TmrNotice) -> None:
        self.tmrs.append(notice)


@pytest.fixture
def rig() -> Iterator[tuple[RingEmulator, MemoryDisk, DeviceRunner]]:
    emu = RingEmulator(cmdr_size=8192, data_size=256 * 1024)
    port = EmulatorPort(emu)
    handler = MemoryDisk()
    runner = DeviceRunner(port, handler, threads=3)
    loop = threading.Thread(target=runner.run, name="ring-loop")
    loop.start()
    yield emu, handler, runner
    runner.stop()
    loop.join(5)
    assert not loop.is_alive()
    runner.close()
    port.close()


def wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached")


def test_write_then_read_round_trip(rig: tuple[RingEmulator, MemoryDisk, DeviceRunner]) -> None:
    emu, handler, _runner = rig
    w = emu.submit(WRITE10[:5] + bytes([3]) + WRITE10[6:], data_out=b"Z" * 512)
    wait_for(lambda: any(c.cmd_id == w for c in emu.completions))
    r = emu.submit(READ10[:5] + bytes([3]) + READ10[6:], data_in_len=512)
    wait_for(lambda: len(emu.completions) == 2)
    assert emu.completion(r).data_in == b"Z" * 512
    assert any(name.startswith("tcmu-io-") for name in handler.threads_seen)


def test_inline_commands_do_not_wait_for_blocked_io(
    rig: tuple[RingEmulator, MemoryDisk, DeviceRunner],
) -> None:
    emu, handler, _runner = rig
    handler.gate.clear()  # disk I/O hangs
    emu.submit(READ10, data_in_len=512)
    t = emu.submit(TUR)
    wait_for(lambda: any(c.cmd_id == t for c in emu.completions))
    assert len(emu.completions) == 1  # the TUR overtook the blocked READ
    handler.gate.set()
    wait_for(lambda: len(emu.completions) == 2)
    assert not emu.broken and emu.problems == []


def test_handler_exception_becomes_internal_target_failure(
    rig: tuple[RingEmulator, MemoryDisk, DeviceRunner],
) -> None:
    emu, _handler, runner = rig
    cid = emu.submit(BOOM)
    wait_for(lambda: len(emu.completions) == 1)
    comp = emu.completion(cid)
    assert comp.status == CHECK_CONDITION
    assert (comp.sense[2], comp.sense[12], comp.sense[13]) == (0x04, 0x44, 0x00)
    assert runner.stats.handler_failures == 1


def test_many_concurrent_commands(rig: tuple[RingEmulator, MemoryDisk, DeviceRunner]) -> None:
    emu, _handler, runner = rig
    for i in range(40):
        lba = bytes([0x2A, 0, 0, 0, 0, i]) + bytes([0, 0, 1, 0])
        emu.submit(lba, data_out=bytes([i]) * 512)
    wait_for(lambda: len(emu.completions) == 40)
    for i in range(40):
        emu.submit(bytes([0x28, 0, 0, 0, 0, i, 0, 0, 1, 0]), data_in_len=512)
    wait_for(lambda: len(emu.completions) == 80)
    reads = [c for c in emu.completions if c.cdb[0] == 0x28]
    assert all(c.data_in == bytes([c.cdb[5]]) * 512 for c in reads)
    assert all(c.status == GOOD for c in emu.completions)
    assert runner.stats.commands == 80
    assert not emu.broken and emu.problems == []


def test_tmr_reaches_the_handler(rig: tuple[RingEmulator, MemoryDisk, DeviceRunner]) -> None:
    emu, handler, _runner = rig
    emu.submit_tmr(abi.TCMU_TMR_LUN_RESET, [])
    wait_for(lambda: handler.tmrs)
    assert handler.tmrs[0].tmr_type == abi.TCMU_TMR_LUN_RESET


def test_stop_drains_in_flight_commands() -> None:
    emu = RingEmulator(cmdr_size=8192, data_size=64 * 1024)
    port = EmulatorPort(emu)
    handler = MemoryDisk()
    handler.gate.clear()
    runner = DeviceRunner(port, handler, threads=2)
    loop = threading.Thread(target=runner.run)
    loop.start()
    emu.submit(READ10, data_in_len=512)
    wait_for(lambda: runner.ring.inflight == 1)
    runner.stop()
    time.sleep(0.05)
    assert loop.is_alive()  # waits for the worker holding the command
    handler.gate.set()
    loop.join(5)
    assert not loop.is_alive()
    assert len(emu.completions) == 1 and emu.completions[0].status == GOOD
    runner.close()
    port.close()


class AsyncDisk(MemoryDisk):
    """Completes reads later, from a thread of its own (like a pass-through queue)."""

    def handle(self, cmd: Command) -> Result | None:
        if cmd.opcode == 0x28:
            def later() -> None:
                time.sleep(0.05)
                cmd.data.write(b"L" * 512)
                cmd.complete(Result(data_in_len=512))

            threading.Thread(target=later).start()
            return None
        return super().handle(cmd)


def test_stats_sum_the_ring_threads_and_the_locked_counts() -> None:
    stats = Stats()
    read = Command(1, READ10, DataBuffer([memoryview(bytearray(512))]))
    odd = Command(2, READ10, DataBuffer([memoryview(bytearray(3000))]))
    failed = Result(CHECK_CONDITION, bytes(18))
    stats.count_inline([(read, Result(data_in_len=512)), (odd, failed)])
    stats.count(read, failed)
    stats.count(odd, Result())
    assert stats.commands == 4
    assert stats.errors == 2
    assert stats.size_histogram == {512: 2, 4096: 2}  # 3000 rounds up to 4096


def test_async_completion_is_delivered_and_counted() -> None:
    emu = RingEmulator(cmdr_size=8192, data_size=64 * 1024)
    port = EmulatorPort(emu)
    runner = DeviceRunner(port, AsyncDisk(), threads=1)
    loop = threading.Thread(target=runner.run)
    loop.start()
    try:
        cid = emu.submit(READ10, data_in_len=512)
        wait_for(lambda: any(c.cmd_id == cid for c in emu.completions))
        assert emu.completion(cid).data_in == b"L" * 512
        assert runner.stats.commands == 1
        assert runner.stats.size_histogram == {512: 1}
    finally:
        runner.stop()
        loop.join(5)
        runner.close()
        port.close()


class VanishingPort(EmulatorPort):
    """The uio device disappears: the next event read and notify fail with EIO."""

    def __init__(self, emulator: RingEmulator) -> None:
        super().__init__(emulator)
        self.vanished = False

    def read_event(self) -> int | None:
        if self.vanished:
            raise UioError("event read on /dev/uio9 failed: Input/output error")
        return super().read_event()

    def notify(self) -> None:
        if self.vanished:
            raise UioError("notify write on /dev/uio9 failed: Input/output error")
        super().notify()


def test_device_vanishing_stops_the_loop_cleanly() -> None:
    emu = RingEmulator(cmdr_size=8192, data_size=64 * 1024)
    port = VanishingPort(emu)
    runner = DeviceRunner(port, MemoryDisk(), threads=2)
    loop = threading.Thread(target=runner.run)
    loop.start()
    cid = emu.submit(TUR)
    wait_for(lambda: any(c.cmd_id == cid for c in emu.completions))
    port.vanished = True
    emu.submit(READ10, data_in_len=512)  # wakes the loop; the event read fails
    loop.join(5)
    assert not loop.is_alive()
    assert "Input/output error" in runner.gone
    runner.close()
    port.close()


def test_serve_in_thread_serves_and_stops_cleanly() -> None:
    from tcmu_scst.service.device import serve_in_thread

    emu = RingEmulator(cmdr_size=8192, data_size=64 * 1024)
    port = EmulatorPort(emu)
    handler = MemoryDisk()
    closed: list[str] = []
    handler.close = lambda: closed.append("handler")  # type: ignore[method-assign]
    runner, stop = serve_in_thread(port, handler, 2, "t")
    cid = emu.submit(TUR)
    wait_for(lambda: any(c.cmd_id == cid for c in emu.completions))
    assert runner.stats.commands == 1
    stop()
    assert closed == ["handler"]
    with pytest.raises(OSError):
        port.read_event()  # the port was closed by stop()


def test_thread_count_changes_while_serving(
    rig: tuple[RingEmulator, MemoryDisk, DeviceRunner],
) -> None:
    emu, handler, runner = rig

    def io_threads() -> set[str]:
        return {t.name for t in runner._workers if t.is_alive()}

    def read_all(count: int) -> None:
        done = len(emu.completions)
        for i in range(count):
            emu.submit(bytes([0x28, 0, 0, 0, 0, i, 0, 0, 1, 0]), data_in_len=512)
        wait_for(lambda: len(emu.completions) == done + count)

    wait_for(lambda: len(io_threads()) == 3)
    runner.set_threads(5)
    assert len(io_threads()) == 5
    read_all(20)
    # Shrink while I/O is blocked: the queued commands still complete, then 2 leave.
    handler.gate.clear()
    for i in range(4):
        emu.submit(bytes([0x28, 0, 0, 0, 0, i, 0, 0, 1, 0]), data_in_len=512)
    runner.set_threads(2)
    handler.gate.set()
    wait_for(lambda: len(emu.completions) == 24)
    wait_for(lambda: len(io_threads()) == 2)
    # 0: everything on the ring thread.
    runner.set_threads(0)
    wait_for(lambda: not io_threads())
    handler.threads_seen.clear()
    read_all(3)
    assert handler.threads_seen == {"ring-loop"}
    runner.set_threads(1)
    handler.threads_seen.clear()
    read_all(3)
    assert len(io_threads()) == 1 and handler.threads_seen <= io_threads()
    assert all(c.status == GOOD for c in emu.completions)
    assert not emu.broken and emu.problems == []
    with pytest.raises(ValueError):
        runner.set_threads(-1)


class CachedDisk(MemoryDisk):
    """MemoryDisk whose blocks below ``cached`` are answered by try_inline."""

    def __init__(self, cached: int) -> None:
        super().__init__()
        self.cached = cached
        self.tried: list[int] = []

    def try_inline(self, cmd: Command) -> Result | None:
        lba = int.from_bytes(cmd.cdb[2:6], "big")
        self.tried.append(lba)
        if lba >= self.cached:
            return None  # "would block": the runner must hand it to a worker
        self.threads_seen.add(threading.current_thread().name)
        n = int.from_bytes(cmd.cdb[7:9], "big") * 512
        cmd.data.write(self.blocks[lba * 512 : lba * 512 + n])  # no gate: "cached"
        return Result(data_in_len=n)


def _serve(handler: Handler, threads: int = 2) -> tuple[RingEmulator, DeviceRunner, object]:
    emu = RingEmulator(cmdr_size=8192, data_size=256 * 1024)
    port = EmulatorPort(emu)
    runner = DeviceRunner(port, handler, threads=threads)
    loop = threading.Thread(target=runner.run, name="ring-loop")
    loop.start()

    def stop() -> None:
        runner.stop()
        loop.join(5)
        runner.close()
        port.close()

    return emu, runner, stop


def test_io_that_needs_no_waiting_runs_on_the_ring_thread() -> None:
    handler = CachedDisk(cached=8)
    emu, _runner, stop = _serve(handler)
    try:
        cid = emu.submit(bytes([0x28, 0, 0, 0, 0, 2, 0, 0, 1, 0]), data_in_len=512)
        wait_for(lambda: len(emu.completions) == 1)
        assert emu.completion(cid).status == GOOD
        assert handler.threads_seen == {"ring-loop"}
    finally:
        stop()  # type: ignore[operator]


def test_io_that_would_block_goes_to_a_worker_and_runs_once_there() -> None:
    handler = CachedDisk(cached=8)
    emu, runner, stop = _serve(handler)
    try:
        handler.gate.clear()  # the worker's disk hangs: the cached read must not wait
        slow = emu.submit(bytes([0x28, 0, 0, 0, 0, 20, 0, 0, 1, 0]), data_in_len=512)
        fast = emu.submit(bytes([0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0]), data_in_len=512)
        wait_for(lambda: any(c.cmd_id == fast for c in emu.completions))
        assert len(emu.completions) == 1
        handler.gate.set()
        wait_for(lambda: len(emu.completions) == 2)
        assert emu.completion(slow).status == GOOD
        assert handler.tried == [20, 1]  # each tried once on the ring thread
        assert any(name.startswith("tcmu-io-") for name in handler.threads_seen)
        assert runner.quiesce(5)
        runner.resume()
        assert not emu.broken and emu.problems == []
    finally:
        stop()  # type: ignore[operator]


def test_try_inline_off_sends_every_io_to_workers() -> None:
    handler = CachedDisk(cached=8)
    emu, runner, stop = _serve(handler)
    runner.try_inline = False
    try:
        emu.submit(bytes([0x28, 0, 0, 0, 0, 2, 0, 0, 1, 0]), data_in_len=512)
        wait_for(lambda: len(emu.completions) == 1)
        assert handler.tried == []
        assert "ring-loop" not in handler.threads_seen
    finally:
        stop()  # type: ignore[operator]


def test_try_inline_exception_is_an_internal_target_failure() -> None:
    class Broken(MemoryDisk):
        def try_inline(self, cmd: Command) -> Result | None:
            raise RuntimeError("bug")

    emu, runner, stop = _serve(Broken())
    try:
        cid = emu.submit(READ10, data_in_len=512)
        wait_for(lambda: len(emu.completions) == 1)
        assert emu.completion(cid).sense[12] == 0x44
        assert runner.stats.handler_failures == 1
    finally:
        stop()  # type: ignore[operator]


def test_quiesce_waits_for_io_answered_on_the_ring_thread() -> None:
    class SlowCache(CachedDisk):
        def try_inline(self, cmd: Command) -> Result | None:
            self.gate.wait(5)  # a page-cache copy that takes a while
            return super().try_inline(cmd)

    handler = SlowCache(cached=8)
    emu, runner, stop = _serve(handler)
    try:
        handler.gate.clear()
        emu.submit(bytes([0x28, 0, 0, 0, 0, 2, 0, 0, 1, 0]), data_in_len=512)
        wait_for(lambda: handler.tried == [] and runner.ring.inflight == 1)
        assert not runner.quiesce(0.1)  # a handler swap now would race the read
        handler.gate.set()
        assert runner.quiesce(5)
        runner.resume()
        wait_for(lambda: len(emu.completions) == 1)
    finally:
        stop()  # type: ignore[operator]
