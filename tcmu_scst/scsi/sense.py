"""Fixed-format sense data (SPC-4 4.5.3) and the exception that carries it.

Every CHECK CONDITION the emulation produces goes through :class:`SenseError`:
command code raises it where the problem is found, and the dispatcher turns it
into a :class:`~tcmu_scst.command.Result`. The sense buffer is always 18 bytes of
fixed-format data (response code 70h, ADDITIONAL SENSE LENGTH 0Ah), which is what
the TCMU ring carries and what every initiator understands.
"""

from __future__ import annotations

from tcmu_scst.command import CHECK_CONDITION, Result

# Sense keys (SPC-4 table 49).
NO_SENSE = 0x0
RECOVERED_ERROR = 0x1
NOT_READY = 0x2
MEDIUM_ERROR = 0x3
HARDWARE_ERROR = 0x4
ILLEGAL_REQUEST = 0x5
UNIT_ATTENTION = 0x6
DATA_PROTECT = 0x7
COPY_ABORTED = 0xA
ABORTED_COMMAND = 0xB
MISCOMPARE = 0xE

FIXED_SENSE_LEN = 18
_ADDITIONAL_LEN = FIXED_SENSE_LEN - 8
_MAX_INFORMATION = 0xFFFFFFFF


def build_sense(
    key: int,
    asc: int,
    ascq: int,
    *,
    information: int | None = None,
    sks: bytes = b"",
    command_specific: int | None = None,
) -> bytes:
    """Build 18 bytes of current, fixed-format sense data.

    ``information`` sets the VALID bit and the INFORMATION field when it fits in
    four bytes (a larger value cannot be represented in fixed format, so VALID stays
    0 rather than reporting a truncated number). ``sks`` is the 3-byte
    sense-key-specific field, SKSV bit included. ``command_specific`` fills the
    COMMAND-SPECIFIC INFORMATION field (EXTENDED COPY: the failing segment).
    """
    sense = bytearray(FIXED_SENSE_LEN)
    sense[0] = 0x70
    sense[2] = key & 0x0F
    if information is not None and 0 <= information <= _MAX_INFORMATION:
        sense[0] |= 0x80
        sense[3:7] = information.to_bytes(4, "big")
    sense[7] = _ADDITIONAL_LEN
    if command_specific is not None:
        sense[8:12] = (command_specific & _MAX_INFORMATION).to_bytes(4, "big")
    sense[12] = asc & 0xFF
    sense[13] = ascq & 0xFF
    if sks:
        sense[15:18] = sks[:3]
    return bytes(sense)


def field_pointer_sks(byte: int, bit: int | None, *, in_cdb: bool) -> bytes:
    """Sense-key-specific FIELD POINTER bytes (SPC-4 4.5.2.4.2).

    ``in_cdb`` sets C/D (the error is in the CDB, not the parameter list); ``bit``,
    when given, sets BPV and names the leftmost bit of the field in error.
    """
    first = 0x80  # SKSV
    if in_cdb:
        first |= 0x40
    if bit is not None:
        first |= 0x08 | (bit & 0x07)
    return bytes((first, (byte >> 8) & 0xFF, byte & 0xFF))


def to_descriptor_format(fixed: bytes) -> bytes:
    """Convert fixed-format sense to descriptor format (REQUEST SENSE with DESC=1).

    Carries the INFORMATION (descriptor type 00h) and sense-key-specific (type 02h)
    fields when the fixed data has them.
    """
    descriptors = bytearray()
    if fixed[0] & 0x80:
        descriptors += bytes((0x00, 0x0A, 0x80, 0x00)) + bytes(4) + fixed[3:7]
    if fixed[15] & 0x80:
        descriptors += bytes((0x02, 0x06, 0x00, 0x00)) + fixed[15:18] + b"\x00"
    header = bytes((0x72, fixed[2] & 0x0F, fixed[12], fixed[13], 0, 0, 0, len(descriptors)))
    return header + bytes(descriptors)


class SenseError(Exception):
    """A command ends in CHECK CONDITION with this sense data.

    Not part of the :mod:`tcmu_scst.errors` tree on purpose: it is a SCSI answer
    to the initiator, not a failure of tcmu-scst, and it never leaves the emulation.
    """

    def __init__(
        self,
        key: int,
        asc: int,
        ascq: int,
        field_pointer: int | None = None,
        *,
        in_cdb: bool = True,
        bit: int | None = None,
        information: int | None = None,
        command_specific: int | None = None,
    ) -> None:
        where = f" at {'CDB' if in_cdb else 'parameter'} byte {field_pointer}" if (
            field_pointer is not None
        ) else ""
        super().__init__(f"sense {key:X}/{asc:02X}/{ascq:02X}{where}")
        self.key = key
        self.asc = asc
        self.ascq = ascq
        self.field_pointer = field_pointer
        self.in_cdb = in_cdb
        self.bit = bit
        self.information = information
        self.command_specific = command_specific

    @property
    def sense(self) -> bytes:
        sks = b""
        if self.field_pointer is not None:
            sks = field_pointer_sks(self.field_pointer, self.bit, in_cdb=self.in_cdb)
        return build_sense(self.key, self.asc, self.ascq, information=self.information, sks=sks,
                           command_specific=self.command_specific)

    def result(self) -> Result:
        return Result(status=CHECK_CONDITION, sense=self.sense)

    # The common cases, named as in SPC-4/SBC-4 (ASC/ASCQ in the comment).

    @classmethod
    def invalid_opcode(cls) -> SenseError:  # 20/00
        return cls(ILLEGAL_REQUEST, 0x20, 0x00, 0, bit=7)

    @classmethod
    def invalid_field_in_cdb(cls, byte: int, bit: int | None = 7) -> SenseError:  # 24/00
        return cls(ILLEGAL_REQUEST, 0x24, 0x00, byte, bit=bit)

    @classmethod
    def invalid_field_in_parameter_list(  # 26/00
        cls, byte: int, bit: int | None = 7
    ) -> SenseError:
        return cls(ILLEGAL_REQUEST, 0x26, 0x00, byte, in_cdb=False, bit=bit)

    @classmethod
    def parameter_list_length_error(cls) -> SenseError:  # 1A/00
        return cls(ILLEGAL_REQUEST, 0x1A, 0x00)

    @classmethod
    def invalid_field_in_command_iu(cls) -> SenseError:  # 0E/03
        """The initiator's expected transfer length disagrees with the CDB (as LIO answers)."""
        return cls(ILLEGAL_REQUEST, 0x0E, 0x03)

    @classmethod
    def lba_out_of_range(cls) -> SenseError:  # 21/00
        return cls(ILLEGAL_REQUEST, 0x21, 0x00)

    @classmethod
    def saving_parameters_not_supported(cls) -> SenseError:  # 39/00
        return cls(ILLEGAL_REQUEST, 0x39, 0x00)

    @classmethod
    def write_protected(cls) -> SenseError:  # 27/00
        return cls(DATA_PROTECT, 0x27, 0x00)

    @classmethod
    def space_allocation_failed(cls) -> SenseError:  # 27/07
        return cls(DATA_PROTECT, 0x27, 0x07)

    @classmethod
    def read_error(cls, lba: int | None = None) -> SenseError:  # 11/00 UNRECOVERED READ ERROR
        return cls(MEDIUM_ERROR, 0x11, 0x00, information=lba)

    @classmethod
    def write_error(cls, lba: int | None = None) -> SenseError:  # 0C/00 WRITE ERROR
        return cls(MEDIUM_ERROR, 0x0C, 0x00, information=lba)

    @classmethod
    def miscompare(cls, offset: int) -> SenseError:  # 1D/00 MISCOMPARE DURING VERIFY OPERATION
        return cls(MISCOMPARE, 0x1D, 0x00, information=offset)

    @classmethod
    def internal_target_failure(cls) -> SenseError:  # 44/00
        return cls(HARDWARE_ERROR, 0x44, 0x00)

    @classmethod
    def not_ready_initializing_command_required(cls) -> SenseError:  # 04/02
        return cls(NOT_READY, 0x04, 0x02)

    @classmethod
    def command_timeout(cls) -> SenseError:  # 2E/02 COMMAND TIMEOUT DURING PROCESSING
        """The backing store did not finish the command in time (SPC-5): its state is
        unknown (a write may land later), retry if you may. Linux retries ABORTED
        COMMAND up to the device's retry count within its time budget."""
        return cls(ABORTED_COMMAND, 0x2E, 0x02)

    @classmethod
    def communication_failure(cls) -> SenseError:  # 08/00 LOGICAL UNIT COMMUNICATION FAILURE
        """The backing store is unreachable (connection refused or shut down); as
        ABORTED COMMAND, so that the initiator retries as for a timeout."""
        return cls(ABORTED_COMMAND, 0x08, 0x00)

    @classmethod
    def medium_not_present(cls) -> SenseError:  # 3A/00
        return cls(NOT_READY, 0x3A, 0x00)

    @classmethod
    def cannot_read_incompatible_format(cls) -> SenseError:  # 30/02
        return cls(ILLEGAL_REQUEST, 0x30, 0x02)

    @classmethod
    def medium_removal_prevented(cls) -> SenseError:  # 53/02
        return cls(ILLEGAL_REQUEST, 0x53, 0x02)

    @classmethod
    def unit_attention(cls, asc: int, ascq: int) -> SenseError:
        return cls(UNIT_ATTENTION, asc, ascq)


# Unit attention conditions the emulation raises (ASC, ASCQ).
UA_CAPACITY_DATA_CHANGED = (0x2A, 0x09)
UA_MODE_PARAMETERS_CHANGED = (0x2A, 0x01)
UA_MEDIUM_MAY_HAVE_CHANGED = (0x28, 0x00)
UA_POWER_ON_RESET = (0x29, 0x00)
UA_INQUIRY_DATA_CHANGED = (0x3F, 0x03)
