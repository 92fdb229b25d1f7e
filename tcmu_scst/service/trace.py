"""SCST's ``trace_level``: the masks, where they are kept, and what they make the daemon log.

SCST had one trace mask for the core (``/proc/scsi_tgt/trace_level``) and one per dev
handler (``/proc/scsi_tgt/<handler>/trace_level``). The shell edits them; they are kept
in ``/var/lib/tcmu-scst/trace_level.json`` and sent to the running daemon, which also
reads the file when it starts. A device is traced with the core's mask OR its
handler's. What the bits do here (log lines go to the ``tcmu_scst.trace`` logger):

``scsi``
    one line per command when it arrives and when it completes: opcode name, CDB,
    data lengths, status and sense (key/ASC/ASCQ).
``buff``
    with ``scsi``: the first 64 bytes of Data-Out on arrival and of Data-In on
    completion (never bytes the handler did not produce).
``minor``
    commands that end in CHECK CONDITION, even without ``scsi``.
``special``
    task-management notifications from the ring (aborts, LUN resets).
``debug``
    the daemon's own loggers at DEBUG.
``pid`` / ``function`` / ``line``
    trace lines carry the process id and thread / the function / the line that logged.

``mgmt``, ``mgmt_minor``, ``mgmt_dbg`` and the memory/sg/entry-exit bits of the kernel
SCST have no counterpart: management events are always logged at INFO, and Python
manages its own memory. The bit values are SCST's (scst_debug.h).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Final

from tcmu_scst.command import CHECK_CONDITION, Command, Direction, Result, TmrNotice
from tcmu_scst.errors import ConfigError
from tcmu_scst.kernel import abi
from tcmu_scst.scsi import opcodes

COMMON_TOKENS: Final[dict[str, int]] = {
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
ROOT_TOKENS: Final[dict[str, int]] = {
    **COMMON_TOKENS,
    "retry": 0x80000000,
    "scsi_serializing": 0x40000000,
    "recv_bot": 0x20000000,
    "send_bot": 0x10000000,
    "recv_top": 0x08000000,
    "send_top": 0x04000000,
}
DEFAULT_TOKENS: Final = ("out_of_mem", "minor", "pid", "line", "function", "special",
                         "mgmt", "mgmt_minor")  # fmt: skip
ROOT: Final = "scsi_tgt"
DEFAULT_TRACE_FILE: Final = Path("/var/lib/tcmu-scst/trace_level.json")
DUMP_BYTES: Final = 64

trace_log = logging.getLogger("tcmu_scst.trace")


def tokens_for(owner: str) -> dict[str, int]:
    return ROOT_TOKENS if owner == ROOT else COMMON_TOKENS


def default_mask(owner: str) -> int:
    table = tokens_for(owner)
    return sum(table[t] for t in DEFAULT_TOKENS)


def render(owner: str, mask: int) -> str:
    names = [name for name, bit in tokens_for(owner).items() if mask & bit]
    return " | ".join(names) if names else "none"


class TraceStore:
    """Trace levels per owner (``scsi_tgt`` or a handler), kept in a small JSON file."""

    def __init__(self, path: Path = DEFAULT_TRACE_FILE) -> None:
        self.path = path

    def load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {str(k): int(v) for k, v in dict(data).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"cannot read {self.path}: {err}; delete it to reset levels") from err

    def get(self, owner: str) -> int:
        return self.load().get(owner, default_mask(owner))

    def set(self, owner: str, mask: int) -> None:
        from tcmu_scst.scst.ownership import write_atomically

        levels = self.load()
        levels[owner] = mask
        write_atomically(self.path, json.dumps(levels, sort_keys=True) + "\n", mode=0o644)


@dataclass(frozen=True)
class TraceFlags:
    """What one device's effective mask asks for."""

    scsi: bool = False
    buff: bool = False
    minor: bool = False
    special: bool = False
    debug: bool = False
    pid: bool = False
    function: bool = False
    line: bool = False

    @classmethod
    def from_mask(cls, mask: int) -> TraceFlags:
        """Each field is the token of the same name."""
        return cls(**{f.name: bool(mask & COMMON_TOKENS[f.name]) for f in fields(cls)})

    @property
    def per_command(self) -> bool:
        """True when commands must pass through a :class:`CommandTracer`."""
        return self.scsi or self.minor or self.special


def effective_mask(levels: Mapping[str, int], handler_name: str) -> int:
    """The core's mask OR the handler's (each its SCST default when never set)."""
    return levels.get(ROOT, default_mask(ROOT)) | levels.get(
        handler_name, default_mask(handler_name)
    )


_SENSE_KEYS: Final = (
    "NO SENSE", "RECOVERED ERROR", "NOT READY", "MEDIUM ERROR", "HARDWARE ERROR",
    "ILLEGAL REQUEST", "UNIT ATTENTION", "DATA PROTECT", "BLANK CHECK", "VENDOR SPECIFIC",
    "COPY ABORTED", "ABORTED COMMAND", "RESERVED", "VOLUME OVERFLOW", "MISCOMPARE",
    "COMPLETED",
)  # fmt: skip
_STATUS: Final = {0x00: "GOOD", 0x02: "CHECK CONDITION", 0x04: "CONDITION MET", 0x08: "BUSY",
                  0x18: "RESERVATION CONFLICT", 0x28: "TASK SET FULL", 0x30: "ACA ACTIVE",
                  0x40: "TASK ABORTED"}  # fmt: skip


def describe_sense(sense: bytes) -> str:
    """``KEY asc/ascq`` from fixed (70h/71h) or descriptor (72h/73h) sense data."""
    if len(sense) < 4:
        return "no sense data"
    code = sense[0] & 0x7F
    if code in (0x72, 0x73):
        key, asc, ascq = sense[1] & 0xF, sense[2], sense[3]
    elif code in (0x70, 0x71) and len(sense) >= 14:
        key, asc, ascq = sense[2] & 0xF, sense[12], sense[13]
    else:
        return f"unparsed sense {sense[:8].hex()}"
    return f"{_SENSE_KEYS[key]} {asc:02x}/{ascq:02x}"


class CommandTracer:
    """Trace lines for the commands of one device (see the module docstring)."""

    def __init__(self, device: str, flags: TraceFlags) -> None:
        self.device = device
        self.flags = flags

    def _emit(self, text: str) -> None:
        trace_log.info("%s: %s", self.device, text)

    def received(self, cmd: Command) -> None:
        if not self.flags.scsi:
            return
        cdb = cmd.cdb
        text = f"cmd {cmd.cmd_id} {opcodes.name_of(cdb)} cdb {cdb.hex()} buffer {cmd.data.length}"
        if self.flags.buff and opcodes.data_direction(cdb) in (Direction.OUT, Direction.BIDI):
            text += f" data-out {_dump(cmd.data.read(0, min(DUMP_BYTES, cmd.data.length)))}"
        self._emit(text)

    def completed(self, cmd: Command, result: Result) -> None:
        failed = result.status == CHECK_CONDITION
        if not (self.flags.scsi or (self.flags.minor and failed)):
            return
        status = _STATUS.get(result.status, f"status {result.status:#04x}")
        text = f"cmd {cmd.cmd_id} {opcodes.name_of(cmd.cdb)} -> {status}"
        if failed:
            text += f" [{describe_sense(result.sense)}] cdb {cmd.cdb.hex()}"
        if result.data_in_len is not None:
            text += f" data-in {result.data_in_len}"
            target = cmd.bidi_in if cmd.bidi_in is not None else cmd.data
            shown = min(DUMP_BYTES, max(result.data_in_len, 0), target.length)
            if self.flags.buff and self.flags.scsi and shown:
                text += f" {_dump(target.read(0, shown))}"
        self._emit(text)

    def tmr(self, notice: TmrNotice) -> None:
        if self.flags.special or self.flags.scsi:
            name = abi.TMR_NAMES.get(notice.tmr_type, f"type {notice.tmr_type}")
            ids = " ".join(map(str, notice.cmd_ids)) or "none in the ring"
            self._emit(f"task management {name}: commands {ids}")


def _dump(data: bytes) -> str:
    return data.hex(" ", 4) if data else "(none)"


class TraceDecorations(logging.Filter):
    """Adds ``[pid/thread function:line]`` to records, as the ``pid``, ``function`` and
    ``line`` bits of the core's mask ask. Installed on the daemon's log handler."""

    def __init__(self) -> None:
        super().__init__()
        self.flags = TraceFlags()

    def filter(self, record: logging.LogRecord) -> bool:
        parts: list[str] = []
        if self.flags.pid:
            parts.append(f"{record.process}/{record.threadName}")
        where = []
        if self.flags.function:
            where.append(record.funcName)
        if self.flags.line:
            where.append(str(record.lineno))
        if where:
            parts.append(":".join(where))
        if parts and not getattr(record, "_trace_decorated", False):
            record.msg = f"[{' '.join(parts)}] {record.msg}"
            record._trace_decorated = True
        return True
