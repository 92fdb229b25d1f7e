"""Who the logical unit says it is: INQUIRY strings and VPD designators.

Every identifier is derived from the configuration (device name first), never
random, so an initiator sees the same serial and NAA after a daemon restart.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from tcmu_scst.errors import ConfigError

#: IEEE company id the kernel's LIO uses for the NAA designators it generates
#: (00-14-05); derived designators look like any other LIO logical unit's.
LIO_OUI = 0x001405


class Identity(Protocol):
    """The configuration fields INQUIRY and the VPD pages report (BlockDeviceConfig fits)."""

    name: str
    device_type: int
    removable: bool
    vendor: str
    product: str
    revision: str
    serial: str
    t10_dev_id: str
    naa_id: bytes


def ascii_field(text: str, width: int) -> bytes:
    """Left-aligned, space-padded printable ASCII (SPC-4 4.3.1), cut to ``width``."""
    clean = "".join(ch if " " <= ch <= "~" else " " for ch in text)
    return clean.encode("ascii")[:width].ljust(width, b" ")


def _digest(name: str) -> bytes:
    return hashlib.sha256(b"tcmu-scst/" + name.encode("utf-8", "surrogateescape")).digest()


def unit_serial(ident: Identity) -> str:
    """VPD 80h serial: the configured one, else 16 hex digits derived from the name."""
    return ident.serial or _digest(ident.name).hex()[:16]


def t10_vendor_specific(ident: Identity) -> str:
    """The vendor-specific part of the T10 vendor-id designator (SCST t10_dev_id)."""
    return ident.t10_dev_id or ident.name


def naa_designator(ident: Identity) -> bytes:
    """NAA designator bytes: the configured 8 or 16 bytes, else NAA 6 derived from the name."""
    if ident.naa_id:
        if len(ident.naa_id) not in (8, 16) or ident.naa_id[0] >> 4 not in (2, 3, 5, 6):
            raise ConfigError(
                f"device {ident.name}: naa_id {ident.naa_id.hex()} is not an 8-byte NAA 2/3/5 "
                "or 16-byte NAA 6 designator; fix it or leave it empty to derive one"
            )
        return ident.naa_id
    vendor_bits = int.from_bytes(_digest(ident.name)[:13], "big") & ((1 << 100) - 1)
    value = (0x6 << 124) | (LIO_OUI << 100) | vendor_bits
    return value.to_bytes(16, "big")


def product_id(ident: Identity) -> str:
    return ident.product or ident.name
