"""One shared loop serving several devices' rings (service.ringloop)."""

from __future__ import annotations

import threading

from tcmu_scst.command import GOOD
from tcmu_scst.service.device import DeviceRunner
from tcmu_scst.service.ringloop import SharedRingLoop
from tcmu_scst.testing.emulator_port import EmulatorPort
from tcmu_scst.testing.ring_emulator import RingEmulator

from .test_device_runner import CachedDisk, wait_for


def _device() -> tuple[RingEmulator, EmulatorPort, CachedDisk, DeviceRunner]:
    emu = RingEmulator(cmdr_size=8192, data_size=256 * 1024)
    port = EmulatorPort(emu)
    handler = CachedDisk(cached=8)
    return emu, port, handler, DeviceRunner(port, handler, threads=1)


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
        loop.stop()
        thread.join(5)
        assert not thread.is_alive()
        loop.close()
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
