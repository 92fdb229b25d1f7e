"""Serialized mode (STRICT_SERIALIZING), concurrent mode, and task management."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tcmu_scst.command import GOOD, TASK_ABORTED, TmrNotice
from tcmu_scst.handlers.passthrough import (
    TMR_ABORT_TASK,
    TMR_LUN_RESET,
    PassthroughHandler,
    open_passthrough,
)
from tcmu_scst.handlers.passthrough_params import PassthroughParams
from tcmu_scst.handlers.sg_io import SG_SCSI_RESET_DEVICE
from tests.unit.passthrough_fakes import Completions, FakeSg, Reply, Sent, SimpleDevice, make_sysfs

TUR = bytes(6)


def space(n: int) -> bytes:
    """SPACE(6) with a count we can recognise in the log."""
    return bytes([0x11, 0, 0, 0, n, 0])


def open_tape(tmp_path: Path, fake: FakeSg, **params: object) -> PassthroughHandler:
    sysfs = make_sysfs(tmp_path, "3:0:0:0", 1)
    return open_passthrough(
        PassthroughParams("dev_tape", "3:0:0:0", **params),
        sysfs=sysfs, dev_root=tmp_path / "dev", ioctl=fake,
    )


class Gate:
    """A device whose commands wait until released (one release per command)."""

    def __init__(self) -> None:
        self.fallback = SimpleDevice()
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.active = False

    def __call__(self, sent: Sent) -> Reply:
        if not self.active:
            return self.fallback(sent)
        self.started.release()
        assert self.release.acquire(timeout=10), "test never released the device"
        return Reply()


def test_tape_defaults_to_serialized_and_inline(tmp_path: Path) -> None:
    handler = open_tape(tmp_path, FakeSg())
    assert handler.serialized and handler.is_inline(Completions().command(1, TUR))
    handler.close()


def test_serialized_never_more_than_one_in_flight_and_keeps_ring_order(tmp_path: Path) -> None:
    fake = FakeSg(lambda sent: Reply(delay=0.02))
    handler = open_tape(tmp_path, fake)
    done = Completions()
    before = len(fake.sent)
    for n in range(1, 9):
        assert handler.handle(done.command(n, space(n))) is None
    results = done.wait(8)
    assert all(r.status == GOOD for r in results.values())
    assert fake.max_in_flight == 1
    assert [s.cdb[4] for s in fake.sent[before:]] == list(range(1, 9))
    handler.close()


def test_concurrent_mode_sends_in_parallel(tmp_path: Path) -> None:
    barrier = threading.Barrier(3, timeout=10)

    def responder(sent: Sent) -> Reply:
        if sent.cdb[0] == 0x11:
            barrier.wait()  # only passes when three commands are in the device at once
        return Reply()

    fake = FakeSg(responder)
    handler = open_tape(tmp_path, fake, serialized=False)
    assert not handler.serialized and not handler.is_inline(Completions().command(1, TUR))
    done = Completions()
    results: list[object] = []

    def send(n: int) -> None:
        results.append(handler.handle(done.command(n, space(n))))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert fake.max_in_flight == 3
    assert len(results) == 3
    handler.close()


def test_abort_task_of_a_queued_command_completes_it_unsent(tmp_path: Path) -> None:
    gate = Gate()
    fake = FakeSg(gate)
    handler = open_tape(tmp_path, fake)
    gate.active = True
    done = Completions()
    before = len(fake.sent)
    for n in (1, 2, 3):
        handler.handle(done.command(n, space(n)))
    assert gate.started.acquire(timeout=10)  # command 1 is in the device
    handler.on_tmr(TmrNotice(TMR_ABORT_TASK, (2, 1)))
    assert done.wait(1)[2].status == TASK_ABORTED  # at once, without the device
    gate.release.release()
    assert gate.started.acquire(timeout=10)
    gate.release.release()
    results = done.wait(3)
    assert results[1].status == GOOD  # in the device already: runs to completion
    assert results[3].status == GOOD
    assert [s.cdb[4] for s in fake.sent[before:]] == [1, 3]
    handler.close()


def test_lun_reset_drops_the_queue_and_resets_the_device(tmp_path: Path) -> None:
    gate = Gate()
    fake = FakeSg(gate)
    handler = open_tape(tmp_path, fake)
    gate.active = True
    done = Completions()
    before = len(fake.sent)
    for n in (1, 2, 3, 4):
        handler.handle(done.command(n, space(n)))
    assert gate.started.acquire(timeout=10)
    handler.on_tmr(TmrNotice(TMR_LUN_RESET, (1, 2)))  # the kernel may not list them all
    assert fake.resets == [SG_SCSI_RESET_DEVICE]
    partial = done.wait(3)
    assert {n: partial[n].status for n in (2, 3, 4)} == dict.fromkeys((2, 3, 4), TASK_ABORTED)
    gate.release.release()
    assert done.wait(4)[1].status == GOOD
    assert [s.cdb[4] for s in fake.sent[before:]] == [1]
    handler.close()


def test_concurrent_abort_of_a_command_not_started_yet(tmp_path: Path) -> None:
    fake = FakeSg()
    handler = open_tape(tmp_path, fake, serialized=False)
    done = Completions()
    handler.on_tmr(TmrNotice(TMR_ABORT_TASK, (7,)))  # 7 waits for a runner worker
    before = len(fake.sent)
    result = handler.handle(done.command(7, TUR))
    assert result is not None and result.status == TASK_ABORTED
    assert len(fake.sent) == before
    # The id is free again: a later command reusing it runs normally.
    again = handler.handle(done.command(7, TUR))
    assert again is not None and again.status == GOOD
    handler.close()


def test_concurrent_abort_of_a_finished_command_does_not_hit_its_successor(
    tmp_path: Path,
) -> None:
    handler = open_tape(tmp_path, FakeSg(), serialized=False)
    done = Completions()
    assert handler.handle(done.command(5, TUR)) is not None
    handler.on_tmr(TmrNotice(TMR_ABORT_TASK, (5,)))  # raced with its completion
    result = handler.handle(done.command(5, TUR))  # a new command reusing id 5
    assert result is not None and result.status == GOOD
    handler.close()


def test_close_completes_what_is_still_queued(tmp_path: Path) -> None:
    gate = Gate()
    handler = open_tape(tmp_path, FakeSg(gate))
    gate.active = True
    done = Completions()
    handler.handle(done.command(1, TUR))
    handler.handle(done.command(2, TUR))
    assert gate.started.acquire(timeout=10)
    closer = threading.Thread(target=handler.close)
    closer.start()
    assert done.wait(1)[2].status == TASK_ABORTED
    time.sleep(0.05)
    gate.release.release()
    closer.join(10)
    assert not closer.is_alive()
    assert done.wait(2)[1].status == GOOD


@pytest.mark.parametrize("serialized", [True, False])
def test_reset_on_a_gone_device_is_skipped(tmp_path: Path, serialized: bool) -> None:
    fake = FakeSg()
    handler = open_tape(tmp_path, fake, serialized=serialized)
    handler._mark_gone("test")
    handler.on_tmr(TmrNotice(TMR_LUN_RESET, ()))
    assert fake.resets == []
    handler.close()


def test_close_leaves_the_fd_to_a_worker_stuck_in_the_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tcmu_scst.handlers.passthrough as module

    monkeypatch.setattr(module, "CLOSE_WAIT", 0.05)
    gate = Gate()
    handler = open_tape(tmp_path, FakeSg(gate))
    gate.active = True
    done = Completions()
    handler.handle(done.command(1, TUR))
    assert gate.started.acquire(timeout=10)
    handler.close()  # returns although command 1 is still in the device
    assert handler.device.fd >= 0
    gate.release.release()
    assert done.wait(1)[1].status == GOOD
    assert handler._worker is not None
    handler._worker.join(10)
    assert handler.device.fd == -1  # the worker closed it when the SG_IO returned
