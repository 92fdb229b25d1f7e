"""REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN / 0Ch, SPC-4 6.35)."""

from __future__ import annotations

from collections.abc import Mapping

from tcmu_scst.scsi.cdb import be
from tcmu_scst.scsi.opcodes import OpSpec, has_service_actions
from tcmu_scst.scsi.sense import SenseError

# SUPPORT field values of the one_command parameter data.
SUPPORT_NOT_SUPPORTED = 0b001
SUPPORT_STANDARD = 0b011

#: Timeouts reported with RCTD (seconds): nominal 0 = not specified, and the
#: kernel's default cmd_time_out as the recommended value.
NOMINAL_TIMEOUT = 0
RECOMMENDED_TIMEOUT = 30


def timeouts_descriptor() -> bytes:
    return (
        bytes((0x00, 0x0A, 0x00, 0x00))
        + NOMINAL_TIMEOUT.to_bytes(4, "big")
        + RECOMMENDED_TIMEOUT.to_bytes(4, "big")
    )


def _all_commands(specs: Mapping[tuple[int, int | None], OpSpec], rctd: bool) -> bytes:
    body = bytearray()
    for key in sorted(specs, key=lambda k: (k[0], -1 if k[1] is None else k[1])):
        spec = specs[key]
        flags = (0x02 if rctd else 0) | (0x01 if spec.service_action is not None else 0)
        body += bytes((spec.opcode, 0))
        body += (spec.service_action or 0).to_bytes(2, "big")
        body += bytes((0, flags))
        body += spec.cdb_len.to_bytes(2, "big")
        if rctd:
            body += timeouts_descriptor()
    return len(body).to_bytes(4, "big") + bytes(body)


def _one_command(spec: OpSpec | None, rctd: bool) -> bytes:
    if spec is None:
        return bytes((0, SUPPORT_NOT_SUPPORTED, 0, 0))
    head = bytes((0, (0x80 if rctd else 0) | SUPPORT_STANDARD))
    data = head + spec.cdb_len.to_bytes(2, "big") + spec.usage
    return data + timeouts_descriptor() if rctd else data


def report_supported_operation_codes(
    cdb: bytes, specs: Mapping[tuple[int, int | None], OpSpec]
) -> tuple[bytes, int]:
    """Parameter data and allocation length for an RSOC CDB over ``specs``."""
    rctd = bool(cdb[2] & 0x80)
    options = cdb[2] & 0x07
    opcode = cdb[3]
    service_action = be(cdb, 4, 2)
    alloc = be(cdb, 6, 4)
    if options == 0b000:
        return _all_commands(specs, rctd), alloc
    if options == 0b001:
        if has_service_actions(opcode):
            raise SenseError.invalid_field_in_cdb(3)
        return _one_command(specs.get((opcode, None)), rctd), alloc
    if options == 0b010:
        if not has_service_actions(opcode):
            raise SenseError.invalid_field_in_cdb(3)
        return _one_command(specs.get((opcode, service_action)), rctd), alloc
    if options == 0b011:
        # Opcode plus service action when the opcode has them; otherwise the
        # command is reported only for a zero REQUESTED SERVICE ACTION.
        if has_service_actions(opcode):
            return _one_command(specs.get((opcode, service_action)), rctd), alloc
        spec = specs.get((opcode, None)) if service_action == 0 else None
        return _one_command(spec, rctd), alloc
    raise SenseError.invalid_field_in_cdb(2, 2)
