"""The deadline of backend operations (handlers._aio_deadline), on a fake clock."""

from __future__ import annotations

from tcmu_scst.handlers._aio_deadline import Deadlines


def test_the_first_of_completion_and_deadline_answers_and_abandoned_ones_are_counted() -> None:
    now = [0.0]
    deadlines = Deadlines(5.0, "t", clock=lambda: now[0], watchdog=False)
    expired: list[str] = []
    abandoned: list[int] = []
    deadlines.on_abandon = lambda: abandoned.append(deadlines.abandoned)
    done_in_time = deadlines.start(lambda: expired.append("in time"))
    late = deadlines.start(lambda: expired.append("late"))
    assert done_in_time.claim()  # the backend answers first: the deadline never does
    now[0] = 4.9
    assert deadlines.expire_due() == 0
    now[0] = 5.0
    assert deadlines.expire_due() == 1 and expired == ["late"] and abandoned == [1]
    assert deadlines.abandoned == 1
    assert not late.claim()  # the backend's late answer is dropped, and counted off
    assert deadlines.abandoned == 0
    # Abandoned, then retired (the client was replaced): no longer counted, and once
    # the last of them ends, whoever replaced it is told (to close the old client).
    now[0] = 6.0
    retired = [deadlines.start(lambda: None), deadlines.start(lambda: None)]
    now[0] = 11.0
    deadlines.expire_due()
    drained: list[str] = []
    assert deadlines.retire_abandoned(lambda: drained.append("old")) == 2
    assert deadlines.abandoned == 0
    assert not retired[0].claim() and drained == [] and deadlines.abandoned == 0
    assert not retired[1].claim() and drained == ["old"]
    assert not retired[1].claim() and drained == ["old"]  # told once
    # Nothing abandoned: told at once.
    assert deadlines.retire_abandoned(lambda: drained.append("none")) == 0
    assert drained == ["old", "none"]
    deadlines.close()


def test_no_timeout_means_no_deadline() -> None:
    deadlines = Deadlines(None, "t")
    op = deadlines.start(lambda: None)
    assert deadlines.expire_due() == 0 and op.claim()
    deadlines.close()
