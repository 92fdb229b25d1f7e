"""service.sizewatch: the daemon's periodic look at backing stores that grow by themselves."""

from __future__ import annotations

import threading

import pytest

from tcmu_scst.command import Command, Result
from tcmu_scst.errors import ConfigfsError
from tcmu_scst.handler import Handler
from tcmu_scst.service.sizewatch import SizeWatch, Watched


class Growing(Handler):
    watches_size = True

    def __init__(self, grown: int | None = None) -> None:
        self.grown = grown
        self.checked = 0
        self.gate: threading.Event | None = None

    def handle(self, cmd: Command) -> Result | None:
        raise AssertionError("no command is sent")

    def grown_size(self) -> int | None:
        self.checked += 1
        if self.gate is not None:
            self.gate.wait(10)
        return self.grown


class Fixed(Growing):
    watches_size = False


def run_round(watch: SizeWatch) -> None:
    thread = watch.tick()
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()


def test_a_grown_device_gets_its_new_dev_size_and_others_are_left_alone() -> None:
    sizes: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    grown, same, fixed = Growing(8 << 20), Growing(None), Fixed(1 << 30)
    watched: list[Watched] = [
        ("a", grown, sizes["a"].append),
        ("b", same, sizes["b"].append),
        ("c", fixed, sizes["c"].append),
    ]
    run_round(SizeWatch(lambda: watched))
    assert sizes == {"a": [8 << 20], "b": [], "c": []}
    assert (grown.checked, same.checked, fixed.checked) == (1, 1, 0)  # never asked


def test_no_round_without_devices_that_grow_by_themselves() -> None:
    assert SizeWatch(lambda: [("c", Fixed(1), lambda size: None)]).tick() is None
    assert SizeWatch(lambda: []).tick() is None


def test_one_round_at_a_time_when_a_size_read_waits() -> None:
    slow = Growing(None)
    slow.gate = threading.Event()
    watch = SizeWatch(lambda: [("slow", slow, lambda size: None)])
    first = watch.tick()
    assert first is not None
    assert watch.tick() is None  # the first round still waits for its store
    slow.gate.set()
    first.join(10)
    run_round(watch)
    assert slow.checked == 2


def test_a_failed_write_is_logged_and_the_next_device_still_checked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(size: int) -> None:
        raise ConfigfsError("write dev_size", "/sys/kernel/config/x/dev_size", 22)

    done: list[int] = []
    watched: list[Watched] = [("x", Growing(4096), refuse), ("y", Growing(8192), done.append)]
    run_round(SizeWatch(lambda: watched))
    assert done == [8192]
    assert "x: size check failed" in caplog.text
