"""The perf handlers: zeros into dirty buffers, emulation of the real type, tape basics."""

from __future__ import annotations

import pytest

from tcmu_scst.command import CHECK_CONDITION, GOOD, Command, Result
from tcmu_scst.errors import ConfigError, HandlerError
from tcmu_scst.handlers.perf import (
    PerfHandler,
    PerfParams,
    open_dev_config,
    parse_dev_config,
    to_dev_config,
)
from tcmu_scst.service import registry
from tcmu_scst.testing.scsi_harness import (
    STALE,
    Reply,
    inquiry,
    make_command,
    mode_select6,
    mode_sense6,
    read_capacity10,
    run,
)

MiB = 1 << 20


def go(handler: PerfHandler, cdb: bytes, data_out: bytes | None = None, in_len: int = 0) -> Reply:
    def execute(cmd: Command) -> Result:
        result: Result | None = handler.handle(cmd)
        assert result is not None
        return result

    return run(execute, cdb, data_out=data_out, in_len=in_len)


def disk(kind: str = "dev_disk_perf", size: int = 8 * MiB, bs: int = 512) -> PerfHandler:
    return open_dev_config(to_dev_config(PerfParams(kind, "p0", size=size, blocksize=bs)))


def tape() -> PerfHandler:
    return open_dev_config("dev_tape_perf/n=t0")


def read10(lba: int, blocks: int) -> bytes:
    return bytes((0x28, 0)) + lba.to_bytes(4, "big") + b"\x00" + blocks.to_bytes(2, "big") + b"\x00"


def write10(lba: int, blocks: int) -> bytes:
    return bytes((0x2A, 0)) + lba.to_bytes(4, "big") + b"\x00" + blocks.to_bytes(2, "big") + b"\x00"


def settle(handler: PerfHandler) -> None:
    for _ in range(4):
        if go(handler, bytes(6)).status == GOOD:
            return
    raise AssertionError("never ready")


# -- disk and MO ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,ptype", [("dev_disk_perf", 0x00), ("dev_modisk_perf", 0x07)])
def test_registry_opens_disk_kinds_with_their_type(kind: str, ptype: int) -> None:
    handler = registry.open_handler(f"{kind}/n=p0;size={MiB}")
    assert isinstance(handler, PerfHandler)
    data = go(handler, inquiry(alloc=96), in_len=96).data
    assert data[0] == ptype and data[8:16] == b"SCST_PRF"
    assert bool(data[1] & 0x80) == (ptype == 0x07)  # MO media are removable


def test_reads_return_zeros_into_a_dirty_buffer() -> None:
    handler = disk()
    cmd, backing = make_command(read10(0, 16), in_len=16 * 512)
    assert set(backing) == {STALE}  # the buffer held another command's bytes
    result = handler.handle(cmd)
    assert result is not None and result.status == GOOD
    assert result.data_in_len == 16 * 512 and backing == bytes(16 * 512)


def test_writes_are_discarded_and_reads_stay_zero() -> None:
    handler = disk()
    assert go(handler, write10(0, 4), data_out=b"\xff" * 2048).status == GOOD
    assert go(handler, read10(0, 4), in_len=2048).data == bytes(2048)


def test_size_and_block_size_are_reported() -> None:
    handler = disk(size=4 * MiB, bs=4096)
    data = go(handler, read_capacity10(), in_len=8).data
    assert data == (1023).to_bytes(4, "big") + (4096).to_bytes(4, "big")


def test_out_of_range_reads_are_still_checked() -> None:
    reply = go(disk(size=MiB), read10(2048, 1), in_len=512)
    assert reply.status == CHECK_CONDITION and reply.sense.code == (0x5, 0x21, 0x00)


def test_every_command_runs_inline() -> None:
    handler = disk()
    assert handler.is_inline(make_command(read10(0, 1), in_len=512)[0])


def test_default_size_is_nullio_like() -> None:
    assert parse_dev_config("dev_disk_perf/n=x").size == 5 * 1024**4 // 2


# -- params ---------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    PerfParams("dev_disk_perf", "p0", size=MiB, blocksize=4096),
    PerfParams("dev_modisk_perf", "mo 1,x", size=3 * MiB),
    PerfParams("dev_tape_perf", "t0"),
])
def test_dev_config_round_trip(params: PerfParams) -> None:
    text = to_dev_config(params)
    assert "," not in text and ":" not in text
    assert parse_dev_config(text) == params


def test_dev_config_accepts_the_scst_layer_forms() -> None:
    assert parse_dev_config("dev_disk_perf/hctl=1%3A0%3A0%3A0;size_mb=2") == PerfParams(
        "dev_disk_perf", "1:0:0:0", size=2 * MiB
    )


@pytest.mark.parametrize("text,error,message", [
    ("dev_disk/n=x", ConfigError, "does not start with dev_disk_perf/"),
    ("dev_disk_perf/size=5", ConfigError, "name"),
    ("dev_disk_perf/n=x;size=big", ConfigError, "not a number"),
    ("dev_disk_perf/n=x;wt", ConfigError, "unknown item 'wt'"),
    ("dev_disk_perf/n=x;color=1", ConfigError, "unknown item 'color=1'; known: blocksize"),
    ("dev_disk_perf/n=x;blocksize=1000", HandlerError, "not one LIO exports"),
    ("dev_disk_perf/n=x;size=100", HandlerError, "below one"),
])
def test_dev_config_errors(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_dev_config(text)


# -- tape ----------------------------------------------------------------------------------------


def tape_read(length: int, fixed: bool = False, sili: bool = False) -> bytes:
    return bytes((0x08, (1 if fixed else 0) | (2 if sili else 0))) + length.to_bytes(3, "big") + \
        b"\x00"


def tape_write(length: int, fixed: bool = False) -> bytes:
    return bytes((0x0A, 1 if fixed else 0)) + length.to_bytes(3, "big") + b"\x00"


def read_position(sa: int = 0) -> bytes:
    return bytes((0x34, sa)) + bytes(8)


def position_of(handler: PerfHandler) -> int:
    return int.from_bytes(go(handler, read_position(), in_len=20).data[4:8], "big")


def test_tape_inquiry_and_block_limits() -> None:
    handler = tape()
    data = go(handler, inquiry(alloc=96), in_len=96).data
    assert data[0] == 0x01 and data[1] & 0x80
    limits = go(handler, bytes((0x05, 0, 0, 0, 0, 0)), in_len=6).data
    assert int.from_bytes(limits[1:4], "big") == 1 << 20 and limits[4:6] == b"\x00\x01"


def test_tape_variable_read_returns_zeros_into_a_dirty_buffer() -> None:
    handler = tape()
    reply = go(handler, tape_read(1000), in_len=1000)
    assert reply.status == GOOD and reply.data == bytes(1000) and len(reply.buffer) == 1000
    assert position_of(handler) == 1


def test_tape_fixed_mode_after_mode_select_of_a_block_length() -> None:
    handler = tape()
    assert go(handler, tape_read(2, fixed=True), in_len=1024).sense.code == (0x5, 0x24, 0x00)
    params = bytes((0, 0, 0x10, 8)) + bytes((0, 0, 0, 0, 0)) + (512).to_bytes(3, "big")
    assert go(handler, mode_select6(len(params)), data_out=params).status == GOOD
    descriptor = go(handler, mode_sense6(0x00), in_len=12).data
    assert descriptor[3] == 8 and descriptor[9:12] == (512).to_bytes(3, "big")
    assert descriptor[2] == 0x10  # buffered mode
    assert go(handler, tape_read(2, fixed=True), in_len=1024).data == bytes(1024)
    assert go(handler, tape_write(3, fixed=True), data_out=bytes(1536)).status == GOOD
    assert position_of(handler) == 5
    reply = go(handler, tape_read(1, fixed=True, sili=True), in_len=512)
    assert reply.sense.code == (0x5, 0x24, 0x00)


def test_tape_mode_select_refuses_a_block_count_and_keeps_the_old_length() -> None:
    handler = tape()
    params = bytes((0, 0, 0, 8)) + bytes((0, 0, 0, 1, 0)) + (512).to_bytes(3, "big")
    reply = go(handler, mode_select6(len(params)), data_out=params)
    assert reply.sense.code == (0x5, 0x26, 0x00)
    assert go(handler, mode_sense6(0x00), in_len=12).data[9:12] == bytes(3)


def test_tape_positioning_commands() -> None:
    handler = tape()
    assert go(handler, read_position(), in_len=20).data[0] & 0x80  # BOP
    go(handler, tape_write(100), data_out=bytes(100))
    go(handler, bytes((0x10, 0, 0, 0, 1, 0)))  # WRITE FILEMARKS 1
    assert position_of(handler) == 2
    go(handler, bytes((0x11, 0)) + (-1 & 0xFFFFFF).to_bytes(3, "big") + b"\x00")  # SPACE -1
    assert position_of(handler) == 1
    locate = bytes((0x2B, 0, 0)) + (42).to_bytes(4, "big") + bytes(3)
    assert go(handler, locate).status == GOOD and position_of(handler) == 42
    long_form = go(handler, read_position(6), in_len=32).data
    assert int.from_bytes(long_form[8:16], "big") == 42
    assert go(handler, bytes((0x01, 0, 0, 0, 0, 0))).status == GOOD  # REWIND
    assert position_of(handler) == 0
    assert go(handler, read_position(8), in_len=32).sense.code == (0x5, 0x24, 0x00)
    assert go(handler, bytes((0x11, 2, 0, 0, 1, 0))).sense.code == (0x5, 0x24, 0x00)


def test_tape_unload_makes_it_not_ready_and_prevent_blocks_it() -> None:
    handler = tape()
    unload, load = bytes((0x1B, 0, 0, 0, 0, 0)), bytes((0x1B, 0, 0, 0, 1, 0))
    assert go(handler, bytes((0x1E, 0, 0, 0, 1, 0))).status == GOOD
    assert go(handler, unload).sense.code == (0x5, 0x53, 0x02)
    go(handler, bytes((0x1E, 0, 0, 0, 0, 0)))
    assert go(handler, unload).status == GOOD
    assert go(handler, bytes(6)).sense.code == (0x2, 0x3A, 0x00)
    assert go(handler, tape_read(10), in_len=10).sense.code == (0x2, 0x3A, 0x00)
    assert go(handler, load).status == GOOD
    assert go(handler, bytes(6)).sense.code == (0x6, 0x28, 0x00)
    assert go(handler, bytes(6)).status == GOOD


def test_tape_rsoc_lists_ssc_commands_not_sbc_ones() -> None:
    cdb = bytes((0xA3, 0x0C, 0, 0, 0, 0)) + (4096).to_bytes(4, "big") + b"\0\0"
    data = go(tape(), cdb, in_len=4096).data
    opcodes = {data[4 + 8 * i] for i in range(int.from_bytes(data[:4], "big") // 8)}
    assert {0x01, 0x05, 0x08, 0x0A, 0x10, 0x11, 0x1B, 0x2B, 0x34} <= opcodes
    assert not opcodes & {0x28, 0x25, 0x35}
