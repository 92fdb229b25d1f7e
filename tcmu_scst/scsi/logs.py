"""LOG SENSE (SPC-4 6.6): the log pages an emulated device keeps.

A virtual device has no error counters or temperature to log, so it offers what SPC
requires of a device that implements LOG SENSE at all, and what health checks read:

* 00h/00h Supported Log Pages and 00h/FFh Supported Log Pages and Subpages;
* 2Fh Informational Exceptions: parameter 0000h, "no exception" (ASC 00h, ASCQ 00h),
  temperature not available (FFh). ``smartctl -H`` and ``sg_logs -p ie`` read it.

LOG SELECT is not implemented: there is nothing to reset or set.
"""

from __future__ import annotations

from typing import Final

from tcmu_scst.scsi.cdb import be
from tcmu_scst.scsi.sense import SenseError

SUPPORTED_PAGES: Final = 0x00
ALL_SUBPAGES: Final = 0xFF
INFORMATIONAL_EXCEPTIONS: Final = 0x2F
_SPF: Final = 0x40  # SUBPAGE FORMAT bit in byte 0 of a page with a subpage code
#: (page, subpage) pairs this emulation answers, in the order they are listed.
PAGES: Final = ((SUPPORTED_PAGES, 0x00), (SUPPORTED_PAGES, ALL_SUBPAGES),
                (INFORMATIONAL_EXCEPTIONS, 0x00))  # fmt: skip


def _page(code: int, subpage: int, body: bytes) -> bytes:
    first = code | (_SPF if subpage else 0)
    return bytes((first, subpage)) + len(body).to_bytes(2, "big") + body


def _parameter(code: int, control: int, value: bytes) -> bytes:
    return code.to_bytes(2, "big") + bytes((control, len(value))) + value


def log_page(code: int, subpage: int, pointer: int) -> bytes:
    """The log page ``code``/``subpage`` from parameter ``pointer`` on (SenseError if not
    kept here, or if the pointer is past its last parameter)."""
    if (code, subpage) not in PAGES:
        raise SenseError.invalid_field_in_cdb(2 if subpage == 0 else 3, 5 if subpage == 0 else 7)
    if pointer:
        # Past the last parameter code: the supported-pages lists have none, the
        # Informational Exceptions page only 0000h.
        raise SenseError.invalid_field_in_cdb(5)
    if code == SUPPORTED_PAGES:
        if subpage == ALL_SUBPAGES:
            return _page(code, subpage, b"".join(bytes(pair) for pair in PAGES))
        return _page(code, 0, bytes(sorted({page for page, _ in PAGES})))
    # FORMAT AND LINKING 11b (binary), no threshold met; ASC, ASCQ, temperature.
    return _page(code, 0, _parameter(0x0000, 0x03, bytes((0x00, 0x00, 0xFF))))


def log_sense(cdb: bytes) -> tuple[bytes, int]:
    """Decode a LOG SENSE CDB: (the page from its parameter pointer on, allocation
    length). Every PAGE CONTROL value gets the same page: nothing here has thresholds."""
    if cdb[1] & 0x01:
        raise SenseError.invalid_field_in_cdb(1, 0)  # SP: nothing is saved
    return log_page(cdb[2] & 0x3F, cdb[3], be(cdb, 5, 2)), be(cdb, 7, 2)
