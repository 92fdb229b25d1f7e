"""Every SCST device handler tcmu-scst serves: one declaration for every layer.

Each row says what SCST calls the handler (the file's ``HANDLER`` name, 0.9.6's
``assign H:C:I:L HANDLER``), the SCSI peripheral device type its devices report (SPC-4
table 35), its kind, the TCMU ``dev_config`` subtype that selects our userspace handler
(tcmu-abi §1.1: ``<subtype>/<handler string>``) and the parameters its ``DEVICE`` block
takes, each with its type, range and default (:class:`~tcmu_scst.kernel.parameters.Param`;
for pass-through the defaults are the SG_IO timeout and serialization). The model, the
config readers, the shell, the daemon's registry and the handlers' codecs derive their
maps, parsers, range checks and defaults from :data:`HANDLERS`; nothing else lists
handlers or their parameters. Pure data: it sits below every layer that asks (kernel/
and scsi/ are the lowest), so the handlers' codecs may read it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tcmu_scst.kernel.parameters import Param, ParamType, choice_error


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
    parameters: tuple[Param, ...] = ()  # attributes of its DEVICE block (scst.conf, sysfs)
    # False: the kernel's per-command timeout (30 s by default) is switched off; tapes
    # and changers run commands for hours (rewind, inventory) and the initiator keeps
    # its own timeouts.
    kernel_timeout: bool = True
    # SCST parameters accepted only at this value (SCST's default; the rest is not
    # implemented here), as (name, value).
    fixed: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> Param | None:
        """The declaration of parameter ``name`` (None: not one of this handler's)."""
        return next((p for p in self.parameters if p.name == name), None)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def timeout(self) -> int:
        """Pass-through: the default SG_IO timeout in seconds (0: none declared)."""
        param = self.param("timeout")
        return 0 if param is None else param.int_default()

    @property
    def serialized(self) -> bool:
        """Pass-through: one command at a time unless the device's ``serialized`` says."""
        param = self.param("serialized")
        return False if param is None else param.bool_default()

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

_BOOL, _INT, _TEXT, _PATH = ParamType.BOOL, ParamType.INT, ParamType.TEXT, ParamType.PATH

#: LIO's attrib/block_size takes only these (target_core_configfs answers EINVAL to the
#: others) and Linux's sd refuses logical blocks larger than a page.
BLOCKSIZE = Param("blocksize", _INT, 512, "logical block size in bytes",
                  choices=(512, 1024, 2048, 4096))


def block_size_error(block_size: int) -> str | None:
    """Why ``block_size`` cannot be a vdisk's logical block size, or None if it can."""
    return choice_error(BLOCKSIZE, block_size, "block size", "LIO exports")


#: SCST's VDISK_NULLIO_SIZE (sysfs era): 5/2 TiB. SCST 0.9.6 had 3/2 TiB.
NULLIO_SIZE = 5 * 1024**4 // 2


def _flag(name: str, doc: str, default: bool = False) -> Param:
    return Param(name, _BOOL, default, doc)


# The identities: empty means derived as SCST derives them (from crc32c of the name and
# the setup id), so a device keeps its serial. Lengths: SCST's MAX_USN_LEN - 1 and
# t10_dev_id[16+8+2] - 1.
_IDENTITIES = (
    Param("t10_dev_id", _TEXT, "", "the T10 vendor ID designator's identifier (VPD 83h), "
          "derived from the name when none", maximum=25),
    Param("usn", _TEXT, "", "the unit serial number (VPD 80h), derived from the name when "
          "none", maximum=20),
)
_COMMON = (
    BLOCKSIZE,
    _flag("read_only", "write-protected: writes are refused"),
    _flag("removable", "removable medium (INQUIRY RMB)"),
    _flag("rotational", "a rotating medium (VPD B1h; 0 reports a non-rotating one)", True),
    *_IDENTITIES,
)
_FILENAME = Param("filename", _PATH, "", "the backing file or block device, or "
                  "vdisk_rbd's image as rbd:POOL/IMAGE[:conf=PATH][:id=USER]")
_WRITE_THROUGH = _flag("write_through", "no write cache (WCE 0): a write is durable before GOOD")
_NV_CACHE = _flag("nv_cache", "a non-volatile cache: cache flushes and FUA are no-ops")
_THIN = _flag("thin_provisioned", "thin provisioning (LBPME): UNMAP deallocates blocks")
_PT = Kind.PASSTHROUGH


def _passthrough(timeout: int, serialized: bool = False) -> tuple[Param, ...]:
    """A pass-through handler's options, with its type's defaults."""
    return (
        _flag("serialized", "one command at a time to the device", serialized),
        # SG_IO takes milliseconds in a 32-bit field.
        Param("timeout", _INT, timeout, "SG_IO timeout in seconds, 0 for the default",
              minimum=1, maximum=0xFFFFFFFF // 1000, unit="s", zero="default"),
        Param("vendor_in", ParamType.OPCODES, "",
              "opcodes forwarded with the whole buffer as Data-In", maximum=0xFF),
        Param("vendor_out", ParamType.OPCODES, "",
              "opcodes forwarded with the whole buffer as Data-Out", maximum=0xFF),
    )


# vdisk: SCST's active/async/ALUA binding/cluster mode/TST/T10-PI switches.
_VDISK_FIXED = (
    ("active", "1"), ("async", "0"), ("bind_alua_state", "1"), ("cluster_mode", "0"),
    ("tst", "1"), ("dif_type", "0"),
)

HANDLERS: tuple[HandlerSpec, ...] = (
    HandlerSpec("vdisk_fileio", TYPE_DISK, Kind.VDISK,
                (*_COMMON, _FILENAME, _WRITE_THROUGH, _NV_CACHE,
                 _flag("o_direct", "open the file O_DIRECT (bypass the page cache)"),
                 _THIN), fixed=_VDISK_FIXED),
    HandlerSpec("vdisk_blockio", TYPE_DISK, Kind.VDISK,
                (*_COMMON, _FILENAME, _WRITE_THROUGH, _NV_CACHE, _THIN),
                fixed=_VDISK_FIXED),
    HandlerSpec("vdisk_nullio", TYPE_DISK, Kind.VDISK, (
        *_COMMON,
        Param("size", _INT, NULLIO_SIZE, "the size in bytes, at least one block"),
        Param("size_mb", _INT, NULLIO_SIZE >> 20, "the size in MiB (instead of size)"),
        _flag("dummy", "SCST's LUN placeholder: INQUIRY says no device"),
    ), fixed=_VDISK_FIXED),
    # Ours (not SCST's): an image in a Ceph cluster, ``filename rbd:POOL/IMAGE``.
    HandlerSpec("vdisk_rbd", TYPE_DISK, Kind.VDISK,
                (*_COMMON, _FILENAME, _WRITE_THROUGH, _THIN), fixed=_VDISK_FIXED),
    # A CD-ROM here is always read-only removable media with one task set.
    HandlerSpec(VCDROM, TYPE_CDROM, Kind.VCDROM,
                (Param("filename", _PATH, "", "the ISO image (none: an empty drive)"),
                 *_IDENTITIES),
                fixed=(("tst", "1"), ("read_only", "1"), ("removable", "1"))),
    # SG_IO timeouts: tapes and changers run minutes-long commands (ERASE, INITIALIZE
    # ELEMENT STATUS); SCST's dev_tape also used hours for its long timeouts. Tapes and
    # changers are serialized: their commands depend on the medium's position and state.
    HandlerSpec("dev_disk", TYPE_DISK, _PT, _passthrough(60)),
    HandlerSpec("dev_tape", TYPE_TAPE, _PT, _passthrough(14400, serialized=True),
                kernel_timeout=False),
    HandlerSpec("dev_processor", TYPE_PROCESSOR, _PT, _passthrough(60)),
    HandlerSpec("dev_cdrom", TYPE_CDROM, _PT, _passthrough(120)),
    HandlerSpec("dev_modisk", TYPE_MODISK, _PT, _passthrough(300)),
    HandlerSpec("dev_changer", TYPE_CHANGER, _PT, _passthrough(3600, serialized=True),
                kernel_timeout=False),
    HandlerSpec("dev_raid", TYPE_RAID, _PT, _passthrough(60)),
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
