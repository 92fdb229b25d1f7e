"""The vcdrom parameter model and its textual forms.

One :class:`VcdromParams` describes a virtual CD/DVD drive whichever way it was
written:

(a) SCST 0.9.6 ``/proc/scsi_tgt/vcdrom/vcdrom``: ``open NAME [PATH]``,
    ``change NAME [PATH]``, ``close NAME`` (:func:`parse_proc_command`,
    :func:`to_proc_open`) and the read listing (:func:`proc_read_header`,
    :func:`proc_read_line`); no PATH means an empty drive;
(b) the modern ``HANDLER vcdrom { DEVICE name { filename PATH } }`` attributes
    (:func:`parse_attributes`, :func:`to_attributes`);
(c) the TCMU ``dev_config`` ``vcdrom/n=NAME;filename=PATH`` (:func:`to_dev_config`,
    :func:`parse_dev_config`): keys are the attribute names, values are
    percent-encoded, so no ',' (the kernel's option separator) or ':' ever appears.

Identities are derived as for vdisk (``vdisk_params``): ``usn`` and ``t10_dev_id``
from crc32c of the name and the setup id, so a drive keeps its serial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tcmu_scst.errors import ConfigError, HandlerError
from tcmu_scst.kernel import devconfig, parameters
from tcmu_scst.kernel.handler_table import HANDLERS, Kind

from .vdisk_params import MAX_NAME_LEN, MAX_T10_DEV_ID_LEN, PROC_MAX_NAME_LEN, crc32c_linux

_SPEC = next(h for h in HANDLERS if h.kind is Kind.VCDROM)
HANDLER_NAME = _SPEC.name
_DC_KEYS = {"n": "name", "filename": "filename", "t10_dev_id": "t10_dev_id", "usn": "usn",
            "sid": "setup_id"}
#: Modern attributes (filename, the identities) with their types, ranges and defaults;
#: tst and read_only only at SCST's value.
PARAMS = {p.name: p for p in _SPEC.parameters}
ATTRIBUTES = frozenset(PARAMS)
_DEFAULT_ONLY = dict(_SPEC.fixed)
PROC_ACTIONS = ("open", "change", "close")


@dataclass(slots=True)
class VcdromParams:
    """One virtual CD/DVD drive. An empty ``filename`` is an empty drive."""

    name: str
    filename: str = PARAMS["filename"].text_default()
    t10_dev_id: str = PARAMS["t10_dev_id"].text_default()  # "": derived
    usn: str = PARAMS["usn"].text_default()  # "": derived
    setup_id: int = 0

    @property
    def dev_id_num(self) -> int:
        return (self.setup_id << 32) | crc32c_linux(self.name.encode() + b"\0")

    @property
    def effective_usn(self) -> str:
        return self.usn or f"{self.dev_id_num:x}"

    @property
    def effective_t10_dev_id(self) -> str:
        return self.t10_dev_id or f"{self.dev_id_num:x}-{self.name}"[:MAX_T10_DEV_ID_LEN]

    def same_drive(self, other: VcdromParams) -> bool:
        """Whether ``other`` is this drive, possibly with another medium."""
        return (self.name, self.t10_dev_id, self.usn, self.setup_id) == (
            other.name, other.t10_dev_id, other.usn, other.setup_id
        )

    def validate(self) -> VcdromParams:
        who = f"vcdrom {self.name!r}"
        if not self.name or not self.name.isprintable() or any(c.isspace() for c in self.name):
            raise HandlerError(f"{who}: a device name must be non-empty printable text w/o blanks")
        if "/" in self.name or len(self.name) > MAX_NAME_LEN:
            raise HandlerError(
                f"{who}: a device name has at most {MAX_NAME_LEN} characters and no '/'"
            )
        if self.filename and not self.filename.startswith("/"):
            raise HandlerError(
                f"{who}: image path {self.filename!r} is not absolute; give a full path"
            )
        for key in ("usn", "t10_dev_id"):
            if (problem := parameters.text_error(PARAMS[key], getattr(self, key))) is not None:
                raise HandlerError(f"{who}: {problem}")
        if not 0 <= self.setup_id < 1 << 32:
            raise HandlerError(f"{who}: setup_id {self.setup_id:#x} does not fit in 32 bits")
        return self


# -- (a) SCST 0.9.6 /proc/scsi_tgt/vcdrom/vcdrom ------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcCommand:
    """One line written to 0.9.6's ``/proc/scsi_tgt/vcdrom/vcdrom``."""

    action: str  # "open", "change" or "close"
    name: str
    filename: str = ""  # open/change: the image; "" = empty drive

    def params(self, *, setup_id: int = 0) -> VcdromParams:
        return VcdromParams(self.name, self.filename, setup_id=setup_id).validate()


def parse_proc_command(line: str) -> ProcCommand:
    """Parse ``open NAME [PATH]``, ``change NAME [PATH]`` or ``close NAME``."""
    words = line.split()
    action = words[0] if words else ""
    if action not in PROC_ACTIONS:
        raise ConfigError(
            f"vcdrom: unknown action {action!r}; use open|change|close NAME [FILE_NAME]"
        )
    args = words[1:]
    if not args or len(args) > (1 if action == "close" else 2):
        usage = "close NAME" if action == "close" else f"{action} NAME [FILE_NAME]"
        raise ConfigError(f"vcdrom {action}: wrong number of arguments; use {usage}")
    name = args[0]
    if len(name) > PROC_MAX_NAME_LEN:
        raise ConfigError(
            f"vcdrom {action}: name {name!r} is too long (max {PROC_MAX_NAME_LEN} characters)"
        )
    command = ProcCommand(action, name, args[1] if len(args) == 2 else "")
    if action != "close":
        command.params()  # validates name and path
    return command


def to_proc_open(params: VcdromParams) -> str:
    """``open NAME [PATH]``; ConfigError when the 0.9.6 form cannot say it all."""
    lost = [key for key in ("t10_dev_id", "usn") if getattr(params, key)]
    if len(params.name) > PROC_MAX_NAME_LEN:
        lost.append(f"a name over {PROC_MAX_NAME_LEN} characters")
    if any(c.isspace() for c in params.filename):
        lost.append("a file name with blanks")
    if lost:
        raise ConfigError(
            f"vcdrom {params.name}: the 0.9.6 open command cannot express {', '.join(lost)}; "
            "use the modern attribute form"
        )
    return " ".join(["open", params.name] + ([params.filename] if params.filename else []))


PROC_READ_FORMAT = "%-17s %-11s %s"


def proc_read_header() -> str:
    return PROC_READ_FORMAT % ("Name", "Size(MB)", "File name")


def proc_read_line(params: VcdromParams, size_bytes: int) -> str:
    """One row of the 0.9.6 ``vcdrom`` read: name, size in MiB, image (empty drive: none)."""
    return PROC_READ_FORMAT % (params.name, size_bytes >> 20, params.filename or "none")


# -- (b) modern attributes -------------------------------------------------------------------


def parse_attributes(
    name: str, attrs: Mapping[str, str], *, setup_id: int = 0
) -> VcdromParams:
    """Params from ``add_device NAME`` / scst.conf ``DEVICE NAME { filename PATH }``."""
    params = VcdromParams(name=name, setup_id=setup_id)
    for key, value in attrs.items():
        where = f"vcdrom {name}: {key}={value!r}"
        if key in _DEFAULT_ONLY:
            if value.strip() != _DEFAULT_ONLY[key]:
                raise ConfigError(f"{where} is not supported (vcdrom has only {key}="
                                  f"{_DEFAULT_ONLY[key]})")
            continue
        if key not in ATTRIBUTES:
            raise ConfigError(f"{where}: unknown attribute; known: {', '.join(sorted(ATTRIBUTES))}")
        parsed = parameters.parse(PARAMS[key], where, value)
        assert isinstance(parsed, str)  # PATH and TEXT
        setattr(params, key, parsed.strip() if key == "filename" else parsed)
    return params.validate()


def to_attributes(params: VcdromParams) -> tuple[str, dict[str, str]]:
    """``("vcdrom", attributes)`` with every non-empty value (scstadmin's key attributes)."""
    out = {key: getattr(params, key) for key in ("filename", "t10_dev_id", "usn")}
    return HANDLER_NAME, {key: value for key, value in out.items() if value}


# -- (c) TCMU dev_config ---------------------------------------------------------------------


def to_dev_config(params: VcdromParams) -> str:
    """``vcdrom/n=NAME[;t10_dev_id=..][;usn=..][;sid=N][;filename=PATH]``, <= 255 chars."""
    params.validate()
    tokens: list[devconfig.Token] = [("n", params.name)]
    tokens += [(key, getattr(params, key)) for key in ("t10_dev_id", "usn") if getattr(params, key)]
    if params.setup_id:
        tokens.append(("sid", params.setup_id))
    if params.filename:
        tokens.append(("filename", params.filename))
    return devconfig.encode(
        HANDLER_NAME, tokens, who=f"vcdrom {params.name}",
        hint="use a shorter image path (e.g. a symlink)",
    )  # fmt: skip


def parse_dev_config(text: str) -> VcdromParams:
    """Inverse of :func:`to_dev_config`."""
    decoded = devconfig.decode(text, [HANDLER_NAME])
    values = {_DC_KEYS[k]: v or "" for k, v in decoded.values(_DC_KEYS).items()}
    if "name" not in values:
        raise ConfigError(f"{decoded.where}: the device name (n=) is missing")
    setup_id = devconfig.number(decoded, "sid", values.pop("setup_id", "0"))
    return VcdromParams(setup_id=setup_id, **values).validate()
