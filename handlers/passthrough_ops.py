"""Per-device-type command tables for the pass-through handlers (SCST's ``scst_scsi_op_table``).

TCMU does not tell the handler a command's data direction (tcmu-abi §2.6), and the
buffer length is the initiator's *expected* length, not what the CDB asks for. Like
SCST's device handlers, we therefore decode every CDB with a table for the device
type: :func:`decode` gives the direction and the transfer length the CDB implies
(``None`` when the CDB does not say, e.g. FORMAT UNIT's parameter list).

A command the table of the type does not know is refused (INVALID COMMAND OPERATION
CODE) unless the device's params list it as a vendor Data-In/Data-Out opcode.

Types (SPC-4 peripheral device type): 0 disk, 1 tape, 3 processor, 5 CD/DVD,
7 optical memory (MO), 8 medium changer, 0Ch storage array controller (RAID).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tcmu_scst.command import Direction

TYPE_DISK = 0x00
TYPE_TAPE = 0x01
TYPE_PROCESSOR = 0x03
TYPE_CDROM = 0x05
TYPE_MOD = 0x07
TYPE_CHANGER = 0x08
TYPE_RAID = 0x0C
ALL_TYPES = frozenset(
    {TYPE_DISK, TYPE_TAPE, TYPE_PROCESSOR, TYPE_CDROM, TYPE_MOD, TYPE_CHANGER, TYPE_RAID}
)


@dataclass(slots=True)
class DeviceState:
    """What the decoding needs to know about the device now.

    ``block_size``: logical block size (disk, MO, CD: from READ CAPACITY; tape: the
    fixed block length of the current mode, 0 = variable).
    """

    device_type: int
    block_size: int


@dataclass(frozen=True, slots=True)
class Decoded:
    direction: Direction
    length: int | None  # bytes the CDB implies; None = the CDB does not say


Rule = Callable[[bytes, DeviceState], Decoded]

_NONE = Decoded(Direction.NONE, 0)


def _be(cdb: bytes, offset: int, size: int) -> int:
    return int.from_bytes(cdb[offset : offset + size], "big")


# -- rule builders ----------------------------------------------------------------------

def none() -> Rule:
    return lambda cdb, st: _NONE


def data_in(offset: int, size: int) -> Rule:
    """Data-In of an ALLOCATION LENGTH field."""
    return lambda cdb, st: Decoded(Direction.IN, _be(cdb, offset, size))


def data_out(offset: int, size: int) -> Rule:
    """Data-Out of a PARAMETER LIST LENGTH field."""
    return lambda cdb, st: Decoded(Direction.OUT, _be(cdb, offset, size))


def fixed_in(length: int) -> Rule:
    return lambda cdb, st: Decoded(Direction.IN, length)


def blocks(direction: Direction, offset: int, size: int, *, zero_is: int = 0) -> Rule:
    """``TRANSFER LENGTH`` in logical blocks (READ/WRITE(6) use ``zero_is=256``)."""

    def rule(cdb: bytes, st: DeviceState) -> Decoded:
        count = _be(cdb, offset, size) or zero_is
        return Decoded(direction, count * st.block_size if st.block_size else None)

    return rule


def unknown_length(direction: Direction) -> Rule:
    return lambda cdb, st: Decoded(direction, None)


def _rw6_disk(direction: Direction) -> Rule:
    return blocks(direction, 4, 1, zero_is=256)


def _verify(offset: int, size: int) -> Rule:
    """VERIFY(10/12/16): BYTCHK 00b = no data, 01b = N blocks, 11b = one block (SBC-4)."""

    def rule(cdb: bytes, st: DeviceState) -> Decoded:
        bytchk = (cdb[1] >> 1) & 0x3
        if bytchk == 0:
            return _NONE
        count = 1 if bytchk == 3 else _be(cdb, offset, size)
        return Decoded(Direction.OUT, count * st.block_size if st.block_size else None)

    return rule


def _write_same(cdb: bytes, st: DeviceState) -> Decoded:
    """WRITE SAME(10/16): one block of Data-Out, none with NDOB (bit 0 of byte 1)."""
    if cdb[0] == 0x93 and cdb[1] & 0x01:
        return _NONE
    return Decoded(Direction.OUT, st.block_size or None)


def _format_unit(cdb: bytes, st: DeviceState) -> Decoded:
    """FORMAT UNIT: FMTDATA (byte 1 bit 4) means a parameter list of unstated length."""
    return Decoded(Direction.OUT, None) if cdb[1] & 0x10 else _NONE


def _compare_and_write(cdb: bytes, st: DeviceState) -> Decoded:
    nlb = cdb[13]
    return Decoded(Direction.OUT, 2 * nlb * st.block_size if st.block_size else None)


def _tape_rw(direction: Direction, offset: int) -> Rule:
    """SSC READ/WRITE(6/16), VERIFY(6): FIXED (byte 1 bit 0) counts blocks, else bytes."""

    def rule(cdb: bytes, st: DeviceState) -> Decoded:
        count = _be(cdb, offset, 3)
        if not cdb[1] & 0x01:
            return Decoded(direction, count)
        return Decoded(direction, count * st.block_size if st.block_size else None)

    return rule


def _tape_verify(cdb: bytes, st: DeviceState) -> Decoded:
    """SSC VERIFY(6): Data-Out only with BYTCMP (byte 1 bit 1)."""
    if not cdb[1] & 0x02:
        return _NONE
    return _tape_rw(Direction.OUT, 2)(cdb, st)


def _read_position(cdb: bytes, st: DeviceState) -> Decoded:
    """SSC READ POSITION: short form 20 bytes, long form 32, extended: ALLOCATION LENGTH."""
    service_action = cdb[1] & 0x1F
    if service_action in (0x00, 0x01):
        return Decoded(Direction.IN, 20)
    if service_action == 0x06:
        return Decoded(Direction.IN, 32)
    return Decoded(Direction.IN, _be(cdb, 7, 2))


def _sa_in_16(cdb: bytes, st: DeviceState) -> Decoded:
    """SERVICE ACTION IN(16): every service action has ALLOCATION LENGTH in bytes 10-13."""
    return Decoded(Direction.IN, _be(cdb, 10, 4))


# -- the tables ---------------------------------------------------------------------

_IN = Direction.IN
_OUT = Direction.OUT

#: SPC commands every type may get.
_SPC: dict[int, Rule] = {
    0x00: none(),  # TEST UNIT READY
    0x03: data_in(4, 1),  # REQUEST SENSE
    0x12: data_in(3, 2),  # INQUIRY
    0x15: data_out(4, 1),  # MODE SELECT(6)
    0x16: none(),  # RESERVE(6)
    0x17: none(),  # RELEASE(6)
    0x1A: data_in(4, 1),  # MODE SENSE(6)
    0x1C: data_in(3, 2),  # RECEIVE DIAGNOSTIC RESULTS
    0x1D: data_out(3, 2),  # SEND DIAGNOSTIC
    0x3B: data_out(6, 3),  # WRITE BUFFER
    0x3C: data_in(6, 3),  # READ BUFFER
    0x4C: data_out(7, 2),  # LOG SELECT
    0x4D: data_in(7, 2),  # LOG SENSE
    0x55: data_out(7, 2),  # MODE SELECT(10)
    0x56: data_out(7, 2),  # RESERVE(10) (third-party parameter list)
    0x57: data_out(7, 2),  # RELEASE(10)
    0x5A: data_in(7, 2),  # MODE SENSE(10)
    0x5E: data_in(7, 2),  # PERSISTENT RESERVE IN
    0x5F: data_out(5, 4),  # PERSISTENT RESERVE OUT
    0x83: data_out(10, 4),  # EXTENDED COPY
    0x84: data_in(10, 4),  # RECEIVE COPY RESULTS
    0x8C: data_in(10, 4),  # READ ATTRIBUTE
    0x8D: data_out(10, 4),  # WRITE ATTRIBUTE
    0xA0: data_in(6, 4),  # REPORT LUNS (the kernel answers it; here for completeness)
    0xA2: data_in(6, 4),  # SECURITY PROTOCOL IN
    0xA3: data_in(6, 4),  # MAINTENANCE IN (REPORT TARGET PORT GROUPS, RSOC, ...)
    0xA4: data_out(6, 4),  # MAINTENANCE OUT
    0xB5: data_out(6, 4),  # SECURITY PROTOCOL OUT
}

#: SBC direct-access commands (disk; also MO, with additions).
_SBC: dict[int, Rule] = {
    0x04: _format_unit,  # FORMAT UNIT
    0x07: unknown_length(_OUT),  # REASSIGN BLOCKS (length in the parameter header)
    0x08: _rw6_disk(_IN),  # READ(6)
    0x0A: _rw6_disk(_OUT),  # WRITE(6)
    0x0B: none(),  # SEEK(6)
    0x1B: none(),  # START STOP UNIT
    0x1E: none(),  # PREVENT ALLOW MEDIUM REMOVAL
    0x25: fixed_in(8),  # READ CAPACITY(10)
    0x28: blocks(_IN, 7, 2),  # READ(10)
    0x2A: blocks(_OUT, 7, 2),  # WRITE(10)
    0x2B: none(),  # SEEK(10)
    0x2E: blocks(_OUT, 7, 2),  # WRITE AND VERIFY(10)
    0x2F: _verify(7, 2),  # VERIFY(10)
    0x34: none(),  # PRE-FETCH(10)
    0x35: none(),  # SYNCHRONIZE CACHE(10)
    0x37: data_in(7, 2),  # READ DEFECT DATA(10)
    0x3E: data_in(7, 2),  # READ LONG(10): BYTE TRANSFER LENGTH
    0x3F: data_out(7, 2),  # WRITE LONG(10)
    0x41: _write_same,  # WRITE SAME(10)
    0x42: data_out(7, 2),  # UNMAP
    0x48: data_out(7, 2),  # SANITIZE: PARAMETER LIST LENGTH
    0x88: blocks(_IN, 10, 4),  # READ(16)
    0x89: _compare_and_write,  # COMPARE AND WRITE
    0x8A: blocks(_OUT, 10, 4),  # WRITE(16)
    0x8E: blocks(_OUT, 10, 4),  # WRITE AND VERIFY(16)
    0x8F: _verify(10, 4),  # VERIFY(16)
    0x90: none(),  # PRE-FETCH(16)
    0x91: none(),  # SYNCHRONIZE CACHE(16)
    0x93: _write_same,  # WRITE SAME(16)
    0x9E: _sa_in_16,  # SERVICE ACTION IN(16): READ CAPACITY(16), GET LBA STATUS
    0xA8: blocks(_IN, 6, 4),  # READ(12)
    0xAA: blocks(_OUT, 6, 4),  # WRITE(12)
    0xAE: blocks(_OUT, 6, 4),  # WRITE AND VERIFY(12)
    0xAF: _verify(6, 4),  # VERIFY(12)
    0xB7: data_in(6, 4),  # READ DEFECT DATA(12)
}

#: Optical memory (MO) adds the erase commands to SBC.
_MOD: dict[int, Rule] = {
    **_SBC,
    0x2C: none(),  # ERASE(10)
    0xAC: none(),  # ERASE(12)
}

_SSC: dict[int, Rule] = {
    0x01: none(),  # REWIND
    0x04: data_out(3, 2),  # FORMAT MEDIUM (TRANSFER LENGTH)
    0x05: fixed_in(6),  # READ BLOCK LIMITS
    0x08: _tape_rw(_IN, 2),  # READ(6)
    0x0A: _tape_rw(_OUT, 2),  # WRITE(6)
    0x0B: none(),  # SET CAPACITY
    0x0F: _tape_rw(_IN, 2),  # READ REVERSE(6)
    0x10: none(),  # WRITE FILEMARKS(6)
    0x11: none(),  # SPACE(6)
    0x13: _tape_verify,  # VERIFY(6)
    0x14: _tape_rw(_IN, 2),  # RECOVER BUFFERED DATA
    0x19: none(),  # ERASE(6)
    0x1B: none(),  # LOAD UNLOAD
    0x1E: none(),  # PREVENT ALLOW MEDIUM REMOVAL
    0x2B: none(),  # LOCATE(10)
    0x34: _read_position,  # READ POSITION
    0x44: data_in(7, 2),  # REPORT DENSITY SUPPORT
    0x80: none(),  # WRITE FILEMARKS(16)
    0x81: _tape_rw(_IN, 12),  # READ REVERSE(16)
    0x82: none(),  # ALLOW OVERWRITE
    0x88: _tape_rw(_IN, 12),  # READ(16)
    0x8A: _tape_rw(_OUT, 12),  # WRITE(16)
    0x91: none(),  # SPACE(16)
    0x92: none(),  # LOCATE(16)
    0x93: none(),  # ERASE(16)
}

#: SPC-2 processor devices: SEND / RECEIVE with a 3-byte TRANSFER LENGTH in bytes.
_PROCESSOR: dict[int, Rule] = {
    0x08: data_in(2, 3),  # RECEIVE
    0x0A: data_out(2, 3),  # SEND
}

#: MMC (CD/DVD). 0xA3/0xA4 are SEND KEY/REPORT KEY here, not MAINTENANCE IN/OUT.
_MMC: dict[int, Rule] = {
    0x04: _format_unit,  # FORMAT UNIT
    0x1B: none(),  # START STOP UNIT
    0x1E: none(),  # PREVENT ALLOW MEDIUM REMOVAL
    0x23: data_in(7, 2),  # READ FORMAT CAPACITIES
    0x25: fixed_in(8),  # READ CAPACITY
    0x28: blocks(_IN, 7, 2),  # READ(10)
    0x2A: blocks(_OUT, 7, 2),  # WRITE(10)
    0x2B: none(),  # SEEK(10)
    0x2E: blocks(_OUT, 7, 2),  # WRITE AND VERIFY(10)
    0x2F: none(),  # VERIFY(10) (MMC: no data)
    0x35: none(),  # SYNCHRONIZE CACHE
    0x42: data_in(7, 2),  # READ SUB-CHANNEL
    0x43: data_in(7, 2),  # READ TOC/PMA/ATIP
    0x44: data_in(7, 2),  # READ HEADER
    0x45: none(),  # PLAY AUDIO(10)
    0x46: data_in(7, 2),  # GET CONFIGURATION
    0x47: none(),  # PLAY AUDIO MSF
    0x4A: data_in(7, 2),  # GET EVENT STATUS NOTIFICATION
    0x4B: none(),  # PAUSE/RESUME
    0x4E: none(),  # STOP PLAY/SCAN
    0x51: data_in(7, 2),  # READ DISC INFORMATION
    0x52: data_in(7, 2),  # READ TRACK INFORMATION
    0x53: none(),  # RESERVE TRACK
    0x54: data_out(7, 2),  # SEND OPC INFORMATION
    0x58: none(),  # REPAIR TRACK
    0x5B: none(),  # CLOSE TRACK/SESSION
    0x5C: data_in(7, 2),  # READ BUFFER CAPACITY
    0x5D: data_out(6, 3),  # SEND CUE SHEET
    0xA1: none(),  # BLANK
    0xA3: data_out(8, 2),  # SEND KEY
    0xA4: data_in(8, 2),  # REPORT KEY
    0xA5: none(),  # PLAY AUDIO(12)
    0xA6: none(),  # LOAD/UNLOAD MEDIUM
    0xA7: none(),  # SET READ AHEAD
    0xA8: blocks(_IN, 6, 4),  # READ(12)
    0xAA: blocks(_OUT, 6, 4),  # WRITE(12)
    0xAC: unknown_length(_IN),  # GET PERFORMANCE (descriptor size depends on TYPE)
    0xAD: data_in(8, 2),  # READ DISC STRUCTURE
    0xB6: data_out(9, 2),  # SET STREAMING
    0xB9: unknown_length(_IN),  # READ CD MSF (sector size depends on the fields)
    0xBB: none(),  # SET CD SPEED
    0xBD: data_in(8, 2),  # MECHANISM STATUS
    0xBE: unknown_length(_IN),  # READ CD
    0xBF: data_out(8, 2),  # SEND DISC STRUCTURE
}

#: SMC medium changers. 0xB5 is REQUEST VOLUME ELEMENT ADDRESS here.
_SMC: dict[int, Rule] = {
    0x07: none(),  # INITIALIZE ELEMENT STATUS
    0x1B: none(),  # OPEN/CLOSE IMPORT/EXPORT ELEMENT
    0x1E: none(),  # PREVENT ALLOW MEDIUM REMOVAL
    0x2B: none(),  # POSITION TO ELEMENT
    0x37: none(),  # INITIALIZE ELEMENT STATUS WITH RANGE
    0xA5: none(),  # MOVE MEDIUM
    0xA6: none(),  # EXCHANGE MEDIUM
    0xB5: data_in(7, 3),  # REQUEST VOLUME ELEMENT ADDRESS
    0xB6: data_out(8, 2),  # SEND VOLUME TAG
    0xB8: data_in(7, 3),  # READ ELEMENT STATUS
}

#: SCC storage array controllers.
_SCC: dict[int, Rule] = {
    0xBA: data_in(6, 4),  # REDUNDANCY GROUP (IN)
    0xBB: data_out(6, 4),  # REDUNDANCY GROUP (OUT)
    0xBC: data_in(6, 4),  # SPARE (IN)
    0xBD: data_out(6, 4),  # SPARE (OUT)
    0xBE: data_in(6, 4),  # VOLUME SET (IN)
    0xBF: data_out(6, 4),  # VOLUME SET (OUT)
}

TABLES: dict[int, dict[int, Rule]] = {
    TYPE_DISK: {**_SPC, **_SBC},
    TYPE_TAPE: {**_SPC, **_SSC},
    TYPE_PROCESSOR: {**_SPC, **_PROCESSOR},
    TYPE_CDROM: {**_SPC, **_MMC},
    TYPE_MOD: {**_SPC, **_MOD},
    TYPE_CHANGER: {**_SPC, **_SMC},
    TYPE_RAID: {**_SPC, **_SCC},
}


def decode(cdb: bytes, state: DeviceState) -> Decoded | None:
    """Direction and implied length of ``cdb`` for this device; None = not in the table."""
    rule = TABLES[state.device_type].get(cdb[0])
    return None if rule is None else rule(cdb, state)


def known_opcodes(device_type: int) -> frozenset[int]:
    return frozenset(TABLES[device_type])
