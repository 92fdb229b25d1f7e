"""A handler parameter's declaration (name, type, range, default) and its one parser.

:mod:`tcmu_scst.kernel.handler_table` declares every ``DEVICE`` attribute of every
handler as a :class:`Param`. The handlers' codecs turn a written value into its typed
value with :func:`parse` and check it against the same declaration's range, and the
config file (``scst.devconfig``), the shell and the 0.9.6 ``proc`` commands all end in
those codecs: one declaration, one parser, the same acceptance and the same messages
wherever a value is written. Pure data and pure functions, below every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tcmu_scst.errors import ConfigError


class ParamType(Enum):
    """How a value is written (the enum's value says it to a reader of the man page)."""

    BOOL = "0 or 1"
    INT = "a non-negative number"
    TEXT = "printable ASCII without blanks"
    PATH = "an absolute path"
    OPCODES = "hex SCSI opcodes separated by blanks or commas"


#: A parsed value: BOOL -> bool, INT -> int, TEXT/PATH -> str, OPCODES -> frozenset[int].
Value = bool | int | str | frozenset[int]


@dataclass(frozen=True)
class Param:
    """One attribute of a handler's ``DEVICE`` block (scst.conf, SCST's sysfs)."""

    name: str
    type: ParamType
    # The value a device has when the attribute is not written. TEXT "" = derived
    # (identities: from the device name and setup id, as SCST derives them), PATH "" =
    # none; OPCODES: always none (the default is the empty set).
    default: bool | int | str
    doc: str
    minimum: int | None = None  # INT: smallest value (None: 0)
    maximum: int | None = None  # INT: largest value; TEXT: most characters; OPCODES: top
    choices: tuple[int, ...] = ()  # INT: the only values taken (empty: any in range)
    unit: str = ""  # INT: what the number counts ("s")
    zero: str = ""  # INT: what 0 stands for when below the minimum ("default")

    def int_default(self) -> int:
        assert self.type is ParamType.INT and isinstance(self.default, int)
        return self.default

    def bool_default(self) -> bool:
        assert self.type is ParamType.BOOL and isinstance(self.default, bool)
        return self.default

    def text_default(self) -> str:
        assert self.type in (ParamType.TEXT, ParamType.PATH) and isinstance(self.default, str)
        return self.default


def parse(param: Param, where: str, value: str) -> Value:
    """The typed value of ``value`` written for ``param``; ``where`` leads the message.

    Syntax only: the range of a value (and rules between values, e.g. a NULLIO size of
    at least one block) is checked by the codec's ``validate`` against ``param``.
    """
    if param.type is ParamType.BOOL:
        if value.strip() in ("0", "1"):
            return value.strip() == "1"
        raise ConfigError(f"{where} is not a boolean; use 0 or 1")
    if param.type is ParamType.INT:
        return parse_int(where, value)
    if param.type is ParamType.OPCODES:
        return parse_opcodes(where, value.replace(",", " ").split(), param.maximum or 0xFF)
    return value


def _ascii_number(text: str) -> bool:
    """``int()`` also reads other scripts' digits (U+0660 as 0) and ``1_000``: not here
    (see :mod:`tcmu_scst.ascii`)."""
    return text.isascii() and "_" not in text


def parse_int(where: str, value: str) -> int:
    """A non-negative number, decimal or with a base prefix (``0x1000``), in ASCII."""
    try:
        if not _ascii_number(value.strip()):
            raise ValueError(value)
        number = int(value.strip(), 0)
    except ValueError:
        raise ConfigError(f"{where} is not a number") from None
    if number < 0:
        raise ConfigError(f"{where} is negative")
    return number


def parse_opcodes(where: str, words: list[str], top: int = 0xFF) -> frozenset[int]:
    """Hex opcodes (``c0``, ``0xC1``): SCSI operation codes are one byte."""
    ops = set()
    for word in words:
        try:
            if not _ascii_number(word):
                raise ValueError(word)
            op = int(word.removeprefix("0x").removeprefix("0X"), 16)
        except ValueError:
            raise ConfigError(f"{where}: {word!r} is not a hex opcode (e.g. c0)") from None
        if not 0 <= op <= top:
            raise ConfigError(f"{where}: {word!r} is not an opcode (00..{top:02x})")
        ops.add(op)
    return frozenset(ops)


def range_error(param: Param, value: int) -> str | None:
    """Why INT ``value`` is outside ``param``'s minimum..maximum, or None."""
    low, high = param.minimum or 0, param.maximum
    if (param.zero and value == 0) or (low <= value and (high is None or value <= high)):
        return None
    unit = f" {param.unit}" if param.unit else ""
    zero = f", 0 = {param.zero}" if param.zero else ""
    return f"{param.name} {value}{unit} is out of range ({low}..{high}{zero})"


def value_error(param: Param, value: Value) -> str | None:
    """Why a parsed ``value`` is outside ``param``'s declared range, or None: each
    value on its own (rules between values are the codec's)."""
    if param.type is ParamType.TEXT and isinstance(value, str):
        return text_error(param, value)
    if param.type is ParamType.INT and isinstance(value, int) and not param.choices:
        return range_error(param, value)
    return None  # BOOL, PATH: the parse said it all; OPCODES: parse checks the range


def text_error(param: Param, value: str) -> str | None:
    """Why ``value`` is not a TEXT value of ``param`` (length, characters), or None."""
    limit = param.maximum
    assert param.type is ParamType.TEXT and limit is not None
    if len(value) <= limit and all(33 <= ord(c) < 127 for c in value):
        return None
    return (
        f"{param.name} {value!r} must be at most {limit} printable ASCII characters "
        "without blanks"
    )


def choice_error(param: Param, value: int, what: str, of: str) -> str | None:
    """Why ``value`` is not one of ``param.choices`` ("<what> V is not one <of>"), or None."""
    if value in param.choices:
        return None
    *head, last = (str(c) for c in param.choices)
    return f"{what} {value} is not one {of}; use {', '.join(head)} or {last}"
