"""CDB field extraction and the checks every command shares.

All helpers take the raw CDB bytes; ``check_cdb`` raises :class:`SenseError` with
the exact field pointer (byte and leftmost bit) of the first offending field.
"""

from __future__ import annotations

from tcmu_scst.scsi.opcodes import OpSpec
from tcmu_scst.scsi.sense import SenseError

_NACA = 0x04
_FLAG = 0x02  # obsolete
_LINK = 0x01  # obsolete in SAM-5; linked commands are not supported


def be(cdb: bytes, offset: int, size: int) -> int:
    """Big-endian unsigned integer of ``size`` bytes at ``offset``."""
    return int.from_bytes(cdb[offset : offset + size], "big")


def variable_cdb_length(cdb: bytes) -> int:
    """Length of a variable-length (7Fh) CDB: 8 + ADDITIONAL CDB LENGTH."""
    return 8 + cdb[7] if len(cdb) > 7 else 0


def highest_bit(value: int) -> int:
    """Index (7..0) of the most significant set bit of a non-zero byte."""
    return value.bit_length() - 1


def check_cdb(cdb: bytes, spec: OpSpec) -> None:
    """Refuse a CDB that is too short, sets reserved bits, or uses NACA/LINK.

    Reserved and unsupported fields are exactly the bits outside the command's CDB
    usage map, so the field pointer names the leftmost bit of the offending field.
    """
    if len(cdb) < spec.cdb_len:
        # The opcode implies a longer CDB than the initiator sent.
        raise SenseError.invalid_field_in_cdb(0)
    last = spec.cdb_len - 1
    for index in range(1, last):
        extra = cdb[index] & ~spec.check_mask(index) & 0xFF
        if extra:
            raise SenseError.invalid_field_in_cdb(index, highest_bit(extra))
    control = cdb[last]
    # Vendor-specific bits 7-6 are ignored; NACA=1 needs ACA support (NORMACA=0
    # in INQUIRY) and LINK/FLAG need linked commands: both are refused (SAM-5 5.2).
    bad = control & (_NACA | _FLAG | _LINK)
    if bad:
        raise SenseError.invalid_field_in_cdb(last, highest_bit(bad))


def reject_mask(spec: OpSpec) -> int:
    """The bits :func:`check_cdb` refuses in a ``spec.cdb_len``-byte CDB, as one
    big-endian integer: ``int.from_bytes(cdb, "big") & mask`` is 0 exactly when
    ``check_cdb`` accepts a CDB of that length (the data path's one-step check)."""
    last = spec.cdb_len - 1
    octets = [0] + [~spec.check_mask(i) & 0xFF for i in range(1, last)]
    octets.append(_NACA | _FLAG | _LINK)
    return int.from_bytes(bytes(octets), "big")


def lba_6(cdb: bytes) -> int:
    return be(cdb, 1, 3) & 0x1FFFFF


def transfer_length_6(cdb: bytes) -> int:
    """READ(6)/WRITE(6): a TRANSFER LENGTH of 0 means 256 blocks (SBC-4 5.15)."""
    return cdb[4] or 256


def rw_lba_and_length(cdb: bytes) -> tuple[int, int, int]:
    """(LBA, transfer length, byte offset of the length field) by CDB size.

    Covers READ/WRITE/VERIFY/WRITE AND VERIFY/PRE-FETCH/SYNCHRONIZE CACHE/WRITE
    SAME in their 6, 10, 12 and 16-byte forms, whose fields sit at the same places.
    """
    size = len(cdb)
    if size == 6:
        return lba_6(cdb), transfer_length_6(cdb), 4
    if size == 10:
        return be(cdb, 2, 4), be(cdb, 7, 2), 7
    if size == 12:
        return be(cdb, 2, 4), be(cdb, 6, 4), 6
    return be(cdb, 2, 8), be(cdb, 10, 4), 10


def allocation_length(cdb: bytes, offset: int, size: int) -> int:
    return be(cdb, offset, size)
