"""SCST's vdisk handler: a virtual SCSI disk over a file, a block device or nothing.

:class:`VdiskHandler` opens the backing store chosen by the parameters (FILEIO with
its WRITE_THROUGH / NV_CACHE / READ_ONLY / O_DIRECT variants, BLOCKIO, NULLIO) and
answers commands through the SBC emulation (``tcmu_scst.scsi.sbc.SbcDevice``).
Commands that touch no data (INQUIRY, MODE SENSE, READ CAPACITY, ...) are inline;
reads, writes, flushes and unmaps run on worker threads.

The parameter model (:class:`VdiskParams`) and its three textual forms live in
``vdisk_params`` and are re-exported here: the shell, the config file and the
daemon all import them from this module.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

from tcmu_scst.command import Command, Result
from tcmu_scst.errors import HandlerError
from tcmu_scst.handler import Handler
from tcmu_scst.scsi.block import BlockDeviceConfig

from ._vdisk_file import FileBackend, FileMode
from ._vdisk_null import NullBackend
from .vdisk_params import (
    BLOCKIO,
    FILEIO,
    HANDLER_NAMES,
    NULLIO,
    NULLIO_DEFAULT_SIZE,
    ProcCommand,
    VdiskParams,
    check_block_size,
    crc32c_linux,
    parse_attributes,
    parse_dev_config,
    parse_proc_command,
    parse_proc_open,
    proc_read_header,
    proc_read_line,
    to_attributes,
    to_dev_config,
    to_proc_open,
)

if TYPE_CHECKING:
    from tcmu_scst.scsi.sbc import SbcDevice

__all__ = [
    "BLOCKIO",
    "FILEIO",
    "HANDLER_NAMES",
    "NULLIO",
    "NULLIO_DEFAULT_SIZE",
    "ProcCommand",
    "VdiskHandler",
    "VdiskParams",
    "block_device_config",
    "check_block_size",
    "crc32c_linux",
    "open_backend",
    "open_dev_config",
    "parse_attributes",
    "parse_dev_config",
    "parse_proc_command",
    "parse_proc_open",
    "proc_read_header",
    "proc_read_line",
    "to_attributes",
    "to_dev_config",
    "to_proc_open",
]

log = logging.getLogger("tcmu_scst.handlers.vdisk")

Backend = FileBackend | NullBackend


def open_backend(params: VdiskParams) -> Backend:
    """Open the backing store ``params`` describe; HandlerError says why it cannot."""
    params.validate()
    if params.nullio:
        return NullBackend(params.nullio_size, params.blocksize)
    mode = FileMode(
        read_only=params.read_only,
        write_through=params.write_through,
        nv_cache=params.nv_cache,
        o_direct=params.o_direct,
        blockio=params.blockio,
    )
    backend = FileBackend(params.filename, params.blocksize, mode, label=params.name)
    if params.thin_provisioned:
        try:
            backend.check_discard()
        except HandlerError:
            backend.close()
            raise
    return backend


def block_device_config(params: VdiskParams) -> BlockDeviceConfig:
    """What the SBC emulation reports for this device (INQUIRY, VPD, MODE pages)."""
    return BlockDeviceConfig(
        name=params.name,
        block_size=params.blocksize,
        read_only=params.read_only,
        write_back=not params.write_through,
        nv_cache=params.nv_cache,
        removable=params.removable,
        rotational=params.rotational,
        thin_provisioned=params.thin_provisioned,
        vendor=params.vendor,
        product=params.product,
        serial=params.effective_usn,
        t10_dev_id=params.effective_t10_dev_id,
        naa_id=params.naa_id,
    )


class VdiskHandler(Handler):
    """One open vdisk device."""

    handler_name: ClassVar[str] = "vdisk"

    def __init__(self, params: VdiskParams) -> None:
        self.params = params.validate()
        self.backend: Backend = open_backend(params)
        try:
            self.config = block_device_config(params)
            self.device: SbcDevice = _sbc_device(self.config, self.backend)
        except BaseException:
            self.backend.close()
            raise
        self._closed = False
        log.info(
            "vdisk %s: opened %s (%s), %d bytes in %d-byte blocks",
            params.name, params.filename or "-", self.mode_names(), self.backend.size,
            params.blocksize,
        )

    @classmethod
    def from_dev_config(cls, text: str) -> VdiskHandler:
        """Open the device a TCMU ``dev_config`` string (``vdisk/...``) describes."""
        return cls(parse_dev_config(text))

    @property
    def size(self) -> int:
        return self.backend.size

    def mode_names(self) -> str:
        """The 0.9.6 flags in effect, e.g. ``FILEIO WRITE_THROUGH``."""
        p = self.params
        kind = "NULLIO" if p.nullio else "BLOCKIO" if p.blockio else "FILEIO"
        flags = [
            name
            for name, on in (
                ("WRITE_THROUGH", p.write_through),
                ("NV_CACHE", p.nv_cache),
                ("READ_ONLY", p.read_only),
                ("O_DIRECT", p.o_direct),
                ("REMOVABLE", p.removable),
            )
            if on
        ]
        return " ".join([kind, *flags])

    def handle(self, cmd: Command) -> Result | None:
        return self.device.execute(cmd)

    def is_inline(self, cmd: Command) -> bool:
        return not self.device.is_io(cmd)

    def resync_size(self) -> int:
        """Re-read the backing size (SCST ``resync_size``) and tell the emulation."""
        size = self.backend.refresh_size()
        self.device.notify_resized()
        return size

    def proc_read_line(self) -> str:
        """This device's row in the 0.9.6 ``/proc/scsi_tgt/vdisk/vdisk`` listing."""
        return proc_read_line(self.params, self.backend.size)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.backend.close()


def open_dev_config(dev_config: str) -> VdiskHandler:
    """The daemon's factory (``service.registry``): open a ``vdisk/...`` device."""
    return VdiskHandler.from_dev_config(dev_config)


def _sbc_device(config: BlockDeviceConfig, backend: Backend) -> SbcDevice:
    try:
        from tcmu_scst.scsi.sbc import SbcDevice
    except ImportError as exc:  # pragma: no cover - only while sbc.py is being written
        raise HandlerError(f"vdisk: the SBC emulation is not available: {exc}") from exc
    return SbcDevice(config, backend)
