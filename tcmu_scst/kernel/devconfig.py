"""TCMU ``dev_config`` strings as our handlers write them: ``<subtype>/<token>;<token>...``.

The kernel keeps at most 255 bytes of ``dev_config`` and its configfs ``control``
parser splits options on ``,`` and newlines (tcmu-abi §4.1), so every handler encodes
its parameters the same way: a token is ``key=value`` or a bare flag, and values are
percent-encoded. ``%`` (the escape), ``,`` (the kernel's separator), ``;`` and ``=``
(ours), ``:`` (refused by rtslib-based tools) and every character outside printable
ASCII become ``%XX`` of their UTF-8 bytes; everything else, ``/`` included, stays as is
so that paths keep most of the 255 bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from tcmu_scst.ascii import is_decimal
from tcmu_scst.errors import ConfigError

DEV_CONFIG_MAX: Final = 255
_SPECIAL: Final = frozenset(",;=:%")
_HEX: Final = frozenset("0123456789abcdefABCDEF")

#: A token to encode: ``(key, value)``, or ``(key, None)`` for a bare flag.
Token = tuple[str, "str | int | None"]


def quote(text: str) -> str:
    """Percent-encode ``text`` for a dev_config value (see the module docstring)."""
    out: list[str] = []
    for ch in text:
        if ch in _SPECIAL or not 33 <= ord(ch) < 127:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
        else:
            out.append(ch)
    return "".join(out)


def unquote(text: str, where: str) -> str:
    """Inverse of :func:`quote`; a ``%`` not followed by two hex digits is an error."""
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            digits = text[i + 1 : i + 3]
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise ConfigError(f"{where}: bad escape {text[i : i + 3]!r}; use %XX")
            raw.append(int(digits, 16))
            i += 3
        else:
            raw += text[i].encode("utf-8", "surrogateescape")
            i += 1
    return raw.decode("utf-8", "surrogateescape")


def encode(subtype: str, tokens: Iterable[Token], *, who: str, hint: str) -> str:
    """``subtype/key=value;flag;...`` with values quoted, refused past 255 characters.

    ``who`` names the device in the error, ``hint`` says what to shorten.
    """
    parts = [key if value is None else f"{key}={quote(str(value))}" for key, value in tokens]
    text = f"{subtype}/" + ";".join(parts)
    if len(text.encode()) > DEV_CONFIG_MAX:
        raise ConfigError(
            f"{who}: dev_config is {len(text.encode())} characters, over the kernel's "
            f"{DEV_CONFIG_MAX}; {hint}"
        )
    return text


@dataclass(frozen=True)
class Decoded:
    """A dev_config taken apart: its subtype, its tokens (values unquoted, ``None`` for
    flags) in order, and ``where``, the prefix for error messages about it."""

    subtype: str
    tokens: tuple[tuple[str, str | None], ...]
    where: str

    def values(self, known: Iterable[str], *, flags: Iterable[str] = ()) -> dict[str, str | None]:
        """The tokens as a dict; an unknown key, a flag where a value belongs or the
        other way round is a precise error."""
        keys, flag_names = set(known), set(flags)
        out: dict[str, str | None] = {}
        for key, value in self.tokens:
            if (value is None and key in flag_names) or (value is not None and key in keys):
                out[key] = value
                continue
            listed = ", ".join(sorted(keys | flag_names))
            shown = key if value is None else f"{key}={value}"
            raise ConfigError(f"{self.where}: unknown item {shown!r}; known: {listed}")
        return out


def decode(text: str, subtypes: Iterable[str]) -> Decoded:
    """Split a dev_config written by :func:`encode`; its subtype must be one of ``subtypes``."""
    where = f"dev_config {text[:40]!r}"
    subtype, slash, body = text.partition("/")
    allowed = list(subtypes)
    if not slash or subtype not in allowed:
        raise ConfigError(f"{where}: does not start with {' or '.join(s + '/' for s in allowed)}")
    tokens: list[tuple[str, str | None]] = []
    for token in body.split(";"):
        if not token:
            continue
        key, eq, value = token.partition("=")
        tokens.append((key, unquote(value, where) if eq else None))
    return Decoded(subtype, tuple(tokens), where)


def number(decoded: Decoded, key: str, value: str | None) -> int:
    """A token's value as a non-negative decimal number."""
    if value is None or not is_decimal(value):
        raise ConfigError(f"{decoded.where}: {key}={value!r} is not a number")
    return int(value)
