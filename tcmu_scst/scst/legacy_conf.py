"""Reader for the procfs-era (SCST 0.9.6 / scstadmin 1.0) ``/etc/scst.conf``.

Format (sections in brackets, one item per line, ``#`` comments)::

    [HANDLER vdisk]
    DEVICE disk1,/srv/disk1.img,WRITE_THROUGH|READ_ONLY,4096   # name,path,options,blocksize
    [HANDLER vcdrom]
    DEVICE cd1,/srv/install.iso
    [HANDLER dev_disk]
    DEVICE 2:0:0:0                      # pass-through device by H:C:I:L
    [GROUP g1]
    USER iqn.1993-08.org.debian:01:abc
    [ASSIGNMENT g1]
    DEVICE disk1,0                      # device,lun[,READ_ONLY]
    [ASSIGNMENT Default]
    DEVICE disk1,0
    [TARGETS enable]
    HOST 50:01:43:80:02:31:4c:48        # FC WWPN -> qla2xxx, iqn./eui. -> iscsi,
    [TARGETS disable]                   #   naa. -> loopback (scst_local)
    HOST iqn.2006-10.net.vlnb:tgt

Groups stay global (0.9.6 semantics): the mapping expands them into every target.
vdisk options map to the modern handlers and parameters as in lio-and-scst.md §5.4:
BLOCKIO/BIO selects vdisk_blockio, NULLIO vdisk_nullio, the rest become parameters.
"""

from __future__ import annotations

import re
from pathlib import Path

from tcmu_scst.ascii import is_decimal
from tcmu_scst.errors import ConfigError, ErrorCollector
from tcmu_scst.kernel.handler_table import HANDLER_TYPES, HANDLERS, VCDROM
from tcmu_scst.scst.model import (
    DEFAULT_GROUP,
    Device,
    Group,
    Lun,
    ScstConfig,
    Target,
    Where,
    check,
)

_SECTION = re.compile(r"^\[\s*(\S+)(?:\s+(\S+))?\s*\]$")
_WWPN = re.compile(r"^([0-9a-fA-F]{2}:){7}[0-9a-fA-F]{2}$")

# 0.9.6 vdisk option -> modern vdisk parameter (BLOCKIO/NULLIO select the handler).
_VDISK_FLAGS: dict[str, str] = {
    "WRITE_THROUGH": "write_through",
    "READ_ONLY": "read_only",
    "O_DIRECT": "o_direct",
    "NV_CACHE": "nv_cache",
    "REMOVABLE": "removable",
}
_HANDLER_FLAGS: dict[str, str] = {
    "BLOCKIO": "vdisk_blockio",
    "BIO": "vdisk_blockio",
    "NULLIO": "vdisk_nullio",
}

# 0.9.6 [HANDLER vdisk] / [HANDLER vcdrom]: the proc directories of the virtual handlers.
_PROC_VIRTUAL = frozenset(h.subtype for h in HANDLERS if not h.assigned)
# What a 0.9.6 [HANDLER ...] may name: those two, or a dev_* / *_perf handler.
_LEGACY_HANDLERS = _PROC_VIRTUAL | frozenset(h.name for h in HANDLERS if h.assigned)


def fabric_for_host(name: str) -> str:
    """The LIO fabric a 0.9.6 ``HOST`` name belongs to, judged by its format."""
    if _WWPN.match(name):
        return "qla2xxx"
    if name.startswith("naa."):
        return "loopback"
    return "iscsi"


_BAD_SECTION = ("", "")  # a section header that was refused


class _LegacyReader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.config = ScstConfig()
        self.assignments: list[tuple[str, Lun]] = []
        self.declared: dict[str, Group] = {}
        self.errors = ErrorCollector()

    def fail(self, line: int, message: str) -> ConfigError:
        return ConfigError(message, self.source, line)

    def read(self, text: str) -> ScstConfig:
        """The model of ``text``; every faulty line goes to ``self.errors``, reading goes on."""
        section: tuple[str, str] | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            match = _SECTION.match(line)
            if match:
                section = _BAD_SECTION  # its items are skipped if the header is wrong
                with self.errors.guard():
                    section = self.open_section(number, match.group(1), match.group(2) or "")
                continue
            with self.errors.guard():
                if section is None:
                    raise self.fail(
                        number,
                        f"{line.split()[0]!r} outside any [SECTION]; start with e.g. "
                        "[HANDLER vdisk]",
                    )
                if section is not _BAD_SECTION:
                    self.item(number, section, line)
        self.resolve_assignments()
        return self.config

    def open_section(self, number: int, kind: str, arg: str) -> tuple[str, str]:
        kind = kind.upper()
        if kind in ("HANDLER", "GROUP", "ASSIGNMENT") and not arg:
            raise self.fail(number, f"[{kind}] needs a name, e.g. [{kind} vdisk]")
        if kind == "HANDLER" and arg not in _LEGACY_HANDLERS:
            if arg in HANDLER_TYPES:  # vdisk_fileio & co.: SCST 3.x's names, not 0.9.6's
                raise self.fail(
                    number,
                    f"[HANDLER {arg}] is not SCST 0.9.6 syntax: write [HANDLER vdisk] with "
                    f"the mode as a DEVICE option (e.g. BLOCKIO, NULLIO), or the whole "
                    f"file in SCST 3.x syntax (HANDLER {arg} {{ DEVICE name {{ ... }} }})",
                )
            raise self.fail(number, f"unknown handler {arg!r}; use vdisk, vcdrom or dev_*")
        if kind == "TARGETS" and arg not in ("enable", "disable"):
            raise self.fail(number, "[TARGETS] must be [TARGETS enable] or [TARGETS disable]")
        if kind == "GROUP" and arg not in self.declared:
            grp = Group(arg, where=Where(self.source, number))
            self.declared[arg] = grp
            # Default is predefined, hence always first in SCST's creation order.
            self.config.groups.insert(0 if arg == DEFAULT_GROUP else len(self.config.groups), grp)
        if kind not in ("HANDLER", "GROUP", "ASSIGNMENT", "TARGETS"):
            raise self.fail(
                number, f"unknown section [{kind}]; expected HANDLER, GROUP, ASSIGNMENT or TARGETS"
            )
        return kind, arg

    def item(self, number: int, section: tuple[str, str], line: str) -> None:
        kind, arg = section
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        expected = {
            "HANDLER": "DEVICE",
            "GROUP": "USER",
            "ASSIGNMENT": "DEVICE",
            "TARGETS": "HOST",
        }[kind]
        if keyword != expected or not rest:
            raise self.fail(
                number, f"expected '{expected} ...' in [{kind} {arg}], got {line[:40]!r}"
            )
        where = Where(self.source, number)
        if kind == "HANDLER":
            self.config.devices.append(self.device(number, arg, rest))
        elif kind == "GROUP":
            self.declared[arg].initiators.append(rest)
            self.declared[arg].initiator_lines.append(where)
        elif kind == "ASSIGNMENT":
            self.assignments.append((arg, self.lun(number, rest)))
        else:
            name = rest.lower() if _WWPN.match(rest) else rest
            self.config.targets.append(
                Target(fabric_for_host(name), name, enabled=arg == "enable", where=where)
            )

    def device(self, number: int, handler: str, rest: str) -> Device:
        where = Where(self.source, number)
        fields = [f.strip() for f in rest.split(",")]
        if handler not in _PROC_VIRTUAL:
            if len(fields) != 1:
                raise self.fail(number, f"{handler} devices are 'DEVICE H:C:I:L' only")
            return Device(fields[0], handler, {}, where)
        if handler == VCDROM:
            if len(fields) > 2:
                raise self.fail(
                    number,
                    "vcdrom takes 'DEVICE name[,path]'; a path with ',' "
                    "cannot be used: rename it or point at a symlink without ','",
                )
            cd_params = {"filename": fields[1]} if len(fields) > 1 and fields[1] else {}
            return Device(fields[0], VCDROM, cd_params, where)
        if len(fields) > 4:
            raise self.fail(
                number,
                "vdisk takes 'DEVICE name,path,OPT1|OPT2,blocksize'; a path "
                "with ',' cannot be used: rename it or point at a symlink without ','",
            )
        name, path = fields[0], fields[1] if len(fields) > 1 else ""
        options = fields[2] if len(fields) > 2 else ""
        blocksize = fields[3] if len(fields) > 3 else ""
        new_handler = "vdisk_fileio"
        params: dict[str, str] = {}
        for flag in filter(None, (f.strip().upper() for f in options.split("|"))):
            if flag in _HANDLER_FLAGS:
                new_handler = _HANDLER_FLAGS[flag]
            elif flag in _VDISK_FLAGS:
                params[_VDISK_FLAGS[flag]] = "1"
            else:
                known = ", ".join([*_VDISK_FLAGS, *_HANDLER_FLAGS])
                raise self.fail(number, f"unknown vdisk option {flag!r}; use {known}")
        if path and new_handler != "vdisk_nullio":
            params = {"filename": path, **params}
        elif new_handler != "vdisk_nullio":
            raise self.fail(number, f"vdisk device {name} needs a path: DEVICE {name},/path")
        if blocksize:
            if not is_decimal(blocksize):
                raise self.fail(number, f"block size {blocksize!r} is not a number")
            params["blocksize"] = blocksize
        return Device(name, new_handler, params, where)

    def lun(self, number: int, rest: str) -> Lun:
        fields = [f.strip() for f in rest.split(",")]
        if len(fields) not in (2, 3) or not is_decimal(fields[1]):
            raise self.fail(number, "expected 'DEVICE name,lun[,READ_ONLY]' with a decimal LUN")
        read_only = len(fields) == 3 and fields[2].upper() == "READ_ONLY"
        if len(fields) == 3 and not read_only:
            raise self.fail(number, f"unknown LUN option {fields[2]!r}; only READ_ONLY exists")
        return Lun(int(fields[1]), fields[0], read_only, Where(self.source, number))

    def resolve_assignments(self) -> None:
        for group_name, lun in self.assignments:
            grp = self.declared.get(group_name)
            if grp is None and group_name == DEFAULT_GROUP:
                # Default is predefined in SCST: it exists without a [GROUP] section.
                grp = Group(DEFAULT_GROUP, where=lun.where)
                self.declared[DEFAULT_GROUP] = grp
                self.config.groups.insert(0, grp)
            if grp is None:
                self.errors.add(
                    lun.where.error(
                        f"[ASSIGNMENT {group_name}] names unknown group {group_name!r}; "
                        f"declare it with [GROUP {group_name}]"
                    )
                )
                continue
            grp.luns.append(lun)


def parse_legacy(text: str, source: str = "<string>") -> ScstConfig:
    """Parse and validate a 0.9.6-era scst.conf into the model; every error at once."""
    reader = _LegacyReader(source)
    config = reader.read(text)
    check(config, reader.errors)
    reader.errors.raise_if_any()
    return config


def load_legacy(path: Path | str) -> ScstConfig:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file: {err}", str(path)) from err
    return parse_legacy(text, str(path))


def looks_legacy(text: str) -> bool:
    """True when ``text`` is in the bracketed 0.9.6 format rather than the modern one."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            return bool(_SECTION.match(line))
    return False
