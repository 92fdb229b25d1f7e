"""One shared loop serving several devices' rings (service.ringloop)."""

from __future__ import annotations

import threading
from pathlib import Path

from tcmu_scst.command import GOOD
from tcmu_scst.service.device import HANDLER_FAILURE, DeviceRunner
from tcmu_scst.service.devices import DeviceSet
from tcmu_scst.service.ringloop import DEFAULT_SPIN, SharedRingLoop
from tcmu_scst.testing.emulator_port import EmulatorPort
from tcmu_scst.testing.fake_configfs import FakeConfigfs
from tcmu_scst.testing.ring_emulator import RingEmulator

from .test_device_runner import CachedDisk, wait_for


def _device() -> tuple[RingEmulator, EmulatorPort, CachedDisk, DeviceRunner]:
    emu = RingEmulator(cmdr_size=8192, data_size=256 * 1024)
    port = EmulatorPort(emu)
    handler = CachedDisk(cached=8)
    return emu, port, handler, DeviceRunner(port, handler, threads=1)


def _end(loop: SharedRingLoop, thread: threading.Thread) -> None:
    """Stop the loop, see its thread end, close it."""
    loop.stop()
    thread.join(5)
    assert not thread.is_alive()
    loop.close()


def read(lba: int) -> bytes:
    return bytes([0x28, 0, 0, 0, 0, lba, 0, 0, 1, 0])


def test_one_thread_serves_every_ring_and_devices_come_and_go() -> None:
    loop = SharedRingLoop()
    thread = threading.Thread(target=loop.run, name="ring-shared")
    thread.start()
    devices = [_device() for _ in range(3)]
    try:
        # A command queued before its device joins the loop is served when it joins.
        early = devices[0][0].submit(read(1), data_in_len=512)
        for _emu, _port, _handler, runner in devices:
            loop.add(runner)
        wait_for(lambda: any(c.cmd_id == early for c in devices[0][0].completions))
        for emu, _port, _handler, _runner in devices:
            emu.submit(read(2), data_in_len=512)  # cached: answered on the loop
            emu.submit(read(30), data_in_len=512)  # "would block": on the worker
        for emu, _port, handler, _runner in devices:
            wait_for(lambda emu=emu: len([c for c in emu.completions
                                          if c.cdb[5] in (2, 30)]) == 2)
            assert all(c.status == GOOD for c in emu.completions)
            assert "ring-shared" in handler.threads_seen
        # Removing one device leaves the others served.
        emu0, _port0, handler0, runner0 = devices[0]
        handler0.gate.clear()
        slow = emu0.submit(read(40), data_in_len=512)
        threading.Timer(0.2, handler0.gate.set).start()
        assert loop.remove(runner0)  # waits for the worker's command too
        assert any(c.cmd_id == slow for c in emu0.completions)
        emu1 = devices[1][0]
        before = len(emu1.completions)
        emu1.submit(read(3), data_in_len=512)
        wait_for(lambda: len(emu1.completions) == before + 1)
        for _emu, _port, _handler, runner in devices[1:]:
            assert loop.remove(runner)
    finally:
        _end(loop, thread)
        for _emu, port, _handler, runner in devices:
            runner.close()
            port.close()
    for emu, *_ in devices:
        assert not emu.broken and emu.problems == []


def test_a_quiesced_device_does_not_hold_up_the_others() -> None:
    # A handler swap quiesces one runner for as long as it takes; the shared loop
    # serves every other ring meanwhile and the quiesced one's commands right after.
    loop = SharedRingLoop()
    thread = threading.Thread(target=loop.run, name="ring-shared")
    thread.start()
    (emu0, _p0, _h0, runner0), (emu1, _p1, _h1, runner1) = _device(), _device()
    try:
        loop.add(runner0)
        loop.add(runner1)
        assert runner0.quiesce(1.0)
        held = emu0.submit(read(2), data_in_len=512)
        served = emu1.submit(read(2), data_in_len=512)
        wait_for(lambda: any(c.cmd_id == served for c in emu1.completions))
        assert not any(c.cmd_id == held for c in emu0.completions)
        runner0.resume()
        wait_for(lambda: any(c.cmd_id == held for c in emu0.completions))
        assert all(c.status == GOOD for c in emu0.completions + emu1.completions)
        assert loop.remove(runner0) and loop.remove(runner1)
    finally:
        loop.stop()
        thread.join(5)
        loop.close()
    assert not thread.is_alive()


def test_busy_polling_serves_what_arrives_while_it_watches() -> None:
    loop = SharedRingLoop(spin=0.2)  # long: the next command comes while it watches
    thread = threading.Thread(target=loop.run, name="ring-shared")
    thread.start()
    emu, port, _handler, runner = _device()
    try:
        loop.add(runner)
        for lba in range(1, 6):
            before = len(emu.completions)
            emu.submit(read(lba), data_in_len=512)  # cached: answered on the loop
            wait_for(lambda before=before: len(emu.completions) == before + 1)
        assert all(c.status == GOOD for c in emu.completions)
        assert not runner.ring.has_entries() and not runner.ring.has_inflight()
        assert loop.remove(runner)
    finally:
        _end(loop, thread)
        runner.close()
        port.close()
    assert not emu.broken and emu.problems == []


def test_busy_polling_never_holds_the_gil_over_a_workers_command() -> None:
    loop = SharedRingLoop(spin=0.001)
    emu, port, _handler, runner = _device()
    ring = runner.ring
    try:
        assert loop._watch([ring]) is True  # idle: it watches (and gives up)
        emu.submit(read(1), data_in_len=512)
        assert ring.has_entries()
        assert loop._watch([ring]) is True  # an entry: it stops watching at once
        [cmd] = ring.fetch()
        assert not ring.has_entries() and ring.has_inflight()
        assert loop._watch([ring]) is False  # a command in flight: no watching
        ring.complete(cmd, runner.handler.handle(cmd) or HANDLER_FAILURE)
        assert not ring.has_inflight()
        loop.spin = 0.0
        assert loop._watch([ring]) is False  # off
    finally:
        loop.close()
        runner.close()
        port.close()


def test_the_daemons_busy_poll_setting_reaches_the_shared_loop(tmp_path: Path) -> None:
    assert SharedRingLoop().spin == DEFAULT_SPIN > 0  # on unless asked otherwise
    devices = DeviceSet(
        configfs=FakeConfigfs(tmp_path / "configfs"),
        open_handler=lambda _config: CachedDisk(cached=8),
        owns=lambda _subtype: True,
        open_port=lambda _info: EmulatorPort(RingEmulator()),
        post=lambda call: call(),
        busy_poll=0.0,  # --busy-poll-us 0
    )
    loop = devices._ring_loop_for_shared()
    try:
        assert loop.spin == 0.0
    finally:
        loop.stop()
        assert devices._ring_loop_thread is not None
        devices._ring_loop_thread.join(5)
        loop.close()
