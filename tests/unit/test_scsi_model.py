"""Random sequences of data commands agree with a plain bytearray model of the disk."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tcmu_scst.command import GOOD
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.testing import scsi_harness as h
from tcmu_scst.testing.scsi_harness import STALE, make_disk, run

BS = 512
BLOCKS = 64

WRITES = (op.WRITE_6, op.WRITE_10, op.WRITE_12, op.WRITE_16)
READS = (op.READ_6, op.READ_10, op.READ_12, op.READ_16)

spans = st.tuples(st.integers(0, BLOCKS - 1), st.integers(1, 8)).map(
    lambda t: (t[0], min(t[1], BLOCKS - t[0]))
)
steps = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(WRITES), spans, st.integers(0, 255)),
    st.tuples(st.just("same"), st.sampled_from((op.WRITE_SAME, op.WRITE_SAME_16)), spans,
              st.integers(0, 3)),
    st.tuples(st.just("unmap"), st.just(op.UNMAP), spans, st.just(0)),
    st.tuples(st.just("caw"), st.just(op.COMPARE_AND_WRITE), spans, st.integers(0, 255)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(steps, min_size=1, max_size=12), st.integers(1, 4))
def test_device_matches_model(program: list[tuple[str, int, tuple[int, int], int]],
                              iovecs: int) -> None:
    dev, _ = make_disk(BLOCKS * BS, thin_provisioned=True, max_compare_write_blocks=8)
    model = bytearray(BLOCKS * BS)
    for kind, opcode, (lba, blocks), seed in program:
        lo, hi = lba * BS, (lba + blocks) * BS
        if kind == "write":
            data = bytes((seed + i) & 0xFF for i in range(hi - lo))
            reply = run(dev.execute, h.rw_cdb(opcode, lba, blocks % 256), data_out=data,
                        iovecs=iovecs)
            model[lo:hi] = data
        elif kind == "same":
            block = bytes([seed]) * BS if seed else bytes(BS)
            unmap = 0x08 if seed in (0, 2) else 0
            reply = run(dev.execute, h.rw_cdb(opcode, lba, blocks, byte1=unmap), data_out=block)
            model[lo:hi] = block * blocks
        elif kind == "unmap":
            params = h.unmap_params([(lba, blocks)])
            reply = run(dev.execute, h.unmap(len(params)), data_out=params)
            model[lo:hi] = bytes(hi - lo)
        else:
            new = bytes([seed]) * (hi - lo)
            reply = run(dev.execute, h.compare_and_write(lba, blocks),
                        data_out=bytes(model[lo:hi]) + new)
            model[lo:hi] = new
        assert reply.status == GOOD, (kind, reply.result)
    for opcode in READS:
        reply = run(dev.execute, h.rw_cdb(opcode, 0, BLOCKS), in_len=BLOCKS * BS + 100,
                    iovecs=iovecs)
        assert reply.data == model
        assert reply.buffer[BLOCKS * BS :] == bytes([STALE]) * 100
