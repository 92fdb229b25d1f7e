"""A minimal SSC (tape) emulation for dev_tape_perf: a tape that stores nothing.

Enough of SSC-3 for the Linux st driver to attach and for ``mt``/``dd`` to work:
READ BLOCK LIMITS, READ(6)/WRITE(6) in fixed and variable block mode, WRITE
FILEMARKS, SPACE, REWIND, LOCATE(10), READ POSITION (short and long form),
ERASE, LOAD UNLOAD, PREVENT ALLOW MEDIUM REMOVAL and MODE SENSE/SELECT with a
block descriptor (density, block length) and the Device Configuration page.

READ returns zeros, WRITE forgets; the position is counted in blocks so that
``mt tell`` / ``mt seek`` behave. Filemarks and end of data are not recorded: a
perf tape reads forever.
"""

from __future__ import annotations

from collections.abc import Mapping

from tcmu_scst.command import Command, Direction, Result, data_in_result
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi.block import BlockDeviceConfig
from tcmu_scst.scsi.cdb import be
from tcmu_scst.scsi.modes import ModePage
from tcmu_scst.scsi.opcodes import local_spec
from tcmu_scst.scsi.sense import UA_MEDIUM_MAY_HAVE_CHANGED, SenseError
from tcmu_scst.scsi.spc import CommandHandler, SpcDevice, data_in

TYPE_TAPE = 0x01
REWIND = 0x01
READ_BLOCK_LIMITS = 0x05
READ_6 = 0x08
WRITE_6 = 0x0A
WRITE_FILEMARKS = 0x10
SPACE = 0x11
ERASE = 0x19
LOAD_UNLOAD = 0x1B
LOCATE_10 = 0x2B
READ_POSITION = 0x34

MAX_BLOCK_LENGTH = 1 << 20  # READ BLOCK LIMITS: what one variable block may hold
MODE_DEVICE_CONFIGURATION = 0x10
DENSITY_DEFAULT = 0x00
_BUFFERED_MODE = 0x10  # mode header device-specific byte: BUFFERED MODE 001b

_u = bytes
_NONE, _IN, _OUT = Direction.NONE, Direction.IN, Direction.OUT

_SSC_COMMANDS = (
    local_spec(REWIND, "REWIND", _u((0x01, 0x01, 0, 0, 0, 0)), _NONE, media=True),
    local_spec(READ_BLOCK_LIMITS, "READ BLOCK LIMITS", _u((0x05, 0, 0, 0, 0, 0)), _IN),
    # SILI 02h, FIXED 01h; TRANSFER LENGTH.
    local_spec(READ_6, "READ(6)", _u((0x08, 0x03, 0xFF, 0xFF, 0xFF, 0)), _IN, media=True),
    local_spec(WRITE_6, "WRITE(6)", _u((0x0A, 0x01, 0xFF, 0xFF, 0xFF, 0)), _OUT, media=True,
               writes=True),
    # WSMK 02h, IMMED 01h; TRANSFER LENGTH (number of marks).
    local_spec(WRITE_FILEMARKS, "WRITE FILEMARKS(6)", _u((0x10, 0x03, 0xFF, 0xFF, 0xFF, 0)),
               _NONE, media=True, writes=True),
    # CODE 07h; COUNT (signed).
    local_spec(SPACE, "SPACE(6)", _u((0x11, 0x07, 0xFF, 0xFF, 0xFF, 0)), _NONE, media=True),
    local_spec(ERASE, "ERASE(6)", _u((0x19, 0x03, 0, 0, 0, 0)), _NONE, media=True,
               writes=True),
    # IMMED 01h; HOLD 08h, EOT 04h, RETEN 02h, LOAD 01h.
    local_spec(LOAD_UNLOAD, "LOAD UNLOAD", _u((0x1B, 0x01, 0, 0, 0x0F, 0)), _NONE),
    # BT 04h, CP 02h, IMMED 01h; LOGICAL OBJECT IDENTIFIER; PARTITION.
    local_spec(LOCATE_10, "LOCATE(10)", _u((0x2B, 0x07, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0)),
               _NONE, media=True),
    # SERVICE ACTION 1Fh; ALLOCATION LENGTH.
    local_spec(READ_POSITION, "READ POSITION",
               _u((0x34, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0)), _IN, media=True),
)


class PerfTapeDevice(SpcDevice):
    """A sequential-access device that performs no I/O."""

    def __init__(self, config: BlockDeviceConfig) -> None:
        super().__init__(config)
        self.config = config
        self.loaded = True
        self.position = 0  # logical object (block) number
        self.block_length = 0  # 0 = variable block mode
        self.density = DENSITY_DEFAULT
        self.prevent_removal = False
        self._pending_descriptor: tuple[int, int] | None = None
        handlers: dict[int, CommandHandler] = {
            REWIND: self._rewind,
            READ_BLOCK_LIMITS: self._read_block_limits,
            READ_6: self._read,
            WRITE_6: self._write,
            WRITE_FILEMARKS: self._write_filemarks,
            SPACE: self._space,
            ERASE: lambda cmd, cdb: Result(),
            LOAD_UNLOAD: self._load_unload,
            LOCATE_10: self._locate,
            READ_POSITION: self._read_position,
        }
        for spec in _SSC_COMMANDS:
            self.register_local(spec, handlers[spec.opcode])
        self.register(op.ALLOW_MEDIUM_REMOVAL, None, self._prevent_allow)
        device_configuration = bytes((MODE_DEVICE_CONFIGURATION, 0x0E)) + bytes(14)
        self._mode_pages = {
            # Page 0: no page, only the header and block descriptor (st asks for it).
            0x00: ModePage(0x00, lambda: b"", lambda: b"", lambda: b""),
            MODE_DEVICE_CONFIGURATION: ModePage(
                MODE_DEVICE_CONFIGURATION, lambda: device_configuration,
                lambda: device_configuration,
                lambda: device_configuration[:2] + bytes(14),
            ),
        }

    # -- state ----------------------------------------------------------------------

    def not_ready_error(self) -> SenseError | None:
        return None if self.loaded else SenseError.medium_not_present()

    def _transfer_bytes(self, cdb: bytes) -> int:
        fixed = bool(cdb[1] & 0x01)
        count = be(cdb, 2, 3)
        if fixed and cdb[1] & 0x02:
            raise SenseError.invalid_field_in_cdb(1, 1)  # SILI with FIXED (SSC-3 6.5)
        if fixed and not self.block_length:
            raise SenseError.invalid_field_in_cdb(1, 0)  # fixed mode needs a block length
        if not fixed and count > MAX_BLOCK_LENGTH:
            raise SenseError.invalid_field_in_cdb(2)
        return count * self.block_length if fixed else count

    # -- data -----------------------------------------------------------------------

    def _read(self, cmd: Command, cdb: bytes) -> Result:
        """Zeros, written into the buffer: no byte of a previous command leaves the target."""
        length = min(self._transfer_bytes(cdb), len(cmd.data))
        if length:
            cmd.data.fill_zero(0, length)
        self.position += be(cdb, 2, 3) if cdb[1] & 0x01 else (1 if length else 0)
        return data_in_result(length)

    def _write(self, cmd: Command, cdb: bytes) -> Result:
        self._transfer_bytes(cdb)
        count = be(cdb, 2, 3)
        self.position += count if cdb[1] & 0x01 else (1 if count else 0)
        return Result()

    def _write_filemarks(self, cmd: Command, cdb: bytes) -> Result:
        self.position += be(cdb, 2, 3)  # a filemark is a logical object too
        return Result()

    # -- positioning ------------------------------------------------------------------

    def _rewind(self, cmd: Command, cdb: bytes) -> Result:
        self.position = 0
        return Result()

    def _space(self, cmd: Command, cdb: bytes) -> Result:
        code = cdb[1] & 0x07
        count = int.from_bytes(cdb[2:5], "big", signed=True)
        if code == 0b000:  # logical blocks
            self.position = max(0, self.position + count)
        elif code not in (0b001, 0b011):  # filemarks, end of data: nothing recorded
            raise SenseError.invalid_field_in_cdb(1, 2)
        return Result()

    def _locate(self, cmd: Command, cdb: bytes) -> Result:
        if cdb[1] & 0x02 and cdb[8]:
            raise SenseError.invalid_field_in_cdb(8)  # one partition only
        self.position = be(cdb, 3, 4)
        return Result()

    def _read_position(self, cmd: Command, cdb: bytes) -> Result:
        # The ALLOCATION LENGTH field serves the extended form only (SSC-3 7.7).
        service_action = cdb[1] & 0x1F
        bop = 0x80 if self.position == 0 else 0x00
        if service_action in (0x00, 0x01):  # short form (01h: st's vendor variant)
            data = bytearray(20)
            data[0] = bop
            data[4:8] = self.position.to_bytes(4, "big")
            data[8:12] = self.position.to_bytes(4, "big")
            return data_in(cmd, bytes(data), len(data))
        if service_action == 0x06:  # long form
            data = bytearray(32)
            data[0] = bop
            data[8:16] = self.position.to_bytes(8, "big")
            return data_in(cmd, bytes(data), len(data))
        raise SenseError.invalid_field_in_cdb(1, 4)  # extended form (08h) and others

    def _read_block_limits(self, cmd: Command, cdb: bytes) -> Result:
        data = bytes((0,)) + MAX_BLOCK_LENGTH.to_bytes(3, "big") + (1).to_bytes(2, "big")
        return data_in(cmd, data, len(data))

    # -- medium -----------------------------------------------------------------------

    def _load_unload(self, cmd: Command, cdb: bytes) -> Result:
        load = bool(cdb[4] & 0x01)
        if load:
            if not self.loaded:
                self.loaded = True
                self.unit_attentions.post(*UA_MEDIUM_MAY_HAVE_CHANGED)
            self.position = 0
            return Result()
        if self.prevent_removal:
            raise SenseError.medium_removal_prevented()
        self.loaded = False
        self.position = 0
        return Result()

    def _prevent_allow(self, cmd: Command, cdb: bytes) -> Result:
        if cdb[4] & 0x02:
            raise SenseError.invalid_field_in_cdb(4, 1)
        self.prevent_removal = bool(cdb[4] & 0x01)
        return Result()

    # -- mode parameters ------------------------------------------------------------------

    def mode_pages(self) -> Mapping[int, ModePage]:
        return self._mode_pages

    def mode_device_specific(self) -> int:
        return _BUFFERED_MODE

    def mode_block_descriptor(self, long_lba: bool) -> bytes:
        # DENSITY CODE, NUMBER OF BLOCKS 0 (all remaining), BLOCK LENGTH (0 = variable).
        return bytes((self.density, 0, 0, 0, 0)) + self.block_length.to_bytes(3, "big")

    def check_mode_block_descriptor(self, descriptor: bytes, offset: int, long_lba: bool) -> None:
        """MODE SELECT may set the density code and the block length (mt setblk)."""
        if long_lba:
            raise SenseError.invalid_field_in_parameter_list(offset)
        if be(descriptor, 1, 3):
            raise SenseError.invalid_field_in_parameter_list(offset + 1)
        block_length = be(descriptor, 5, 3)
        if block_length > MAX_BLOCK_LENGTH:
            raise SenseError.invalid_field_in_parameter_list(offset + 5)
        # Applied by _mode_select once the whole parameter list passed validation.
        self._pending_descriptor = (descriptor[0], block_length)

    def _mode_select(self, cmd: Command, cdb: bytes) -> Result:
        self._pending_descriptor = None
        result = super()._mode_select(cmd, cdb)
        if self._pending_descriptor is not None:
            self.density, self.block_length = self._pending_descriptor
        return result
