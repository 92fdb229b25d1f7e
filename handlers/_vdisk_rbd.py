"""The vdisk_rbd backing store: an image in a Ceph cluster, through librbd.

One cluster connection (``rados.Rados``), one pool context and one open image per
device. The synchronous calls here serve everything but the plain READ/WRITE data
path (which ``vdisk_rbd`` runs on librbd's aio, see :meth:`RbdBackend.aio_read`):

==================  ===========================================================
write-back          librbd cache on (``rbd_cache``); flush = ``rbd_flush``
WRITE_THROUGH       librbd cache off: a write completes once the OSDs have it
FUA                 the write, then a flush (librbd has no per-write FUA)
discard             ``rbd_discard`` with ``rbd_skip_partial_discard=false``, so a
                    range smaller than an object is zeroed, not skipped: an
                    unmapped block reads as zeros (LBPRZ)
GET LBA STATUS      ``diff_iterate`` from the beginning of time: allocated extents
==================  ===========================================================

Failures carry the errno librbd reports; a cluster that does not answer within
``rados_osd_op_timeout`` gives ETIMEDOUT, which the SBC layer answers with NOT READY
(a retryable state transition) rather than a medium error.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import Any

from tcmu_scst.command import DataBuffer
from tcmu_scst.errors import HandlerError
from tcmu_scst.scsi.block import BackendError

from . import _rbd_binding, rbd_spec
from .rbd_spec import RbdSpec

log = logging.getLogger("tcmu_scst.handlers.vdisk_rbd")

#: Called once an aio operation ended: ``None`` or the error it ended with.
Done = Callable[[BackendError | None], None]


def _errno(err: BaseException) -> int:
    code = getattr(err, "errno", None)
    return code if isinstance(code, int) and code > 0 else errno.EIO


class Connection:
    """A connected cluster handle and an open image (closed by :meth:`close`)."""

    def __init__(self, spec: RbdSpec, who: str, *, read_only: bool,
                 extra: dict[str, str] | None = None) -> None:
        rados, rbd = _rbd_binding.load()
        self.rados, self.rbd = rados, rbd
        conf = {**spec.rados_options, **(extra or {})}
        self.cluster: Any = None
        self.ioctx: Any = None
        self.image: Any = None
        where = f"{who}: {rbd_spec.PREFIX}{spec}"
        try:
            self.cluster = rados.Rados(conffile=spec.conf or None,
                                       rados_id=spec.user or None, conf=conf)
        except Exception as err:
            raise HandlerError(f"{where}: cannot read the Ceph configuration "
                               f"{spec.conf or '(default search)'}: {err}") from None
        try:
            self.cluster.connect()
        except Exception as err:
            self.close()
            raise HandlerError(f"{where}: cannot connect to the Ceph cluster: {err}") from None
        try:
            self.ioctx = self.cluster.open_ioctx(spec.pool)
        except rados.ObjectNotFound:
            self.close()
            raise HandlerError(f"{where}: the cluster has no pool {spec.pool!r}") from None
        except Exception as err:
            self.close()
            raise HandlerError(f"{where}: cannot open pool {spec.pool!r}: {err}") from None
        try:
            self.image = rbd.Image(self.ioctx, spec.image, read_only=read_only)
        except rbd.ImageNotFound:
            self.close()
            raise HandlerError(
                f"{where}: pool {spec.pool!r} has no image {spec.image!r}; create it "
                f"(rbd create --size 1G {spec})"
            ) from None
        except Exception as err:
            self.close()
            raise HandlerError(f"{where}: cannot open image: {err}") from None

    def close(self) -> None:
        for obj in (self.image, self.ioctx):
            if obj is not None:
                try:
                    obj.close()
                except Exception as err:
                    log.warning("closing %r: %s", obj, err)
        self.image = self.ioctx = None
        if self.cluster is not None:
            self.cluster.shutdown()
            self.cluster = None


def probe_size(filename: str, who: str) -> int:
    """Connect, open the image read-only and return its size (``config check``)."""
    conn = Connection(rbd_spec.parse(filename, who), who, read_only=True)
    try:
        return int(conn.image.size())
    finally:
        conn.close()


class RbdBackend:
    """A :class:`~tcmu_scst.scsi.block.BlockBackend` over one RBD image."""

    def __init__(self, filename: str, block_size: int, *, read_only: bool,
                 write_through: bool, label: str) -> None:
        self.spec = rbd_spec.parse(filename, f"vdisk {label}")
        self.label = label
        self.block_size = block_size
        #: Whether librbd caches writes: without its cache a completed write is on the
        #: OSDs already, and FUA needs no flush.
        self.cached = not write_through
        cache = {"rbd_cache": "false" if write_through else "true",
                 # Write-back from the first write: the initiator flushes (WCE=1 says so).
                 "rbd_cache_writethrough_until_flush": "false",
                 "rbd_skip_partial_discard": "false"}
        self.conn = Connection(self.spec, f"vdisk {label}", read_only=read_only, extra=cache)
        self.image: Any = self.conn.image
        self._size = 0
        self.refresh_size()

    def _error(self, what: str, err: BaseException) -> BackendError:
        return BackendError(f"rbd {self.spec} {what}: {err}", _errno(err))

    @property
    def size(self) -> int:
        return self._size

    def refresh_size(self) -> int:
        """Re-read the image size (``rbd resize`` elsewhere); whole blocks only."""
        size = int(self.image.size())
        self._size = size - size % self.block_size
        return self._size

    def grow(self, size: int) -> int:
        """Resize the image to ``size`` bytes (RECONFIG dev_size larger than the image)."""
        try:
            self.image.resize(size)
        except Exception as err:
            raise HandlerError(f"vdisk {self.label}: cannot grow {self.spec} to {size} bytes: "
                               f"{err}") from None
        return self.refresh_size()

    # -- synchronous (BlockBackend) ------------------------------------------------

    def read(self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0) -> None:
        buf.write(self.read_bytes(offset, length), buf_offset)

    def write(
        self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0, *, fua: bool = False
    ) -> None:
        self.write_bytes(offset, buf.read(buf_offset, length), fua=fua)

    def write_bytes(self, offset: int, data: bytes, *, fua: bool = False) -> None:
        try:
            self.image.write(data, offset)
            if fua and self.cached:
                self.image.flush()
        except Exception as err:
            raise self._error("write", err) from None

    def read_bytes(self, offset: int, length: int) -> bytes:
        try:
            data = bytes(self.image.read(offset, length))
        except Exception as err:
            raise self._error("read", err) from None
        # librbd returns short reads past the end only; the SBC layer checked the range.
        return data.ljust(length, b"\0")

    def flush(self, offset: int, length: int) -> None:
        try:
            self.image.flush()
        except Exception as err:
            raise self._error("flush", err) from None

    def discard(self, offset: int, length: int) -> None:
        try:
            self.image.discard(offset, length)
        except Exception as err:
            raise self._error("discard", err) from None

    def mapped(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        extents: list[tuple[int, int]] = []

        def seen(off: int, n: int, exists: bool) -> int:
            if exists:
                extents.append((max(off, offset), min(off + n, offset + length)))
            return 0

        try:
            self.image.diff_iterate(offset, length, None, seen)
        except Exception as err:
            raise self._error("allocation map", err) from None
        out: list[tuple[int, int, bool]] = []
        pos = offset
        for start, end in sorted(extents):
            if start > pos:
                out.append((pos, start - pos, False))
            if end > max(start, pos):
                out.append((max(start, pos), end - max(start, pos), True))
                pos = end
        if pos < offset + length:
            out.append((pos, offset + length - pos, False))
        return out

    def prefetch(self, offset: int, length: int) -> None:
        pass  # the librbd cache has no read-ahead call; PRE-FETCH is a hint

    # -- asynchronous (the plain READ/WRITE path) ----------------------------------

    def _finish(self, what: str, completion: Any) -> BackendError | None:
        ret = int(completion.get_return_value())
        if ret >= 0:
            return None
        err = OSError(-ret, errno.errorcode.get(-ret, "error"))
        return BackendError(f"rbd {self.spec} {what}: {err}", -ret)

    def aio_read(self, offset: int, length: int, buf: DataBuffer, done: Done) -> None:
        """Read into ``buf``; ``done`` runs on a librbd thread when it ended."""

        def complete(completion: Any, data: bytes | None) -> None:
            error = self._finish("read", completion)
            if error is None:
                buf.write(bytes(data or b"").ljust(length, b"\0"), 0)
            done(error)

        self._submit("read", done, self.image.aio_read, offset, length, complete)

    def aio_write(self, offset: int, data: bytes, fua: bool, done: Done) -> None:
        """Write ``data``; with ``fua`` a flush follows (when cached) before ``done`` runs."""
        fua = fua and self.cached

        def flushed(completion: Any) -> None:
            done(self._finish("flush", completion))

        def written(completion: Any) -> None:
            error = self._finish("write", completion)
            if error is not None or not fua:
                done(error)
            else:
                self._submit("flush", done, self.image.aio_flush, flushed)

        self._submit("write", done, self.image.aio_write, data, offset, written)

    def _submit(self, what: str, done: Done, call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args)
        except Exception as err:
            done(self._error(what, err))

    def close(self) -> None:
        try:
            self.image.flush()
        except Exception as err:
            log.warning("vdisk %s: final flush of %s failed: %s", self.label, self.spec, err)
        self.conn.close()
