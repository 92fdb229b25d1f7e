"""Fixed-format sense data and SenseError."""

from __future__ import annotations

from tcmu_scst.command import CHECK_CONDITION
from tcmu_scst.scsi.sense import (
    ILLEGAL_REQUEST,
    MISCOMPARE,
    SenseError,
    build_sense,
    field_pointer_sks,
    to_descriptor_format,
)
from tcmu_scst.testing.scsi_harness import Sense


def test_build_sense_is_18_bytes_fixed_current() -> None:
    sense = build_sense(0x5, 0x24, 0x00)
    assert len(sense) == 18
    assert sense[0] == 0x70
    assert sense[2] == 0x05
    assert sense[7] == 10
    assert (sense[12], sense[13]) == (0x24, 0x00)
    assert sense[15:18] == b"\x00\x00\x00"


def test_information_sets_valid_and_field() -> None:
    sense = build_sense(MISCOMPARE, 0x1D, 0x00, information=0x1234)
    assert sense[0] == 0xF0
    assert sense[3:7] == bytes.fromhex("00001234")


def test_information_too_large_leaves_valid_clear() -> None:
    sense = build_sense(MISCOMPARE, 0x1D, 0x00, information=1 << 32)
    assert sense[0] == 0x70
    assert sense[3:7] == bytes(4)


def test_field_pointer_in_cdb_with_bit() -> None:
    assert field_pointer_sks(7, 7, in_cdb=True) == bytes((0x80 | 0x40 | 0x08 | 7, 0, 7))


def test_field_pointer_in_parameter_list_without_bit() -> None:
    assert field_pointer_sks(0x123, None, in_cdb=False) == bytes((0x80, 0x01, 0x23))


def test_invalid_field_in_cdb_result() -> None:
    result = SenseError.invalid_field_in_cdb(2, 5).result()
    assert result.status == CHECK_CONDITION
    parsed = Sense.parse(result.sense)
    assert parsed.code == (ILLEGAL_REQUEST, 0x24, 0x00)
    assert parsed.field == (True, 2, 5)


def test_invalid_field_in_parameter_list_clears_cd() -> None:
    parsed = Sense.parse(SenseError.invalid_field_in_parameter_list(10, 2).sense)
    assert parsed.code == (ILLEGAL_REQUEST, 0x26, 0x00)
    assert parsed.field == (False, 10, 2)


def test_named_constructors_have_the_standard_codes() -> None:
    cases = {
        SenseError.invalid_opcode(): (0x5, 0x20, 0x00),
        SenseError.lba_out_of_range(): (0x5, 0x21, 0x00),
        SenseError.parameter_list_length_error(): (0x5, 0x1A, 0x00),
        SenseError.saving_parameters_not_supported(): (0x5, 0x39, 0x00),
        SenseError.write_protected(): (0x7, 0x27, 0x00),
        SenseError.space_allocation_failed(): (0x7, 0x27, 0x07),
        SenseError.read_error(): (0x3, 0x11, 0x00),
        SenseError.write_error(): (0x3, 0x0C, 0x00),
        SenseError.internal_target_failure(): (0x4, 0x44, 0x00),
        SenseError.invalid_field_in_command_iu(): (0x5, 0x0E, 0x03),
        SenseError.not_ready_initializing_command_required(): (0x2, 0x04, 0x02),
        SenseError.unit_attention(0x2A, 0x09): (0x6, 0x2A, 0x09),
    }
    for error, code in cases.items():
        assert Sense.parse(error.sense).code == code


def test_descriptor_format_conversion_keeps_information_and_sks() -> None:
    fixed = build_sense(MISCOMPARE, 0x1D, 0x00, information=77,
                        sks=field_pointer_sks(3, 1, in_cdb=True))
    desc = to_descriptor_format(fixed)
    assert desc[0] == 0x72
    assert (desc[1], desc[2], desc[3]) == (MISCOMPARE, 0x1D, 0x00)
    assert desc[7] == len(desc) - 8 == 12 + 8
    assert desc[8:12] == bytes((0x00, 0x0A, 0x80, 0x00))
    assert int.from_bytes(desc[12:20], "big") == 77
    assert desc[20:23] == bytes((0x02, 0x06, 0x00))
    assert desc[24:27] == fixed[15:18]


def test_descriptor_format_without_extras_is_header_only() -> None:
    desc = to_descriptor_format(build_sense(0, 0, 0))
    assert desc == bytes((0x72, 0, 0, 0, 0, 0, 0, 0))
