"""SCSI operation codes and what the emulation knows about each command.

Names follow SPC-4/SBC-4 and the kernel's ``scsi_proto.h``. :data:`COMMANDS` is the
one table every other module reads: CDB length, data direction, the CDB usage map
(reported by REPORT SUPPORTED OPERATION CODES and used to reject reserved bits, so
the two can never disagree), and whether the command blocks on the backing store.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcmu_scst.command import Direction

TEST_UNIT_READY = 0x00
REQUEST_SENSE = 0x03
FORMAT_UNIT = 0x04
READ_6 = 0x08
WRITE_6 = 0x0A
INQUIRY = 0x12
MODE_SELECT = 0x15
RESERVE = 0x16
RELEASE = 0x17
MODE_SENSE = 0x1A
START_STOP = 0x1B
SEND_DIAGNOSTIC = 0x1D
ALLOW_MEDIUM_REMOVAL = 0x1E
READ_CAPACITY = 0x25
READ_10 = 0x28
WRITE_10 = 0x2A
WRITE_VERIFY = 0x2E
VERIFY = 0x2F
PRE_FETCH = 0x34
SYNCHRONIZE_CACHE = 0x35
READ_DEFECT_DATA = 0x37
WRITE_BUFFER = 0x3B
READ_BUFFER = 0x3C
WRITE_SAME = 0x41
UNMAP = 0x42
LOG_SELECT = 0x4C
LOG_SENSE = 0x4D
MODE_SELECT_10 = 0x55
MODE_SENSE_10 = 0x5A
PERSISTENT_RESERVE_IN = 0x5E
PERSISTENT_RESERVE_OUT = 0x5F
VARIABLE_LENGTH_CMD = 0x7F
EXTENDED_COPY = 0x83
RECEIVE_COPY_RESULTS = 0x84
READ_16 = 0x88
COMPARE_AND_WRITE = 0x89
WRITE_16 = 0x8A
ORWRITE_16 = 0x8B
WRITE_VERIFY_16 = 0x8E
VERIFY_16 = 0x8F
PRE_FETCH_16 = 0x90
SYNCHRONIZE_CACHE_16 = 0x91
WRITE_SAME_16 = 0x93
SERVICE_ACTION_IN_16 = 0x9E
REPORT_LUNS = 0xA0
MAINTENANCE_IN = 0xA3
MAINTENANCE_OUT = 0xA4
READ_12 = 0xA8
WRITE_12 = 0xAA
WRITE_VERIFY_12 = 0xAE
VERIFY_12 = 0xAF
READ_DEFECT_DATA_12 = 0xB7

# Service actions.
SAI_READ_CAPACITY_16 = 0x10
SAI_GET_LBA_STATUS = 0x12
MI_REPORT_TARGET_PGS = 0x0A
MO_SET_TARGET_PGS = 0x0A
MI_REPORT_SUPPORTED_OPERATION_CODES = 0x0C
XCOPY_LID1 = 0x00  # EXTENDED COPY (LID1)
RCR_COPY_STATUS = 0x00
RCR_OPERATING_PARAMETERS = 0x03

#: Opcodes that take a service action in byte 1, bits 4-0.
#: (SPC-4 gives EXTENDED COPY and RECEIVE COPY RESULTS one too; LID1 is 00h, so an
#: SPC-3 CDB with byte 1 reserved is the same command.)
SERVICE_ACTION_OPCODES = frozenset(
    {SERVICE_ACTION_IN_16, MAINTENANCE_IN, MAINTENANCE_OUT, EXTENDED_COPY, RECEIVE_COPY_RESULTS}
)

#: Commands that a pending unit attention does not fail (SAM-5 5.14 / SPC-4 5.14).
UA_EXEMPT_OPCODES = frozenset({INQUIRY, REQUEST_SENSE, REPORT_LUNS})


def cdb_length(opcode: int) -> int | None:
    """CDB length implied by the opcode's group code; None for reserved/vendor groups.

    Variable-length CDBs (7Fh) return 0: their length is 8 + the ADDITIONAL CDB
    LENGTH in byte 7 (see :func:`tcmu_scst.scsi.cdb.variable_cdb_length`).
    """
    if opcode == VARIABLE_LENGTH_CMD:
        return 0
    return {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}.get(opcode >> 5)


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One command as the emulation implements it."""

    opcode: int
    service_action: int | None
    name: str
    #: CDB USAGE DATA as REPORT SUPPORTED OPERATION CODES returns it: byte 0 is the
    #: opcode, a service action's value sits in its field, every other 1 bit is a
    #: bit the device server looks at. A bit set in a CDB outside this map is a
    #: reserved/unsupported field and is refused with its field pointer.
    usage: bytes
    direction: Direction
    #: Reads or writes the medium's data (the SBC "data CDB" family).
    data_cdb: bool = False
    #: Changes the medium; refused with WRITE PROTECTED on a read-only device.
    writes_medium: bool = False
    #: May block on the backing store: run it on a worker thread, not inline.
    blocking: bool = False
    #: Needs the medium (fails with NOT READY while the unit is stopped).
    media_access: bool = False

    @property
    def cdb_len(self) -> int:
        return len(self.usage)

    @property
    def key(self) -> tuple[int, int | None]:
        return (self.opcode, self.service_action)

    def check_mask(self, index: int) -> int:
        """Bits of CDB byte ``index`` the parser accepts (the service action counts as used)."""
        mask = self.usage[index]
        if index == 1 and self.service_action is not None:
            mask |= 0x1F
        return mask


def _u(*octets: int) -> bytes:
    return bytes(octets)


_FF4 = (0xFF,) * 4
_FF8 = (0xFF,) * 8
_IN, _OUT, _NONE = Direction.IN, Direction.OUT, Direction.NONE

# Byte 1 of READ/WRITE (10/12/16): DPO 10h, FUA 08h, obsolete FUA_NV 02h accepted and
# ignored. RDPROTECT/WRPROTECT (no protection information), RARC (no rebuild assist)
# and DLD (no command duration limits) are left out, so setting them is refused.
_RW1 = 0x1A
# Byte 1 of VERIFY / WRITE AND VERIFY: DPO 10h and BYTCHK 06h.
_V1 = 0x16
_GRP = 0x3F  # GROUP NUMBER: accepted, ignored (no grouping function)

# Flag letters for _op: d = data CDB, w = writes the medium, b = blocking, m = media access.
_IO = "dbm"
_IOW = "dbmw"
_MEDIA = "bm"


def _op(
    opcode: int,
    service_action: int | None,
    name: str,
    usage: bytes,
    direction: Direction,
    flags: str = "",
) -> OpSpec:
    return OpSpec(
        opcode,
        service_action,
        name,
        usage,
        direction,
        data_cdb="d" in flags,
        writes_medium="w" in flags,
        blocking="b" in flags,
        media_access="m" in flags,
    )


def local_spec(
    opcode: int, name: str, usage: bytes, direction: Direction, *, media: bool = False,
    blocking: bool = False, writes: bool = False,
) -> OpSpec:
    """An OpSpec for a device-type-specific command (MMC, SSC: not in :data:`COMMANDS`);
    see ``SpcDevice.register_local``."""
    return OpSpec(opcode, None, name, usage, direction, data_cdb=blocking,
                  writes_medium=writes, blocking=blocking, media_access=media)


COMMANDS: tuple[OpSpec, ...] = (
    _op(TEST_UNIT_READY, None, "TEST UNIT READY", _u(0x00, 0, 0, 0, 0, 0), _NONE),
    _op(REQUEST_SENSE, None, "REQUEST SENSE", _u(0x03, 0x01, 0, 0, 0xFF, 0), _IN),
    _op(READ_6, None, "READ(6)", _u(0x08, 0x1F, 0xFF, 0xFF, 0xFF, 0), _IN, _IO),
    _op(WRITE_6, None, "WRITE(6)", _u(0x0A, 0x1F, 0xFF, 0xFF, 0xFF, 0), _OUT, _IOW),
    _op(INQUIRY, None, "INQUIRY", _u(0x12, 0x01, 0xFF, 0xFF, 0xFF, 0), _IN),
    _op(MODE_SELECT, None, "MODE SELECT(6)", _u(0x15, 0x11, 0, 0, 0xFF, 0), _OUT,
           "b"),
    _op(MODE_SENSE, None, "MODE SENSE(6)", _u(0x1A, 0x08, 0xFF, 0xFF, 0xFF, 0), _IN),
    _op(START_STOP, None, "START STOP UNIT", _u(0x1B, 0x01, 0, 0x0F, 0xF7, 0), _NONE,
           "b"),
    _op(ALLOW_MEDIUM_REMOVAL, None, "PREVENT ALLOW MEDIUM REMOVAL",
           _u(0x1E, 0, 0, 0, 0x03, 0), _NONE),
    _op(READ_CAPACITY, None, "READ CAPACITY(10)",
           _u(0x25, 0, *_FF4, 0, 0, 0x01, 0), _IN),
    _op(READ_10, None, "READ(10)", _u(0x28, _RW1, *_FF4, _GRP, 0xFF, 0xFF, 0), _IN, _IO),
    _op(WRITE_10, None, "WRITE(10)", _u(0x2A, _RW1, *_FF4, _GRP, 0xFF, 0xFF, 0), _OUT,
           _IOW),
    _op(WRITE_VERIFY, None, "WRITE AND VERIFY(10)",
           _u(0x2E, _V1, *_FF4, _GRP, 0xFF, 0xFF, 0), _OUT, _IOW),
    _op(VERIFY, None, "VERIFY(10)", _u(0x2F, _V1, *_FF4, _GRP, 0xFF, 0xFF, 0), _OUT, _IO),
    _op(PRE_FETCH, None, "PRE-FETCH(10)", _u(0x34, 0x02, *_FF4, _GRP, 0xFF, 0xFF, 0),
           _NONE, _MEDIA),
    # SYNC_NV (04h) is obsolete; accepted and ignored.
    _op(SYNCHRONIZE_CACHE, None, "SYNCHRONIZE CACHE(10)",
           _u(0x35, 0x06, *_FF4, _GRP, 0xFF, 0xFF, 0), _NONE, _MEDIA),
    # REQ_PLIST 10h, REQ_GLIST 08h, DEFECT LIST FORMAT 07h.
    _op(READ_DEFECT_DATA, None, "READ DEFECT DATA(10)",
           _u(0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0), _IN),
    # ANCHOR and the obsolete PBDATA/LBDATA are not supported.
    _op(WRITE_SAME, None, "WRITE SAME(10)", _u(0x41, 0x08, *_FF4, _GRP, 0xFF, 0xFF, 0),
           _OUT, _IOW),
    _op(UNMAP, None, "UNMAP", _u(0x42, 0, 0, 0, 0, 0, _GRP, 0xFF, 0xFF, 0), _OUT,
           "bmw"),
    # SP 01h (refused: nothing saved); PC C0h, PAGE CODE 3Fh; SUBPAGE; PARAMETER POINTER.
    _op(LOG_SENSE, None, "LOG SENSE", _u(0x4D, 0x01, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0),
           _IN),
    _op(MODE_SELECT_10, None, "MODE SELECT(10)", _u(0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0),
           _OUT, "b"),
    _op(MODE_SENSE_10, None, "MODE SENSE(10)",
           _u(0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0), _IN),
    # PARAMETER LIST LENGTH in bytes 10-13 (LID1; SPC-4 6.4).
    _op(EXTENDED_COPY, XCOPY_LID1, "EXTENDED COPY(LID1)",
           _u(0x83, XCOPY_LID1, 0, 0, 0, 0, 0, 0, 0, 0, *_FF4, 0, 0), _OUT, "b"),
    # LIST IDENTIFIER in byte 2; ALLOCATION LENGTH in bytes 10-13 (SPC-4 6.18).
    _op(RECEIVE_COPY_RESULTS, RCR_COPY_STATUS, "RECEIVE COPY RESULTS(COPY STATUS)",
           _u(0x84, RCR_COPY_STATUS, 0xFF, 0, 0, 0, 0, 0, 0, 0, *_FF4, 0, 0), _IN),
    _op(RECEIVE_COPY_RESULTS, RCR_OPERATING_PARAMETERS,
           "RECEIVE COPY RESULTS(OPERATING PARAMETERS)",
           _u(0x84, RCR_OPERATING_PARAMETERS, 0, 0, 0, 0, 0, 0, 0, 0, *_FF4, 0, 0), _IN),
    _op(READ_16, None, "READ(16)", _u(0x88, _RW1, *_FF8, *_FF4, _GRP, 0), _IN, _IO),
    _op(COMPARE_AND_WRITE, None, "COMPARE AND WRITE",
           _u(0x89, _RW1, *_FF8, 0, 0, 0, 0xFF, _GRP, 0), _OUT, _IOW),
    _op(WRITE_16, None, "WRITE(16)", _u(0x8A, _RW1, *_FF8, *_FF4, _GRP, 0), _OUT, _IOW),
    # ORPROTECT (no protection information) is left out, as WRPROTECT is for WRITE.
    _op(ORWRITE_16, None, "ORWRITE(16)", _u(0x8B, _RW1, *_FF8, *_FF4, _GRP, 0), _OUT, _IOW),
    _op(WRITE_VERIFY_16, None, "WRITE AND VERIFY(16)",
           _u(0x8E, _V1, *_FF8, *_FF4, _GRP, 0), _OUT, _IOW),
    _op(VERIFY_16, None, "VERIFY(16)", _u(0x8F, _V1, *_FF8, *_FF4, _GRP, 0), _OUT, _IO),
    _op(PRE_FETCH_16, None, "PRE-FETCH(16)", _u(0x90, 0x02, *_FF8, *_FF4, _GRP, 0), _NONE,
           _MEDIA),
    _op(SYNCHRONIZE_CACHE_16, None, "SYNCHRONIZE CACHE(16)",
           _u(0x91, 0x06, *_FF8, *_FF4, _GRP, 0), _NONE, _MEDIA),
    # UNMAP 08h and NDOB 01h; ANCHOR and the obsolete PBDATA/LBDATA are not supported.
    _op(WRITE_SAME_16, None, "WRITE SAME(16)", _u(0x93, 0x09, *_FF8, *_FF4, _GRP, 0),
           _OUT, _IOW),
    _op(SERVICE_ACTION_IN_16, SAI_READ_CAPACITY_16, "READ CAPACITY(16)",
           _u(0x9E, SAI_READ_CAPACITY_16, *_FF8, *_FF4, 0x01, 0), _IN),
    _op(SERVICE_ACTION_IN_16, SAI_GET_LBA_STATUS, "GET LBA STATUS",
           _u(0x9E, SAI_GET_LBA_STATUS, *_FF8, *_FF4, 0, 0), _IN, _MEDIA),
    # Answered by the kernel core, never passed to userspace (tcmu-abi §5); in the
    # table so that REPORT SUPPORTED OPERATION CODES can report it.
    _op(REPORT_LUNS, None, "REPORT LUNS", _u(0xA0, 0, 0xFF, 0, 0, 0, *_FF4, 0, 0), _IN),
    _op(MAINTENANCE_IN, MI_REPORT_SUPPORTED_OPERATION_CODES,
           "REPORT SUPPORTED OPERATION CODES",
           _u(0xA3, MI_REPORT_SUPPORTED_OPERATION_CODES, 0x87, 0xFF, 0xFF, 0xFF, *_FF4, 0, 0),
           _IN),
    # PARAMETER DATA FORMAT E0h; ALLOCATION LENGTH in bytes 6-9 (SPC-4 6.36).
    _op(MAINTENANCE_IN, MI_REPORT_TARGET_PGS, "REPORT TARGET PORT GROUPS",
           _u(0xA3, 0xE0 | MI_REPORT_TARGET_PGS, 0, 0, 0, 0, *_FF4, 0, 0), _IN),
    # PARAMETER LIST LENGTH in bytes 6-9 (SPC-4 6.41).
    _op(MAINTENANCE_OUT, MO_SET_TARGET_PGS, "SET TARGET PORT GROUPS",
           _u(0xA4, MO_SET_TARGET_PGS, 0, 0, 0, 0, *_FF4, 0, 0), _OUT),
    _op(READ_12, None, "READ(12)", _u(0xA8, _RW1, *_FF4, *_FF4, _GRP, 0), _IN, _IO),
    _op(WRITE_12, None, "WRITE(12)", _u(0xAA, _RW1, *_FF4, *_FF4, _GRP, 0), _OUT, _IOW),
    _op(WRITE_VERIFY_12, None, "WRITE AND VERIFY(12)",
           _u(0xAE, _V1, *_FF4, *_FF4, _GRP, 0), _OUT, _IOW),
    _op(VERIFY_12, None, "VERIFY(12)", _u(0xAF, _V1, *_FF4, *_FF4, _GRP, 0), _OUT, _IO),
    # Byte 1 as READ DEFECT DATA(10)'s byte 2; ADDRESS DESCRIPTOR INDEX in bytes 2-5.
    _op(READ_DEFECT_DATA_12, None, "READ DEFECT DATA(12)",
           _u(0xB7, 0x1F, *_FF4, *_FF4, 0, 0), _IN),
)

BY_KEY: dict[tuple[int, int | None], OpSpec] = {spec.key: spec for spec in COMMANDS}


def service_action_of(cdb: bytes) -> int | None:
    """The service action of ``cdb`` when its opcode has one, else None."""
    if cdb and cdb[0] in SERVICE_ACTION_OPCODES and len(cdb) > 1:
        return cdb[1] & 0x1F
    return None


def lookup(cdb: bytes) -> OpSpec | None:
    """The table entry for ``cdb`` (opcode plus service action), or None."""
    if not cdb:
        return None
    return BY_KEY.get((cdb[0], service_action_of(cdb)))


def has_service_actions(opcode: int) -> bool:
    return opcode in SERVICE_ACTION_OPCODES


def data_direction(cdb: bytes) -> Direction:
    """Direction of the data transfer ``cdb`` asks for (NONE when unknown).

    VERIFY transfers Data-Out only when BYTCHK is non-zero; a zero parameter list
    or allocation length is still reported with its nominal direction.
    """
    spec = lookup(cdb)
    if spec is None:
        return Direction.NONE
    if spec.opcode in (VERIFY, VERIFY_12, VERIFY_16) and (cdb[1] >> 1) & 0x03 == 0:
        return Direction.NONE
    if spec.opcode in (WRITE_SAME_16,) and len(cdb) > 1 and cdb[1] & 0x01:
        return Direction.NONE  # NDOB: no Data-Out buffer
    return spec.direction


def is_io(cdb: bytes) -> bool:
    """True when ``cdb`` may block on the backing store (send it to a worker thread).

    Unknown opcodes and cheap emulated commands (INQUIRY, MODE SENSE, READ
    CAPACITY, ...) are answered from memory and can run inline.
    """
    spec = lookup(cdb)
    return spec is not None and spec.blocking


def name_of(cdb: bytes) -> str:
    spec = lookup(cdb)
    if spec is not None:
        return spec.name
    return f"opcode {cdb[0]:02X}h" if cdb else "empty CDB"
