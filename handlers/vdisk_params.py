"""The vdisk parameter model and its three textual forms.

One :class:`VdiskParams` describes a vdisk device whichever way it was written:

(a) the SCST 0.9.6 ``/proc/scsi_tgt/vdisk/vdisk`` command
    ``open NAME [PATH] [BLOCK_SIZE] [FLAGS...]`` (:func:`parse_proc_open`,
    :func:`to_proc_open`), and its read line (:func:`proc_read_line`);
(b) the modern sysfs / scst.conf attributes of the ``vdisk_fileio``,
    ``vdisk_blockio`` and ``vdisk_nullio`` handlers (:func:`parse_attributes`,
    :func:`to_attributes`);
(c) the TCMU ``dev_config`` string ``vdisk/k=v;k=v;...;f=PATH``
    (:func:`parse_dev_config`, :func:`to_dev_config`), which the daemon gets from
    the kernel and turns back into a device.

Syntax errors raise :class:`ConfigError`; a well-formed but impossible set of
values (block size 1000, a relative path) raises :class:`HandlerError` from
:meth:`VdiskParams.validate`, which every parser calls.

Stable identities are derived the way SCST derives them, so a device keeps its
serial across restarts and across SCST and tcmu-scst: ``dev_id_num = setup_id << 32
| crc32c(name + NUL)`` (Linux's raw crc32c, seed 0), ``usn = "%x" % dev_id_num``,
``t10_dev_id = "%x-%s" % (dev_id_num, name)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tcmu_scst.ascii import is_decimal
from tcmu_scst.errors import ConfigError, HandlerError
from tcmu_scst.kernel import devconfig, parameters
from tcmu_scst.kernel.handler_table import BLOCKSIZE, HANDLERS, Kind, block_size_error
from tcmu_scst.kernel.parameters import Param, ParamType

from . import rbd_spec

#: Every vdisk mode's parameters by name (a name means the same in every mode: the
#: table declares each once), with their types, ranges and defaults.
PARAMS: dict[str, Param] = {
    p.name: p for h in HANDLERS if h.kind is Kind.VDISK for p in h.parameters
}
DEFAULT_BLOCK_SIZE = BLOCKSIZE.int_default()
NULLIO_DEFAULT_SIZE = PARAMS["size"].int_default()
MAX_NAME_LEN = 64  # our limit for modern names (configfs directory, INQUIRY product)
PROC_MAX_NAME_LEN = 16  # 0.9.6: char name[16+1]
MAX_T10_DEV_ID_LEN = PARAMS["t10_dev_id"].maximum or 0  # longer derived ids are cut
SUBTYPE = "vdisk"  # dev_config starts with "vdisk/"
#: LIO's IEEE OUI (OpenFabrics), used in our NAA IEEE Registered Extended ids.
NAA_OUI = 0x001405

FILEIO = "vdisk_fileio"
BLOCKIO = "vdisk_blockio"
NULLIO = "vdisk_nullio"
#: Ours (not SCST's): an image in a Ceph cluster, ``filename rbd:POOL/IMAGE``.
RBD = "vdisk_rbd"
HANDLER_NAMES = tuple(h.name for h in HANDLERS if h.kind is Kind.VDISK)


@dataclass(slots=True)
class VdiskParams:
    """Everything needed to open one vdisk device. Empty ``usn``/``t10_dev_id`` = derived."""

    # The attributes' defaults are the handler table's (kernel.handler_table).
    name: str
    filename: str = PARAMS["filename"].text_default()
    blocksize: int = DEFAULT_BLOCK_SIZE
    write_through: bool = PARAMS["write_through"].bool_default()
    read_only: bool = PARAMS["read_only"].bool_default()
    o_direct: bool = PARAMS["o_direct"].bool_default()
    nv_cache: bool = PARAMS["nv_cache"].bool_default()
    nullio: bool = False  # the handler (vdisk_nullio), not an attribute
    blockio: bool = False  # the handler (vdisk_blockio), not an attribute
    removable: bool = PARAMS["removable"].bool_default()
    rotational: bool = PARAMS["rotational"].bool_default()
    thin_provisioned: bool = PARAMS["thin_provisioned"].bool_default()
    # NULLIO only: SCST's LUN placeholder (INQUIRY: no device)
    dummy: bool = PARAMS["dummy"].bool_default()
    t10_dev_id: str = PARAMS["t10_dev_id"].text_default()  # "": derived
    usn: str = PARAMS["usn"].text_default()  # "": derived
    size: int | None = None  # NULLIO only: bytes; None = NULLIO_DEFAULT_SIZE
    setup_id: int = 0  # SCST's global setup_id, folded into derived identities

    # -- derived ------------------------------------------------------------------

    @property
    def handler_name(self) -> str:
        """The modern SCST handler for this device."""
        if self.nullio:
            return NULLIO
        if self.rbd:
            return RBD
        return BLOCKIO if self.blockio else FILEIO

    @property
    def rbd(self) -> bool:
        """The backing store is a Ceph RBD image (``filename rbd:POOL/IMAGE...``)."""
        return rbd_spec.is_rbd(self.filename)

    @property
    def nullio_size(self) -> int:
        return NULLIO_DEFAULT_SIZE if self.size is None else self.size

    @property
    def dev_id_num(self) -> int:
        return (self.setup_id << 32) | crc32c_linux(self.name.encode() + b"\0")

    @property
    def effective_usn(self) -> str:
        return self.usn or f"{self.dev_id_num:x}"

    @property
    def effective_t10_dev_id(self) -> str:
        return self.t10_dev_id or f"{self.dev_id_num:x}-{self.name}"[:MAX_T10_DEV_ID_LEN]

    @property
    def naa_id(self) -> bytes:
        """16-byte NAA IEEE Registered Extended designator, stable for (setup_id, name)."""
        digest = hashlib.sha256(f"{self.setup_id}:{self.name}".encode()).digest()
        value = (0x6 << 124) | (NAA_OUI << 100) | (int.from_bytes(digest, "big") >> 156)
        return value.to_bytes(16, "big")

    @property
    def vendor(self) -> str:
        if self.rbd:
            return "SCST_RBD"
        return "SCST_BIO" if self.blockio else "SCST_FIO"

    @property
    def product(self) -> str:
        return self.name[:16]

    # -- validation ---------------------------------------------------------------

    def validate(self) -> VdiskParams:
        """Check the values; returns self. Raises HandlerError with a one-line reason."""
        who = f"vdisk {self.name!r}"
        if not self.name or not self.name.isprintable() or any(c.isspace() for c in self.name):
            raise HandlerError(f"{who}: a device name must be non-empty printable text w/o blanks")
        if "/" in self.name or len(self.name) > MAX_NAME_LEN:
            raise HandlerError(
                f"{who}: a device name has at most {MAX_NAME_LEN} characters and no '/'"
            )
        check_block_size(self.blocksize)
        if self.nullio and self.blockio:
            raise HandlerError(f"{who}: NULLIO and BLOCKIO exclude each other; choose one")
        if self.rbd:
            rbd_spec.parse(self.filename, who)
            for flag, on in (("NULLIO", self.nullio), ("BLOCKIO", self.blockio),
                             ("O_DIRECT", self.o_direct), ("NV_CACHE", self.nv_cache)):
                if on:
                    raise HandlerError(f"{who}: an RBD image cannot be {flag}; drop the flag")
        elif not self.nullio:
            if not self.filename:
                raise HandlerError(f"{who}: a backing file name is required (absolute path)")
            if not self.filename.startswith("/"):
                raise HandlerError(
                    f"{who}: file path {self.filename!r} is not absolute; give a full path"
                )
        if self.dummy and not self.nullio:
            raise HandlerError(f"{who}: dummy applies to NULLIO only (SCST's LUN placeholder)")
        if self.size is not None:
            if not self.nullio:
                raise HandlerError(
                    f"{who}: size applies to NULLIO only; a file's size is the file's size"
                )
            if self.size < self.blocksize:
                raise HandlerError(f"{who}: NULLIO size {self.size} is below one block")
        for key in ("usn", "t10_dev_id"):
            if (problem := parameters.text_error(PARAMS[key], getattr(self, key))) is not None:
                raise HandlerError(f"{who}: {problem}")
        if not 0 <= self.setup_id < 1 << 32:
            raise HandlerError(f"{who}: setup_id {self.setup_id:#x} does not fit in 32 bits")
        return self


def check_block_size(block_size: int) -> None:
    """The table's rule (:func:`tcmu_scst.kernel.handler_table.block_size_error`)."""
    problem = block_size_error(block_size)
    if problem is not None:
        raise HandlerError(problem)


# -- identities ---------------------------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c_linux(data: bytes, seed: int = 0) -> int:
    """Linux's ``crc32c(seed, data, len)``: Castagnoli, reflected, no pre/post inversion."""
    crc = seed
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


# -- (a) SCST 0.9.6 /proc form ----------------------------------------------------------

#: 0.9.6 flag -> VdiskParams field, in the order SCST prints them.
PROC_FLAGS = {
    "WRITE_THROUGH": "write_through",
    "NV_CACHE": "nv_cache",
    "READ_ONLY": "read_only",
    "O_DIRECT": "o_direct",
    "NULLIO": "nullio",
    "BLOCKIO": "blockio",
    "REMOVABLE": "removable",
}
#: The read format's abbreviations, same order.
PROC_FLAG_ABBREV = {
    "write_through": "WT",
    "nv_cache": "NV",
    "read_only": "RO",
    "o_direct": "DR",
    "nullio": "NIO",
    "blockio": "BIO",
    "removable": "RM",
}


def parse_proc_open(line: str, *, setup_id: int = 0) -> VdiskParams:
    """Parse ``open NAME [PATH] [BLOCK_SIZE] [FLAGS...]`` (the word ``open`` optional).

    As in SCST, BLOCK_SIZE is recognised by its leading digit (decimal or 0x hex).
    PATH may be left out only with NULLIO. O_DIRECT with BLOCKIO is dropped:
    BLOCKIO is direct already.
    """
    words = line.split()
    if words and words[0] == "open":
        words = words[1:]
    if not words:
        raise ConfigError("vdisk open: a device NAME is required: open NAME [PATH] [BS] [FLAGS]")
    name, rest = words[0], words[1:]
    if len(name) > PROC_MAX_NAME_LEN:
        raise ConfigError(
            f"vdisk open: name {name!r} is too long (max {PROC_MAX_NAME_LEN} characters)"
        )
    params = VdiskParams(name=name, setup_id=setup_id)
    if rest and rest[0] not in PROC_FLAGS and not is_decimal(rest[0][:1]):
        params.filename, rest = rest[0], rest[1:]
    if rest and is_decimal(rest[0][:1]):
        params.blocksize, rest = _parse_proc_number(name, rest[0]), rest[1:]
    for word in rest:
        field = PROC_FLAGS.get(word)
        if field is None:
            raise ConfigError(
                f"vdisk open {name}: unknown flag {word!r}; known: {' '.join(PROC_FLAGS)}"
            )
        setattr(params, field, True)
    if params.blockio:
        params.o_direct = False
    return params.validate()


@dataclass(frozen=True, slots=True)
class ProcCommand:
    """One line written to 0.9.6's ``/proc/scsi_tgt/vdisk/vdisk``."""

    action: str  # "open", "close" or "resync_size"
    name: str
    params: VdiskParams | None = None  # for "open" only


def parse_proc_command(line: str, *, setup_id: int = 0) -> ProcCommand:
    """Parse ``open NAME ...``, ``close NAME`` or ``resync_size NAME``."""
    words = line.split()
    action = words[0] if words else ""
    if action == "open":
        params = parse_proc_open(line, setup_id=setup_id)
        return ProcCommand("open", params.name, params)
    if action in ("close", "resync_size"):
        if len(words) != 2:
            raise ConfigError(f"vdisk {action}: give exactly one device NAME: {action} NAME")
        return ProcCommand(action, words[1])
    raise ConfigError(
        f"vdisk: unknown action {action!r}; use open|close|resync_size NAME "
        "[FILE_NAME [BLOCK_SIZE] [WRITE_THROUGH READ_ONLY O_DIRECT NULLIO NV_CACHE BLOCKIO]]"
    )


def _parse_proc_number(name: str, word: str) -> int:
    try:
        return int(word, 0)
    except ValueError:
        raise ConfigError(
            f"vdisk open {name}: block size {word!r} is not a number (e.g. 512 or 0x1000)"
        ) from None


def to_proc_open(params: VdiskParams) -> str:
    """The 0.9.6 ``open`` command for ``params``; ConfigError if it cannot say it all."""
    lost = [
        what
        for what, cond in (
            ("rotational=0", not params.rotational),
            ("thin_provisioned", params.thin_provisioned),
            ("t10_dev_id", bool(params.t10_dev_id)),
            ("usn", bool(params.usn)),
            ("size", params.size is not None),
        )
        if cond
    ]
    if len(params.name) > PROC_MAX_NAME_LEN:
        lost.append(f"a name over {PROC_MAX_NAME_LEN} characters")
    fname = params.filename
    if any(c.isspace() for c in fname):
        lost.append("a file name with blanks")
    elif is_decimal(fname[:1]) or fname in PROC_FLAGS:
        lost.append(f"the file name {fname!r} (it would read as a block size or flag)")
    if lost:
        raise ConfigError(
            f"vdisk {params.name}: the 0.9.6 open command cannot express {', '.join(lost)}; "
            "use the modern attribute form"
        )
    words = ["open", params.name]
    if params.filename:
        words.append(params.filename)
    words.append(str(params.blocksize))
    words += [flag for flag, field in PROC_FLAGS.items() if getattr(params, field)]
    return " ".join(words)


PROC_READ_FORMAT = "%-17s %-11s %-11s %-15s %s"


def proc_read_header() -> str:
    return PROC_READ_FORMAT % ("Name", "Size(MB)", "Block size", "Options", "File name")


def proc_read_line(params: VdiskParams, size_bytes: int) -> str:
    """One row of the 0.9.6 ``vdisk`` read (size in MiB, options as WT NV RO DR NIO BIO RM)."""
    options = " ".join(abbr for field, abbr in PROC_FLAG_ABBREV.items() if getattr(params, field))
    return PROC_READ_FORMAT % (
        params.name, size_bytes >> 20, params.blocksize, options, params.filename
    )


# -- (b) modern sysfs / scst.conf attributes ---------------------------------------------

_BOOL_ATTRS = tuple(name for name, p in PARAMS.items() if p.type is ParamType.BOOL)
# Each mode's DEVICE attributes, as kernel.handler_table declares them.
ATTRIBUTES = {h.name: frozenset(h.parameter_names) for h in HANDLERS if h.kind is Kind.VDISK}
#: SCST parameters we accept only at their default value (we do not implement them).
_DEFAULT_ONLY = {h.name: dict(h.fixed) for h in HANDLERS if h.kind is Kind.VDISK}


def parse_attributes(
    handler: str, name: str, attrs: Mapping[str, str], *, setup_id: int = 0
) -> VdiskParams:
    """Build params from ``add_device NAME k=v;...`` / scst.conf ``DEVICE`` attributes."""
    allowed = ATTRIBUTES.get(handler)
    if allowed is None:
        raise ConfigError(f"unknown vdisk handler {handler!r}; use one of {', '.join(ATTRIBUTES)}")
    params = VdiskParams(
        name=name, nullio=handler == NULLIO, blockio=handler == BLOCKIO, setup_id=setup_id
    )
    size: int | None = None
    fixed = _DEFAULT_ONLY[handler]
    for key, value in attrs.items():
        where = f"{handler} {name}: {key}={value!r}"
        if key in fixed or key == "numa_node_id":
            if key != "numa_node_id" and value.strip() != fixed[key]:
                raise ConfigError(f"{where} is not supported by tcmu-scst (only {fixed[key]})")
            continue
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown attribute for {handler}; known: {', '.join(sorted(allowed))}"
            )
        parsed = parameters.parse(PARAMS[key], where, value)
        if key in ("size", "size_mb"):
            assert isinstance(parsed, int)
            got = parsed * (1 << 20 if key == "size_mb" else 1)
            if size is not None and got != size:
                raise ConfigError(f"{where} disagrees with the other size attribute ({size})")
            size = got
        else:  # booleans, blocksize, filename, t10_dev_id, usn
            setattr(params, key, parsed)
    if (handler == RBD) != params.rbd:
        raise ConfigError(
            f"{handler} {name}: filename {params.filename!r}: "
            + ("give rbd:POOL/IMAGE[:conf=PATH][:id=USER]" if handler == RBD
               else f"an rbd: image needs the {RBD} handler")
        )
    params.size = size
    return params.validate()


def to_attributes(params: VdiskParams) -> tuple[str, dict[str, str]]:
    """``(handler, attributes)`` with the filename and every non-default value.

    Like scstadmin's "key" attributes: defaults are left out.
    """
    allowed = ATTRIBUTES[params.handler_name]
    default = VdiskParams(name=params.name)
    lost = [
        key for key in _BOOL_ATTRS
        if key not in allowed and getattr(params, key) != getattr(default, key)
    ]
    if lost:
        raise ConfigError(
            f"vdisk {params.name}: {params.handler_name} has no {', '.join(lost)} attribute; "
            "drop the flag"
        )
    out: dict[str, str] = {}
    if params.filename and "filename" in allowed:
        out["filename"] = params.filename
    if params.blocksize != default.blocksize:
        out["blocksize"] = str(params.blocksize)
    for key in _BOOL_ATTRS:
        if key in allowed and getattr(params, key) != getattr(default, key):
            out[key] = "1" if getattr(params, key) else "0"
    for key in ("t10_dev_id", "usn"):
        if getattr(params, key):
            out[key] = getattr(params, key)
    if params.nullio and params.size is not None:
        out["size"] = str(params.size)
    return params.handler_name, out


# -- (c) TCMU dev_config ------------------------------------------------------------------

# Short keys: dev_config has 255 characters for everything, path included.
_DC_FLAGS = {
    "wt": "write_through", "ro": "read_only", "dr": "o_direct", "nv": "nv_cache",
    "nio": "nullio", "bio": "blockio", "rm": "removable", "tp": "thin_provisioned",
    "dm": "dummy",
}
_DC_NOT_ROTATIONAL = "ssd"
_DC_KEYS = {"n": "name", "bs": "blocksize", "t10": "t10_dev_id", "usn": "usn", "sz": "size",
            "sid": "setup_id", "f": "filename"}
_INT_FIELDS = {"blocksize", "size", "setup_id"}
def to_dev_config(params: VdiskParams) -> str:
    """``vdisk/n=NAME;bs=..;wt;...;f=PATH``: no ',' anywhere, at most 255 characters."""
    params.validate()
    tokens: list[devconfig.Token] = [("n", params.name)]
    if params.blocksize != DEFAULT_BLOCK_SIZE:
        tokens.append(("bs", params.blocksize))
    tokens += [(key, None) for key, field in _DC_FLAGS.items() if getattr(params, field)]
    if not params.rotational:
        tokens.append((_DC_NOT_ROTATIONAL, None))
    for key, field in (("t10", "t10_dev_id"), ("usn", "usn")):
        if getattr(params, field):
            tokens.append((key, getattr(params, field)))
    if params.size is not None:
        tokens.append(("sz", params.size))
    if params.setup_id:
        tokens.append(("sid", params.setup_id))
    if params.filename:
        tokens.append(("f", params.filename))  # last: the longest part
    return devconfig.encode(
        SUBTYPE, tokens, who=f"vdisk {params.name}",
        hint="use a shorter file path (e.g. a symlink)",
    )  # fmt: skip


def parse_dev_config(text: str) -> VdiskParams:
    """Inverse of :func:`to_dev_config`."""
    decoded = devconfig.decode(text, [SUBTYPE])
    items = decoded.values(_DC_KEYS, flags=[*_DC_FLAGS, _DC_NOT_ROTATIONAL])
    values: dict[str, Any] = {}
    for key, value in items.items():
        if value is None:
            if key == _DC_NOT_ROTATIONAL:
                values["rotational"] = False
            else:
                values[_DC_FLAGS[key]] = True
        elif _DC_KEYS[key] in _INT_FIELDS:
            values[_DC_KEYS[key]] = devconfig.number(decoded, key, value)
        else:
            values[_DC_KEYS[key]] = value
    if "name" not in values:
        raise ConfigError(f"{decoded.where}: the device name (n=) is missing")
    return VdiskParams(**values).validate()
