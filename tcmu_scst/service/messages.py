"""The control socket's messages, declared as data (service.control carries them).

Each request is a frozen dataclass named by its :class:`Op`; each answer one too.
On the wire both are JSON objects: a request is ``{"op": OP, <fields>}``, an answer
``{"ok": true, <fields>}`` or ``{"ok": false, "error": TEXT, "kind": CLASS}``, where
CLASS names the :mod:`tcmu_scst.errors` class the daemon raised so that the client
raises the same one. :func:`decode` checks every field's type against the
declaration: a malformed message is a :class:`ValueError` naming the field, never a
half-read object.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeVar, Union

from tcmu_scst.scst.model import threads_error


class Op(enum.StrEnum):
    """The requests the daemon answers (``{"op": ...}``)."""

    PING = "ping"
    STATUS = "status"
    SET_THREADS = "set_threads"
    TRACE_LEVEL = "trace_level"
    RESCAN = "rescan"
    HOTPLUG = "hotplug"


class HotplugAction(enum.StrEnum):
    STATUS = "status"  # report only
    CHECK = "check"  # look at the devices now (what the udev rule asks)




# -- requests -------------------------------------------------------------------------
@dataclass(frozen=True)
class Ping:
    op: ClassVar[Op] = Op.PING


@dataclass(frozen=True)
class GetStatus:
    op: ClassVar[Op] = Op.STATUS


@dataclass(frozen=True)
class SetThreads:
    op: ClassVar[Op] = Op.SET_THREADS
    threads: int

    def __post_init__(self) -> None:
        problem = threads_error(self.threads, lowest=0)  # the file's rule and message
        if problem is not None:
            raise ValueError(problem)


@dataclass(frozen=True)
class SetTraceLevel:
    op: ClassVar[Op] = Op.TRACE_LEVEL
    owner: str  # "scsi_tgt" (the core) or a handler's name
    mask: int

    def __post_init__(self) -> None:
        if self.mask < 0:
            raise ValueError("trace_level needs owner (text) and mask (int >= 0)")


@dataclass(frozen=True)
class Rescan:
    op: ClassVar[Op] = Op.RESCAN


@dataclass(frozen=True)
class HotplugQuery:
    op: ClassVar[Op] = Op.HOTPLUG
    action: HotplugAction = HotplugAction.STATUS


Request = Union[Ping, GetStatus, SetThreads, SetTraceLevel, Rescan, HotplugQuery]  # noqa: UP007
REQUESTS: Final[dict[Op, type[Request]]] = {
    cls.op: cls for cls in (Ping, GetStatus, SetThreads, SetTraceLevel, Rescan, HotplugQuery)
}


# -- answers --------------------------------------------------------------------------
@dataclass(frozen=True)
class Pong:
    version: str
    pid: int


@dataclass(frozen=True)
class DeviceStatus:
    """One served device and its counters (the shell's /sgv, /sessions)."""

    name: str
    hba: int
    minor: int
    subtype: str
    dev_config: str
    threads: int
    commands: int
    errors: int  # CHECK CONDITION answers
    handler_failures: int
    tmrs: int
    #: data size rounded up to a power of 2 -> commands (JSON keys are text)
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    threads: int
    devices: tuple[DeviceStatus, ...]


@dataclass(frozen=True)
class ThreadsSet:
    threads: int


@dataclass(frozen=True)
class TraceLevels:
    trace_levels: dict[str, int]


@dataclass(frozen=True)
class HotplugStatus:
    listening: bool
    config: str
    events: int
    applies: int
    busy: bool
    last_error: str


Answer = Union[Pong, Status, ThreadsSet, TraceLevels, HotplugStatus]  # noqa: UP007
#: What each request is answered with.
ANSWERS: Final[dict[Op, type[Answer]]] = {
    Op.PING: Pong,
    Op.STATUS: Status,
    Op.SET_THREADS: ThreadsSet,
    Op.TRACE_LEVEL: TraceLevels,
    Op.RESCAN: Status,
    Op.HOTPLUG: HotplugStatus,
}


# -- the wire form --------------------------------------------------------------------
def encode(message: Request | Answer) -> dict[str, Any]:
    """The JSON object of a request (with its ``op``) or an answer (with ``ok``)."""
    body = {f.name: _plain(getattr(message, f.name)) for f in dataclasses.fields(message)}
    op = getattr(type(message), "op", None)
    if isinstance(op, Op):
        return {"op": op.value, **body}
    return {"ok": True, **body}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def decode_request(obj: Mapping[str, Any]) -> Request:
    """A request object from the wire; ValueError (naming what is wrong) otherwise."""
    op_text = obj.get("op")
    try:
        op = Op(str(op_text))
    except ValueError:
        raise ValueError(f"unknown request {op_text!r}") from None
    return decode(REQUESTS[op], {k: v for k, v in obj.items() if k != "op"})


M = TypeVar("M")


def decode(cls: type[M], obj: Mapping[str, Any]) -> M:
    """Build ``cls`` (a message dataclass) from a JSON object, checking every field."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{cls.__name__}: not a JSON object")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(obj) - set(known) - {"ok"})
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field {unknown[0]!r}")
    args: dict[str, Any] = {}
    for name, spec in known.items():
        if name not in obj:
            if (spec.default is dataclasses.MISSING
                    and spec.default_factory is dataclasses.MISSING):
                raise ValueError(f"{cls.__name__}: {name} is missing")
            continue
        args[name] = _value(hints[name], obj[name], f"{cls.__name__}.{name}")
    try:
        return cls(**args)
    except TypeError as err:
        raise ValueError(f"{cls.__name__}: {err}") from None


def _value(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is str:
        if isinstance(value, str):
            return value
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in hint)
            raise ValueError(f"{where}: {value!r} is not one of {choices}") from None
    elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return decode(hint, value)
    elif origin is tuple:
        item = typing.get_args(hint)[0]
        if isinstance(value, list):
            return tuple(_value(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    elif origin is dict:
        key, item = typing.get_args(hint)
        if isinstance(value, dict):
            return {_value(key, k, where): _value(item, v, f"{where}[{k!r}]")
                    for k, v in value.items()}
    elif origin in (Union, types.UnionType):
        raise TypeError(f"{where}: unions are not declared in messages")
    want = getattr(hint, "__name__", str(hint))
    raise ValueError(f"{where}: want {want}, got {type(value).__name__}")
