"""SCST's "performance" handlers: dev_disk_perf, dev_modisk_perf, dev_tape_perf.

They measure the transport without a backing store: READ and WRITE complete
without any I/O, every other command is emulated as for the real device type
(disk and MO: the SBC emulation over a null backend; tape: ``_perf_tape``).

Unlike SCST, whose perf handlers leave a READ's buffer untouched and so return
whatever the memory held before ("uninitialised buffers", a security risk the
0.9.6 README warns about), these handlers write zeros into every byte of Data-In
they report: no byte of another command, initiator or device ever leaves the
target. WRITE data is discarded.

SCST's perf handlers sit on a real SCSI device (H:C:I:L) and pass the non-data
commands to it; here there is no device underneath, so the disk kinds take a
size like vdisk_nullio (default 5/2 TiB) and a block size.

``dev_config``: ``<handler>/n=NAME[;size=BYTES][;blocksize=N]`` (``hctl=`` is
accepted as the name, as ``scst.devconfig`` writes it for SCSI-address devices;
``size_mb=`` too). Every command is cheap, so all run inline on the ring thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import quote, unquote

from tcmu_scst.command import Command, Result
from tcmu_scst.errors import ConfigError, HandlerError
from tcmu_scst.handler import Handler
from tcmu_scst.scsi.block import BlockDeviceConfig
from tcmu_scst.scsi.sbc import SbcDevice
from tcmu_scst.scsi.spc import SpcDevice

from ._perf_tape import TYPE_TAPE, PerfTapeDevice
from ._vdisk_null import NullBackend
from .vdisk_params import NULLIO_DEFAULT_SIZE, check_block_size

__all__ = [
    "DISK_PERF",
    "HANDLER_TYPES",
    "MODISK_PERF",
    "TAPE_PERF",
    "PerfHandler",
    "PerfParams",
    "open_dev_config",
    "parse_dev_config",
    "to_dev_config",
]

log = logging.getLogger("tcmu_scst.handlers.perf")

DISK_PERF = "dev_disk_perf"
MODISK_PERF = "dev_modisk_perf"
TAPE_PERF = "dev_tape_perf"
HANDLER_TYPES = {DISK_PERF: 0x00, MODISK_PERF: 0x07, TAPE_PERF: TYPE_TAPE}
VENDOR = "SCST_PRF"
_SAFE = "._-"


@dataclass(slots=True)
class PerfParams:
    """One perf device. ``size``/``blocksize`` apply to the disk kinds only."""

    handler: str
    name: str
    size: int = NULLIO_DEFAULT_SIZE
    blocksize: int = 512

    def validate(self) -> PerfParams:
        who = f"{self.handler} {self.name!r}"
        if self.handler not in HANDLER_TYPES:
            raise HandlerError(
                f"{who}: not a perf handler; use one of {', '.join(HANDLER_TYPES)}"
            )
        if not self.name or not self.name.isprintable() or "/" in self.name:
            raise HandlerError(f"{who}: a device name must be printable text without '/'")
        if self.handler == TAPE_PERF:
            return self
        check_block_size(self.blocksize)
        if self.size < self.blocksize:
            raise HandlerError(f"{who}: size {self.size} is below one {self.blocksize}-byte block")
        return self


def to_dev_config(params: PerfParams) -> str:
    params.validate()
    tokens = [f"n={quote(params.name, safe=_SAFE)}"]
    if params.handler != TAPE_PERF:
        tokens += [f"size={params.size}", f"blocksize={params.blocksize}"]
    return f"{params.handler}/" + ";".join(tokens)


def parse_dev_config(text: str) -> PerfParams:
    """Inverse of :func:`to_dev_config`; also takes ``hctl=`` and ``size_mb=``."""
    handler, _, body = text.partition("/")
    where = f"dev_config {text[:40]!r}"
    if handler not in HANDLER_TYPES:
        raise ConfigError(f"{where}: {handler!r} is not a perf handler")
    params = PerfParams(handler, "")
    for token in filter(None, body.split(";")):
        key, eq, value = token.partition("=")
        if not eq:
            raise ConfigError(f"{where}: {token!r} is not key=value")
        if key in ("n", "hctl"):
            params.name = unquote(value)
        elif key in ("size", "size_mb", "blocksize"):
            if not value.isdigit():
                raise ConfigError(f"{where}: {key}={value!r} is not a number")
            if key == "blocksize":
                params.blocksize = int(value)
            else:
                params.size = int(value) << (20 if key == "size_mb" else 0)
        else:
            raise ConfigError(f"{where}: unknown key {key!r}; known: n, size, size_mb, blocksize")
    if not params.name:
        raise ConfigError(f"{where}: the device name (n=) is missing")
    return params.validate()


class PerfHandler(Handler):
    """A perf device of any of the three kinds."""

    handler_name: ClassVar[str] = DISK_PERF

    def __init__(self, params: PerfParams) -> None:
        self.params = params.validate()
        device_type = HANDLER_TYPES[params.handler]
        self.config = BlockDeviceConfig(
            name=params.name,
            block_size=params.blocksize,
            device_type=device_type,
            removable=device_type != 0x00,  # MO and tape media are removable
            vendor=VENDOR,
            nv_cache=True,  # nothing is stored: there is nothing to flush
        )
        self.device: SpcDevice
        if params.handler == TAPE_PERF:
            self.device = PerfTapeDevice(self.config)
        else:
            self.device = SbcDevice(self.config, NullBackend(params.size, params.blocksize))
        log.info("%s %s: opened (no I/O; reads return zeros)", params.handler, params.name)

    @classmethod
    def from_dev_config(cls, text: str) -> PerfHandler:
        return cls(parse_dev_config(text))

    def handle(self, cmd: Command) -> Result | None:
        return self.device.execute(cmd)

    def is_inline(self, cmd: Command) -> bool:
        return True  # no command touches a backing store


def open_dev_config(dev_config: str) -> PerfHandler:
    """The daemon's factory (``service.registry``) for the three perf subtypes."""
    return PerfHandler.from_dev_config(dev_config)
