"""SCST's ``trace_level`` files: tokens, the write forms and the read form.

Write forms (every trace_level file)::

    all | none | default
    value DEC|0xHEX|0OCT
    set|add|del TOKEN

Reading gives the set tokens joined by ``" | "``, or ``none``. The bit values follow
SCST's scst_debug.h / scst_priv.h as remembered, not verified against 0.9.6 (see the
report); the token names are the 0.9.6 ones (lio-and-scst.md §5.1).
"""

from __future__ import annotations

import json
from pathlib import Path

from tcmu_scst.errors import ConfigError

COMMON_TOKENS: dict[str, int] = {
    "out_of_mem": 0x00000001,
    "minor": 0x00000002,
    "sg": 0x00000004,
    "mem": 0x00000008,
    "buff": 0x00000010,
    "entryexit": 0x00000020,
    "pid": 0x00000040,
    "line": 0x00000080,
    "function": 0x00000100,
    "debug": 0x00000200,
    "special": 0x00000400,
    "scsi": 0x00000800,
    "mgmt": 0x00001000,
    "mgmt_minor": 0x00002000,
    "mgmt_dbg": 0x00004000,
}
ROOT_TOKENS: dict[str, int] = {
    **COMMON_TOKENS,
    "retry": 0x80000000,
    "scsi_serializing": 0x40000000,
    "recv_bot": 0x20000000,
    "send_bot": 0x10000000,
    "recv_top": 0x08000000,
    "send_top": 0x04000000,
}
DEFAULT_TOKENS = ("out_of_mem", "minor", "pid", "line", "function", "special", "mgmt",
                  "mgmt_minor")  # fmt: skip
ROOT = "scsi_tgt"


def tokens_for(owner: str) -> dict[str, int]:
    return ROOT_TOKENS if owner == ROOT else COMMON_TOKENS


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


def default_mask(owner: str) -> int:
    table = tokens_for(owner)
    return sum(table[t] for t in DEFAULT_TOKENS)


def render(owner: str, mask: int) -> str:
    names = [name for name, bit in tokens_for(owner).items() if mask & bit]
    return " | ".join(names) if names else "none"


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


class TraceStore:
    """Trace levels per owner (``scsi_tgt`` or a handler), kept in a small JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read {self.path}: {err}; delete it to reset levels") from err
        return {str(k): int(v) for k, v in dict(data).items()}

    def get(self, owner: str) -> int:
        return self.load().get(owner, default_mask(owner))

    def set(self, owner: str, mask: int) -> None:
        from tcmu_scst.scst.ownership import write_atomically

        levels = self.load()
        levels[owner] = mask
        write_atomically(self.path, json.dumps(levels, sort_keys=True) + "\n", mode=0o644)
