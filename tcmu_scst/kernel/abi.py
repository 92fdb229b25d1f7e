"""The TCMU shared-memory ABI (Linux 6.1 ``include/uapi/linux/target_core_user.h``).

Layouts are declared as data: every field with its offset, as measured on x86_64
(tcmu-abi.md §2). Values are host-endian; there are no pointers in the shared
region, only offsets from the start of the mapping. Constants keep the kernel's names.
"""

from __future__ import annotations

import struct
from typing import Final

# --- mailbox (tcmu-abi §2.1) ----------------------------------------------------
TCMU_MAILBOX_VERSION: Final = 2
ALIGN_SIZE: Final = 64
TCMU_OP_ALIGN_SIZE: Final = 8
TCMU_SENSE_BUFFERSIZE: Final = 96

TCMU_MAILBOX_FLAG_CAP_OOOC: Final = 1 << 0
TCMU_MAILBOX_FLAG_CAP_READ_LEN: Final = 1 << 1
TCMU_MAILBOX_FLAG_CAP_TMR: Final = 1 << 2
TCMU_MAILBOX_FLAG_CAP_KEEP_BUF: Final = 1 << 3

MAILBOX_SIZE: Final = 128  # sizeof(struct tcmu_mailbox); also cmdr_off
MB_VERSION: Final = struct.Struct("<H")  # @0
MB_FLAGS: Final = struct.Struct("<H")  # @2
MB_CMDR_OFF: Final = struct.Struct("<I")  # @4
MB_CMDR_SIZE: Final = struct.Struct("<I")  # @8
MB_CMD_HEAD: Final = struct.Struct("<I")  # @12, written by the kernel
MB_CMD_TAIL: Final = struct.Struct("<I")  # @64 (own cache line), written by us
MB_HEAD_FIELDS: Final = struct.Struct("<HHIII")  # version, flags, cmdr_off, cmdr_size, cmd_head
OFF_MB_FLAGS: Final = 2
OFF_MB_CMDR_OFF: Final = 4
OFF_MB_CMDR_SIZE: Final = 8
OFF_MB_CMD_HEAD: Final = 12
OFF_MB_CMD_TAIL: Final = 64

# --- entry header (tcmu-abi §2.2) --------------------------------------------------
TCMU_OP_PAD: Final = 0
TCMU_OP_CMD: Final = 1
TCMU_OP_TMR: Final = 2
TCMU_OP_MASK: Final = 0x7

TCMU_UFLAG_UNKNOWN_OP: Final = 0x1
TCMU_UFLAG_READ_LEN: Final = 0x2
TCMU_UFLAG_KEEP_BUF: Final = 0x4

HDR: Final = struct.Struct("<IHBB")  # len_op, cmd_id, kflags, uflags
HDR_SIZE: Final = 8
OFF_HDR_CMD_ID: Final = 4
HDR_CMD_ID: Final = struct.Struct("<H")
OFF_HDR_KFLAGS: Final = 6
OFF_HDR_UFLAGS: Final = 7

# --- struct tcmu_cmd_entry, request view (tcmu-abi §2.3) -----------------------------
# iov_cnt @8, iov_bidi_cnt @12, iov_dif_cnt @16, 4-byte hole @20, cdb_off @24 (u64,
# offset from the mmap base), two u64 pads @32/@40, iov[] @48 (16 bytes each).
REQ: Final = struct.Struct("<III4xQ")
OFF_REQ: Final = 8
OFF_REQ_IOV: Final = 48
IOVEC: Final = struct.Struct("<QQ")  # iov_base (offset from mmap base), iov_len
IOVEC_SIZE: Final = 16
CMD_ENTRY_SIZE: Final = 112  # sizeof(struct tcmu_cmd_entry)

# --- response view (overlays the request) --------------------------------------------
OFF_RSP_SCSI_STATUS: Final = 8
OFF_RSP_READ_LEN: Final = 12
OFF_RSP_SENSE: Final = 16
RSP_STATUS: Final = struct.Struct("<B")
RSP_READ_LEN: Final = struct.Struct("<I")

# --- struct tcmu_tmr_entry (tcmu-abi §2.4) -------------------------------------------
TMR: Final = struct.Struct("<B3xI")  # tmr_type @8, cmd_cnt @12
OFF_TMR: Final = 8
OFF_TMR_IDS: Final = 32
TMR_ENTRY_BASE: Final = 32

TCMU_TMR_UNKNOWN: Final = 0
TCMU_TMR_ABORT_TASK: Final = 1
TCMU_TMR_ABORT_TASK_SET: Final = 2
TCMU_TMR_CLEAR_ACA: Final = 3
TCMU_TMR_CLEAR_TASK_SET: Final = 4
TCMU_TMR_LUN_RESET: Final = 5
TCMU_TMR_TARGET_WARM_RESET: Final = 6
TCMU_TMR_TARGET_COLD_RESET: Final = 7
TCMU_TMR_LUN_RESET_PRO: Final = 128

#: The task-management functions that reset the logical unit.
RESET_TMRS: Final = frozenset(
    {TCMU_TMR_LUN_RESET, TCMU_TMR_TARGET_WARM_RESET, TCMU_TMR_TARGET_COLD_RESET,
     TCMU_TMR_LUN_RESET_PRO}
)  # fmt: skip

TMR_NAMES: Final = {
    TCMU_TMR_UNKNOWN: "UNKNOWN",
    TCMU_TMR_ABORT_TASK: "ABORT_TASK",
    TCMU_TMR_ABORT_TASK_SET: "ABORT_TASK_SET",
    TCMU_TMR_CLEAR_ACA: "CLEAR_ACA",
    TCMU_TMR_CLEAR_TASK_SET: "CLEAR_TASK_SET",
    TCMU_TMR_LUN_RESET: "LUN_RESET",
    TCMU_TMR_TARGET_WARM_RESET: "TARGET_WARM_RESET",
    TCMU_TMR_TARGET_COLD_RESET: "TARGET_COLD_RESET",
    TCMU_TMR_LUN_RESET_PRO: "LUN_RESET_PRO",
}

SCSI_MAX_VARLEN_CDB_SIZE: Final = 260
VARIABLE_LENGTH_CMD: Final = 0x7F

# The kernel's scsi_command_size_tbl, indexed by the opcode's group ((opcode >> 5) & 7).
# Groups 6 and 7 are vendor specific and count as 10 bytes; group 3 (reserved) as 12.
_CDB_GROUP_SIZE: Final = (6, 10, 10, 12, 16, 12, 10, 10)


def cdb_length(opcode: int, byte7: int = 0) -> int:
    """Length of a CDB computed the kernel's way (``scsi_command_size``).

    The ring does not store the CDB length (tcmu-abi §2.3): a VARIABLE LENGTH CDB
    (0x7F) is ``byte7 + 8`` bytes, every other one is sized by its opcode group.
    """
    if opcode == VARIABLE_LENGTH_CMD:
        return byte7 + 8
    return _CDB_GROUP_SIZE[(opcode >> 5) & 7]


def round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def cmd_entry_base_size(iov_cnt: int, iov_bidi_cnt: int = 0) -> int:
    """The kernel's base entry size: ``max(48 + 16*iovs, 112)`` (tcmu-abi §2.3)."""
    return max(OFF_REQ_IOV + IOVEC_SIZE * (iov_cnt + iov_bidi_cnt), CMD_ENTRY_SIZE)


def cmd_entry_size(iov_cnt: int, iov_bidi_cnt: int, cdb_len: int) -> int:
    """Full entry length: base part plus the CDB rounded up to 8 bytes."""
    return cmd_entry_base_size(iov_cnt, iov_bidi_cnt) + round_up(cdb_len, TCMU_OP_ALIGN_SIZE)


def tmr_entry_size(cmd_cnt: int) -> int:
    return round_up(TMR_ENTRY_BASE + 2 * cmd_cnt, TCMU_OP_ALIGN_SIZE)


def len_op(length: int, op: int) -> int:
    return (length & ~TCMU_OP_MASK) | (op & TCMU_OP_MASK)


def entry_op(value: int) -> int:
    return value & TCMU_OP_MASK


def entry_len(value: int) -> int:
    return value & ~TCMU_OP_MASK
