"""MODE SENSE / MODE SELECT (6 and 10) over a registry of mode pages (SPC-4 6.11-6.14, 7.5).

A device registers :class:`ModePage` objects (built from its configuration every
time, so they can never go stale) and supplies the header's device-specific byte
and its block descriptor. Saved pages are not supported: PC=11b answers SAVING
PARAMETERS NOT SUPPORTED and SP=1 is an invalid CDB field. Subpages do not exist
here; subpage FFh ("all subpages") is accepted and returns the page itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from tcmu_scst.scsi.cdb import be, highest_bit
from tcmu_scst.scsi.sense import SenseError

PC_CURRENT = 0
PC_CHANGEABLE = 1
PC_DEFAULT = 2
PC_SAVED = 3

ALL_PAGES = 0x3F
ALL_SUBPAGES = 0xFF


@dataclass(frozen=True, slots=True)
class ModePage:
    """One mode page; each callable returns the whole page, 2-byte header included."""

    code: int
    current: Callable[[], bytes]
    default: Callable[[], bytes]
    changeable: Callable[[], bytes]
    #: Applies a validated new page (only changeable bits differ from current).
    apply: Callable[[bytes], None] | None = None

    def get(self, page_control: int) -> bytes:
        if page_control == PC_CHANGEABLE:
            return self.changeable()
        if page_control == PC_DEFAULT:
            return self.default()
        return self.current()


class ModeDevice(Protocol):
    """What the mode framework asks the device for."""

    def mode_pages(self) -> Mapping[int, ModePage]: ...

    def mode_device_specific(self) -> int:
        """DEVICE-SPECIFIC PARAMETER byte of the mode parameter header."""
        ...

    def mode_block_descriptor(self, long_lba: bool) -> bytes:
        """The block descriptor (8 or 16 bytes), or b"" when the device has none."""
        ...

    def check_mode_block_descriptor(self, descriptor: bytes, offset: int, long_lba: bool) -> None:
        """Refuse a MODE SELECT block descriptor that would change anything."""
        ...

    def mode_write_protected(self) -> bool: ...


def mode_sense(device: ModeDevice, cdb: bytes) -> tuple[bytes, int]:
    """Parameter data and allocation length for a MODE SENSE(6) or (10) CDB."""
    ten = len(cdb) == 10
    dbd = bool(cdb[1] & 0x08)
    llbaa = ten and bool(cdb[1] & 0x10)
    page_control = cdb[2] >> 6
    page_code = cdb[2] & 0x3F
    subpage = cdb[3]
    alloc = be(cdb, 7, 2) if ten else cdb[4]
    if page_control == PC_SAVED:
        raise SenseError.saving_parameters_not_supported()
    pages = device.mode_pages()
    if subpage not in (0, ALL_SUBPAGES):
        raise SenseError.invalid_field_in_cdb(3)
    if page_code == ALL_PAGES:
        body = b"".join(pages[code].get(page_control) for code in sorted(pages))
    elif page_code in pages:
        body = pages[page_code].get(page_control)
    else:
        raise SenseError.invalid_field_in_cdb(2, 5)
    descriptor = b"" if dbd else device.mode_block_descriptor(llbaa)
    dsp = device.mode_device_specific()
    if ten:
        longlba = 0x01 if len(descriptor) == 16 else 0
        header = bytearray(8)
        header[3] = dsp
        header[4] = longlba
        header[6:8] = len(descriptor).to_bytes(2, "big")
        data = header + descriptor + body
        data[0:2] = (len(data) - 2).to_bytes(2, "big")
    else:
        header = bytearray((0, 0, dsp, len(descriptor)))
        data = header + descriptor + body
        data[0] = len(data) - 1
    return bytes(data), alloc


def mode_select(device: ModeDevice, cdb: bytes, params: bytes) -> None:
    """Validate a MODE SELECT parameter list completely, then apply it.

    ``params`` is the parameter list as received (already cut to the PARAMETER
    LIST LENGTH). Only bits the changeable page marks may differ from the current
    values; anything else is INVALID FIELD IN PARAMETER LIST with its pointer.
    """
    ten = len(cdb) == 10
    if cdb[1] & 0x01:  # SP: we keep no saved pages
        raise SenseError.invalid_field_in_cdb(1, 0)
    header_len = 8 if ten else 4
    if not params:
        return  # PARAMETER LIST LENGTH 0: nothing to do, not an error (SPC-4 6.11)
    if len(params) < header_len:
        raise SenseError.parameter_list_length_error()
    if params[1 if not ten else 2] != 0:  # MEDIUM TYPE: only 00h exists for SBC
        raise SenseError.invalid_field_in_parameter_list(1 if not ten else 2)
    dsp = params[2 if not ten else 3]
    if dsp & 0x80 and not device.mode_write_protected():
        # WP=1 would write-protect a writable device; that is not changeable.
        raise SenseError.invalid_field_in_parameter_list(2 if not ten else 3, 7)
    if ten:
        long_lba = bool(params[4] & 0x01)
        bd_len = be(params, 6, 2)
        bd_field = 6
    else:
        long_lba = False
        bd_len = params[3]
        bd_field = 3
    unit = 16 if long_lba else 8
    if bd_len not in (0, unit):
        raise SenseError.invalid_field_in_parameter_list(bd_field)
    if len(params) < header_len + bd_len:
        raise SenseError.parameter_list_length_error()
    if bd_len:
        device.check_mode_block_descriptor(
            params[header_len : header_len + bd_len], header_len, long_lba
        )
    page_format = bool(cdb[1] & 0x10)
    offset = header_len + bd_len
    if offset < len(params) and not page_format:
        # PF=0: the pages would be vendor specific (SCSI-1); we only know SPC pages.
        raise SenseError.invalid_field_in_cdb(1, 4)
    updates = _validate_pages(device.mode_pages(), params, offset)
    for page, new in updates:
        if page.apply is not None and new != page.current():
            page.apply(new)


def _validate_pages(
    pages: Mapping[int, ModePage], params: bytes, offset: int
) -> list[tuple[ModePage, bytes]]:
    updates: list[tuple[ModePage, bytes]] = []
    seen: set[int] = set()
    while offset < len(params):
        if offset + 2 > len(params):
            raise SenseError.parameter_list_length_error()
        first = params[offset]
        # PS (bit 7) is reserved in MODE SELECT; initiators echo MODE SENSE data
        # back, and we always report PS=0, so it is not checked.
        if first & 0x40:  # SPF: no subpages exist here
            raise SenseError.invalid_field_in_parameter_list(offset, 6)
        code = first & 0x3F
        page = pages.get(code)
        if page is None or code in seen:
            raise SenseError.invalid_field_in_parameter_list(offset, 5)
        seen.add(code)
        current = page.current()
        if params[offset + 1] != len(current) - 2:
            raise SenseError.invalid_field_in_parameter_list(offset + 1)
        end = offset + len(current)
        if end > len(params):
            raise SenseError.parameter_list_length_error()
        new = params[offset:end]
        changeable = page.changeable()
        for index in range(2, len(current)):
            bad = (new[index] ^ current[index]) & ~changeable[index] & 0xFF
            if bad:
                raise SenseError.invalid_field_in_parameter_list(offset + index, highest_bit(bad))
        updates.append((page, bytes((code, len(current) - 2)) + bytes(new[2:])))
        offset = end
    return updates
