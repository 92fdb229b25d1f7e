"""Layouts and CDB lengths of the TCMU ABI (tcmu-abi.md §2), checked byte by byte."""

from __future__ import annotations

import pytest

from tcmu_scst.kernel import abi


def test_mailbox_offsets() -> None:
    assert abi.MAILBOX_SIZE == 128
    assert abi.MB_HEAD_FIELDS.size == 16  # version..cmd_head end at offset 16
    assert abi.OFF_MB_CMD_HEAD == 12
    assert abi.OFF_MB_CMD_TAIL == 64  # own cache line


def test_entry_request_layout_has_hole_at_20() -> None:
    buf = bytearray(112)
    abi.REQ.pack_into(buf, abi.OFF_REQ, 3, 1, 0, 0x1122334455667788)
    assert buf[8:12] == (3).to_bytes(4, "little")  # iov_cnt
    assert buf[12:16] == (1).to_bytes(4, "little")  # iov_bidi_cnt
    assert buf[16:20] == bytes(4)  # iov_dif_cnt
    assert buf[20:24] == bytes(4)  # the hole
    assert buf[24:32] == (0x1122334455667788).to_bytes(8, "little")  # cdb_off
    assert abi.OFF_REQ_IOV == 48
    assert abi.CMD_ENTRY_SIZE == 112


def test_response_overlay_offsets() -> None:
    assert (abi.OFF_RSP_SCSI_STATUS, abi.OFF_RSP_READ_LEN, abi.OFF_RSP_SENSE) == (8, 12, 16)
    assert abi.OFF_RSP_SENSE + abi.TCMU_SENSE_BUFFERSIZE == abi.CMD_ENTRY_SIZE


def test_header_layout() -> None:
    raw = abi.HDR.pack(abi.len_op(136, abi.TCMU_OP_CMD), 0xBEEF, 0, abi.TCMU_UFLAG_READ_LEN)
    assert raw == bytes([0x89, 0, 0, 0, 0xEF, 0xBE, 0, 2])
    assert abi.entry_op(0x89) == abi.TCMU_OP_CMD
    assert abi.entry_len(0x89) == 136


@pytest.mark.parametrize(
    ("iovs", "size"), [(0, 112), (1, 112), (4, 112), (5, 128), (6, 144), (7, 160)]
)
def test_base_entry_size(iovs: int, size: int) -> None:
    assert abi.cmd_entry_base_size(iovs) == size


def test_full_entry_size_rounds_cdb() -> None:
    assert abi.cmd_entry_size(1, 0, 6) == 120
    assert abi.cmd_entry_size(1, 0, 16) == 128
    assert abi.cmd_entry_size(5, 0, 10) == 144
    assert abi.cmd_entry_size(2, 2, 32) == 144


def test_tmr_entry_size() -> None:
    assert abi.tmr_entry_size(0) == 32
    assert abi.tmr_entry_size(1) == 40
    assert abi.tmr_entry_size(4) == 40
    assert abi.tmr_entry_size(5) == 48


@pytest.mark.parametrize(
    ("opcode", "length"),
    [
        (0x00, 6),  # TEST UNIT READY, group 0
        (0x12, 6),  # INQUIRY
        (0x28, 10),  # READ(10), group 1
        (0x5A, 10),  # MODE SENSE(10), group 2
        (0x60, 12),  # group 3 (reserved) counts 12
        (0x88, 16),  # READ(16), group 4
        (0x9E, 16),
        (0xA0, 12),  # REPORT LUNS, group 5
        (0xA8, 12),  # READ(12)
        (0xC0, 10),  # vendor group 6
        (0xE0, 10),  # vendor group 7
        (0xFF, 10),
    ],
)
def test_cdb_length_by_group(opcode: int, length: int) -> None:
    assert abi.cdb_length(opcode) == length


def test_variable_length_cdb() -> None:
    assert abi.cdb_length(0x7F, 0x18) == 32  # READ(32): additional length 0x18
    assert abi.cdb_length(0x7F, 252) == abi.SCSI_MAX_VARLEN_CDB_SIZE
