"""Local SCSI devices as sysfs shows them: address, type, identity, sg node.

A pass-through device is named by its address H:C:I:L (SCST's ``assign 1:0:1:0
dev_disk``). Addresses are not stable across reboots or rescans, so
:func:`find_by_identity` also finds devices by vendor/model/serial/WWN (what a udev
rule would match on).

Everything is read from ``<sysfs>/class/scsi_device/H:C:I:L/device/``: ``type``,
``vendor``, ``model``, ``rev``, ``vpd_pg80`` (unit serial number), ``wwid`` or
``vpd_pg83`` (device identification), ``scsi_generic/sgN`` and ``block/sdX``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tcmu_scst.errors import HandlerError
from tcmu_scst.kernel.handler_table import HANDLERS, Kind

SYSFS = Path("/sys")
_HCTL = re.compile(r"^\d+:\d+:\d+:\d+$")

#: SPC peripheral device type -> SCST pass-through handler.
TYPE_HANDLERS: dict[int, str] = {
    h.device_type: h.name for h in HANDLERS if h.kind is Kind.PASSTHROUGH
}
HANDLER_TYPES: dict[str, int] = {name: code for code, name in TYPE_HANDLERS.items()}
TYPE_NAMES: dict[int, str] = {
    0x00: "disk",
    0x01: "tape",
    0x02: "printer",
    0x03: "processor",
    0x04: "write-once device",
    0x05: "CD/DVD",
    0x06: "scanner",
    0x07: "optical memory device",
    0x08: "medium changer",
    0x09: "communications device",
    0x0C: "storage array controller",
    0x0D: "enclosure",
    0x0E: "simplified direct-access device",
    0x11: "object storage device",
    0x14: "zoned block device",
}


@dataclass(frozen=True, slots=True)
class ScsiDeviceInfo:
    hctl: str
    device_type: int
    vendor: str
    model: str
    rev: str
    sg: str | None  # /dev/sgN
    block: str | None  # /dev/sdX, /dev/srN, ...
    serial: str  # VPD page 80h, "" when the device has none
    wwn: str  # "naa.<hex>", "eui.<hex>", "t10.<text>" or a SCSI name; "" when none

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.device_type, f"type {self.device_type:#x}")

    def describe(self) -> str:
        return f"{self.hctl} is a {self.type_name} (type {self.device_type})"


def check_hctl(hctl: str) -> str:
    if not _HCTL.match(hctl):
        raise HandlerError(
            f"{hctl!r} is not a SCSI address; write host:channel:id:lun, e.g. 1:0:1:0"
        )
    return hctl


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def serial_from_vpd80(page: bytes) -> str:
    """PRODUCT SERIAL NUMBER of a VPD page 80h, blanks and NULs stripped."""
    if len(page) < 4 or page[1] != 0x80:
        return ""
    length = int.from_bytes(page[2:4], "big")
    return page[4 : 4 + length].decode("ascii", "replace").strip(" \0")


def wwn_from_vpd83(page: bytes) -> str:
    """The best designator of a VPD page 83h: NAA, then EUI-64, SCSI name, T10 vendor id.

    Only designators associated with the logical unit (ASSOCIATION 00b) count.
    """
    if len(page) < 4 or page[1] != 0x83:
        return ""
    end = min(len(page), 4 + int.from_bytes(page[2:4], "big"))
    found: dict[int, str] = {}
    pos = 4
    while pos + 4 <= end:
        code_set = page[pos] & 0x0F
        association = (page[pos + 1] >> 4) & 0x3
        kind = page[pos + 1] & 0x0F
        length = page[pos + 3]
        body = page[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if association != 0 or kind in found:
            continue
        if kind == 0x3:
            found[kind] = "naa." + body.hex()
        elif kind == 0x2:
            found[kind] = "eui." + body.hex()
        elif kind == 0x8 and code_set == 0x3:
            found[kind] = body.decode("utf-8", "replace").rstrip("\0")
        elif kind == 0x1 and code_set in (0x2, 0x3):
            found[kind] = "t10." + " ".join(body.decode("ascii", "replace").split())
    for kind in (0x3, 0x2, 0x8, 0x1):
        if kind in found:
            return found[kind]
    return ""


def _node(directory: Path) -> str | None:
    if not directory.is_dir():
        return None
    names = sorted(p.name for p in directory.iterdir())
    return f"/dev/{names[0]}" if names else None


def read_device(hctl: str, sysfs: Path = SYSFS) -> ScsiDeviceInfo:
    """The device at ``hctl``; HandlerError when there is none."""
    check_hctl(hctl)
    device = sysfs / "class/scsi_device" / hctl / "device"
    type_text = _read_text(device / "type")
    if not type_text:
        raise HandlerError(
            f"no SCSI device at {hctl} ({device} missing); check lsscsi or rescan the host"
        )
    try:
        device_type = int(type_text, 0)
    except ValueError:
        raise HandlerError(f"{hctl}: unreadable device type {type_text!r} in {device}") from None
    wwid = _read_text(device / "wwid")
    return ScsiDeviceInfo(
        hctl=hctl,
        device_type=device_type,
        vendor=_read_text(device / "vendor"),
        model=_read_text(device / "model"),
        rev=_read_text(device / "rev"),
        sg=_node(device / "scsi_generic"),
        block=_node(device / "block"),
        serial=serial_from_vpd80(_read_bytes(device / "vpd_pg80")),
        wwn=_normal_wwid(wwid) or wwn_from_vpd83(_read_bytes(device / "vpd_pg83")),
    )


def block_geometry(info: ScsiDeviceInfo, sysfs: Path = SYSFS) -> tuple[int, int] | None:
    """``(size in bytes, logical block size)`` of a device with a block node, else None.

    What a TCMU backstore for a pass-through disk should be created with (dev_size,
    hw_block_size); the initiator itself learns both from READ CAPACITY, which is
    passed through.
    """
    if info.block is None:
        return None
    block = sysfs / "block" / Path(info.block).name
    sectors = _read_text(block / "size")
    logical = _read_text(block / "queue/logical_block_size")
    if not sectors.isdigit() or not logical.isdigit():
        return None
    return int(sectors) * 512, int(logical)  # sysfs "size" is in 512-byte units


def _normal_wwid(wwid: str) -> str:
    # sysfs wwid: "naa.6001405...", "t10.Linux   scsi_debug  ...", "eui.<hex>".
    return " ".join(wwid.split())


def list_devices(sysfs: Path = SYSFS) -> list[ScsiDeviceInfo]:
    """Every SCSI device sysfs knows, in address order."""
    root = sysfs / "class/scsi_device"
    if not root.is_dir():
        return []
    out = []
    for entry in root.iterdir():
        if not _HCTL.match(entry.name):
            continue
        try:
            out.append(read_device(entry.name, sysfs))
        except HandlerError:
            continue  # went away while we looked
    return sorted(out, key=lambda info: tuple(int(x) for x in info.hctl.split(":")))


def _same_wwn(want: str, have: str) -> bool:
    want, have = want.strip().lower(), have.strip().lower()
    if not have:
        return False
    if want == have:
        return True
    # Accept a bare hex NAA/EUI id (with or without 0x) for "naa.<hex>"/"eui.<hex>".
    bare = want.removeprefix("0x")
    return "." in have and have.split(".", 1)[1] == bare


def find_by_identity(
    *,
    vendor: str | None = None,
    model: str | None = None,
    serial: str | None = None,
    wwn: str | None = None,
    sysfs: Path = SYSFS,
) -> list[ScsiDeviceInfo]:
    """Devices matching every given field (vendor/model/serial compared blank-trimmed)."""
    if vendor is None and model is None and serial is None and wwn is None:
        raise HandlerError("find_by_identity: give at least one of vendor, model, serial, wwn")
    matches = []
    for info in list_devices(sysfs):
        if vendor is not None and info.vendor != vendor.strip():
            continue
        if model is not None and info.model != model.strip():
            continue
        if serial is not None and info.serial != serial.strip():
            continue
        if wwn is not None and not _same_wwn(wwn, info.wwn):
            continue
        matches.append(info)
    return matches
