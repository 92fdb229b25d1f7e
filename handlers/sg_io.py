"""The Linux SCSI generic (sg v3) SG_IO binding: one CDB to a local SCSI device.

:class:`SgDevice` wraps an open ``/dev/sgN``. :meth:`SgDevice.execute` builds a
``struct sg_io_hdr`` (x86_64 layout, 88 bytes) with ctypes and issues ``SG_IO``.

Data moves straight between the device and the caller's memoryviews (the TCMU
ring's mapping): the header carries an ``sg_iovec`` array whose entries point at
the views, so Python copies nothing. A view that is not writable (never the case
for ring buffers, only for ``bytes`` in tests) goes through a bounce buffer.
Indirect sg I/O copies through zeroed kernel pages (sg_build_indirect allocates
with __GFP_ZERO since 4.17), so bytes the device did not send come back as zeros,
never as stale ring contents, even when a low-level driver misreports ``resid``.

The ioctl primitive is injectable (``ioctl=``): unit tests replace only it.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import fcntl
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tcmu_scst.errors import HandlerError

SG_IO = 0x2285
SG_SCSI_RESET = 0x2284
SG_SCSI_RESET_DEVICE = 1
SG_INTERFACE_ID = ord("S")
SG_INFO_OK_MASK = 0x1
SG_INFO_OK = 0x0
SENSE_BUFFER_SIZE = 96  # SCSI_SENSE_BUFFERSIZE: sg never writes more
MAX_CDB_LEN = 252  # SG_MAX_CDB_SIZE
MAX_TIMEOUT_MS = 0xFFFFFFFF


class SgDirection(enum.IntEnum):
    """``dxfer_direction`` values."""

    NONE = -1
    TO_DEV = -2
    FROM_DEV = -3
    TO_FROM_DEV = -4


# Host byte (``host_status``), include/scsi/scsi_status.h.
DID_OK = 0x00
DID_NO_CONNECT = 0x01
DID_BUS_BUSY = 0x02
DID_TIME_OUT = 0x03
DID_BAD_TARGET = 0x04
DID_ABORT = 0x05
DID_PARITY = 0x06
DID_ERROR = 0x07
DID_RESET = 0x08
DID_BAD_INTR = 0x09
DID_PASSTHROUGH = 0x0A
DID_SOFT_ERROR = 0x0B
DID_IMM_RETRY = 0x0C
DID_REQUEUE = 0x0D
DID_TRANSPORT_DISRUPTED = 0x0E
DID_TRANSPORT_FAILFAST = 0x0F
DID_TARGET_FAILURE = 0x10
DID_NEXUS_FAILURE = 0x11
DID_ALLOC_FAILURE = 0x12
DID_MEDIUM_ERROR = 0x13
DID_TRANSPORT_MARGINAL = 0x14

# Driver byte (``driver_status``, low nibble; the high nibble held "suggestions" once).
DRIVER_OK = 0x00
DRIVER_BUSY = 0x01
DRIVER_SOFT = 0x02
DRIVER_MEDIA = 0x03
DRIVER_ERROR = 0x04
DRIVER_INVALID = 0x05
DRIVER_TIMEOUT = 0x06
DRIVER_HARD = 0x07
DRIVER_SENSE = 0x08
DRIVER_MASK = 0x0F


class SgIoHdr(ctypes.Structure):
    """``struct sg_io_hdr`` (<scsi/sg.h>), natural x86_64 alignment: 88 bytes."""

    _fields_ = [
        ("interface_id", ctypes.c_int),
        ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte),
        ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort),
        ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p),
        ("cmdp", ctypes.c_void_p),
        ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint),
        ("flags", ctypes.c_uint),
        ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p),
        ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte),
        ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte),
        ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort),
        ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint),
        ("info", ctypes.c_uint),
    ]


class SgIovec(ctypes.Structure):
    """``struct sg_iovec`` (same layout as ``struct iovec``)."""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


assert ctypes.sizeof(SgIoHdr) == 88, "sg_io_hdr layout is for x86_64/LP64"
assert ctypes.sizeof(SgIovec) == 16, "sg_iovec is two 64-bit words on LP64"

#: ``ioctl(fd, request, arg)`` as fcntl.ioctl (the arg is mutated in place).
IoctlFn = Callable[[int, int, Any], Any]


@dataclass(frozen=True, slots=True)
class SgResult:
    """What SG_IO reported for one command."""

    status: int  # SAM status byte as the device gave it
    sense: bytes  # the sb_len_wr bytes of sense data
    host_status: int
    driver_status: int
    resid: int  # dxfer_len - bytes actually transferred
    info: int
    duration_ms: int
    dxfer_len: int

    @property
    def transferred(self) -> int:
        return max(0, min(self.dxfer_len, self.dxfer_len - self.resid))

    @property
    def clean(self) -> bool:
        """SG_INFO_OK: no sense, host or driver "noise"."""
        return (self.info & SG_INFO_OK_MASK) == SG_INFO_OK


class SgIoError(HandlerError):
    """The SG_IO ioctl itself failed (the command may not have reached the device)."""

    def __init__(self, message: str, errno_value: int) -> None:
        super().__init__(message)
        self.errno = errno_value


def _view_address(view: memoryview, keep: list[object]) -> int:
    """Address of a non-empty writable contiguous byte view.

    The ctypes object (an export of the buffer, so it cannot be resized or unmapped
    under the ioctl) goes into ``keep``. A one-byte c_char is enough to learn the
    address and much cheaper than an array type of the view's length.
    """
    anchor = ctypes.c_char.from_buffer(view)
    keep.append(anchor)
    return ctypes.addressof(anchor)


class SgDevice:
    """An open ``/dev/sgN``: SG_IO commands and device resets."""

    def __init__(self, fd: int, path: str = "", *, ioctl: IoctlFn = fcntl.ioctl) -> None:
        self.fd = fd
        self.path = path
        self._ioctl = ioctl

    @classmethod
    def open(cls, path: str, *, ioctl: IoctlFn = fcntl.ioctl) -> SgDevice:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            raise HandlerError(
                f"cannot open {path}: {err.strerror}; is the sg module loaded and are we root?"
            ) from err
        return cls(fd, path, ioctl=ioctl)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def execute(
        self,
        cdb: bytes,
        direction: SgDirection,
        views: Sequence[memoryview] = (),
        dxfer_len: int = 0,
        timeout_ms: int = 60_000,
    ) -> SgResult:
        """Send ``cdb``; move at most ``dxfer_len`` bytes through ``views``.

        ``dxfer_len`` must not exceed the views' total length: the device can never
        write past the caller's buffer. Raises :class:`SgIoError` when the ioctl fails.
        """
        if not 6 <= len(cdb) <= MAX_CDB_LEN:
            raise SgIoError(f"{self.path}: a {len(cdb)}-byte CDB cannot go through SG_IO", 0)
        total = sum(len(v) for v in views)
        if dxfer_len > total or dxfer_len < 0:
            raise SgIoError(
                f"{self.path}: transfer of {dxfer_len} bytes exceeds the {total}-byte buffer", 0
            )
        if dxfer_len == 0:
            direction = SgDirection.NONE
        cdb_buf = ctypes.create_string_buffer(bytes(cdb), len(cdb))
        sense_buf = ctypes.create_string_buffer(SENSE_BUFFER_SIZE)
        hdr = SgIoHdr()
        hdr.interface_id = SG_INTERFACE_ID
        hdr.dxfer_direction = int(direction)
        hdr.cmd_len = len(cdb)
        hdr.mx_sb_len = SENSE_BUFFER_SIZE
        hdr.cmdp = ctypes.addressof(cdb_buf)
        hdr.sbp = ctypes.addressof(sense_buf)
        hdr.timeout = min(max(timeout_ms, 1), MAX_TIMEOUT_MS)
        keep: list[object] = []
        bounce: tuple[ctypes.Array[ctypes.c_char], list[memoryview]] | None = None
        if dxfer_len:
            parts = _cut(views, dxfer_len)
            if all(not v.readonly and v.contiguous for v in parts):
                # struct.pack builds the sg_iovec array far faster than filling
                # ctypes fields one by one (256 iovecs: ~0.15 ms instead of ~1.3 ms).
                pairs: list[int] = []
                for view in parts:
                    pairs += (_view_address(view, keep), len(view))
                iov = bytearray(struct.pack(f"={len(pairs)}Q", *pairs))
                hdr.iovec_count = len(parts)
                hdr.dxferp = _view_address(memoryview(iov), keep)
            else:
                # Read-only or strided views cannot be addressed: bounce.
                buf = ctypes.create_string_buffer(b"".join(bytes(v) for v in parts), dxfer_len)
                bounce = (buf, parts)
                hdr.dxferp = ctypes.addressof(buf)
            hdr.dxfer_len = dxfer_len
        try:
            self._ioctl(self.fd, SG_IO, hdr)
        except OSError as err:
            raise SgIoError(
                f"{self.path}: SG_IO failed: {err.strerror or err}", err.errno or errno.EIO
            ) from err
        finally:
            keep.clear()  # release the buffer exports
        result = SgResult(
            status=hdr.status,
            sense=sense_buf.raw[: min(hdr.sb_len_wr, SENSE_BUFFER_SIZE)],
            host_status=hdr.host_status,
            driver_status=hdr.driver_status,
            resid=hdr.resid,
            info=hdr.info,
            duration_ms=hdr.duration,
            dxfer_len=dxfer_len,
        )
        if bounce is not None and direction in (SgDirection.FROM_DEV, SgDirection.TO_FROM_DEV):
            buf, parts = bounce
            pos = 0
            for view in parts:
                if view.readonly:
                    break
                view[:] = buf.raw[pos : pos + len(view)]
                pos += len(view)
        return result

    def reset_device(self) -> None:
        """SG_SCSI_RESET with SG_SCSI_RESET_DEVICE (a LUN reset through the SCSI EH)."""
        arg = bytearray(struct.pack("i", SG_SCSI_RESET_DEVICE))
        try:
            self._ioctl(self.fd, SG_SCSI_RESET, arg)
        except OSError as err:
            raise SgIoError(
                f"{self.path}: device reset failed: {err.strerror or err}", err.errno or errno.EIO
            ) from err


def _cut(views: Sequence[memoryview], length: int) -> list[memoryview]:
    """The leading ``length`` bytes of ``views`` as byte views, empty ones dropped."""
    out: list[memoryview] = []
    left = length
    for view in views:
        if left <= 0:
            break
        flat = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        part = flat[:left]
        if len(part):
            out.append(part)
            left -= len(part)
    return out
