"""SPC-4 primary commands and the command dispatcher every emulated device shares.

:class:`SpcDevice` answers INQUIRY (standard and VPD 00h/80h/83h), REQUEST SENSE,
TEST UNIT READY, REPORT SUPPORTED OPERATION CODES and MODE SENSE/SELECT, keeps
the unit attention queue and the started/medium state, and dispatches every
other command to handlers a subclass registers (``scsi.sbc`` for disks).

Subclasses extend the dispatch through hooks, never by copying it: :meth:`register`
for a command of the shared ``scsi.opcodes`` table, :meth:`register_local` for a
device-type-specific opcode that is not in it (MMC, SSC; some reuse an SBC opcode
with other fields, so a local command wins over the shared table for its opcode),
:attr:`ua_exempt` for commands a pending unit attention must not fail, and
:meth:`vpd_pages` / :meth:`mode_pages` for INQUIRY and MODE SENSE.

:meth:`SpcDevice.execute` never raises: a bad CDB is a CHECK CONDITION, and an
unexpected exception is logged and answered with HARDWARE ERROR / INTERNAL TARGET
FAILURE.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from tcmu_scst.command import Command, Result, data_in_result
from tcmu_scst.scsi import alua, logs
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi.block import WouldBlock
from tcmu_scst.scsi.cdb import be, check_cdb
from tcmu_scst.scsi.identity import (
    Identity,
    ascii_field,
    naa_designator,
    product_id,
    t10_vendor_specific,
    unit_serial,
)
from tcmu_scst.scsi.modes import ModePage, mode_select, mode_sense
from tcmu_scst.scsi.opcodes import OpSpec
from tcmu_scst.scsi.rsoc import report_supported_operation_codes
from tcmu_scst.scsi.sense import (
    HARDWARE_ERROR,
    NO_SENSE,
    SenseError,
    build_sense,
    to_descriptor_format,
)
from tcmu_scst.scsi.ua import UnitAttentionQueue

log = logging.getLogger(__name__)

CommandHandler = Callable[[Command, bytes], Result]

# Version descriptors (SPC-4 table 150): SAM-5, SPC-4, SBC-3.
VERSION_DESCRIPTORS = (0x00A0, 0x0460, 0x04C0)
STANDARD_INQUIRY_LEN = 74

# Designator fields of VPD page 83h (SPC-4 7.8.6).
_CODE_SET_BINARY = 0x1
_CODE_SET_ASCII = 0x2
_TYPE_VENDOR_SPECIFIC = 0x0
_TYPE_T10_VENDOR_ID = 0x1
_TYPE_NAA = 0x3


def data_in(cmd: Command, payload: bytes, allocation_length: int) -> Result:
    """Place ``payload`` cut to the allocation length and the buffer; GOOD.

    ``data_in_len`` is exactly what was written, so the initiator never receives a
    byte of the buffer that this command did not fill.
    """
    placed = cmd.data.write(payload[:allocation_length]) if allocation_length else 0
    return data_in_result(placed)


def designator(code_set: int, designator_type: int, value: bytes) -> bytes:
    """One designation descriptor, logical-unit association, no protocol identifier."""
    return bytes((code_set, designator_type & 0x0F, 0, len(value))) + value


class SpcDevice:
    """A logical unit: SPC-4 commands, unit attentions and command dispatch."""

    #: Opcodes (beyond SPC's INQUIRY, REQUEST SENSE and REPORT LUNS) that are
    #: processed while a unit attention is pending and leave it pending, e.g.
    #: MMC-6 4.1.6.1's GET CONFIGURATION and GET EVENT STATUS NOTIFICATION.
    ua_exempt: frozenset[int] = frozenset()

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.unit_attentions = UnitAttentionQueue()
        #: False after START STOP UNIT with START=0: media access gets NOT READY.
        self.started = True
        #: False after a removable medium was ejected (START STOP UNIT, LOEJ=1).
        self.medium_present = True
        self._handlers: dict[tuple[int, int | None], CommandHandler] = {}
        self._specs: dict[tuple[int, int | None], OpSpec] = {}
        self._reported: dict[tuple[int, int | None], OpSpec] = {}
        #: Device-type-specific commands by opcode (see :meth:`register_local`).
        self._local: dict[int, OpSpec] = {}
        #: The kernel's target port groups of this LU (ALUA), once attached.
        self.port_groups: alua.PortGroupSource | None = None
        self.register(op.TEST_UNIT_READY, None, self._test_unit_ready)
        self.register(op.REQUEST_SENSE, None, self._request_sense)
        self.register(op.INQUIRY, None, self._inquiry)
        self.register(op.MODE_SENSE, None, self._mode_sense)
        self.register(op.MODE_SENSE_10, None, self._mode_sense)
        self.register(op.MODE_SELECT, None, self._mode_select)
        self.register(op.MODE_SELECT_10, None, self._mode_select)
        self.register(op.LOG_SENSE, None, self._log_sense)
        self.register(
            op.MAINTENANCE_IN, op.MI_REPORT_SUPPORTED_OPERATION_CODES, self._report_opcodes
        )
        self.report_only(op.REPORT_LUNS)

    # -- dispatch ---------------------------------------------------------

    def report_only(self, opcode: int, service_action: int | None = None) -> None:
        """List a command the kernel answers before userspace sees it (REPORT LUNS).

        REPORT SUPPORTED OPERATION CODES describes the whole device server, so it
        includes such commands; should one reach us anyway, it is INVALID COMMAND
        OPERATION CODE like any command we do not implement.
        """
        spec = op.BY_KEY[(opcode, service_action)]
        self._reported[spec.key] = spec

    def register(self, opcode: int, service_action: int | None, handler: CommandHandler) -> None:
        """Answer ``opcode``/``service_action`` with ``handler(cmd, cdb)``."""
        spec = op.BY_KEY[(opcode, service_action)]
        self._specs[spec.key] = spec
        self._reported[spec.key] = spec
        self._handlers[spec.key] = handler

    def register_local(self, spec: OpSpec, handler: CommandHandler) -> None:
        """Answer a device-type-specific command that the shared table lacks (or
        defines differently): ``spec`` describes it, and it wins for its opcode."""
        self._local[spec.opcode] = spec
        self._specs[spec.key] = spec
        self._reported[spec.key] = spec
        self._handlers[spec.key] = handler

    def unregister(self, opcode: int, service_action: int | None = None) -> None:
        local = self._local.get(opcode)
        if local is not None and local.key == (opcode, service_action):
            del self._local[opcode]
        self._specs.pop((opcode, service_action), None)
        self._reported.pop((opcode, service_action), None)
        self._handlers.pop((opcode, service_action), None)

    @property
    def supported(self) -> Mapping[tuple[int, int | None], OpSpec]:
        """The commands this device answers itself."""
        return self._specs

    @property
    def reported(self) -> Mapping[tuple[int, int | None], OpSpec]:
        """What REPORT SUPPORTED OPERATION CODES lists: ours plus the kernel's."""
        return self._reported

    def spec_for(self, cdb: bytes) -> OpSpec | None:
        """The command ``cdb`` asks for, if this device implements it."""
        if cdb and cdb[0] in self._local:
            return self._local[cdb[0]]
        spec = op.lookup(cdb)
        return spec if spec is not None and spec.key in self._specs else None

    def is_io(self, cmd: Command) -> bool:
        """True when ``cmd`` may block on the backing store (run it on a worker thread)."""
        spec = self.spec_for(cmd.cdb)
        return spec is not None and spec.blocking

    def execute(self, cmd: Command) -> Result:
        """Execute ``cmd`` and return its result; never raises."""
        try:
            return self._execute(cmd)
        except SenseError as error:
            return error.result()
        except WouldBlock:
            raise  # not an answer: the runner retries the command on a worker
        except Exception:
            log.exception("internal error executing %r", cmd)
            return SenseError.internal_target_failure().result()

    def _execute(self, cmd: Command) -> Result:
        cdb = cmd.cdb
        if not cdb:
            raise SenseError.invalid_opcode()
        spec = self.spec_for(cdb)
        if cdb[0] not in op.UA_EXEMPT_OPCODES and cdb[0] not in self.ua_exempt:
            attention = self.unit_attentions.pop()
            if attention is not None:
                raise attention
        if spec is None:
            if any(key[0] == cdb[0] for key in self._specs):
                # A supported opcode with a service action we do not implement.
                raise SenseError.invalid_field_in_cdb(1, 4)
            raise SenseError.invalid_opcode()
        check_cdb(cdb, spec)
        cdb = bytes(cdb[: spec.cdb_len])
        if spec.media_access:
            not_ready = self.not_ready_error()
            if not_ready is not None:
                raise not_ready
        if spec.writes_medium and self.write_protected():
            raise SenseError.write_protected()
        return self._handlers[spec.key](cmd, cdb)

    # -- hooks for subclasses -----------------------------------------------

    def reset(self) -> None:
        """A logical unit reset happened (LUN RESET, target reset): drop the state a
        reset clears. The kernel core reports the reset's unit attention itself."""

    def write_protected(self) -> bool:
        return False

    def not_ready_error(self) -> SenseError | None:
        """Why media access fails right now (NOT READY), or None when the unit is ready."""
        if not self.medium_present:
            return SenseError.medium_not_present()
        if not self.started:
            return SenseError.not_ready_initializing_command_required()
        return None

    def vpd_pages(self) -> dict[int, Callable[[], bytes]]:
        """VPD page code -> builder of the page's bytes after the 4-byte header."""
        return {0x80: self._vpd_unit_serial, 0x83: self._vpd_device_identification}

    def mode_pages(self) -> Mapping[int, ModePage]:
        return {}

    def mode_device_specific(self) -> int:
        return 0

    def mode_block_descriptor(self, long_lba: bool) -> bytes:
        return b""

    def check_mode_block_descriptor(self, descriptor: bytes, offset: int, long_lba: bool) -> None:
        raise SenseError.invalid_field_in_parameter_list(offset)

    def mode_write_protected(self) -> bool:
        return self.write_protected()

    # -- INQUIRY ------------------------------------------------------------

    def peripheral_byte(self) -> int:
        """PERIPHERAL QUALIFIER 000b (connected) and the device type."""
        return self.identity.device_type & 0x1F

    def standard_inquiry(self) -> bytes:
        ident = self.identity
        data = bytearray(STANDARD_INQUIRY_LEN)
        data[0] = self.peripheral_byte()
        data[1] = 0x80 if ident.removable else 0x00  # RMB
        data[2] = 0x06  # VERSION: SPC-4
        data[3] = 0x12  # HISUP=1, RESPONSE DATA FORMAT=2; NORMACA=0 (no ACA)
        data[4] = STANDARD_INQUIRY_LEN - 5
        data[7] = 0x02  # CMDQUE
        data[8:16] = ascii_field(ident.vendor, 8)
        data[16:32] = ascii_field(product_id(ident), 16)
        data[32:36] = ascii_field(ident.revision, 4)
        for index, descriptor in enumerate(VERSION_DESCRIPTORS):
            data[58 + 2 * index : 60 + 2 * index] = descriptor.to_bytes(2, "big")
        return bytes(data)

    def _inquiry(self, cmd: Command, cdb: bytes) -> Result:
        """Standard data (with TPGS from the port groups) or a VPD page."""
        evpd = cdb[1] & 0x01
        page_code = cdb[2]
        alloc = be(cdb, 3, 2)
        if not evpd:
            if page_code:
                raise SenseError.invalid_field_in_cdb(2)
            data = bytearray(self.standard_inquiry())
            data[5] |= alua.tpgs(self._port_groups())
            return data_in(cmd, bytes(data), alloc)
        pages = self.vpd_pages()
        if page_code == 0x00:
            body = bytes([0x00, *sorted(pages)])
        elif page_code in pages:
            body = pages[page_code]()
        else:
            raise SenseError.invalid_field_in_cdb(2)
        header = bytes((self.peripheral_byte(), page_code)) + len(body).to_bytes(2, "big")
        return data_in(cmd, header + body, alloc)

    def _vpd_unit_serial(self) -> bytes:
        return unit_serial(self.identity).encode("ascii", "replace")

    def _vpd_device_identification(self) -> bytes:
        ident = self.identity
        t10 = ascii_field(ident.vendor, 8) + t10_vendor_specific(ident).encode(
            "ascii", "replace"
        )[:200]
        serial = unit_serial(ident).encode("ascii", "replace")[:200]
        return (
            designator(_CODE_SET_BINARY, _TYPE_NAA, naa_designator(ident))
            + designator(_CODE_SET_ASCII, _TYPE_T10_VENDOR_ID, t10)
            + designator(_CODE_SET_ASCII, _TYPE_VENDOR_SPECIFIC, serial)
            + alua.port_designators(self._port_groups())
        )

    # -- ALUA: REPORT / SET TARGET PORT GROUPS ----------------------------------

    def attach_port_groups(self, source: alua.PortGroupSource) -> None:
        """Answer ALUA from ``source`` (the kernel enforces the states itself)."""
        self.port_groups = source
        self.register(op.MAINTENANCE_IN, op.MI_REPORT_TARGET_PGS, self._report_target_pgs)
        self.register(op.MAINTENANCE_OUT, op.MO_SET_TARGET_PGS, self._set_target_pgs)

    def _port_groups(self) -> list[alua.PortGroup]:
        if self.port_groups is None:
            return []
        try:
            return self.port_groups.groups()
        except Exception as err:  # configfs gone or unreadable: no ALUA to report
            log.warning("%s: cannot read the target port groups: %s", self.identity.name, err)
            return []

    def _report_target_pgs(self, cmd: Command, cdb: bytes) -> Result:
        data_format = cdb[1] >> 5
        if data_format > 1:
            raise SenseError.invalid_field_in_cdb(1, 7)
        data = alua.report_target_port_groups(self._port_groups(), extended=data_format == 1)
        return data_in(cmd, data, be(cdb, 6, 4))

    def _set_target_pgs(self, cmd: Command, cdb: bytes) -> Result:
        groups = self._port_groups()
        if self.port_groups is None or not any(g.explicit for g in groups):
            raise SenseError.invalid_opcode()  # TPGS without explicit ALUA
        length = be(cdb, 6, 4)
        if length == 0:
            return Result()
        if len(cmd.data) < length:
            raise SenseError.invalid_field_in_command_iu()
        for group_id, state in alua.parse_set_target_port_groups(
            cmd.data.read(0, length), groups
        ):
            try:
                self.port_groups.set_state(group_id, state)
            except Exception as err:
                log.warning("%s: SET TARGET PORT GROUPS %d -> %s failed: %s",
                            self.identity.name, group_id, state.name, err)
                raise SenseError(HARDWARE_ERROR, 0x67, 0x0A) from err  # STPG COMMAND FAILED
        return Result()

    # -- TEST UNIT READY / REQUEST SENSE ------------------------------------

    def _test_unit_ready(self, cmd: Command, cdb: bytes) -> Result:
        not_ready = self.not_ready_error()
        if not_ready is not None:
            raise not_ready
        return Result()

    def _request_sense(self, cmd: Command, cdb: bytes) -> Result:
        """Report (and clear) a pending unit attention, else the unit's state (SPC-4 6.39)."""
        desc = bool(cdb[1] & 0x01)
        alloc = cdb[4]
        attention = self.unit_attentions.pop()
        if attention is not None:
            sense = attention.sense
        elif (not_ready := self.not_ready_error()) is not None:
            sense = not_ready.sense
        else:
            sense = build_sense(NO_SENSE, 0x00, 0x00)
        if desc:
            sense = to_descriptor_format(sense)
        return data_in(cmd, sense, alloc)

    # -- REPORT SUPPORTED OPERATION CODES ----------------------------------

    def _report_opcodes(self, cmd: Command, cdb: bytes) -> Result:
        data, alloc = report_supported_operation_codes(cdb, self._reported)
        return data_in(cmd, data, alloc)

    # -- MODE SENSE / MODE SELECT -------------------------------------------

    def _mode_sense(self, cmd: Command, cdb: bytes) -> Result:
        data, alloc = mode_sense(self, cdb)
        return data_in(cmd, data, alloc)

    def _log_sense(self, cmd: Command, cdb: bytes) -> Result:
        page, alloc = logs.log_sense(cdb)
        return data_in(cmd, page, alloc)

    def _mode_select(self, cmd: Command, cdb: bytes) -> Result:
        length = be(cdb, 7, 2) if len(cdb) == 10 else cdb[4]
        params = cmd.data.read(0, min(length, len(cmd.data)))
        mode_select(self, cdb, params)
        return Result()

    # -- notifications from the daemon ---------------------------------------

    def notify_mode_changed(self) -> None:
        """Mode parameters changed outside MODE SELECT (e.g. a RECONFIG of write_back)."""
        self.unit_attentions.post(0x2A, 0x01)

    def notify_inquiry_changed(self) -> None:
        self.unit_attentions.post(0x3F, 0x03)
