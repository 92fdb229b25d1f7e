"""Random CDBs and buffers never crash the emulation and always get a well-formed answer."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcmu_scst.command import CHECK_CONDITION, CONDITION_MET, GOOD
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.testing.scsi_harness import make_command, make_disk

KNOWN = sorted({spec.opcode for spec in op.COMMANDS} | {0x7F, 0xA0, 0x5E, 0x83})
CONFIGS: tuple[dict[str, object], ...] = (
    {},
    {"thin_provisioned": True},
    {"read_only": True, "thin_provisioned": True},
    {"nv_cache": True, "write_back": False, "max_transfer_blocks": 4},
    {"block_size": 4096, "device_type": 7, "removable": True},
)


@st.composite
def cdbs(draw: st.DrawFn) -> bytes:
    opcode = draw(st.one_of(st.sampled_from(KNOWN), st.integers(0, 255)))
    if opcode == op.VARIABLE_LENGTH_CMD and draw(st.booleans()):
        additional = draw(st.integers(0, 252))
        body = draw(st.binary(min_size=6, max_size=6))
        rest = draw(st.binary(min_size=additional, max_size=additional))
        return bytes((opcode,)) + body + bytes((additional,)) + rest
    length = draw(st.integers(1, 32))
    tail = draw(st.binary(min_size=length - 1, max_size=length - 1))
    cdb = bytearray((opcode,)) + bytearray(tail)
    if len(cdb) > 1 and opcode in op.SERVICE_ACTION_OPCODES and draw(st.booleans()):
        cdb[1] = draw(st.sampled_from([0x0C, 0x10, 0x12]))
    if len(cdb) > 2 and draw(st.booleans()):
        # Keep LBA and lengths small sometimes so commands get past the range checks.
        for index in range(2, len(cdb) - 1):
            cdb[index] = cdb[index] & draw(st.sampled_from([0x00, 0x01, 0x07, 0xFF]))
        cdb[-1] = 0
    return bytes(cdb)


def assert_well_formed(status: int, sense: bytes) -> None:
    assert status in (GOOD, CHECK_CONDITION, CONDITION_MET)
    if status != CHECK_CONDITION:
        assert sense == b""
        return
    assert len(sense) >= 18
    assert sense[0] & 0x7F == 0x70
    assert sense[7] == len(sense) - 8
    assert sense[2] & 0xF0 == 0
    assert sense[2] in (0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0xE)
    if sense[15] & 0x80:
        assert sense[15] & 0x30 == 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cdb=cdbs(),
    config=st.sampled_from(CONFIGS),
    buffer=st.binary(max_size=9000),
    iovecs=st.integers(1, 5),
)
def test_random_cdbs_get_a_valid_answer(
    cdb: bytes, config: dict[str, object], buffer: bytes, iovecs: int
) -> None:
    dev, backend = make_disk(64 * 1024, **config)
    cmd, backing = make_command(cdb, data_out=buffer, iovecs=iovecs)
    result = dev.execute(cmd)
    assert_well_formed(result.status, result.sense)
    assert len(backing) == len(buffer)  # never resized, never written past
    if result.data_in_len is not None:
        assert 0 <= result.data_in_len <= len(buffer)
    assert len(backend.data) == 64 * 1024
    if result.status == CHECK_CONDITION:
        assert result.sense[2] != 0x4, f"internal failure for {cdb.hex()}"
