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
accepted as the name, as versions before 0.1.0's release wrote it, so devices they
left in the kernel are still served; ``size_mb=`` too). Every command is cheap, so
all run inline on the ring thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from tcmu_scst.command import Command, Result
from tcmu_scst.errors import ConfigError, HandlerError
from tcmu_scst.handler import Handler
from tcmu_scst.kernel import devconfig
from tcmu_scst.kernel.handler_table import HANDLERS, Kind
from tcmu_scst.scsi.block import BlockDeviceConfig
from tcmu_scst.scsi.sbc import SbcDevice
from tcmu_scst.scsi.spc import SpcDevice

from ._perf_tape import PerfTapeDevice
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
HANDLER_TYPES = {h.name: h.device_type for h in HANDLERS if h.kind is Kind.PERF}
VENDOR = "SCST_PRF"


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
    tokens: list[devconfig.Token] = [("n", params.name)]
    if params.handler != TAPE_PERF:
        tokens += [("size", params.size), ("blocksize", params.blocksize)]
    return devconfig.encode(params.handler, tokens, who=f"{params.handler} {params.name}",
                            hint="use a shorter device name")  # fmt: skip


def parse_dev_config(text: str) -> PerfParams:
    """Inverse of :func:`to_dev_config`; also takes ``hctl=`` and ``size_mb=``."""
    decoded = devconfig.decode(text, HANDLER_TYPES)
    where = decoded.where
    params = PerfParams(decoded.subtype, "")
    for key, value in decoded.values(("n", "hctl", "size", "size_mb", "blocksize")).items():
        if key in ("n", "hctl"):
            params.name = value or ""
        elif key == "blocksize":
            params.blocksize = devconfig.number(decoded, key, value)
        else:
            params.size = devconfig.number(decoded, key, value) << (20 if key == "size_mb" else 0)
    if not params.name:
        raise ConfigError(f"{where}: the device name (n=) is missing")
    return params.validate()


class PerfHandler(Handler):
    """A perf device of any of the three kinds."""

    handler_name: ClassVar[str] = DISK_PERF
    shares_ring_loop: ClassVar[bool] = True  # nothing here ever waits

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
