"""RangeLock semantics and the unit attention queue."""

from __future__ import annotations

import threading
import time

from tcmu_scst.scsi.rangelock import RangeLock
from tcmu_scst.scsi.ua import MAX_PENDING, UnitAttentionQueue


def _started(target: object) -> threading.Thread:
    thread = threading.Thread(target=target)  # type: ignore[arg-type]
    thread.start()
    return thread


def _wait_for(lock: RangeLock, exclusive: int) -> None:
    """Wait until ``exclusive`` requests are registered (holding or waiting)."""
    deadline = time.monotonic() + 5
    while len(lock._exclusive) < exclusive:
        assert time.monotonic() < deadline, "request never registered"
        time.sleep(0.001)


def test_shared_holders_do_not_block_each_other() -> None:
    lock = RangeLock()
    with lock.shared(0, 10), lock.shared(5, 15):
        entered = threading.Event()

        def third() -> None:
            with lock.shared(0, 20):
                entered.set()

        thread = _started(third)
        assert entered.wait(2)
        thread.join(2)


def test_exclusive_waits_for_overlapping_shared_only() -> None:
    lock = RangeLock()
    order: list[str] = []
    with lock.shared(0, 10):
        disjoint = threading.Event()

        def other_range() -> None:
            with lock.exclusive(10, 20):
                disjoint.set()

        thread = _started(other_range)
        assert disjoint.wait(2)  # [10, 20) does not overlap [0, 10)
        thread.join(2)

        def overlapping() -> None:
            with lock.exclusive(5, 6):
                order.append("exclusive")

        waiter = _started(overlapping)
        time.sleep(0.05)
        assert order == []  # still waiting for the shared holder
        order.append("shared released")
    waiter.join(2)
    assert order == ["shared released", "exclusive"]


def test_waiting_exclusive_blocks_new_shared_requests() -> None:
    lock = RangeLock()
    order: list[str] = []
    first = lock.shared(0, 4)
    first.__enter__()

    def caw() -> None:
        with lock.exclusive(0, 4):
            order.append("caw")

    def late_write() -> None:
        with lock.shared(2, 3):
            order.append("write")

    caw_thread = _started(caw)
    _wait_for(lock, 1)
    write_thread = _started(late_write)
    time.sleep(0.05)
    assert order == []  # the write queues behind the waiting CAW: no starvation
    first.__exit__(None, None, None)
    caw_thread.join(2)
    write_thread.join(2)
    assert order == ["caw", "write"]


def test_overlapping_exclusive_requests_are_served_in_order() -> None:
    lock = RangeLock()
    order: list[int] = []
    gate = lock.exclusive(0, 100)
    gate.__enter__()
    threads = []
    for index in range(5):

        def worker(index: int = index) -> None:
            with lock.exclusive(index, index + 50):
                order.append(index)

        threads.append(_started(worker))
        _wait_for(lock, index + 2)
    gate.__exit__(None, None, None)
    for thread in threads:
        thread.join(2)
    assert order == [0, 1, 2, 3, 4]


def test_ticket_holds_without_the_mutex_still_exclude_compare_and_write() -> None:
    # acquire_shared (the flat data path) takes no mutex while no exclusive request
    # exists; a CAW must still wait for it, and it must wait for a CAW.
    lock = RangeLock()
    order: list[str] = []
    ticket = lock.acquire_shared(0, 8)

    def caw() -> None:
        with lock.exclusive(4, 5):
            order.append("caw")
            time.sleep(0.05)
            order.append("caw done")

    caw_thread = _started(caw)
    _wait_for(lock, 1)
    time.sleep(0.05)
    assert order == []  # waits for the ticket hold
    order.append("read done")
    lock.release_shared(ticket)
    while not order[1:]:
        time.sleep(0.001)
    assert lock.acquire_shared(100, 108) >= 0  # disjoint: does not wait
    late = lock.acquire_shared(0, 8)  # overlapping a running CAW: waits for it
    order.append("late read")
    lock.release_shared(late)
    caw_thread.join(2)
    assert order == ["read done", "caw", "caw done", "late read"]


def test_ticket_holds_and_exclusive_holds_never_overlap_under_contention() -> None:
    lock = RangeLock()
    inside = {"shared": 0, "exclusive": 0}
    errors: list[str] = []
    guard = threading.Lock()
    stop = time.monotonic() + 0.5

    def reader() -> None:
        while time.monotonic() < stop:
            ticket = lock.acquire_shared(0, 8)
            with guard:
                inside["shared"] += 1
                if inside["exclusive"]:
                    errors.append("shared inside exclusive")
            with guard:
                inside["shared"] -= 1
            lock.release_shared(ticket)

    def writer() -> None:
        while time.monotonic() < stop:
            with lock.exclusive(3, 4):
                with guard:
                    inside["exclusive"] += 1
                    if inside["shared"] or inside["exclusive"] > 1:
                        errors.append("exclusive not alone")
                with guard:
                    inside["exclusive"] -= 1

    threads = [_started(reader), _started(reader), _started(writer)]
    for thread in threads:
        thread.join(5)
    assert errors == []


def test_unit_attention_queue_dedupes_and_bounds() -> None:
    queue = UnitAttentionQueue()
    assert not queue
    assert queue.pop() is None
    queue.post(0x2A, 0x09)
    queue.post(0x2A, 0x09)
    assert queue.pending() == [(0x2A, 0x09)]
    for ascq in range(MAX_PENDING + 3):
        queue.post(0x3F, ascq)
    pending = queue.pending()
    assert len(pending) == MAX_PENDING
    assert pending[-1] == (0x3F, MAX_PENDING + 2)
    first = queue.pop()
    assert first is not None and (first.key, first.asc) == (0x6, 0x3F)
    queue.clear()
    assert not queue
