"""Parameters of the pass-through handlers (dev_disk, dev_tape, ...) and their forms.

One :class:`PassthroughParams` describes one local SCSI device served through TCMU:

(a) SCST 0.9.6 ``/proc/scsi_tgt/scsi_tgt``: ``assign H:C:I:L HANDLER``
    (:func:`parse_proc_assign`, :func:`to_proc_assign`) and the group ``devices``
    file's ``add H:C:I:L lun [READ_ONLY]`` / ``del H:C:I:L`` (:func:`parse_proc_lun`);
(b) modern scst.conf: ``HANDLER dev_disk { DEVICE 1:0:1:0 { serialized 1 } }``
    (:func:`parse_attributes`, :func:`to_attributes`);
(c) the TCMU ``dev_config`` ``dev_disk/hctl=1%3A0%3A1%3A0;ser=1;to=60;vin=c0+c1``
    (:func:`parse_dev_config`, :func:`to_dev_config`): no ',' (the kernel splits on
    it) and no ':' (rtslib refuses it), so the address is percent-encoded exactly as
    ``tcmu_scst.scst.devconfig`` encodes it; a raw ':' is accepted when reading.

Options beyond SCST 0.9.6 (where they were compile-time switches):

``serialized``  one command at a time to the device (0.9.6 STRICT_SERIALIZING);
                default on for tapes and changers (stateful devices), off otherwise.
``timeout``     SG_IO timeout in seconds; default per type (:data:`DEFAULT_TIMEOUTS`).
``vendor_in`` / ``vendor_out``
                opcodes missing from the type's table that are forwarded anyway, with
                the whole buffer as Data-In / Data-Out (vendor-specific commands).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tcmu_scst.errors import ConfigError, HandlerError
from tcmu_scst.kernel import devconfig, parameters
from tcmu_scst.kernel.handler_table import HANDLERS, Kind
from tcmu_scst.kernel.parameters import parse_int, parse_opcodes
from tcmu_scst.kernel.scsi_sysfs import HANDLER_TYPES, check_hctl

_SPECS = [h for h in HANDLERS if h.kind is Kind.PASSTHROUGH]
#: Every pass-through handler's parameters by name: the same names, types and ranges
#: for all (kernel.handler_table); only the defaults below differ per handler.
PARAMS = {p.name: p for p in _SPECS[0].parameters}
#: Seconds, per handler (kernel.handler_table says why tapes and changers get hours).
DEFAULT_TIMEOUTS: dict[str, int] = {h.name: h.timeout for h in _SPECS}
SERIALIZED_BY_DEFAULT = frozenset(h.name for h in _SPECS if h.serialized)
HANDLER_NAMES = tuple(HANDLER_TYPES)
MAX_TIMEOUT = PARAMS["timeout"].maximum or 0


@dataclass(slots=True)
class PassthroughParams:
    handler: str
    hctl: str
    serialized: bool | None = None  # None: the type's default
    timeout: int = 0  # seconds; 0: the type's default
    vendor_in: frozenset[int] = field(default_factory=frozenset)
    vendor_out: frozenset[int] = field(default_factory=frozenset)

    @property
    def device_type(self) -> int:
        return HANDLER_TYPES[self.handler]

    @property
    def effective_serialized(self) -> bool:
        if self.serialized is None:
            return self.handler in SERIALIZED_BY_DEFAULT
        return self.serialized

    @property
    def effective_timeout(self) -> int:
        return self.timeout or DEFAULT_TIMEOUTS[self.handler]

    def validate(self) -> PassthroughParams:
        if self.handler not in HANDLER_TYPES:
            raise HandlerError(
                f"{self.handler!r} is not a pass-through handler; use one of "
                f"{', '.join(HANDLER_NAMES)}"
            )
        check_hctl(self.hctl)
        if (problem := parameters.range_error(PARAMS["timeout"], self.timeout)) is not None:
            raise HandlerError(f"{self.handler} {self.hctl}: {problem}")
        both = self.vendor_in & self.vendor_out
        if both:
            raise HandlerError(
                f"{self.handler} {self.hctl}: opcode(s) {_hex_list(both, ' ')} cannot be "
                "both vendor_in and vendor_out"
            )
        top = PARAMS["vendor_in"].maximum or 0
        bad = [op for op in self.vendor_in | self.vendor_out if not 0 <= op <= top]
        if bad:
            raise HandlerError(
                f"{self.handler} {self.hctl}: {bad[0]} is not an opcode (0..{top})"
            )
        return self


def _hex_list(ops: frozenset[int], sep: str) -> str:
    return sep.join(f"{op:02x}" for op in sorted(ops))


# -- (a) SCST 0.9.6 /proc -----------------------------------------------------------------

def parse_proc_assign(line: str) -> PassthroughParams:
    """``assign H:C:I:L HANDLER`` written to /proc/scsi_tgt/scsi_tgt."""
    words = line.split()
    if len(words) != 3 or words[0] != "assign":
        raise ConfigError(f"{line.strip()!r}: expected 'assign H:C:I:L HANDLER_NAME'")
    try:
        return PassthroughParams(handler=words[2], hctl=words[1]).validate()
    except HandlerError as err:
        raise ConfigError(str(err)) from err


def to_proc_assign(params: PassthroughParams) -> str:
    """The 0.9.6 command; ConfigError if the params hold options 0.9.6 cannot say."""
    lost = [
        name
        for name, cond in (
            ("serialized", params.serialized is not None),
            ("timeout", bool(params.timeout)),
            ("vendor_in", bool(params.vendor_in)),
            ("vendor_out", bool(params.vendor_out)),
        )
        if cond
    ]
    if lost:
        raise ConfigError(
            f"{params.handler} {params.hctl}: the 0.9.6 assign command cannot express "
            f"{', '.join(lost)}; use the modern attribute form"
        )
    return f"assign {params.hctl} {params.handler}"


@dataclass(frozen=True, slots=True)
class ProcLun:
    """A line of 0.9.6 ``/proc/scsi_tgt/groups/GROUP/devices`` naming a local device."""

    action: str  # "add" or "del"
    hctl: str
    lun: int | None = None  # "add" only
    read_only: bool = False


def parse_proc_lun(line: str) -> ProcLun:
    """``add H:C:I:L lun [READ_ONLY]`` or ``del H:C:I:L``."""
    words = line.split()
    action = words[0] if words else ""
    usage = "use 'add H:C:I:L lun [READ_ONLY]' or 'del H:C:I:L'"
    if action == "del" and len(words) == 2:
        return ProcLun("del", _proc_hctl(words[1]))
    if action != "add" or len(words) not in (3, 4):
        raise ConfigError(f"{line.strip()!r}: {usage}")
    if len(words) == 4 and words[3] != "READ_ONLY":
        raise ConfigError(f"{line.strip()!r}: unknown option {words[3]!r}; only READ_ONLY")
    try:
        lun = int(words[2], 0)
    except ValueError:
        raise ConfigError(f"{line.strip()!r}: LUN {words[2]!r} is not a number") from None
    if lun < 0:
        raise ConfigError(f"{line.strip()!r}: LUN {lun} is negative")
    return ProcLun("add", _proc_hctl(words[1]), lun, len(words) == 4)


def _proc_hctl(text: str) -> str:
    try:
        return check_hctl(text)
    except HandlerError as err:
        raise ConfigError(str(err)) from err


# -- (b) modern attributes -----------------------------------------------------------------

ATTRIBUTES = tuple(PARAMS)  # the same for every pass-through handler


def parse_attributes(handler: str, name: str, attrs: Mapping[str, str]) -> PassthroughParams:
    """``HANDLER dev_x { DEVICE H:C:I:L { serialized 1; timeout 30; vendor_in "c0 c1" } }``."""
    params = PassthroughParams(handler=handler, hctl=name)
    for key, value in attrs.items():
        where = f"{handler} {name}: {key}={value!r}"
        param = PARAMS.get(key)
        if param is None:
            raise ConfigError(f"{where}: unknown attribute; known: {', '.join(ATTRIBUTES)}")
        setattr(params, key, parameters.parse(param, where, value))
    try:
        return params.validate()
    except HandlerError as err:
        raise ConfigError(str(err)) from err


def to_attributes(params: PassthroughParams) -> tuple[str, dict[str, str]]:
    """``(handler, attributes)``: only values that differ from the defaults."""
    out: dict[str, str] = {}
    if params.serialized is not None:
        out["serialized"] = "1" if params.serialized else "0"
    if params.timeout:
        out["timeout"] = str(params.timeout)
    if params.vendor_in:
        out["vendor_in"] = _hex_list(params.vendor_in, " ")
    if params.vendor_out:
        out["vendor_out"] = _hex_list(params.vendor_out, " ")
    return params.handler, out


# -- (c) TCMU dev_config --------------------------------------------------------------------

def to_dev_config(params: PassthroughParams) -> str:
    params.validate()
    tokens: list[devconfig.Token] = [("hctl", params.hctl)]
    if params.serialized is not None:
        tokens.append(("ser", int(params.serialized)))
    if params.timeout:
        tokens.append(("to", params.timeout))
    if params.vendor_in:
        tokens.append(("vin", _hex_list(params.vendor_in, "+")))
    if params.vendor_out:
        tokens.append(("vout", _hex_list(params.vendor_out, "+")))
    return devconfig.encode(
        params.handler, tokens, who=f"{params.handler} {params.hctl}",
        hint="list fewer vendor opcodes",
    )  # fmt: skip


def parse_dev_config(text: str) -> PassthroughParams:
    """Inverse of :func:`to_dev_config` (a raw ':' in the address is accepted)."""
    decoded = devconfig.decode(text, HANDLER_TYPES)
    where = decoded.where
    values = {k: v or "" for k, v in decoded.values(("hctl", "ser", "to", "vin", "vout")).items()}
    if "hctl" not in values:
        raise ConfigError(f"{where}: the device address (hctl=) is missing")
    params = PassthroughParams(handler=decoded.subtype, hctl=values["hctl"])
    if "ser" in values:
        if values["ser"] not in ("0", "1"):
            raise ConfigError(f"{where}: ser={values['ser']!r} is not 0 or 1")
        params.serialized = values["ser"] == "1"
    if "to" in values:
        params.timeout = parse_int(f"{where}: to", values["to"])
    for key, attr in (("vin", "vendor_in"), ("vout", "vendor_out")):
        if key in values:
            setattr(params, attr, parse_opcodes(f"{where}: {key}", values[key].split("+")))
    try:
        return params.validate()
    except HandlerError as err:
        raise ConfigError(f"{where}: {err}") from err
