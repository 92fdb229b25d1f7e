"""Random and mutated CDBs, and what a well-formed answer to one looks like.

One generator serves the in-process fuzz test (``tests/unit/test_cdb_fuzz.py``, the
handlers called directly) and the kernel one (``tests/kernel/test_cdb_fuzz.py``, the
same commands through sg, tcm_loop, LIO and the daemon's ring). It is driven by a
``random.Random`` so a failing seed reproduces; each command says how it was made.

Kinds of commands (:func:`fuzz_commands`):

* ``sweep``: every opcode 00h-FFh with the CDB length of its group (SPC-4 4.2.5.1:
  groups 0/1/2/4/5 are 6/10/10/16/12 bytes; reserved and vendor groups get 6-16
  bytes, 7Fh a variable-length CDB), random fields, a random direction and length;
* ``valid``: an implemented command (:data:`~tcmu_scst.scsi.opcodes.COMMANDS`, and the
  MMC ones) whose fields use only the bits its CDB usage data allows, with the LBA
  and transfer length of data CDBs inside the medium and the buffer sized to match;
* a ``valid`` command with one mutation: a ``reserved`` bit set (outside the usage
  data), the LBA ``beyond`` the capacity, a ``huge`` transfer length, a ``short`` or
  ``long`` buffer against the CDB's transfer/allocation length, a ``control`` byte
  with NACA/LINK/vendor bits, a ``truncated`` or ``padded`` CDB;
* ``random``: random bytes of a random length (6-32).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from tcmu_scst.command import CHECK_CONDITION, CONDITION_MET, GOOD, Direction
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi.mmc import MMC_COMMANDS
from tcmu_scst.scsi.opcodes import OpSpec

#: The largest buffer a command gets (bounded so the kernel test stays fast).
MAX_BUFFER = 128 * 1024

MUTATIONS = ("reserved", "beyond", "huge", "short", "long", "control", "truncated", "padded")

#: Sense keys a device server may answer a command with (SPC-4 table 27; NO SENSE,
#: RECOVERED ERROR and COMPLETED are never a failed command's key here; HARDWARE
#: ERROR means the emulation itself failed, which is what fuzzing looks for).
FAILURE_KEYS = {
    0x2: "NOT READY",
    0x3: "MEDIUM ERROR",
    0x5: "ILLEGAL REQUEST",
    0x6: "UNIT ATTENTION",
    0x7: "DATA PROTECT",
    0xB: "ABORTED COMMAND",
    0xE: "MISCOMPARE",
}

#: ASCs an ILLEGAL REQUEST for a bad CDB or parameter list may carry (SPC-4 D.2):
#: parameter list length error, invalid command operation code, LBA out of range,
#: invalid element, invalid field in CDB, logical unit not supported, invalid field
#: in parameter list, saving parameters not supported, command sequence error,
#: invalid field in command information unit, medium removal prevented, incompatible
#: medium / cannot read medium, invalid release of persistent reservation, illegal
#: mode for this track (MMC), invalid message / copy target errors.
ILLEGAL_REQUEST_ASCS = frozenset(
    {0x1A, 0x20, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x2C, 0x0E, 0x30, 0x35, 0x39,
     0x3D, 0x53, 0x55, 0x64, 0x0D}
)


@dataclass(frozen=True, slots=True)
class FuzzCommand:
    """One command: the CDB, the buffer's direction and size, Data-Out bytes."""

    cdb: bytes
    direction: Direction
    length: int
    data: bytes  # Data-Out (``length`` bytes) or b""
    kind: str  # how it was made: sweep, valid, random, or the mutation's name

    def __str__(self) -> str:
        return f"{self.kind} {self.cdb.hex()} {self.direction.value} {self.length}"


@dataclass(frozen=True, slots=True)
class Geometry:
    block_size: int
    blocks: int  # capacity in logical blocks


def _group_length(rng: random.Random, opcode: int) -> int:
    if opcode == op.VARIABLE_LENGTH_CMD:
        return 8 + 4 * rng.randint(0, 6)
    return op.cdb_length(opcode) or rng.choice((6, 10, 12, 16))


def _buffer(rng: random.Random, direction: Direction, length: int) -> tuple[Direction, int, bytes]:
    if length <= 0 or direction is Direction.NONE:
        return Direction.NONE, 0, b""
    length = min(length, MAX_BUFFER)
    if direction is Direction.OUT:
        return direction, length, rng.randbytes(length)
    return Direction.IN, length, b""


def _sweep(rng: random.Random, opcode: int) -> FuzzCommand:
    cdb = bytearray(rng.randbytes(_group_length(rng, opcode)))
    cdb[0] = opcode
    if opcode == op.VARIABLE_LENGTH_CMD:
        cdb[7] = len(cdb) - 8
    direction = rng.choice((Direction.NONE, Direction.IN, Direction.OUT))
    length = rng.choice((0, rng.randint(1, 600), 4096, rng.randint(1, MAX_BUFFER)))
    direction, length, data = _buffer(rng, direction, length)
    return FuzzCommand(bytes(cdb), direction, length, data, "sweep")


# Where a data CDB keeps its LBA and transfer length, by CDB length (SBC-4 5.x:
# READ/WRITE/VERIFY/WRITE AND VERIFY/WRITE SAME/PRE-FETCH/SYNCHRONIZE CACHE/ORWRITE).
_LBA_FIELDS = {6: (1, 3, 4, 1), 10: (2, 4, 7, 2), 12: (2, 4, 6, 4), 16: (2, 8, 10, 4)}


def _put(cdb: bytearray, at: int, size: int, value: int, limit_mask: int = -1) -> None:
    if size == 3:  # READ/WRITE(6): 21-bit LBA, keep byte 1's upper bits
        value &= 0x1FFFFF
        cdb[1] = (cdb[1] & 0xE0) | (value >> 16)
        cdb[2:4] = (value & 0xFFFF).to_bytes(2, "big")
        return
    cdb[at : at + size] = (value & ((1 << (8 * size)) - 1) & limit_mask).to_bytes(size, "big")


def _valid(rng: random.Random, spec: OpSpec, geo: Geometry) -> FuzzCommand:
    """``spec`` with random values in the bits it uses; data CDBs inside the medium."""
    usage = spec.usage
    cdb = bytearray(len(usage))
    for index in range(len(usage)):
        cdb[index] = rng.getrandbits(8) & spec.check_mask(index)
    cdb[0] = spec.opcode
    if spec.service_action is not None:
        cdb[1] = (cdb[1] & 0xE0) | spec.service_action
    length = rng.choice((0, 8, 64, 255, 512, 4096))
    if spec.data_cdb and len(cdb) in _LBA_FIELDS and spec.opcode != op.COMPARE_AND_WRITE:
        lba_at, lba_size, len_at, len_size = _LBA_FIELDS[len(cdb)]
        blocks = rng.randint(0, min(8, geo.blocks))
        lba = rng.randint(0, max(0, geo.blocks - blocks))
        _put(cdb, lba_at, lba_size, lba)
        cdb[len_at : len_at + len_size] = blocks.to_bytes(len_size, "big")
        if len(cdb) == 6 and blocks == 0:
            blocks = 256  # READ/WRITE(6): zero means 256 blocks (SBC-4 5.x)
        byte_len = blocks * geo.block_size
        if spec.opcode in (op.WRITE_SAME, op.WRITE_SAME_16):
            byte_len = geo.block_size
        length = byte_len
    elif spec.opcode == op.COMPARE_AND_WRITE:
        blocks = rng.randint(0, 2)
        _put(cdb, 2, 8, rng.randint(0, max(0, geo.blocks - blocks)))
        cdb[13] = blocks
        length = 2 * blocks * geo.block_size
    wanted = spec.direction if spec.direction is not Direction.BIDI else Direction.NONE
    direction, length, data = _buffer(rng, wanted, length)
    return FuzzCommand(bytes(cdb), direction, length, data, "valid")


def _mutate(rng: random.Random, base: FuzzCommand, spec: OpSpec, geo: Geometry) -> FuzzCommand:
    cdb = bytearray(base.cdb)
    direction, length = base.direction, base.length
    kind = rng.choice(MUTATIONS)
    if kind == "reserved":
        spare = [(i, b) for i in range(1, len(cdb) - 1) for b in range(8)
                 if not spec.check_mask(i) & (1 << b)]  # fmt: skip
        if spare:
            index, bit = rng.choice(spare)
            cdb[index] |= 1 << bit
    elif kind == "beyond" and len(cdb) in _LBA_FIELDS:
        lba_at, lba_size, _, _ = _LBA_FIELDS[len(cdb)]
        _put(cdb, lba_at, lba_size, rng.choice((geo.blocks, geo.blocks + 1, (1 << 64) - 1,
                                                 (1 << 32) - 1, geo.blocks - 1)))
    elif kind == "huge" and len(cdb) in _LBA_FIELDS:
        _, _, len_at, len_size = _LBA_FIELDS[len(cdb)]
        cdb[len_at : len_at + len_size] = b"\xff" * len_size
    elif kind == "short":
        length = rng.randint(0, max(0, length - 1)) if length else 0
        if length == 0:
            direction = Direction.NONE
    elif kind == "long":
        if direction is Direction.NONE:
            direction = rng.choice((Direction.IN, Direction.OUT))
        length = min(MAX_BUFFER, length + rng.choice((1, 511, 512, 4096, 65536)))
    elif kind == "control":
        cdb[-1] |= rng.choice((0x01, 0x04, 0x40, 0x80, 0xC5))
    elif kind == "truncated" and len(cdb) > 6:
        cdb = cdb[: rng.randint(6, len(cdb) - 1)]
    elif kind == "padded":
        cdb += rng.randbytes(rng.randint(1, 16 - min(len(cdb), 15)))
    direction, length, data = _buffer(rng, direction, length)
    if direction is Direction.OUT and base.data:
        data = (base.data + data)[:length]
    return FuzzCommand(bytes(cdb), direction, length, data, kind)


def _random(rng: random.Random) -> FuzzCommand:
    cdb = rng.randbytes(rng.randint(6, 32))
    direction = rng.choice((Direction.NONE, Direction.IN, Direction.OUT))
    direction, length, data = _buffer(rng, direction, rng.randint(1, 8192))
    return FuzzCommand(cdb, direction, length, data, "random")


def specs_for(device_type: int) -> tuple[OpSpec, ...]:
    """The commands to build valid CDBs from: SBC/SPC ones, plus MMC for a CD-ROM."""
    return op.COMMANDS + (MMC_COMMANDS if device_type == 5 else ())


def fuzz_commands(
    rng: random.Random, count: int, geo: Geometry, specs: tuple[OpSpec, ...] = op.COMMANDS
) -> Iterator[FuzzCommand]:
    """``count`` commands: first the opcode sweep (every opcode once per 256 commands
    of the budget's first quarter), then valid, mutated and random ones mixed."""
    sweeps = max(1, count // 4 // 256)
    made = 0
    for _ in range(sweeps):
        for opcode in range(256):
            yield _sweep(rng, opcode)
            made += 1
    while made < count:
        roll = rng.random()
        if roll < 0.1:
            yield _random(rng)
        else:
            spec = rng.choice(specs)
            base = _valid(rng, spec, geo)
            yield base if roll < 0.4 else _mutate(rng, base, spec, geo)
        made += 1


def check_answer(status: int, sense: bytes) -> str | None:
    """None if (``status``, ``sense``) is a well-formed answer, else what is wrong.

    GOOD or CONDITION MET without sense; CHECK CONDITION with fixed-format sense
    (70h/71h, SPC-4 4.5.3) or descriptor sense (72h/73h, once a MODE SELECT set
    D_SENSE), a failure's sense key, an ASC, and for ILLEGAL REQUEST one of the ASCs
    a bad field is reported with; a SENSE-KEY SPECIFIC field pointer with SKSV set
    must not use the reserved bits.
    """
    if status in (GOOD, CONDITION_MET):
        return None
    if status != CHECK_CONDITION:
        return f"status {status:#04x}"
    if len(sense) < 8:
        return f"sense too short: {sense.hex()}"
    code = sense[0] & 0x7F
    if code in (0x70, 0x71):
        if len(sense) < 14 or sense[7] + 8 < 14:
            return f"fixed sense without ASC: {sense.hex()}"
        key, asc = sense[2] & 0x0F, sense[12]
        if sense[2] & 0xD0:
            return f"FILEMARK/EOM/ILI or reserved bit in byte 2: {sense.hex()}"
        if len(sense) >= 18 and key == 0x5 and sense[15] & 0x80 and sense[15] & 0x30:
            return f"reserved bits in the field pointer: {sense.hex()}"
    elif code in (0x72, 0x73):
        key, asc = sense[1] & 0x0F, sense[2]
        if len(sense) < 8 + sense[7]:
            return f"descriptor sense shorter than its length: {sense.hex()}"
    else:
        return f"response code {code:#04x}: {sense.hex()}"
    if key not in FAILURE_KEYS:
        return f"sense key {key:#x}: {sense.hex()}"
    if asc == 0 and key != 0xB:
        return f"no ASC: {sense.hex()}"
    if key == 0x5 and asc not in ILLEGAL_REQUEST_ASCS:
        return f"ILLEGAL REQUEST with ASC {asc:#04x}: {sense.hex()}"
    return None
