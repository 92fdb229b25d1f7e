"""Per-type command tables: direction and implied length from the CDB."""

from __future__ import annotations

import pytest

from tcmu_scst.command import Direction
from tcmu_scst.handlers import passthrough_ops as ops
from tcmu_scst.handlers.passthrough_ops import DeviceState, decode

IN, OUT, NONE = Direction.IN, Direction.OUT, Direction.NONE


def cdb(*octets: int, size: int) -> bytes:
    raw = bytearray(size)
    raw[: len(octets)] = bytes(octets)
    return bytes(raw)


def put(raw: bytes, offset: int, value: int, size: int) -> bytes:
    out = bytearray(raw)
    out[offset : offset + size] = value.to_bytes(size, "big")
    return bytes(out)


CASES = [
    # (type, block size, cdb, direction, length)
    (0, 512, put(cdb(0x28, size=10), 7, 8, 2), IN, 4096),  # READ(10) 8 blocks
    (0, 4096, put(cdb(0x2A, size=10), 7, 2, 2), OUT, 8192),  # WRITE(10) 2 x 4 KiB
    (0, 512, cdb(0x08, 0, 0, 0, 0, 0, size=6), IN, 256 * 512),  # READ(6): 0 means 256
    (0, 512, cdb(0x0A, 0, 0, 0, 3, 0, size=6), OUT, 3 * 512),
    (0, 512, put(cdb(0x88, size=16), 10, 5, 4), IN, 5 * 512),  # READ(16)
    (0, 512, put(cdb(0xAA, size=12), 6, 7, 4), OUT, 7 * 512),  # WRITE(12)
    (0, 512, put(cdb(0x2F, size=10), 7, 4, 2), NONE, 0),  # VERIFY BYTCHK=0
    (0, 512, put(cdb(0x2F, 0x02, size=10), 7, 4, 2), OUT, 4 * 512),  # BYTCHK=01b
    (0, 512, put(cdb(0x2F, 0x06, size=10), 7, 4, 2), OUT, 512),  # BYTCHK=11b: one block
    (0, 512, cdb(0x93, 0x01, size=16), NONE, 0),  # WRITE SAME(16) NDOB
    (0, 512, cdb(0x41, size=10), OUT, 512),  # WRITE SAME(10)
    (0, 512, cdb(0x89, *[0] * 12, 4, size=16), OUT, 2 * 4 * 512),  # COMPARE AND WRITE
    (0, 512, cdb(0x25, size=10), IN, 8),  # READ CAPACITY(10)
    (0, 512, put(cdb(0x9E, 0x10, size=16), 10, 32, 4), IN, 32),  # READ CAPACITY(16)
    (0, 512, cdb(0x04, 0x10, size=6), OUT, None),  # FORMAT UNIT with FMTDATA
    (0, 512, cdb(0x04, size=6), NONE, 0),
    (0, 512, put(cdb(0xA3, 0x0A, size=12), 6, 64, 4), IN, 64),  # MAINTENANCE IN (RTPG)
    (0, 512, cdb(0x35, size=10), NONE, 0),  # SYNCHRONIZE CACHE
    (0, 512, put(cdb(0x42, size=10), 7, 24, 2), OUT, 24),  # UNMAP
    # tape: FIXED bit counts blocks of the current block length, else bytes
    (1, 0, cdb(0x08, 0x00, 0, 0x10, 0, 0, size=6), IN, 4096),
    (1, 1024, cdb(0x08, 0x01, 0, 0, 3, 0, size=6), IN, 3072),
    (1, 0, cdb(0x0A, 0x01, 0, 0, 3, 0, size=6), OUT, None),  # fixed, no block length known
    (1, 512, cdb(0x0A, 0x00, 0, 2, 0, 0, size=6), OUT, 512),
    (1, 0, cdb(0x05, size=6), IN, 6),  # READ BLOCK LIMITS
    (1, 0, cdb(0x01, size=6), NONE, 0),  # REWIND
    (1, 0, cdb(0x34, 0x00, size=10), IN, 20),  # READ POSITION short form
    (1, 0, cdb(0x34, 0x06, size=10), IN, 32),  # long form
    (1, 0, put(cdb(0x34, 0x08, size=10), 7, 100, 2), IN, 100),  # extended form
    (1, 0, cdb(0x13, 0x00, 0, 0, 9, 0, size=6), NONE, 0),  # VERIFY(6) without BYTCMP
    (1, 256, put(cdb(0x88, 0x01, size=16), 12, 2, 3), IN, 512),  # READ(16) fixed
    (1, 0, cdb(0x10, size=6), NONE, 0),  # WRITE FILEMARKS
    # processor
    (3, 0, cdb(0x08, 0, 0, 1, 0, 0, size=6), IN, 256),  # RECEIVE
    (3, 0, cdb(0x0A, 0, 0, 0, 9, 0, size=6), OUT, 9),  # SEND
    # CD/DVD: A3/A4 are SEND KEY / REPORT KEY, not MAINTENANCE IN/OUT
    (5, 2048, put(cdb(0x28, size=10), 7, 2, 2), IN, 4096),
    (5, 2048, put(cdb(0xA4, size=12), 8, 20, 2), IN, 20),
    (5, 2048, put(cdb(0xA3, size=12), 8, 12, 2), OUT, 12),
    (5, 2048, put(cdb(0x43, size=10), 7, 12, 2), IN, 12),  # READ TOC
    (5, 2048, cdb(0xBE, size=12), IN, None),  # READ CD: unknown sector size
    # MO: disk plus ERASE
    (7, 512, cdb(0x2C, size=10), NONE, 0),
    (7, 512, put(cdb(0x28, size=10), 7, 1, 2), IN, 512),
    # changer
    (8, 0, put(cdb(0xB8, size=12), 7, 1000, 3), IN, 1000),  # READ ELEMENT STATUS
    (8, 0, cdb(0xA5, size=12), NONE, 0),  # MOVE MEDIUM
    (8, 0, put(cdb(0xB5, size=12), 7, 40, 3), IN, 40),  # REQUEST VOLUME ELEMENT ADDRESS
    # RAID
    (0xC, 0, put(cdb(0xBA, size=12), 6, 300, 4), IN, 300),
    (0xC, 0, put(cdb(0xBF, size=12), 6, 10, 4), OUT, 10),
]


@pytest.mark.parametrize(("dtype", "bs", "raw", "direction", "length"), CASES)
def test_decode(dtype: int, bs: int, raw: bytes, direction: Direction, length: int | None) -> None:
    decoded = decode(raw, DeviceState(dtype, bs))
    assert decoded is not None
    assert (decoded.direction, decoded.length) == (direction, length)


@pytest.mark.parametrize("dtype", sorted(ops.ALL_TYPES))
def test_every_type_knows_the_spc_basics(dtype: int) -> None:
    state = DeviceState(dtype, 512)
    inquiry = decode(bytes([0x12, 0, 0, 0, 96, 0]), state)
    assert inquiry is not None and (inquiry.direction, inquiry.length) == (IN, 96)
    tur = decode(bytes(6), state)
    assert tur is not None and tur.direction is NONE
    mode_select = decode(bytes([0x15, 0x10, 0, 0, 12, 0]), state)
    assert mode_select is not None and (mode_select.direction, mode_select.length) == (OUT, 12)


@pytest.mark.parametrize(
    ("dtype", "opcode"),
    [(0, 0xC0), (3, 0x28), (8, 0x28), (0xC, 0x2A), (1, 0x25), (5, 0x0A), (0, 0x05)],
)
def test_commands_of_other_types_are_unknown(dtype: int, opcode: int) -> None:
    size = 6 if opcode < 0x20 else 10 if opcode < 0xA0 else 12
    assert decode(bytes([opcode]) + bytes(size - 1), DeviceState(dtype, 512)) is None


def test_disk_table_without_block_size_gives_unknown_length() -> None:
    decoded = decode(put(cdb(0x2A, size=10), 7, 1, 2), DeviceState(0, 0))
    assert decoded is not None and decoded.length is None
