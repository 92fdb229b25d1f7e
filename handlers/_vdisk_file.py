"""The FILEIO and BLOCKIO backing stores of vdisk: a regular file or a block device.

One class serves every SCST mode; the mode only changes how the file is opened and
what flush/FUA do:

=============  =============================================================
FILEIO         page cache, write-back; flush = fdatasync; FUA = RWF_DSYNC
WRITE_THROUGH  opened O_DSYNC: every write is durable before it returns
NV_CACHE       flush and FUA do nothing (SCST's "non-volatile cache": unsafe)
READ_ONLY      opened O_RDONLY; writes and discards fail with EROFS
O_DIRECT       opened O_DIRECT, unaligned requests bounced (``_vdisk_direct``)
BLOCKIO        a block device only, O_DIRECT, size from BLKGETSIZE64
=============  =============================================================

Open-time problems raise :class:`HandlerError` (the device cannot be created);
I/O-time problems raise :class:`BackendError` carrying the errno, which the SBC
layer turns into sense data.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tcmu_scst.command import DataBuffer
from tcmu_scst.errors import HandlerError
from tcmu_scst.scsi.block import BackendError, WouldBlock

from . import _vdisk_sys as sysio
from ._vdisk_direct import DirectIO, pwritev_all

log = logging.getLogger("tcmu_scst.handlers.vdisk")

T = TypeVar("T")

# Alignments tried, smallest first, when probing what O_DIRECT accepts on a file.
_PROBE_ALIGNMENTS = (512, 1024, 2048, 4096)


class _NoWait(threading.local):
    """Per thread: True while the ring thread tries a command without blocking."""

    active = False


class _OwnFd(threading.local):
    """Per thread: its own open of the backing file (see FileBackend._sync_fd)."""

    fd = -1


@dataclass(frozen=True, slots=True)
class FileMode:
    """The SCST flags that change how the backing file is used."""

    read_only: bool = False
    write_through: bool = False
    nv_cache: bool = False
    o_direct: bool = False
    blockio: bool = False

    @property
    def direct(self) -> bool:
        return self.o_direct or self.blockio

    @property
    def syncs_every_write(self) -> bool:
        """SCST: write-through unless the cache is "non-volatile" (opened O_DSYNC)."""
        return self.write_through and not self.nv_cache

    @property
    def open_flags(self) -> int:
        flags = os.O_CLOEXEC | (os.O_RDONLY if self.read_only else os.O_RDWR)
        if self.syncs_every_write:
            flags |= os.O_DSYNC
        return flags


class FileBackend:
    """A :class:`~tcmu_scst.scsi.block.BlockBackend` over a file or block device."""

    def __init__(self, path: str, block_size: int, mode: FileMode, label: str = "") -> None:
        self.path = path
        self.block_size = block_size
        self.mode = mode
        self.label = label or path
        self.is_block_device = False
        self.fd = -1
        self._buffered_fd = -1
        self._direct: DirectIO | None = None
        self._rwf_dsync = hasattr(os, "RWF_DSYNC")
        self._size = 0
        # A failed fdatasync means written-back data may be lost, and Linux reports
        # that once per file (errseq): the next fdatasync succeeds. Every later
        # SYNCHRONIZE CACHE (the promise that all earlier writes are durable, made to
        # whichever initiator asks) fails with this error until the device is
        # reopened, rather than GOOD over data that never reached the disk. A FUA
        # write promises only its own blocks and is not refused.
        self.lost_writeback: BackendError | None = None
        # One flush at a time, so the first failure is recorded before another
        # fdatasync (which Linux may answer 0 once the error is reported) can pass.
        self._flush_lock = threading.Lock()
        self._own = _OwnFd()
        self._own_fds: list[int] = []
        self._own_lock = threading.Lock()
        # The ring thread's attempts (see try_nowait): which operations may be tried
        # without blocking. Cleared for good when the kernel refuses RWF_NOWAIT.
        self._nowait = _NoWait()
        self.memory_backed = False
        self.nowait_reads = self.nowait_writes = False
        self._open()
        if not self.mode.direct:
            self.memory_backed = not self.is_block_device and sysio.memory_backed(path)
            self.nowait_reads = hasattr(os, "RWF_NOWAIT")
            # Page-cache writes that need no sync; most file systems refuse RWF_NOWAIT
            # for buffered writes (EOPNOTSUPP), memory ones need no flag at all.
            self.nowait_writes = (
                self.nowait_reads and not self.mode.read_only and not self.mode.syncs_every_write
            )

    # -- opening ---------------------------------------------------------------

    def _fail(self, why: str) -> HandlerError:
        return HandlerError(f"vdisk {self.label}: {why}")

    def _open(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise self._fail(
                f"backing file {self.path} does not exist; create it "
                f"(e.g. truncate -s 1G {self.path}) or fix the path"
            ) from None
        except OSError as exc:
            raise self._fail(f"cannot stat {self.path}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise self._fail(f"{self.path} is a directory; give a regular file or block device")
        self.is_block_device = stat.S_ISBLK(st.st_mode)
        if not (self.is_block_device or stat.S_ISREG(st.st_mode)):
            raise self._fail(f"{self.path} is neither a regular file nor a block device")
        if self.mode.blockio and not self.is_block_device:
            raise self._fail(
                f"BLOCKIO needs a block device but {self.path} is a regular file; "
                "use FILEIO (handler vdisk_fileio) for files"
            )
        self._buffered_fd = self._open_fd(self.mode.open_flags)
        try:
            if self.mode.direct:
                self.fd = self._open_fd(self.mode.open_flags | os.O_DIRECT)
                self._direct = DirectIO(self.fd, self._buffered_fd, self._direct_alignment(),
                                        block_device=self.is_block_device)
            else:
                self.fd = self._buffered_fd
            self.refresh_size()
            if self._size < self.block_size:
                raise self._fail(
                    f"{self.path} is smaller than one {self.block_size}-byte block; "
                    f"grow it (e.g. truncate -s 1G {self.path})"
                )
        except BaseException:
            self.close()
            raise

    def _open_fd(self, flags: int) -> int:
        try:
            return os.open(self.path, flags)
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise self._fail(
                    f"{self.path} is on a read-only file system; open it READ_ONLY (read_only=1)"
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise self._fail(
                    f"permission denied opening {self.path} "
                    f"{'read-only' if self.mode.read_only else 'read-write'}; "
                    "fix its mode/owner or open it READ_ONLY"
                ) from None
            if exc.errno == errno.EINVAL and flags & os.O_DIRECT:
                raise self._no_direct() from None
            raise self._fail(f"cannot open {self.path}: {exc.strerror}") from None

    def _no_direct(self) -> HandlerError:
        # We refuse rather than fall back to the page cache: the user asked for no
        # caching, and silently caching would change what a crash can lose.
        return self._fail(
            f"the file system holding {self.path} does not support O_DIRECT; "
            "drop O_DIRECT (o_direct=0) or move the file to ext4/xfs"
        )

    def _direct_alignment(self) -> int:
        """The alignment O_DIRECT demands for offsets, lengths and memory."""
        if self.is_block_device:
            try:
                return max(sysio.block_device_sector_size(self.fd), 512)
            except OSError as exc:
                raise self._fail(f"BLKSSZGET on {self.path} failed: {exc.strerror}") from None
        st = os.fstat(self.fd)
        with mmap.mmap(-1, 2 * _PROBE_ALIGNMENTS[-1]) as probe, memoryview(probe) as mv:
            refused = 0
            for align in _PROBE_ALIGNMENTS:
                if st.st_size < 2 * align:
                    break  # too short to tell: the direct read would just hit EOF
                try:
                    os.preadv(self.fd, [mv[:align]], align)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise self._fail(
                            f"O_DIRECT probe read of {self.path} failed: {exc.strerror}"
                        ) from None
                    refused += 1
                    continue
                return align
        if refused == len(_PROBE_ALIGNMENTS):
            raise self._no_direct()
        # A file too small to probe: the file system block size is always accepted.
        return max(st.st_blksize, 512)

    # -- size ------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def direct_alignment(self) -> int:
        """0 without O_DIRECT; else the alignment requests must meet to skip bouncing."""
        return self._direct.align if self._direct else 0

    @property
    def bounced_requests(self) -> int:
        return self._direct.bounced if self._direct else 0

    def refresh_size(self) -> int:
        """Re-read the size of the file or device (online resize); returns it."""
        try:
            if self.is_block_device:
                raw = sysio.block_device_size(self.fd)
            else:
                raw = os.fstat(self.fd).st_size
        except OSError as exc:
            raise self._error("getting the size", exc) from None
        size = raw - raw % self.block_size
        if size != raw:
            log.info(
                "vdisk %s: %s is %d bytes, not a multiple of the %d-byte block size; "
                "the device uses the first %d bytes",
                self.label, self.path, raw, self.block_size, size,
            )
        if self._size and size != self._size:
            log.info("vdisk %s: size changed from %d to %d bytes", self.label, self._size, size)
        self._size = size
        return size

    # -- data ------------------------------------------------------------------

    def _error(self, what: str, exc: OSError) -> BackendError:
        return BackendError(f"{what} on {self.path} failed: {exc.strerror}", exc.errno or errno.EIO)

    # -- the ring thread's non-blocking attempts ------------------------------------

    def try_nowait(self, call: Callable[[], T]) -> T | None:
        """Run ``call`` (one READ or WRITE) without waiting for a device; None if it
        would have to (nothing answered yet: run it again where blocking is fine).

        On a memory file system nothing waits; elsewhere reads use RWF_NOWAIT (the
        page cache, or EAGAIN) and writes too where the kernel supports it.
        """
        if not (self.nowait_reads or self.nowait_writes):
            return None
        self._nowait.active = True
        try:
            return call()
        except WouldBlock:
            return None
        finally:
            self._nowait.active = False

    def transfer_nowait(
        self, offset: int, views: list[memoryview], length: int, writing: bool, fua: bool
    ) -> int | None:
        """One READ or WRITE on the ring thread without waiting for a device (the
        flat path's ``NowaitTransfer``): the bytes moved, or None when it would wait
        or failed; nothing answered then, a worker runs the command again in full."""
        if not self.nowait_allowed(writing, fua):
            return None
        flags = self.nowait_rwf
        try:
            if writing:
                # A short write leaves a prefix written: the retry on a worker writes
                # the same bytes again, in full.
                return os.pwritev(self.fd, views, offset, flags)
            return os.preadv(self.fd, views, offset, flags)
        except OSError as exc:
            self._refused_nowait(exc, writing)  # EOPNOTSUPP: never try again
            return None

    def nowait_allowed(self, writing: bool, durable: bool = False) -> bool:
        """Whether a transfer may be attempted on the ring thread without waiting: the
        kernel takes RWF_NOWAIT for this direction (or the file system is in memory),
        and a write is neither refused (read-only) nor due durable before GOOD (that
        is the worker's fdatasync/RWF_DSYNC path)."""
        if not (self.nowait_writes if writing else self.nowait_reads):
            return False
        return not writing or not (self.mode.read_only or self._needs_sync(durable))

    @property
    def nowait_rwf(self) -> int:
        """The RWF flags of such an attempt: RWF_NOWAIT, or none on a memory file
        system (which never waits for a device)."""
        return 0 if self.memory_backed else os.RWF_NOWAIT

    def _nowait_flags(self, writing: bool) -> int:
        """The extra RWF flags of an attempt on the ring thread; WouldBlock if none may."""
        if not (self.nowait_writes if writing else self.nowait_reads):
            raise WouldBlock
        return self.nowait_rwf

    def _refused_nowait(self, exc: OSError, writing: bool) -> WouldBlock | None:
        """What an OSError of an attempt means: WouldBlock (retry on a worker), or None
        (a real error of the I/O itself)."""
        if exc.errno == errno.EAGAIN:
            return WouldBlock()
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            # Not for this file (system): never try again; this one goes to a worker.
            if writing:
                self.nowait_writes = False
            else:
                self.nowait_reads = False
            log.info("vdisk %s: no RWF_NOWAIT %s on %s (%s): on worker threads",
                     self.label, "writes" if writing else "reads", self.path, exc.strerror)
            return WouldBlock()
        return None

    def _read_nowait(self, offset: int, length: int, views: list[memoryview]) -> int:
        flags = self._nowait_flags(False)
        try:
            got = os.preadv(self.fd, views, offset, flags)
        except OSError as exc:
            blocked = self._refused_nowait(exc, False)
            if blocked is not None:
                raise blocked from None
            raise
        if got < length and flags:
            raise WouldBlock  # partly cached (or the end of the file): a worker finishes
        return got

    # -- data ------------------------------------------------------------------

    def read(self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0) -> None:
        views = buf.slices(buf_offset, length)
        try:
            if self._nowait.active:
                got = self._read_nowait(offset, length, views)
            elif self._direct:
                got = self._direct.read(offset, views)
            else:
                got = DataBuffer(views).preadv(self.fd, offset)
        except OSError as exc:
            raise self._error(f"read of {length} bytes at {offset}", exc) from None
        if got < length:
            # The file shrank under us (the LUN's capacity is its size at open): the
            # blocks past its end are lost, and zeros or stale bytes would pass for
            # data. MEDIUM ERROR names the first missing block.
            DataBuffer(views).fill_zero(got)
            raise BackendError(
                f"read of {length} bytes at {offset} on {self.path}: the file ends at "
                f"{offset + got}, inside the device", errno.EIO, offset=offset + got,
            )

    def write(
        self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0, *, fua: bool = False
    ) -> None:
        self._write(offset, buf.slices(buf_offset, length), fua)

    def write_bytes(self, offset: int, data: bytes, *, fua: bool = False) -> None:
        self._write(offset, [memoryview(data)], fua)

    def read_bytes(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        self.read(offset, length, DataBuffer([memoryview(out)]))
        return bytes(out)

    @property
    def direct(self) -> bool:
        """Opened O_DIRECT (or BLOCKIO): transfers go through DirectIO's alignment."""
        return self._direct is not None

    def _needs_sync(self, fua: bool) -> bool:
        """True when this write must be durable and the open flags do not do it."""
        return fua and not self.mode.nv_cache and not self.mode.write_through

    def _write(self, offset: int, views: Sequence[memoryview], fua: bool) -> None:
        if self.mode.read_only:
            raise BackendError(f"{self.path} is open read-only", errno.EROFS)
        length = sum(len(v) for v in views)
        sync = self._needs_sync(fua)
        if self._nowait.active:
            self._write_nowait(offset, views, length, sync)
            return
        try:
            self._write_once(offset, views, sync)
        except OSError as exc:
            if exc.errno != errno.EIO or not self._checks_write_back(sync):
                raise self._error(f"write of {length} bytes at {offset}", exc) from None
            # The durable write checked the file's write-back errors (errseq) and got
            # one: its own blocks' or an older one of another command's, which Linux
            # reports once to every open file. Write the same bytes again: the check
            # just marked that error seen, so any failure of these blocks now is a new
            # one, and a second success means they are on the disk.
            log.warning("vdisk %s: durable write of %d bytes at %d failed (%s): once more",
                        self.label, length, offset, exc.strerror)
            try:
                self._write_once(offset, views, sync)
            except OSError as again:
                raise self._error(f"write of {length} bytes at {offset}", again) from None

    def _checks_write_back(self, sync: bool) -> bool:
        """True when a write's EIO may be another write's write-back error (errseq):
        a buffered write made durable by O_DSYNC or RWF_DSYNC/fdatasync (O_DIRECT
        writes report their own errors)."""
        return (sync and not self._direct) or self._writes_are_durable()

    def _write_once(self, offset: int, views: Sequence[memoryview], sync: bool) -> None:
        flags = os.RWF_DSYNC if sync and self._rwf_dsync else 0
        try:
            try:
                self._pwrite(offset, views, flags)
            except OSError as exc:
                if not flags or exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                # RWF_DSYNC is refused (old kernel or file system): write, then sync.
                self._rwf_dsync = False
                self._pwrite(offset, views, 0)
                self._fdatasync()
                return
            if sync and not flags:
                self._fdatasync()
        except OSError as exc:
            if flags and exc.errno == errno.EIO:
                # RWF_DSYNC checks the file's write-back errors like fdatasync does:
                # it may have taken one of an earlier write's, now reported once.
                self._record_lost_writeback(exc)
            raise

    def _write_nowait(
        self, offset: int, views: Sequence[memoryview], length: int, sync: bool
    ) -> None:
        if sync:
            raise WouldBlock  # durable before GOOD: fdatasync/RWF_DSYNC wait for the disk
        flags = self._nowait_flags(True)
        try:
            # A short write followed by EAGAIN leaves a prefix written: the retry on a
            # worker writes the same bytes again, in full.
            pwritev_all(self.fd, views, offset, flags)
        except OSError as exc:
            blocked = self._refused_nowait(exc, True)
            if blocked is not None:
                raise blocked from None
            raise self._error(f"write of {length} bytes at {offset}", exc) from None

    def _pwrite(self, offset: int, views: Sequence[memoryview], flags: int) -> None:
        if self._direct:
            self._direct.write(offset, views, flags)
        else:
            pwritev_all(self._sync_fd(), views, offset, flags)

    def _sync_fd(self) -> int:
        """The calling thread's own open of the file, for buffered writes and syncs.

        Linux reports a failed write-back once per open file (errseq: fdatasync and
        O_DSYNC/RWF_DSYNC writes check it), not per page. On one fd shared by worker
        threads, thread B's sync can take the error of thread A's page, and A's sync
        then returns 0 over data that never reached the disk: GOOD for a lost write
        (seen in the lab, FILEIO write-through on a dm device swapped to ``error``).
        An open file of its own per thread sees every error since its own last check.
        O_DIRECT writes report their own errors and keep the shared fd.
        """
        if self._buffered_fd < 0:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))  # closed
        fd = self._own.fd
        if fd < 0:
            # Through /proc: the same file even after a rename or unlink.
            fd = os.open(f"/proc/self/fd/{self._buffered_fd}", self.mode.open_flags)
            with self._own_lock:
                self._own_fds.append(fd)
            self._own.fd = fd
        return fd

    def flush(self, offset: int, length: int) -> None:
        if self.mode.nv_cache:
            return  # SCST NV_CACHE: SYNCHRONIZE CACHE is ignored (violates SCSI)
        with self._flush_lock:
            if self.lost_writeback is not None:
                raise self.lost_writeback
            try:
                # sync_file_range could flush just the range, but it does not flush
                # the file's metadata nor the disk's cache: only fdatasync is durable.
                self._fdatasync()
            except OSError as exc:
                raise self._error("fdatasync", exc) from None

    def _writes_are_durable(self) -> bool:
        """WRITE_THROUGH (without NV_CACHE) on the page cache: every acknowledged write
        was synced on its own, so a flush's EIO names a write already answered with an
        error, or one taken by another open file first (errseq), never a lost one."""
        return not self._direct and self.mode.syncs_every_write

    def _fdatasync(self) -> None:
        fd = self.fd if self._direct else self._sync_fd()
        try:
            os.fdatasync(fd)
        except OSError as exc:
            if exc.errno == errno.EIO and self._writes_are_durable():
                os.fdatasync(fd)  # the error is now seen: only a new one fails this
                return
            self._record_lost_writeback(exc)
            raise

    def _record_lost_writeback(self, exc: OSError) -> None:
        if self.lost_writeback is None:
            log.error("vdisk %s: a write-back check failed (%s): written-back data may be "
                      "lost; SYNCHRONIZE CACHE fails until the device is reopened",
                      self.label, exc.strerror)
            self.lost_writeback = self._error("earlier write-back (fdatasync)", exc)

    def discard(self, offset: int, length: int) -> None:
        if self.mode.read_only:
            raise BackendError(f"{self.path} is open read-only", errno.EROFS)
        try:
            if self._direct:
                a = self._direct.align
                inner0, inner1 = -(-offset // a) * a, (offset + length) - (offset + length) % a
                if inner0 >= inner1:
                    self._pwrite(offset, [memoryview(bytes(length))], 0)
                    return
                # Partial sectors at the ends (a 512-byte block on a 4 KiB-sector
                # device) cannot be deallocated: they are written with zeros.
                if inner0 > offset:
                    self._pwrite(offset, [memoryview(bytes(inner0 - offset))], 0)
                if offset + length > inner1:
                    self._pwrite(inner1, [memoryview(bytes(offset + length - inner1))], 0)
                # A concurrent read-modify-write of a shared unit must not write stale
                # bytes back into the hole.
                with self._direct.locks.hold(inner0, inner1):
                    self._deallocate(inner0, inner1 - inner0)
            else:
                self._deallocate(offset, length)
        except OSError as exc:
            raise self._error(f"discard of {length} bytes at {offset}", exc) from None

    def check_discard(self) -> None:
        """Refuse thin provisioning now if the file system cannot punch holes.

        Punching past the end of the file (KEEP_SIZE) touches no data yet fails
        with EOPNOTSUPP exactly where a real UNMAP would. Block devices need no
        check: without WRITE ZEROES they fall back to writing zeros.
        """
        if self.is_block_device or self.mode.read_only:
            return
        try:
            sysio.punch_hole(self.fd, max(os.fstat(self.fd).st_size, self._size), self.block_size)
        except OSError as exc:
            raise self._fail(
                f"thin_provisioned needs hole punching, which the file system holding "
                f"{self.path} refuses ({exc.strerror}); drop thin_provisioned or move the file"
            ) from None

    def _deallocate(self, offset: int, length: int) -> None:
        try:
            sysio.punch_hole(self.fd, offset, length)
        except OSError as exc:
            # A block device without WRITE ZEROES support: BLKDISCARD would leave
            # old data readable (no zeroing guarantee), so write the zeros instead.
            if not self.is_block_device or exc.errno != errno.EOPNOTSUPP:
                raise
            sysio.zero_range(self.fd, offset, length)

    def mapped(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        if self.is_block_device:
            return [(offset, length, True)]
        try:
            return sysio.data_extents(self.fd, offset, length)
        except OSError as exc:
            raise self._error("SEEK_DATA/SEEK_HOLE", exc) from None

    def prefetch(self, offset: int, length: int) -> None:
        try:
            os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_WILLNEED)
        except OSError as exc:
            raise self._error("posix_fadvise(WILLNEED)", exc) from None

    def close(self) -> None:
        with self._own_lock:
            own, self._own_fds = self._own_fds, []
        for fd in {self.fd, self._buffered_fd, *own}:
            if fd >= 0:
                os.close(fd)
        self.fd = self._buffered_fd = -1
