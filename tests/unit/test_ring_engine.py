"""The ring engine against the kernel-faithful emulator (tcmu-abi.md §2)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tcmu_scst.command import CHECK_CONDITION, GOOD, Command, Result, TmrNotice
from tcmu_scst.errors import RingError
from tcmu_scst.kernel import abi
from tcmu_scst.kernel.ring import Ring
from tcmu_scst.testing.ring_emulator import CANARY, QueueFull, Refused, RingEmulator

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0])
TUR = bytes(6)
SENSE = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0])


@pytest.fixture
def emu() -> Iterator[RingEmulator]:
    e = RingEmulator(cmdr_size=4096, data_size=64 * 1024)
    yield e


def make_ring(emu: RingEmulator) -> Ring:
    return Ring(emu.map, emu.notify)


def commands(ring: Ring) -> list[Command]:
    return [i for i in ring.fetch() if isinstance(i, Command)]


def test_attach_rejects_wrong_version(emu: RingEmulator) -> None:
    emu.mv[0:2] = (1).to_bytes(2, "little")
    with pytest.raises(RingError, match="version 1"):
        make_ring(emu)


def test_attach_rejects_missing_read_len(emu: RingEmulator) -> None:
    emu.mv[2:4] = (abi.TCMU_MAILBOX_FLAG_CAP_OOOC).to_bytes(2, "little")
    with pytest.raises(RingError, match="READ_LEN"):
        make_ring(emu)


def test_cdb_and_data_are_copied_out_and_visible(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    payload = bytes(range(256)) * 16
    cid = emu.submit(WRITE10, data_out=payload)
    [cmd] = commands(ring)
    assert cmd.cmd_id == cid
    assert cmd.cdb == WRITE10
    assert cmd.data.read() == payload
    ring.complete(cmd, Result())
    comp = emu.completion(cid)
    assert comp.status == GOOD
    assert comp.uflags == 0  # no READ_LEN for a command without Data-In
    assert emu.problems == [] and not emu.broken


def test_short_data_in_uses_read_len_so_no_stale_byte_leaks(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    cid = emu.submit(READ10, data_in_len=4096)
    [cmd] = commands(ring)
    cmd.data.write(b"x" * 36)
    ring.complete(cmd, Result(data_in_len=36))
    comp = emu.completion(cid)
    assert comp.uflags & abi.TCMU_UFLAG_READ_LEN
    assert comp.read_len == 36
    assert comp.data_in == b"x" * 36  # the kernel copies exactly read_len bytes


def test_without_read_len_the_kernel_would_leak_stale_bytes(emu: RingEmulator) -> None:
    """Shows what READ_LEN prevents: the emulator returns the stale canary bytes."""
    ring = make_ring(emu)
    cid = emu.submit(READ10, data_in_len=64)
    [cmd] = commands(ring)
    cmd.data.write(b"y" * 8)
    # Bypass the engine's Result handling: complete with no data length at all.
    ring.complete(cmd, Result(data_in_len=None))
    assert emu.completion(cid).data_in == b"y" * 8 + bytes([CANARY]) * 56


def test_zero_data_in_on_good_sends_zeros_not_stale_bytes(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    cid = emu.submit(READ10, data_in_len=512)
    [cmd] = commands(ring)
    ring.complete(cmd, Result(data_in_len=0))
    assert emu.completion(cid).data_in == bytes(512)


def test_check_condition_carries_sense_and_no_data(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    cid = emu.submit(READ10, data_in_len=512)
    [cmd] = commands(ring)
    ring.complete(cmd, Result(CHECK_CONDITION, SENSE))
    comp = emu.completion(cid)
    assert comp.status == CHECK_CONDITION
    assert comp.sense == SENSE + bytes(96 - len(SENSE))
    assert comp.data_in == b""


def test_wrap_writes_pad_and_engine_skips_it(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    seen = []
    for _ in range(200):  # 120-byte entries in a 4096-byte ring: many wraps
        cid = emu.submit(TUR)
        [cmd] = commands(ring)
        seen.append(cmd.cmd_id == cid)
        ring.complete(cmd, Result())
    assert all(seen)
    assert len(emu.completions) == 200
    assert emu.problems == [] and not emu.broken
    assert ring.tail == emu.head == emu.last_cleaned


def test_entry_larger_than_half_the_ring_is_refused() -> None:
    emu = RingEmulator(cmdr_size=1024, data_size=1024 * 1024)
    # 80 one-block iovecs would make a 1392-byte entry, above half of 1024 (§2.5.6),
    # but consecutive blocks merge; scatter a write by holding every other block.
    ring = make_ring(emu)
    ok = emu.submit(WRITE10, data_out=bytes(4096 * 20))  # one merged iovec: fits
    [cmd] = commands(ring)
    ring.complete(cmd, Result())
    assert emu.completion(ok).status == GOOD
    with pytest.raises(Refused):
        emu._place(1024 // 2 + 8)


def test_ring_full_then_space_after_completion(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    ids = []
    with pytest.raises(QueueFull):
        while True:
            ids.append(emu.submit(TUR))
    assert len(ids) == (4096 - 1) // 120  # one byte always stays free
    cmds = commands(ring)
    assert [c.cmd_id for c in cmds] == ids
    for c in cmds:
        ring.complete(c, Result(), notify=False)
    ring.flush()
    assert emu.submit(TUR) > 0


def test_out_of_order_completion_steals_oldest_slot(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    a = emu.submit(READ10, data_in_len=512)
    b = emu.submit(WRITE10, data_out=b"w" * 512)
    c = emu.submit(TUR)
    ca, cb, cc = commands(ring)
    ca.data.write(b"A" * 512)
    ring.complete(cc, Result(CHECK_CONDITION, SENSE), notify=False)
    ring.complete(cb, Result(), notify=False)
    ring.complete(ca, Result(data_in_len=512), notify=False)
    assert emu.completions == []  # nothing visible before the notification write
    ring.flush()
    got = {comp.cmd_id: comp for comp in emu.completions}
    assert set(got) == {a, b, c}
    assert got[c].status == CHECK_CONDITION and got[c].sense[:18] == SENSE
    assert got[a].data_in == b"A" * 512  # data comes from A's own blocks
    assert [comp.cmd_id for comp in emu.completions] == [c, b, a]  # collected in ring order
    assert emu.problems == [] and not emu.broken


def test_one_notification_per_batch(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    for _ in range(10):
        emu.submit(TUR)
    for cmd in commands(ring):
        ring.complete(cmd, Result(), notify=False)
    assert ring.flush() is True
    assert ring.flush() is False
    assert emu.notifications == 1
    assert len(emu.completions) == 10


def test_tmr_entries_are_reported_and_skipped(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    a = emu.submit(TUR)
    b = emu.submit(TUR)
    emu.submit_tmr(abi.TCMU_TMR_ABORT_TASK, [a, b])
    items = ring.fetch()
    assert isinstance(items[2], TmrNotice)
    assert items[2].tmr_type == abi.TCMU_TMR_ABORT_TASK
    assert items[2].cmd_ids == (a, b)
    # Aborted commands are still completed normally; the tail moves past the TMR.
    for item in items[:2]:
        assert isinstance(item, Command)
        ring.complete(item, Result(0x40))
    assert ring.tail == emu.head
    assert not emu.broken


def test_pad_and_tmr_only_advance_tail(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    emu.submit_tmr(abi.TCMU_TMR_LUN_RESET, [])
    ring.fetch()
    assert ring.tail == emu.head  # nothing pending: the tail follows at once
    assert ring.flush() is True  # and the kernel is told (frees ring space)


def test_leading_tmr_moves_tail_to_the_first_command(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    emu.submit_tmr(abi.TCMU_TMR_LUN_RESET, [])
    cmd_pos = emu.head
    emu.submit(TUR)
    items = ring.fetch()
    assert isinstance(items[-1], Command)
    assert ring.tail == cmd_pos  # past the TMR, up to the unanswered command
    assert emu.mv[abi.OFF_MB_CMD_TAIL : abi.OFF_MB_CMD_TAIL + 4].cast("I")[0] == cmd_pos
    ring.complete(items[-1], Result())
    assert ring.tail == emu.head and not emu.broken


def test_entries_behind_a_pending_command_leave_the_tail(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    first_pos = emu.head
    emu.submit(TUR)
    [first] = commands(ring)
    emu.submit_tmr(abi.TCMU_TMR_ABORT_TASK, [first.cmd_id])
    emu.submit(TUR)
    items = ring.fetch()
    assert ring.tail == first_pos  # the oldest unanswered command holds it
    ring.complete(first, Result())
    [second] = [i for i in items if isinstance(i, Command)]
    assert ring.tail != first_pos
    ring.complete(second, Result())
    assert ring.tail == emu.head and not emu.broken


def test_unknown_op_is_flagged(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    pos = emu._place(32)
    off = abi.MAILBOX_SIZE + pos
    abi.HDR.pack_into(emu.mv, off, abi.len_op(32, 5), 0, 0, 0)
    emu.by_offset[pos] = (abi.len_op(32, 5), abi.TCMU_OP_PAD)
    emu._publish(32)
    assert ring.fetch() == []
    assert emu.mv[off + abi.OFF_HDR_UFLAGS] & abi.TCMU_UFLAG_UNKNOWN_OP


def test_double_completion_never_breaks_the_ring(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    emu.submit(TUR)
    emu.submit(TUR)
    first, second = commands(ring)
    first.complete(Result())
    first.complete(Result())  # a handler bug: must be dropped, not written
    second.complete(Result())
    assert not emu.broken
    assert len(emu.completions) == 2


def test_len_op_is_never_touched(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    emu.submit(READ10, data_in_len=4096 * 5)  # 5 iovecs? consecutive blocks merge into 1
    emu.submit(TUR)
    c1, c2 = commands(ring)
    ring.complete(c2, Result(CHECK_CONDITION, SENSE * 5))  # oversized sense is cut to 96
    ring.complete(c1, Result(data_in_len=10))
    assert emu.problems == []


def test_reset_ring_recovers(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    emu.submit(TUR)
    emu.submit(TUR)
    stale = commands(ring)
    emu.reset_ring(1)
    dropped = ring.reset()
    assert {c.cmd_id for c in dropped} == {c.cmd_id for c in stale}
    assert ring.tail == 0
    stale[0].complete(Result())  # late completion after the reset: ignored
    assert not emu.broken
    cid = emu.submit(TUR)
    [cmd] = commands(ring)
    assert cmd.cmd_id == cid
    ring.complete(cmd, Result())
    assert emu.completion(cid).status == GOOD
    assert not emu.broken and emu.problems == []


def test_bidi_buffers(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    xdwriteread = bytes([0x53, 0, 0, 0, 0, 0, 0, 0, 1, 0])
    cid = emu.submit(xdwriteread, data_out=b"o" * 512, data_in_len=512, bidi=True)
    [cmd] = commands(ring)
    assert cmd.data.read() == b"o" * 512
    assert cmd.bidi_in is not None and cmd.bidi_in.length == 512
    cmd.bidi_in.write(b"i" * 512)
    ring.complete(cmd, Result(data_in_len=512))
    assert emu.completion(cid).data_in == b"i" * 512


def test_scattered_iovecs_are_exposed_in_order(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    # Fragment the data area: hold blocks 1 and 3 so a 3-block read gets 0, 2, 4.
    hold = [emu.submit(READ10, data_in_len=4096) for _ in range(5)]
    held = commands(ring)
    for c in (held[0], held[2], held[4]):
        ring.complete(c, Result(data_in_len=0))
    cid = emu.submit(READ10, data_in_len=3 * 4096)
    [cmd] = commands(ring)
    assert len(cmd.data.views) == 3
    cmd.data.write(bytes(range(256)) * 48)
    ring.complete(cmd, Result(data_in_len=3 * 4096))
    assert emu.completion(cid).data_in == bytes(range(256)) * 48
    for c in (held[1], held[3]):
        ring.complete(c, Result(data_in_len=0))
    assert len(hold) == 5 and emu.problems == []


def test_completions_from_many_threads(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    ids = [emu.submit(READ10, data_in_len=512) for _ in range(16)]
    cmds = commands(ring)
    barrier = threading.Barrier(len(cmds))

    def work(cmd: Command) -> None:
        cmd.data.write(cmd.cmd_id.to_bytes(2, "little") * 256)
        barrier.wait()
        cmd.complete(Result(data_in_len=512))

    threads = [threading.Thread(target=work, args=(c,)) for c in reversed(cmds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.cmd_id for c in emu.completions) == sorted(ids)
    for comp in emu.completions:
        assert comp.data_in == comp.cmd_id.to_bytes(2, "little") * 256
    assert not emu.broken and emu.problems == []


# -- batched completion, cached buffers, and entries the kernel never writes ------------


def test_complete_many_posts_a_batch_with_one_tail_store(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    ids = [emu.submit(READ10, data_in_len=512) for _ in range(4)]
    cmds = commands(ring)
    stores: list[int] = []
    words = ring._words

    class Spy:
        """The mailbox words, recording every cmd_tail store."""

        def __getitem__(self, i: int) -> int:
            return int(words[i])

        def __setitem__(self, i: int, value: int) -> None:
            if i == abi.OFF_MB_CMD_TAIL // 4:
                stores.append(value)
            words[i] = value

    ring._words = Spy()  # type: ignore[assignment]
    for c in cmds:
        c.data.write(bytes([c.cmd_id]) * 512)
    # Out of ring order, with a double completion in the batch: dropped, not written.
    batch = [(cmds[2], Result(data_in_len=512)), (cmds[0], Result(data_in_len=512))]
    batch += [(cmds[0], Result()), (cmds[3], Result(CHECK_CONDITION, SENSE))]
    batch += [(cmds[1], Result(data_in_len=100))]
    ring.complete_many(batch)
    assert stores == [emu.head]  # one store, after every response
    assert emu.completions == []  # not told yet
    ring.flush()
    got = {c.cmd_id: c for c in emu.completions}
    assert sorted(got) == sorted(ids)
    assert got[ids[0]].data_in == bytes([ids[0]]) * 512
    assert got[ids[1]].data_in == bytes([ids[1]]) * 100 and got[ids[1]].read_len == 100
    assert got[ids[3]].status == CHECK_CONDITION and got[ids[3]].sense[:18] == SENSE
    assert not emu.broken and emu.problems == []


def test_complete_many_with_notify_tells_the_kernel_once(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    for _ in range(3):
        emu.submit(TUR)
    ring.complete_many([(c, Result()) for c in commands(ring)], notify=True)
    assert emu.notifications == 1 and len(emu.completions) == 3


def test_buffers_of_successive_commands_at_one_place_are_reused(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    emu.submit(READ10, data_in_len=4096)
    [first] = commands(ring)
    first.data.write(b"1" * 4096)
    ring.complete(first, Result(data_in_len=4096))
    cid = emu.submit(READ10, data_in_len=4096)  # the lowest free block again
    [second] = commands(ring)
    assert second.data is first.data  # the same view of the same block
    second.data.write(b"2" * 4096)
    ring.complete(second, Result(data_in_len=4096))
    assert emu.completion(cid).data_in == b"2" * 4096
    cid = emu.submit(READ10, data_in_len=512)  # same block, another length: a new view
    [third] = commands(ring)
    assert third.data is not first.data and third.data.length == 512
    ring.complete(third, Result(data_in_len=0))
    assert emu.completion(cid).data_in == bytes(512)


def _entry_offset(emu: RingEmulator, cmd_id: int) -> int:
    return abi.MAILBOX_SIZE + emu.pending[cmd_id].offset


def _assert_failed_internally(ring: Ring, emu: RingEmulator, cmd_id: int) -> None:
    assert ring.flush() is True  # posted by fetch, told with the batch's notification
    comp = emu.completion(cmd_id)
    assert comp.status == CHECK_CONDITION
    assert comp.sense[2] == 0x04 and comp.sense[12:14] == bytes([0x44, 0x00])
    assert not emu.broken and emu.problems == []


def test_iovec_outside_the_data_area_fails_the_command(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    cid = emu.submit(READ10, data_in_len=512)
    good = emu.submit(TUR)
    off = _entry_offset(emu, cid)
    abi.IOVEC.pack_into(emu.mv, off + abi.OFF_REQ_IOV, emu.map_size - 256, 512)
    items = ring.fetch()
    assert [i.cmd_id for i in items if isinstance(i, Command)] == [good]
    _assert_failed_internally(ring, emu, cid)


def test_iovec_count_overflowing_the_entry_fails_the_command(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    cid = emu.submit(READ10, data_in_len=512)
    off = _entry_offset(emu, cid)
    emu.mv[off + 8 : off + 12] = (1000).to_bytes(4, "little")  # iov_cnt
    assert ring.fetch() == []
    _assert_failed_internally(ring, emu, cid)


def test_cdb_outside_the_command_ring_fails_the_command(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    cid = emu.submit(TUR)
    off = _entry_offset(emu, cid)
    abi.REQ.pack_into(emu.mv, off + abi.OFF_REQ, 0, 0, 0, emu.data_off + 16)  # cdb_off
    assert ring.fetch() == []
    _assert_failed_internally(ring, emu, cid)


def test_cdb_elsewhere_in_the_command_ring_is_read_from_there(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    cid = emu.submit(TUR)
    other = emu.submit(READ10, data_in_len=512)
    off = _entry_offset(emu, cid)
    other_cdb = _entry_offset(emu, other) + abi.cmd_entry_base_size(1)
    abi.REQ.pack_into(emu.mv, off + abi.OFF_REQ, 0, 0, 0, other_cdb)
    first, second = commands(ring)
    assert first.cmd_id == cid and first.cdb == READ10  # copied from where it points
    assert second.cdb == READ10 and second.data.length == 512
    ring.complete_many([(first, Result()), (second, Result(data_in_len=512))], notify=True)
    assert emu.completion(cid).status == GOOD and not emu.broken


def test_variable_length_cdb_is_cut_by_its_byte_7(emu: RingEmulator) -> None:
    ring = make_ring(emu)
    cdb = bytes([0x7F, 0, 0, 0, 0, 0, 0, 0x18]) + bytes(range(1, 25))  # 32 bytes
    emu.submit(cdb, data_in_len=512)
    [cmd] = commands(ring)
    assert cmd.cdb == cdb and cmd.data.length == 512
    ring.complete(cmd, Result(data_in_len=0))
    assert not emu.broken
