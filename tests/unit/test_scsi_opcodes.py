"""The opcode table and the shared CDB checks."""

from __future__ import annotations

import pytest

from tcmu_scst.command import Direction
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi.cdb import check_cdb, rw_lba_and_length, variable_cdb_length
from tcmu_scst.scsi.sense import SenseError
from tcmu_scst.testing.scsi_harness import Sense, rw_cdb


@pytest.mark.parametrize("spec", op.COMMANDS, ids=lambda s: s.name)
def test_table_entry_is_consistent(spec: op.OpSpec) -> None:
    assert spec.usage[0] == spec.opcode
    assert spec.cdb_len == op.cdb_length(spec.opcode)
    assert spec.usage[-1] == 0  # control byte: NACA/LINK unsupported
    if spec.service_action is not None:
        assert op.has_service_actions(spec.opcode)
        assert spec.usage[1] & 0x1F == spec.service_action
    if spec.writes_medium:
        assert spec.direction == Direction.OUT and spec.blocking


def test_cdb_length_by_group() -> None:
    assert op.cdb_length(0x00) == 6
    assert op.cdb_length(0x28) == 10
    assert op.cdb_length(0x5A) == 10
    assert op.cdb_length(0x88) == 16
    assert op.cdb_length(0xA8) == 12
    assert op.cdb_length(0x60) is None  # reserved group 3
    assert op.cdb_length(0xC0) is None  # vendor specific
    assert op.cdb_length(0x7F) == 0
    assert variable_cdb_length(bytes(7) + b"\x18" + bytes(24)) == 32


def test_is_io_and_direction() -> None:
    assert op.is_io(rw_cdb(op.READ_10, 0, 1))
    assert op.is_io(rw_cdb(op.WRITE_16, 0, 1))
    assert not op.is_io(bytes((op.INQUIRY, 0, 0, 0, 36, 0)))
    assert not op.is_io(b"\xff" + bytes(5))
    assert not op.is_io(b"")
    assert op.data_direction(rw_cdb(op.READ_12, 0, 1)) == Direction.IN
    assert op.data_direction(rw_cdb(op.VERIFY, 0, 1)) == Direction.NONE
    assert op.data_direction(rw_cdb(op.VERIFY, 0, 1, byte1=0x02)) == Direction.OUT
    assert op.data_direction(rw_cdb(op.WRITE_SAME_16, 0, 1, byte1=0x01)) == Direction.NONE
    assert op.name_of(rw_cdb(op.WRITE_12, 0, 1)) == "WRITE(12)"


def _error(cdb: bytes) -> Sense:
    spec = op.lookup(cdb)
    assert spec is not None
    with pytest.raises(SenseError) as info:
        check_cdb(cdb, spec)
    return Sense.parse(info.value.sense)


def test_reserved_bit_points_at_leftmost_offending_bit() -> None:
    cdb = bytearray(rw_cdb(op.READ_10, 0, 1))
    cdb[1] = 0x20  # RDPROTECT=001b: no protection information
    sense = _error(bytes(cdb))
    assert sense.code == (0x5, 0x24, 0x00)
    assert sense.field == (True, 1, 5)


def test_group_number_and_dpo_fua_accepted() -> None:
    cdb = bytearray(rw_cdb(op.WRITE_16, 0, 1, byte1=0x18))
    cdb[14] = 0x3F
    spec = op.lookup(bytes(cdb))
    assert spec is not None
    check_cdb(bytes(cdb), spec)  # does not raise


def test_naca_and_link_refused() -> None:
    naca = _error(rw_cdb(op.READ_10, 0, 1, control=0x04))
    assert naca.field == (True, 9, 2)
    link = _error(rw_cdb(op.READ_16, 0, 1, control=0x01))
    assert link.field == (True, 15, 0)


def test_vendor_bits_of_control_ignored() -> None:
    cdb = rw_cdb(op.READ_10, 0, 1, control=0xC0)
    spec = op.lookup(cdb)
    assert spec is not None
    check_cdb(cdb, spec)


def test_too_short_cdb_refused() -> None:
    sense = _error(rw_cdb(op.READ_10, 0, 1)[:6])
    assert sense.code == (0x5, 0x24, 0x00)
    assert sense.field == (True, 0, 7)


def test_rw_fields_by_length() -> None:
    assert rw_lba_and_length(rw_cdb(op.READ_6, 0x1ABCDE, 0)) == (0x1ABCDE, 256, 4)
    assert rw_lba_and_length(rw_cdb(op.READ_10, 0x12345678, 0xFFFF)) == (0x12345678, 0xFFFF, 7)
    assert rw_lba_and_length(rw_cdb(op.READ_12, 5, 0x10000)) == (5, 0x10000, 6)
    assert rw_lba_and_length(rw_cdb(op.READ_16, 1 << 40, 7)) == (1 << 40, 7, 10)
