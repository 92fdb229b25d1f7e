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

Every data operation (also the synchronous ones, which wait for an aio) has a
deadline: ``rados_osd_op_timeout`` plus :data:`DEADLINE_SLACK`
(:mod:`._aio_deadline`). librados fails what it sent with ETIMEDOUT by then; what
librbd still holds (I/O queued for the exclusive lock while the image's watch is
broken) is answered ETIMEDOUT by the deadline and counted as abandoned until librbd
finishes it. The SBC layer answers ETIMEDOUT with ABORTED COMMAND / COMMAND TIMEOUT
DURING PROCESSING (a retryable "state unknown"); other failures carry librbd's errno.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from typing import Any

from tcmu_scst.command import DataBuffer
from tcmu_scst.errors import HandlerError
from tcmu_scst.scsi.block import BackendError

from . import _rbd_binding, rbd_spec
from ._aio_deadline import Deadlines
from .rbd_spec import RbdSpec

log = logging.getLogger("tcmu_scst.handlers.vdisk_rbd")

#: Called once an aio operation ended: ``None`` or the error it ended with.
Done = Callable[[BackendError | None], None]
#: How an operation under a deadline ends: the error (or None), and for a read what
#: places its data (run only when the answer is still ours to give).
Finish = Callable[..., None]

#: How much longer than ``rados_osd_op_timeout`` an operation may take before its
#: deadline answers it: librados' own ETIMEDOUT comes first when it can. Kept small
#: so that the answer comes before the initiator's own timeout (Linux sd: 30 s by
#: default, against our default op timeout of 20 s).
DEADLINE_SLACK = 1.0
#: Seconds between two attempts to replace a client that holds abandoned operations.
RECOVERY_RETRY = 1.0
#: How long an old client stays blocklisted (Ceph's own default expiry is an hour).
BLOCKLIST_SECONDS = 3600


def op_deadline(spec: RbdSpec, who: str) -> float | None:
    """The deadline of one operation on ``spec``'s image; None when the op timeout is 0
    (librados then waits forever, and so do we: the user asked for it)."""
    value = spec.rados_options["rados_osd_op_timeout"]
    try:
        timeout = float(value)
    except ValueError:
        raise HandlerError(f"{who}: rados_osd_op_timeout={value!r} is not a number of "
                           "seconds") from None
    if timeout < 0:
        raise HandlerError(f"{who}: rados_osd_op_timeout={value!r} is negative")
    return timeout + DEADLINE_SLACK if timeout > 0 else None


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
        self.deadlines = Deadlines(op_deadline(self.spec, f"vdisk {label}"), f"vdisk {label}")
        self.label = label
        self.block_size = block_size
        #: Whether librbd caches writes: without its cache a completed write is on the
        #: OSDs already, and FUA needs no flush.
        self.cached = not write_through
        cache = {"rbd_cache": "false" if write_through else "true",
                 # Write-back from the first write: the initiator flushes (WCE=1 says so).
                 "rbd_cache_writethrough_until_flush": "false",
                 "rbd_skip_partial_discard": "false"}
        self._open_args = (read_only, cache)
        self.conn = Connection(self.spec, f"vdisk {label}", read_only=read_only, extra=cache)
        self.image: Any = self.conn.image
        self._size = 0
        self.refresh_size()
        self._closing = threading.Event()
        self._recovery: threading.Thread | None = None
        self._recovery_lock = threading.Lock()
        # The gate (see enter): commands inside the backend, and whether new ones are
        # refused while the client is fenced off and replaced.
        self._gate = threading.Lock()
        self._active = 0
        self._held = False
        # The current client may be blocklisted (a fencing attempt failed half-way):
        # it is never given a command again, only replaced.
        self._fenced = False
        #: Replaced clients whose abandoned operations librbd has not ended yet.
        self.retiring: list[Connection] = []
        self.deadlines.on_abandon = self._start_recovery

    # -- the gate: no command reaches a client that is being fenced off ---------------

    @property
    def busy(self) -> bool:
        """True when I/O is refused (answered BUSY): librbd holds operations the cluster
        never answered, or the client is being replaced."""
        return self._held or self.stalled > 0

    def enter(self) -> bool:
        """Admit one command to the backend (False: refused, see :attr:`busy`); every
        admitted command ends with one :meth:`leave`, when it was answered."""
        with self._gate:
            if self.busy:
                return False
            self._active += 1
            return True

    def leave(self) -> None:
        with self._gate:
            self._active -= 1

    # -- recovery: a client librbd no longer finishes anything on -------------------

    def _start_recovery(self) -> None:
        with self._recovery_lock:
            if self._closing.is_set() or (self._recovery is not None
                                          and self._recovery.is_alive()):
                return
            self._recovery = threading.Thread(target=self._recover, daemon=True,
                                              name=f"rbd-recover-{self.label}")
            self._recovery.start()

    def _recover(self) -> None:
        """Replace the cluster client that holds abandoned operations (tcmu-runner's
        lesson: librbd waits for the image's watch to come back before it retries
        them, and that can be never); a retry every :data:`RECOVERY_RETRY` seconds
        until librbd lets go by itself or :meth:`_replace` succeeds."""
        while not self._closing.wait(RECOVERY_RETRY):
            if not self.stalled and not self._fenced:
                return  # librbd finished them after all: the client is fine
            if self._replace():
                return

    def _replace(self) -> bool:
        """One attempt at replacing the client; True when done (or no longer needed).

        A new client opens the image first. Then, with every command the old client
        was given answered (by librbd or by its deadline; while it holds abandoned
        ones, new commands are refused already), the gate closes: new I/O is answered
        BUSY until the new client serves, so no command is ever sent to a fenced
        client. The old client is blocklisted, and the OSDs know it, before the new
        one serves: a write the old one still holds can never land over a newer one.
        The old client is closed once librbd ended (failed) what it held."""
        read_only, cache = self._open_args
        who = f"vdisk {self.label}"
        try:
            new = Connection(self.spec, who, read_only=read_only, extra=cache)
        except HandlerError as err:
            log.warning("%s: reconnecting: %s", who, err)
            return False
        with self._gate:
            needed = self.stalled > 0 or self._fenced
            fencing = needed and not self._active and not self._closing.is_set()
            self._held = fencing or self._fenced
        if not fencing:
            new.close()
            # librbd let go meanwhile (the old client is fine), or closing; else
            # commands it was given before the first stall are still unanswered.
            return not needed or self._closing.is_set()
        try:
            return self._fence_and_switch(new, who)
        finally:
            with self._gate:
                self._held = self._fenced

    def _fence_and_switch(self, new: Connection, who: str) -> bool:
        old = self.conn
        try:
            address = str(old.cluster.get_addrs())
            self._fenced = True  # from the first blocklist attempt on, whatever follows
            # One address, or a vector "[v2:IP:PORT/NONCE,v1:IP:PORT/NONCE]".
            for one in address.strip("[]").split(","):
                new.cluster.blocklist_add(one, BLOCKLIST_SECONDS)
            new.cluster.wait_for_latest_osdmap()
        except Exception as err:
            log.warning("%s: cannot fence the old client off (osd blocklist add): %s; "
                        "I/O waits for it", who, err)
            new.close()
            return False
        self.conn, self.image = new, new.image
        self._fenced = False
        with self._gate:
            self.retiring.append(old)
        held = self.deadlines.retire_abandoned(lambda: self._close_retired(old))
        log.warning("%s: reconnected to the cluster; the old client (%s) is blocklisted "
                    "for %d s and closed once librbd ended the %d operation(s) it held",
                    who, address, BLOCKLIST_SECONDS, held)
        return True

    def _close_retired(self, old: Connection) -> None:
        """librbd ended every operation a replaced client held: close it, on a thread of
        its own (this runs in librbd's completion callback, where closing the image
        would wait for the callback itself)."""
        with self._gate:
            if old not in self.retiring:
                return
            self.retiring.remove(old)
        threading.Thread(target=self._close_connection, args=(old,), daemon=True,
                         name=f"rbd-close-{self.label}").start()

    def _close_connection(self, conn: Connection) -> None:
        try:
            conn.close()
        except Exception as err:
            log.warning("vdisk %s: closing a replaced client of %s: %s", self.label,
                        self.spec, err)
        else:
            log.info("vdisk %s: closed a replaced client of %s", self.label, self.spec)

    def _error(self, what: str, err: BaseException) -> BackendError:
        return BackendError(f"rbd {self.spec} {what}: {err}", _errno(err))

    @property
    def size(self) -> int:
        return self._size

    def image_size(self) -> int:
        """The image's size now (``rbd resize`` elsewhere), whole blocks only; the size
        served stays until :meth:`refresh_size`."""
        size = int(self.image.size())
        return size - size % self.block_size

    def refresh_size(self) -> int:
        """Re-read the image size (``rbd resize`` elsewhere) and serve it."""
        self._size = self.image_size()
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
        self._wait(lambda done: self.aio_write(offset, data, fua, done))

    def read_bytes(self, offset: int, length: int) -> bytes:
        out = DataBuffer([memoryview(bytearray(length))], length)
        self._wait(lambda done: self.aio_read(offset, length, out, done))
        # librbd returns short reads past the end only; the SBC layer checked the range.
        return bytes(out.views[0])

    def flush(self, offset: int, length: int) -> None:
        self._wait(lambda done: self._start("flush", done, self.image.aio_flush, self._ended))

    def discard(self, offset: int, length: int) -> None:
        self._wait(lambda done: self._start("discard", done, self.image.aio_discard,
                                            self._ended, offset, length))

    def _ended(self, what: str, completion: Any, finish: Finish) -> None:
        finish(self._finish(what, completion))

    def _wait(self, submit: Callable[[Done], None]) -> None:
        """Run an aio operation to its end (or its deadline) on this thread."""
        ended = threading.Event()
        errors: list[BackendError | None] = []

        def done(error: BackendError | None) -> None:
            errors.append(error)
            ended.set()

        submit(done)
        ended.wait()  # the deadline answers when librbd does not
        if errors[0] is not None:
            raise errors[0]

    def _allocated(self, offset: int, length: int, *, whole_object: bool) -> list[tuple[int, int]]:
        """``diff_iterate`` from the beginning of time: ``(start, end)`` of the data in
        the range, sorted, adjacent ones merged."""
        extents: list[tuple[int, int]] = []

        def seen(off: int, n: int, exists: bool) -> int:
            if exists:
                start, end = max(off, offset), min(off + n, offset + length)
                if extents and extents[-1][1] >= start:
                    extents[-1] = (extents[-1][0], max(extents[-1][1], end))
                elif end > start:
                    extents.append((start, end))
            return 0

        try:
            self.image.diff_iterate(offset, length, None, seen, whole_object=whole_object)
        except Exception as err:
            raise self._error("allocation map", err) from None
        return extents

    def mapped(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        # librbd looks at every object of the range for the precise extents (a
        # round trip to the OSD each, empty or not: 43 ms for 64 objects in the lab,
        # and GET LBA STATUS asks from its LBA to the end of the image). With
        # whole_object it reads the object map instead (fast-diff: 0.9 ms for the
        # same 64): the objects that may hold data, a superset, so the precise pass
        # over those alone gives the same answer.
        extents: list[tuple[int, int]] = []
        for start, end in self._allocated(offset, length, whole_object=True):
            extents += self._allocated(start, end - start, whole_object=False)
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

    @property
    def stalled(self) -> int:
        """Operations answered by their deadline that librbd still holds."""
        return self.deadlines.abandoned

    def _finish(self, what: str, completion: Any) -> BackendError | None:
        ret = int(completion.get_return_value())
        if ret >= 0:
            return None
        err = OSError(-ret, errno.errorcode.get(-ret, "error"))
        return BackendError(f"rbd {self.spec} {what}: {err}", -ret)

    def aio_read(self, offset: int, length: int, buf: DataBuffer, done: Done) -> None:
        """Read into ``buf``; ``done`` runs on a librbd thread when it ended, or on the
        watchdog's at the deadline (then ``buf`` is never written: it is the ring's)."""

        def complete(what: str, completion: Any, finish: Finish,
                     data: bytes | None = None) -> None:
            error = self._finish(what, completion)
            finish(error, lambda: buf.write(bytes(data or b"").ljust(length, b"\0"), 0))

        self._start("read", done, self.image.aio_read, complete, offset, length)

    def aio_write(self, offset: int, data: bytes, fua: bool, done: Done) -> None:
        """Write ``data``; with ``fua`` a flush follows (when cached) before ``done`` runs.
        One deadline covers both."""
        fua = fua and self.cached

        def written(what: str, completion: Any, finish: Finish) -> None:
            error = self._finish(what, completion)
            if error is not None or not fua:
                finish(error)
                return

            def flushed(flush_completion: Any) -> None:
                finish(self._finish("flush", flush_completion))

            self._submit("flush", finish, self.image.aio_flush, flushed)

        self._start("write", done, self.image.aio_write, written, data, offset)

    def _start(self, what: str, done: Done, call: Callable[..., Any],
               complete: Callable[..., None], *args: Any) -> None:
        """Submit ``call(*args, callback)`` under a deadline. librbd's callback runs
        ``complete(what, completion, finish, *data)``, which ends with one
        ``finish(error[, fill])``: that answers with ``done`` (after ``fill()``, which
        places read data) unless the deadline answered first."""
        timeout = self.deadlines.timeout

        def expired() -> None:
            err = OSError(errno.ETIMEDOUT, f"no answer from the cluster within {timeout:g} s")
            done(BackendError(f"rbd {self.spec} {what}: {err}", errno.ETIMEDOUT))

        op = self.deadlines.start(expired)

        def finish(error: BackendError | None, fill: Callable[[], object] | None = None) -> None:
            if not op.claim():
                return  # answered by the deadline; librbd's own buffer is dropped
            if error is None and fill is not None:
                fill()
            done(error)

        def callback(completion: Any, *data: Any) -> None:
            try:
                complete(what, completion, finish, *data)
            except Exception as err:  # librbd's thread swallows exceptions: answer
                log.exception("vdisk %s: completing %s failed", self.label, what)
                finish(self._error(what, err))

        self._submit(what, finish, call, *args, callback)

    def _submit(self, what: str, done: Done, call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args)
        except Exception as err:
            done(self._error(what, err))

    def close(self) -> None:
        """Final flush (bounded), then close the image and the connection; a client
        that holds abandoned operations is left open instead (:func:`_leave_open`)."""
        self._closing.set()
        with self._recovery_lock:
            recovery = self._recovery
        if recovery is not None:
            recovery.join()
        if not self.stalled:
            try:
                self.flush(0, 0)
            except BackendError as err:
                log.warning("vdisk %s: final flush of %s failed: %s", self.label, self.spec,
                            err)
        self.deadlines.close()
        with self._gate:
            retiring, self.retiring = self.retiring, []
        for old in retiring:
            _leave_open(old, f"vdisk {self.label}: a replaced client of {self.spec}", None)
        if self.stalled:
            _leave_open(self.conn, f"vdisk {self.label}: {self.spec}", self.stalled)
        else:
            self.conn.close()


#: Clients never closed, kept referenced for the life of the process (see _leave_open).
_LEFT_OPEN: list[Connection] = []


def _leave_open(conn: Connection, what: str, held: int | None) -> None:
    """Keep ``conn`` open for good. librbd's close waits for the operations it holds,
    as long as the cluster is away, and Ceph 16.2's librbd aborts the process
    (``ceph_assert(!m_on_dispatches.empty())`` in exclusive_lock::ImageDispatch, seen
    in the lab) when an image with a lock acquisition still pending is closed once
    the cluster answers again. Dropping the last reference would close it too."""
    _LEFT_OPEN.append(conn)
    log.warning("%s: librbd holds %s operation(s) the cluster never answered; its client "
                "is left open (closing it could hang or abort librbd)", what,
                "some" if held is None else held)
