"""Random command mixes through emulator + engine (hypothesis).

Whatever the mix (iov counts, CDB sizes, wraps, TMRs, out-of-order and concurrent
completions), every command is completed exactly once with its own status, sense and
data, and the ring is never broken.
"""

from __future__ import annotations

import random
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcmu_scst.command import CHECK_CONDITION, Command, Result
from tcmu_scst.kernel import abi
from tcmu_scst.kernel.ring import Ring
from tcmu_scst.testing.ring_emulator import QueueFull, RingEmulator

BLOCK = 4096


def cdb_for(opcode_group: int, varlen_extra: int, tag: int) -> bytes:
    """A CDB of the group's length carrying ``tag`` so completions can be matched."""
    if opcode_group == -1:
        length = 8 + varlen_extra * 8  # VARIABLE LENGTH (0x7F): byte7 + 8 bytes
        cdb = bytearray(length)
        cdb[0] = 0x7F
        cdb[7] = length - 8
    else:
        opcode = (opcode_group << 5) | 0x08
        cdb = bytearray(abi.cdb_length(opcode))
        cdb[0] = opcode
    cdb[1:3] = tag.to_bytes(2, "little")
    return bytes(cdb)


def expected_result(tag: int, kind: str, in_len: int) -> Result:
    if tag % 3 == 0:
        sense = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10]) + tag.to_bytes(4, "little") + bytes(6)
        return Result(CHECK_CONDITION, sense)
    if kind == "read":
        return Result(data_in_len=(tag * 7) % (in_len + 1))
    return Result()


op_strategy = st.one_of(
    st.tuples(
        st.just("submit"),
        st.sampled_from(["read", "write", "none"]),
        st.integers(0, 6),  # opcode group, 6/7 vendor
        st.integers(1, 3 * BLOCK),
        st.integers(0, 4),
    ),
    st.tuples(st.just("complete"), st.integers(0, 1 << 30)),
    st.tuples(st.just("threads"), st.integers(0, 1 << 30)),
    st.tuples(st.just("tmr"), st.integers(0, 7)),
    st.tuples(st.just("varlen"), st.integers(0, 4)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, min_size=1, max_size=60), cmdr=st.sampled_from([1024, 2048, 8192]))
def test_random_mixes_complete_exactly_once(ops: list[tuple[object, ...]], cmdr: int) -> None:
    emu = RingEmulator(cmdr_size=cmdr, data_size=16 * BLOCK)
    ring = Ring(emu.map, emu.notify)
    tag = 0
    live: dict[int, tuple[str, int, int, bytes]] = {}  # cmd_id -> (kind, in_len, tag, cdb)
    submitted: list[tuple[str, int, int, bytes]] = []
    held: list[Command] = []
    done_tags: list[int] = []

    def fetch() -> None:
        for item in ring.fetch():
            if isinstance(item, Command):
                kind, _in_len, t, cdb = live[item.cmd_id]
                assert item.cdb == cdb  # copied out intact
                if kind == "write":
                    assert item.data.read() == bytes([t & 0xFF]) * item.data.length
                held.append(item)

    def finish(cmd: Command) -> None:
        kind, in_len, t, _cdb = live.pop(cmd.cmd_id)
        res = expected_result(t, kind, in_len)
        if res.data_in_len:
            cmd.data.write(bytes([(t * 13) & 0xFF]) * res.data_in_len)
        cmd.complete(res)

    for op in ops:
        if op[0] in ("submit", "varlen"):
            tag += 1
            if op[0] == "varlen":
                kind, cdb, length = "none", cdb_for(-1, int(op[1]), tag), 0  # type: ignore[arg-type]
            else:
                kind, group, length = str(op[1]), int(op[2]), int(op[3])  # type: ignore[call-overload]
                cdb = cdb_for(group, 0, tag)
            try:
                if kind == "read":
                    cid = emu.submit(cdb, data_in_len=length)
                elif kind == "write":
                    cid = emu.submit(cdb, data_out=bytes([tag & 0xFF]) * length)
                else:
                    cid = emu.submit(cdb)
            except QueueFull:
                continue
            live[cid] = (kind, length if kind == "read" else 0, tag, cdb)
            submitted.append(live[cid])
            fetch()
        elif op[0] == "complete" and held:
            cmd = held.pop(int(op[1]) % len(held))  # type: ignore[call-overload]
            done_tags.append(live[cmd.cmd_id][2])
            finish(cmd)
        elif op[0] == "threads" and held:
            rng = random.Random(int(op[1]))  # type: ignore[call-overload]
            batch = rng.sample(held, k=rng.randint(1, len(held)))
            for cmd in batch:
                held.remove(cmd)
                done_tags.append(live[cmd.cmd_id][2])
            threads = [threading.Thread(target=finish, args=(c,)) for c in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elif op[0] == "tmr":
            try:
                emu.submit_tmr(int(op[1]), [c.cmd_id for c in held][:3])  # type: ignore[call-overload]
            except QueueFull:
                continue
            fetch()
    # Drain: complete everything still held, in reverse (worst) order.
    for cmd in reversed(held):
        done_tags.append(live[cmd.cmd_id][2])
        finish(cmd)
    held.clear()

    assert not emu.broken, emu.problems
    assert emu.problems == []
    assert emu.pending == {}
    assert ring.tail == emu.head
    # Exactly one completion per submitted command, identified by its CDB.
    by_cdb = {comp.cdb: comp for comp in emu.completions}
    assert len(by_cdb) == len(emu.completions) == len(submitted)
    assert sorted(done_tags) == sorted(v[2] for v in submitted)
    for kind, in_len, t, cdb in submitted:
        comp = by_cdb[cdb]
        res = expected_result(t, kind, in_len)
        assert comp.status == res.status
        if res.status == CHECK_CONDITION:
            assert comp.sense == res.sense + bytes(96 - len(res.sense))
            assert comp.data_in == b""
        elif kind == "read":
            if res.data_in_len:
                assert comp.data_in == bytes([(t * 13) & 0xFF]) * res.data_in_len
            else:  # nothing produced: zeros of the full length, never stale bytes
                assert comp.data_in == bytes(in_len)
