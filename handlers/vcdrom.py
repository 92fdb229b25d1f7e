"""SCST's vcdrom handler: a virtual CD/DVD-ROM drive over an ISO image file.

:class:`VcdromHandler` opens the image read-only and answers commands through the
MMC emulation (``tcmu_scst.scsi.mmc.MmcDevice``). The drive may be empty, and the
image can be swapped at run time (:meth:`VcdromHandler.change_medium`, SCST's
``change NAME [PATH]``) without dropping the device: the initiators see a unit
attention (28/00) and a GET EVENT STATUS NOTIFICATION media event.

Images are regular files (or block devices). A size that is not a multiple of 2048
bytes is rounded down, with a log line: the partial last sector cannot be read, as
on a real disc whose last sector is damaged. An image smaller than one sector is
refused.

Run-time change through the daemon: the shell writes a new ``dev_config`` (same
drive, other ``filename``) to configfs; the daemon gets RECONFIG and should call
:meth:`VcdromHandler.reconfigure` first: it returns True
when the change was done in place, False when the new dev_config describes another
drive (then reopen as for any handler).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from typing import ClassVar

from tcmu_scst.command import Command, DataBuffer, Result, TmrNotice
from tcmu_scst.errors import HandlerError
from tcmu_scst.handler import Handler
from tcmu_scst.kernel import abi
from tcmu_scst.scsi.block import BackendError
from tcmu_scst.scsi.mmc import BLOCK_SIZE, CdromConfig, MmcDevice

from .vcdrom_params import (
    HANDLER_NAME,
    ProcCommand,
    VcdromParams,
    parse_attributes,
    parse_dev_config,
    parse_proc_command,
    proc_read_header,
    proc_read_line,
    to_attributes,
    to_dev_config,
    to_proc_open,
)
from .vdisk_params import NAA_OUI

__all__ = [
    "HANDLER_NAME",
    "ImageFile",
    "ProcCommand",
    "VcdromHandler",
    "VcdromParams",
    "open_dev_config",
    "parse_attributes",
    "parse_dev_config",
    "parse_proc_command",
    "proc_read_header",
    "proc_read_line",
    "to_attributes",
    "to_dev_config",
    "to_proc_open",
]

log = logging.getLogger("tcmu_scst.handlers.vcdrom")


class ImageFile:
    """A read-only image: a :class:`~tcmu_scst.scsi.mmc.Medium` over a file."""

    def __init__(self, path: str, label: str = "") -> None:
        self.path = path
        who = f"vcdrom {label or path}"
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise HandlerError(f"{who}: image {path} does not exist; fix the path") from None
        except OSError as exc:
            raise HandlerError(f"{who}: cannot open image {path}: {exc.strerror}") from None
        try:
            st = os.fstat(self.fd)
            if stat.S_ISBLK(st.st_mode):
                raw = os.lseek(self.fd, 0, os.SEEK_END)
            elif stat.S_ISREG(st.st_mode):
                raw = st.st_size
            else:
                raise HandlerError(f"{who}: {path} is not a regular file; give an ISO image")
            self._size = raw - raw % BLOCK_SIZE
            if not self._size:
                raise HandlerError(
                    f"{who}: image {path} is {raw} bytes, smaller than one 2048-byte sector"
                )
            if self._size != raw:
                log.warning(
                    "%s: image %s is %d bytes, not a multiple of 2048; the last %d bytes "
                    "cannot be read", who, path, raw, raw - self._size,
                )
        except BaseException:
            os.close(self.fd)
            raise

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0) -> None:
        views = DataBuffer(buf.slices(buf_offset, length))
        try:
            got = views.preadv(self.fd, offset)
        except OSError as exc:
            raise BackendError(f"read of {length} bytes at {offset} from {self.path} failed: "
                               f"{exc.strerror}", exc.errno or 0) from None
        if got < length:  # the file shrank under us: never hand out stale bytes
            views.fill_zero(got)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def cdrom_config(params: VcdromParams) -> CdromConfig:
    """What the drive reports: SCST's vendor, the name as product, derived identities."""
    return CdromConfig(
        name=params.name,
        product=params.name[:16],
        serial=params.effective_usn,
        t10_dev_id=params.effective_t10_dev_id,
        naa_id=_naa_id(params),
    )


def _naa_id(params: VcdromParams) -> bytes:
    """NAA 6 designator from (setup_id, name), as vdisk derives it."""
    digest = hashlib.sha256(f"{params.setup_id}:{params.name}".encode()).digest()
    value = (0x6 << 124) | (NAA_OUI << 100) | (int.from_bytes(digest, "big") >> 156)
    return value.to_bytes(16, "big")


class VcdromHandler(Handler):
    """One virtual CD/DVD drive, possibly empty."""

    handler_name: ClassVar[str] = HANDLER_NAME

    def __init__(self, params: VcdromParams) -> None:
        self.params = params.validate()
        medium = ImageFile(params.filename, params.name) if params.filename else None
        self.device = MmcDevice(cdrom_config(params), medium)
        self._closed = False
        log.info("vcdrom %s: opened %s", params.name, params.filename or "empty")

    @classmethod
    def from_dev_config(cls, text: str) -> VcdromHandler:
        return cls(parse_dev_config(text))

    @property
    def size(self) -> int:
        medium = self.device.medium
        return medium.size if medium is not None else 0

    def handle(self, cmd: Command) -> Result | None:
        return self.device.execute(cmd)

    def is_inline(self, cmd: Command) -> bool:
        return not self.device.is_io(cmd)

    def on_tmr(self, notice: TmrNotice) -> None:
        if notice.tmr_type in abi.RESET_TMRS:
            self.device.reset()  # e.g. a LUN reset clears PREVENT MEDIUM REMOVAL

    def change_medium(self, path: str | None) -> None:
        """SCST ``change NAME [PATH]``: load another image, or empty the drive (None/"").

        The new image is opened before anything changes, so a bad path leaves the
        old medium in place. HandlerError when the path is bad or an initiator
        prevents removal.
        """
        if path and not path.startswith("/"):
            raise HandlerError(
                f"vcdrom {self.params.name}: image path {path!r} is not absolute; "
                "give a full path"
            )
        new = ImageFile(path, self.params.name) if path else None
        try:
            old = self.device.change_medium(new)
        except BaseException:
            if new is not None:
                new.close()
            raise
        if old is not None:
            old.close()
        self.params.filename = path or ""
        log.info("vcdrom %s: medium changed to %s", self.params.name, path or "none")

    def reconfigure(self, dev_config: str) -> bool:
        """Daemon hook for a dev_config RECONFIG: True when handled in place.

        The same drive with another (or no) ``filename`` is a medium change; any
        other difference needs a new handler (False). Raises HandlerError when the
        change is refused (bad image, removal prevented): answer the kernel with it.
        """
        new = parse_dev_config(dev_config)
        if not self.params.same_drive(new):
            return False
        if new.filename != self.params.filename:
            self.change_medium(new.filename or None)
        return True

    def proc_read_line(self) -> str:
        """This drive's row in the 0.9.6 ``/proc/scsi_tgt/vcdrom/vcdrom`` listing."""
        return proc_read_line(self.params, self.size)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            medium = self.device.medium
            if medium is not None:
                medium.close()


def open_dev_config(dev_config: str) -> VcdromHandler:
    """The daemon's factory (``service.registry``): open a ``vcdrom/...`` drive."""
    return VcdromHandler.from_dev_config(dev_config)
