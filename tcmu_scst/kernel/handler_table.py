"""Every SCST device handler tcmu-scst serves: one declaration for every layer.

Each row says what SCST calls the handler (the file's ``HANDLER`` name, 0.9.6's
``assign H:C:I:L HANDLER``), the SCSI peripheral device type its devices report (SPC-4
table 35), its kind, the TCMU ``dev_config`` subtype that selects our userspace handler
(tcmu-abi §1.1: ``<subtype>/<handler string>``), the parameters its ``DEVICE`` block
takes and, for pass-through, its SG_IO defaults. The model, the config readers, the
shell, the daemon's registry and the handlers' codecs derive their maps from
:data:`HANDLERS`; nothing else lists handlers. Pure data: it sits below every layer
that asks (kernel/ and scsi/ are the lowest), so the handlers' codecs may read it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    VDISK = "vdisk"  # a virtual disk the admin names, backed by a file, device, RBD or nothing
    VCDROM = "vcdrom"  # a virtual CD-ROM whose medium is an ISO file
    PASSTHROUGH = "passthrough"  # a local SCSI device (H:C:I:L), commands through SG_IO
    PERF = "perf"  # SCST's *_perf: assigned like pass-through, answers without the device


@dataclass(frozen=True)
class HandlerSpec:
    name: str  # SCST's handler name (modern spelling)
    device_type: int  # SPC peripheral device type of its devices
    kind: Kind
    parameters: tuple[str, ...] = ()  # attributes of its DEVICE block (scst.conf, sysfs)
    timeout: int = 0  # pass-through: default SG_IO timeout in seconds
    # Pass-through: one command at a time unless the device says otherwise (tapes and
    # changers: their commands depend on the medium's position and state).
    serialized: bool = False
    # False: the kernel's per-command timeout (30 s by default) is switched off; tapes
    # and changers run commands for hours (rewind, inventory) and the initiator keeps
    # its own timeouts.
    kernel_timeout: bool = True
    # SCST parameters accepted only at this value (SCST's default; the rest is not
    # implemented here), as (name, value).
    fixed: tuple[tuple[str, str], ...] = ()

    @property
    def subtype(self) -> str:
        """The TCMU dev_config subtype: all vdisk modes share "vdisk"; others their name."""
        return "vdisk" if self.kind is Kind.VDISK else self.name

    @property
    def assigned(self) -> bool:
        """SCST's dev_* handlers: a device is a local SCSI device named by H:C:I:L."""
        return self.kind in (Kind.PASSTHROUGH, Kind.PERF)


TYPE_DISK, TYPE_TAPE, TYPE_PROCESSOR, TYPE_CDROM = 0x00, 0x01, 0x03, 0x05
TYPE_MODISK, TYPE_CHANGER, TYPE_RAID = 0x07, 0x08, 0x0C

VCDROM = "vcdrom"  # the one virtual CD-ROM handler (SCST 0.9.6's proc directory too)

_COMMON = ("blocksize", "read_only", "removable", "rotational", "t10_dev_id", "usn")
_PASSTHROUGH = ("serialized", "timeout", "vendor_in", "vendor_out")
_PT = Kind.PASSTHROUGH
# vdisk: SCST's active/async/ALUA binding/cluster mode/TST/T10-PI switches.
_VDISK_FIXED = (
    ("active", "1"), ("async", "0"), ("bind_alua_state", "1"), ("cluster_mode", "0"),
    ("tst", "1"), ("dif_type", "0"),
)

HANDLERS: tuple[HandlerSpec, ...] = (
    HandlerSpec("vdisk_fileio", TYPE_DISK, Kind.VDISK,
                (*_COMMON, "filename", "write_through", "nv_cache", "o_direct",
                 "thin_provisioned"), fixed=_VDISK_FIXED),
    HandlerSpec("vdisk_blockio", TYPE_DISK, Kind.VDISK,
                (*_COMMON, "filename", "write_through", "nv_cache", "thin_provisioned"),
                fixed=_VDISK_FIXED),
    HandlerSpec("vdisk_nullio", TYPE_DISK, Kind.VDISK, (*_COMMON, "size", "size_mb", "dummy"),
                fixed=_VDISK_FIXED),
    # Ours (not SCST's): an image in a Ceph cluster, ``filename rbd:POOL/IMAGE``.
    HandlerSpec("vdisk_rbd", TYPE_DISK, Kind.VDISK,
                (*_COMMON, "filename", "write_through", "thin_provisioned"),
                fixed=_VDISK_FIXED),
    # A CD-ROM here is always read-only removable media with one task set.
    HandlerSpec(VCDROM, TYPE_CDROM, Kind.VCDROM, ("filename", "t10_dev_id", "usn"),
                fixed=(("tst", "1"), ("read_only", "1"), ("removable", "1"))),
    # SG_IO timeouts: tapes and changers run minutes-long commands (ERASE, INITIALIZE
    # ELEMENT STATUS); SCST's dev_tape also used hours for its long timeouts.
    HandlerSpec("dev_disk", TYPE_DISK, _PT, _PASSTHROUGH, 60),
    HandlerSpec("dev_tape", TYPE_TAPE, _PT, _PASSTHROUGH, 14400,
                serialized=True, kernel_timeout=False),
    HandlerSpec("dev_processor", TYPE_PROCESSOR, _PT, _PASSTHROUGH, 60),
    HandlerSpec("dev_cdrom", TYPE_CDROM, _PT, _PASSTHROUGH, 120),
    HandlerSpec("dev_modisk", TYPE_MODISK, _PT, _PASSTHROUGH, 300),
    HandlerSpec("dev_changer", TYPE_CHANGER, _PT, _PASSTHROUGH, 3600,
                serialized=True, kernel_timeout=False),
    HandlerSpec("dev_raid", TYPE_RAID, _PT, _PASSTHROUGH, 60),
    HandlerSpec("dev_disk_perf", TYPE_DISK, Kind.PERF),
    HandlerSpec("dev_modisk_perf", TYPE_MODISK, Kind.PERF),
    HandlerSpec("dev_tape_perf", TYPE_TAPE, Kind.PERF),
)

# SPC's names of the device types our handlers serve, as SCST's per-handler ``type``
# file prints them ("0 - Direct-access device (e.g., magnetic disk)").
TYPE_DESCRIPTIONS: dict[int, str] = {
    TYPE_DISK: "Direct-access device (e.g., magnetic disk)",
    TYPE_TAPE: "Sequential-access device (e.g., magnetic tape)",
    TYPE_PROCESSOR: "Processor device",
    TYPE_CDROM: "CD-ROM device",
    TYPE_MODISK: "Optical memory device (e.g., some optical disks)",
    TYPE_CHANGER: "Medium changer device (e.g., jukeboxes)",
    TYPE_RAID: "Storage array controller device (e.g., RAID)",
}


def names(*kinds: Kind) -> tuple[str, ...]:
    """The handlers of these kinds, in table order."""
    return tuple(h.name for h in HANDLERS if h.kind in kinds)


def by_name(name: str) -> HandlerSpec | None:
    return _BY_NAME.get(name)


def kind_of(name: str) -> Kind | None:
    """The kind of handler ``name`` (None: not a handler of ours)."""
    spec = _BY_NAME.get(name)
    return None if spec is None else spec.kind


_BY_NAME: dict[str, HandlerSpec] = {h.name: h for h in HANDLERS}
#: handler name -> SCSI device type (every handler the config file accepts).
HANDLER_TYPES: dict[str, int] = {h.name: h.device_type for h in HANDLERS}
#: Handlers whose devices the admin names and backs (vdisk modes and vcdrom).
VIRTUAL_HANDLERS = frozenset(h.name for h in HANDLERS if not h.assigned)
#: SCST's dev_* handlers (pass-through and perf): devices named by H:C:I:L.
ASSIGNED_HANDLERS = frozenset(h.name for h in HANDLERS if h.assigned)
#: Every dev_config subtype our daemon serves (and the mark of a backstore we made).
SUBTYPES = frozenset(h.subtype for h in HANDLERS)
