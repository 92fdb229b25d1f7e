"""SCST's ``trace_level`` files in the shell: the write forms and the read form.

Write forms (every trace_level file)::

    all | none | default
    value DEC|0xHEX|0OCT
    set|add|del TOKEN

Reading gives the set tokens joined by ``" | "``, or ``none``. The token table, the
file the masks are kept in and what the daemon does with them are in
:mod:`tcmu_scst.service.trace` (the daemon reads the same file).
"""

from __future__ import annotations

from tcmu_scst.errors import ConfigError
from tcmu_scst.service.trace import (
    ROOT,
    TraceStore,
    default_mask,
    render,
    tokens_for,
)

__all__ = ["ROOT", "TraceStore", "apply_write", "default_mask", "parse_number", "render",
           "tokens_for"]  # fmt: skip


def parse_number(text: str) -> int:
    """SCST's DEC|0xHEX|0OCT."""
    try:
        if text.lower().startswith("0x"):
            return int(text, 16)
        if len(text) > 1 and text.startswith("0"):
            return int(text, 8)
        return int(text, 10)
    except ValueError:
        raise ConfigError(f"{text!r} is not a number; write DEC, 0xHEX or 0OCT") from None


def apply_write(owner: str, mask: int, words: list[str]) -> int:
    """The new mask after one write of ``words`` to ``owner``'s trace_level."""
    table = tokens_for(owner)
    usage = "write all|none|default, value DEC|0xHEX|0OCT, or set|add|del TOKEN"
    if not words:
        raise ConfigError(f"trace_level: nothing to do; {usage}")
    action, args = words[0], words[1:]
    if action in ("all", "none", "default"):
        if args:
            raise ConfigError(f"trace_level {action} takes no argument; {usage}")
        if action == "all":
            return sum(table.values())
        return 0 if action == "none" else default_mask(owner)
    if action == "value":
        if len(args) != 1:
            raise ConfigError(f"trace_level value needs one number; {usage}")
        return parse_number(args[0])
    if action in ("set", "add", "del"):
        if len(args) != 1:
            raise ConfigError(f"trace_level {action} needs one TOKEN; {usage}")
        bit = table.get(args[0])
        if bit is None:
            raise ConfigError(
                f"unknown trace token {args[0]!r} for {owner}; known: {' '.join(table)}"
            )
        if action == "set":
            return bit
        return mask | bit if action == "add" else mask & ~bit
    raise ConfigError(f"trace_level: unknown action {action!r}; {usage}")
