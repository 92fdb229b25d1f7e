"""vdisk backing stores on real files: each SCST mode's semantics and every open error."""

from __future__ import annotations

import concurrent.futures
import errno
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tcmu_scst.command import DataBuffer
from tcmu_scst.errors import HandlerError
from tcmu_scst.handlers._vdisk_file import FileBackend, FileMode
from tcmu_scst.handlers._vdisk_null import NullBackend
from tcmu_scst.handlers.vdisk import VdiskParams, open_backend
from tcmu_scst.handlers.vdisk_params import NULLIO_DEFAULT_SIZE
from tcmu_scst.scsi.block import BackendError

MiB = 1 << 20


def make_file(tmp_path: Path, size: int = MiB, name: str = "disk.img") -> str:
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def scattered(data: bytes, cuts: tuple[int, ...] = (100, 700)) -> DataBuffer:
    """A DataBuffer over several bytearray segments holding ``data``."""
    views: list[memoryview] = []
    prev = 0
    for cut in [*cuts, len(data)]:
        views.append(memoryview(bytearray(data[prev:cut])))
        prev = cut
    return DataBuffer(views)


def spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[Any, ...]]:
    """Record the calls of ``os.<name>`` while still calling it."""
    calls: list[tuple[Any, ...]] = []
    real: Callable[..., Any] = getattr(os, name)

    def wrapper(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(os, name, wrapper)
    return calls


# -- FILEIO ---------------------------------------------------------------------------


def test_fileio_round_trip_through_scattered_buffers(tmp_path: Path) -> None:
    path = make_file(tmp_path)
    backend = FileBackend(path, 512, FileMode())
    data = os.urandom(1536)
    backend.write(4096, 1536, scattered(data))
    out = DataBuffer([memoryview(bytearray(1000)), memoryview(bytearray(536))])
    backend.read(4096, 1536, out)
    assert out.read() == data
    backend.flush(0, 0)
    backend.close()
    with open(path, "rb") as f:
        f.seek(4096)
        assert f.read(1536) == data


def test_fileio_write_and_read_at_buffer_offset(tmp_path: Path) -> None:
    backend = FileBackend(make_file(tmp_path), 512, FileMode())
    buf = DataBuffer([memoryview(bytearray(b"x" * 512 + b"y" * 512))])
    backend.write(0, 512, buf, 512)
    assert backend.read_bytes(0, 512) == b"y" * 512
    backend.write_bytes(512, b"z" * 512)
    out = DataBuffer([memoryview(bytearray(1024))])
    backend.read(512, 512, out, 512)
    assert out.read(512, 512) == b"z" * 512 and out.read(0, 512) == bytes(512)
    backend.close()


def test_fileio_is_write_back_and_fua_uses_rwf_dsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = FileBackend(make_file(tmp_path), 512, FileMode())
    assert not fcntl.fcntl(backend.fd, fcntl.F_GETFL) & os.O_DSYNC
    calls = spy(monkeypatch, "pwritev")
    backend.write_bytes(0, b"a" * 512)
    backend.write_bytes(512, b"b" * 512, fua=True)
    assert calls[0][3] == 0
    assert calls[1][3] & os.RWF_DSYNC
    backend.close()


def test_fua_falls_back_to_fdatasync_when_rwf_dsync_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = FileBackend(make_file(tmp_path), 512, FileMode())
    real_pwritev = os.pwritev

    def old_kernel_pwritev(fd: int, bufs: Any, offset: int, flags: int = 0) -> int:
        if flags:
            raise OSError(errno.EOPNOTSUPP, "not supported")
        return real_pwritev(fd, bufs, offset)

    monkeypatch.setattr(os, "pwritev", old_kernel_pwritev)
    syncs = spy(monkeypatch, "fdatasync")
    backend.write_bytes(0, b"c" * 512, fua=True)
    assert syncs == [(backend._sync_fd(),)]
    backend.write_bytes(512, b"d" * 512, fua=True)  # remembered: straight to the sync
    assert len(syncs) == 2
    assert backend.read_bytes(0, 1024) == b"c" * 512 + b"d" * 512
    backend.close()


def test_flush_is_fdatasync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FileBackend(make_file(tmp_path), 512, FileMode())
    syncs = spy(monkeypatch, "fdatasync")
    backend.flush(0, 4096)
    assert syncs == [(backend._sync_fd(),)]
    backend.close()


def test_a_lost_write_back_fails_every_later_synchronize_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Linux reports a failed write-back once per file (errseq): the second fdatasync
    # succeeds although the data is gone. The backend keeps failing SYNCHRONIZE CACHE.
    backend = FileBackend(make_file(tmp_path), 512, FileMode())
    results = iter([OSError(errno.EIO, "Input/output error")])

    def fdatasync(fd: int) -> None:
        err = next(results, None)
        if err is not None:
            raise err

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    backend.write(0, 512, scattered(b"x" * 512), 0)
    for _ in range(3):
        with pytest.raises(BackendError) as info:
            backend.flush(0, 512)
        assert info.value.errno == errno.EIO
        assert "fdatasync" in str(info.value)
    backend.write(0, 512, scattered(b"y" * 512), 0, fua=True)  # its own blocks: durable
    backend.close()
    reopened = FileBackend(backend.path, 512, FileMode())
    reopened.flush(0, 512)  # a reopen (dev_config swap, restart) clears it
    reopened.close()


def in_thread(call: Callable[[], Any]) -> Any:
    """``call()`` on a new thread; its result (or exception, raised here)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def test_each_thread_writes_and_syncs_through_its_own_open_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: write-back errors are reported once per open file, so worker threads
    must not share one (see the next test). Each gets its own open of the same file,
    which survives the file's unlink."""
    path = make_file(tmp_path)
    backend = FileBackend(path, 512, FileMode(write_through=True))
    syncs = spy(monkeypatch, "fdatasync")
    writes = spy(monkeypatch, "pwritev")
    fds = [in_thread(backend._sync_fd) for _ in range(2)]
    assert len({backend.fd, *fds}) == 3
    for fd in fds:
        assert os.fstat(fd).st_ino == os.fstat(backend.fd).st_ino
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DSYNC  # the same open flags
    os.lseek(fds[0], 4096, os.SEEK_SET)  # its own open file description, not a dup
    assert os.lseek(fds[1], 0, os.SEEK_CUR) == 0
    os.unlink(path)
    in_thread(lambda: backend.write_bytes(512, b"t" * 512))
    in_thread(lambda: backend.flush(0, 0))
    assert writes[0][0] not in (backend.fd, *fds) and syncs[0][0] not in (backend.fd, *fds)
    assert backend.read_bytes(512, 512) == b"t" * 512
    backend.close()
    for fd in [*fds, writes[0][0]]:
        with pytest.raises(OSError):
            os.fstat(fd)  # closed with the backend


class ErrseqKernel:
    """A fake of Linux's write-back error reporting for O_DSYNC writes and fdatasync:
    one error sequence per file (errseq), one cursor per open file. A durable write
    to a failing range does not reach the disk and bumps the sequence; every open
    file whose cursor is behind gets EIO once, whichever blocks failed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing: range = range(0)
        self.errseq = 0
        self.cursor: dict[int, int] = {}
        self.writes: list[tuple[int, int]] = []
        self._real_pwritev = os.pwritev
        monkeypatch.setattr(os, "pwritev", self.pwritev)
        monkeypatch.setattr(os, "fdatasync", self.check)

    def pwritev(self, fd: int, bufs: Any, offset: int, flags: int = 0) -> int:
        self.writes.append((fd, offset))
        if not (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DSYNC or flags & os.RWF_DSYNC):
            return self._real_pwritev(fd, bufs, offset, flags)
        if offset in self.failing:
            self.errseq += 1  # write-back of these blocks failed: not on the disk
            done = sum(len(b) for b in bufs)
        else:
            done = self._real_pwritev(fd, bufs, offset, flags & ~os.RWF_DSYNC)
        self.check(fd)
        return done

    def check(self, fd: int) -> None:
        if self.cursor.setdefault(fd, 0) != self.errseq:
            self.cursor[fd] = self.errseq
            raise OSError(errno.EIO, "Input/output error")


def test_a_write_back_error_fails_its_own_write_not_the_next_one_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14, seen in the lab (FILEIO write-through on dm-error): Linux reports a
    failed write-back once to every open file (errseq), so a worker thread's next
    durable write gets EIO for another command's blocks. Its bytes are written again:
    GOOD only when the second durable write passes, so a write whose own blocks fail
    keeps its MEDIUM ERROR and a write elsewhere is not failed for another's error."""
    backend = FileBackend(make_file(tmp_path), 512, FileMode(write_through=True))
    kernel = ErrseqKernel(monkeypatch)
    with (concurrent.futures.ThreadPoolExecutor(1) as a,
          concurrent.futures.ThreadPoolExecutor(1) as b):  # fmt: skip
        for thread, lba in ((a, 0), (b, 8)):
            thread.submit(backend.write_bytes, lba * 512, b"1" * 4096).result()
        kernel.failing = range(0, 4096)
        with pytest.raises(BackendError) as info:
            a.submit(backend.write_bytes, 0, b"2" * 4096).result()
        assert info.value.errno == errno.EIO
        assert len(kernel.writes) == 2 + 2  # its own blocks failed twice
        assert backend.read_bytes(0, 4096) == b"1" * 4096  # and never landed
        b.submit(backend.write_bytes, 8 * 512, b"2" * 4096).result()  # A's error, then GOOD
        assert len(kernel.writes) == 4 + 2
        b.submit(backend.write_bytes, 8 * 512, b"3" * 4096).result()
        assert len(kernel.writes) == 6 + 1  # nothing left to report: one write
        kernel.failing = range(0)
        a.submit(backend.write_bytes, 0, b"3" * 4096).result()
    assert backend.read_bytes(0, 8192) == b"3" * 8192
    assert backend.lost_writeback is None
    backend.close()


def test_write_through_flush_passes_over_an_error_already_reported_to_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WRITE_THROUGH: every acknowledged write was durable on its own, so the error a
    flush's fdatasync takes from errseq belongs to a write already failed (or to one
    whose thread sees it too). SYNCHRONIZE CACHE stays GOOD; a new error still fails."""
    backend = FileBackend(make_file(tmp_path), 512, FileMode(write_through=True))
    kernel = ErrseqKernel(monkeypatch)
    kernel.failing = range(0, 512)
    with pytest.raises(BackendError):
        in_thread(lambda: backend.write_bytes(0, b"x" * 512))
    in_thread(lambda: backend.flush(0, 0))
    assert backend.lost_writeback is None

    def error_on_every_check(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", error_on_every_check)
    with pytest.raises(BackendError) as info:
        backend.flush(0, 0)
    assert "fdatasync" in str(info.value)
    backend.close()


def test_write_through_opens_with_o_dsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FileBackend(make_file(tmp_path), 512, FileMode(write_through=True))
    assert fcntl.fcntl(backend.fd, fcntl.F_GETFL) & os.O_DSYNC
    calls = spy(monkeypatch, "pwritev")
    backend.write_bytes(0, b"w" * 512, fua=True)
    assert calls[0][3] == 0  # O_DSYNC already makes it durable
    assert backend.read_bytes(0, 512) == b"w" * 512
    backend.close()


def test_nv_cache_makes_flush_and_fua_no_ops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = FileBackend(make_file(tmp_path), 512, FileMode(nv_cache=True, write_through=True))
    assert not fcntl.fcntl(backend.fd, fcntl.F_GETFL) & os.O_DSYNC  # SCST: WT && !NV
    syncs = spy(monkeypatch, "fdatasync")
    calls = spy(monkeypatch, "pwritev")
    backend.write_bytes(0, b"n" * 512, fua=True)
    backend.flush(0, 0)
    assert syncs == []
    assert calls[0][3] == 0
    backend.close()


def test_read_only_opens_o_rdonly_and_refuses_writes(tmp_path: Path) -> None:
    path = make_file(tmp_path)
    with open(path, "r+b") as f:
        f.write(b"keep" * 128)
    backend = FileBackend(path, 512, FileMode(read_only=True))
    assert fcntl.fcntl(backend.fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    with pytest.raises(BackendError) as info:
        backend.write_bytes(0, b"x" * 512)
    assert info.value.errno == errno.EROFS
    with pytest.raises(BackendError) as info:
        backend.discard(0, 512)
    assert info.value.errno == errno.EROFS
    assert backend.read_bytes(0, 512) == b"keep" * 128
    backend.close()


def test_read_only_opens_a_file_without_write_permission(tmp_path: Path) -> None:
    path = make_file(tmp_path)
    os.chmod(path, 0o444)
    backend = FileBackend(path, 512, FileMode(read_only=True))
    assert backend.size == MiB
    backend.close()


@pytest.mark.parametrize("o_direct", [False, True])
def test_read_past_a_shrunk_file_is_an_error_naming_where_it_ends(
    tmp_path: Path, o_direct: bool
) -> None:
    """Issue 14: the file cut under the LUN; before, the missing blocks read as zeros
    with GOOD, silently. Now an EIO BackendError with the offset where the file ends
    (MEDIUM ERROR with that LBA), and no stale byte left in the buffer."""
    path = make_file(tmp_path, 16384)
    Path(path).write_bytes(os.urandom(16384))
    backend = FileBackend(path, 512, FileMode(o_direct=o_direct))
    os.truncate(path, 4096)
    for offset, length in ((0, 8192), (4096, 4096), (5120, 512)):
        out = DataBuffer([memoryview(bytearray(b"\xaa" * length))])
        with pytest.raises(BackendError, match="the file ends at") as info:
            backend.read(offset, length, out)
        assert info.value.errno == errno.EIO and info.value.offset == max(offset, 4096)
        expected = Path(path).read_bytes()[offset : offset + length]
        assert out.read() == expected + bytes(length - len(expected))
    assert backend.read_bytes(0, 4096) == Path(path).read_bytes()  # what is there still reads
    backend.close()


def test_io_errors_become_backend_errors_with_errno(tmp_path: Path) -> None:
    backend = FileBackend(make_file(tmp_path), 512, FileMode())
    fd = backend.fd
    os.close(fd)
    with pytest.raises(BackendError, match="read of 512 bytes at 0") as info:
        backend.read_bytes(0, 512)
    assert info.value.errno == errno.EBADF
    with pytest.raises(BackendError) as info:
        backend.write_bytes(0, bytes(512))
    assert info.value.errno == errno.ENOENT  # this thread's own open of a closed fd
    with pytest.raises(BackendError, match="fdatasync"):
        backend.flush(0, 0)
    backend.fd = backend._buffered_fd = -1  # already closed above
    backend.close()
    with pytest.raises(BackendError) as info:
        backend.write_bytes(0, bytes(512))
    assert info.value.errno == errno.EBADF


def test_prefetch_accepts_a_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FileBackend(make_file(tmp_path), 512, FileMode())
    calls = spy(monkeypatch, "posix_fadvise")
    backend.prefetch(0, 65536)
    assert calls == [(backend.fd, 0, 65536, os.POSIX_FADV_WILLNEED)]
    backend.close()


# -- size -----------------------------------------------------------------------------


def test_size_is_rounded_down_to_the_block_size_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tcmu_scst.handlers.vdisk")
    backend = FileBackend(make_file(tmp_path, 10000), 4096, FileMode(), label="d1")
    assert backend.size == 8192
    assert "not a multiple of the 4096-byte block size" in caplog.text
    backend.close()


def test_refresh_size_follows_an_online_resize(tmp_path: Path) -> None:
    path = make_file(tmp_path, MiB)
    backend = FileBackend(path, 512, FileMode())
    os.truncate(path, 2 * MiB + 100)
    assert backend.size == MiB
    assert backend.refresh_size() == 2 * MiB
    assert backend.size == 2 * MiB
    backend.close()


# -- thin provisioning ----------------------------------------------------------------------


def test_discard_punches_a_hole_that_reads_as_zeros(tmp_path: Path) -> None:
    path = make_file(tmp_path, 4 * MiB)
    backend = FileBackend(path, 512, FileMode())
    data = os.urandom(4 * MiB)
    backend.write_bytes(0, data)
    backend.flush(0, 0)
    before = os.stat(path).st_blocks
    backend.discard(MiB, 2 * MiB)
    assert os.stat(path).st_blocks < before
    assert os.stat(path).st_size == 4 * MiB  # KEEP_SIZE
    assert backend.read_bytes(MiB, 2 * MiB) == bytes(2 * MiB)
    assert backend.read_bytes(0, MiB) == data[:MiB]
    assert backend.read_bytes(3 * MiB, MiB) == data[3 * MiB :]
    extents = backend.mapped(0, 4 * MiB)
    assert extents == [(0, MiB, True), (MiB, 2 * MiB, False), (3 * MiB, MiB, True)]
    backend.close()


def test_mapped_reports_a_sparse_file(tmp_path: Path) -> None:
    path = make_file(tmp_path, 4 * MiB)
    backend = FileBackend(path, 512, FileMode())
    assert backend.mapped(0, 4 * MiB) == [(0, 4 * MiB, False)]
    backend.write_bytes(2 * MiB, b"\1" * 4096)
    assert backend.mapped(MiB, 2 * MiB) == [
        (MiB, MiB, False), (2 * MiB, 4096, True), (2 * MiB + 4096, MiB - 4096, False)
    ]
    backend.close()


# -- NULLIO ----------------------------------------------------------------------------------


def test_nullio_reads_zeros_into_a_dirty_buffer() -> None:
    backend = NullBackend(MiB)
    out = DataBuffer([memoryview(bytearray(b"\xff" * 700)), memoryview(bytearray(b"\xee" * 324))])
    backend.write_bytes(0, b"q" * 1024)
    backend.read(0, 1024, out)
    assert out.read() == bytes(1024)
    assert backend.read_bytes(0, 512) == bytes(512)
    assert backend.mapped(0, 512) == [(0, 512, True)]


def test_nullio_reads_zeros_only_in_the_asked_part() -> None:
    out = DataBuffer([memoryview(bytearray(b"\xff" * 1024))])
    NullBackend(MiB).read(0, 512, out, 256)
    assert out.read() == b"\xff" * 256 + bytes(512) + b"\xff" * 256


def test_nullio_size_defaults_to_scst_and_is_rounded() -> None:
    assert NullBackend().size == NULLIO_DEFAULT_SIZE == 5 * 2**40 // 2
    assert NullBackend(10000, 4096).size == 8192
    backend = open_backend(VdiskParams(name="n", nullio=True, size=MiB))
    assert isinstance(backend, NullBackend) and backend.size == MiB


# -- open errors ---------------------------------------------------------------------------


def test_missing_file_is_a_clear_handler_error(tmp_path: Path) -> None:
    with pytest.raises(HandlerError, match=r"vdisk d1: backing file .*nope does not exist"):
        FileBackend(str(tmp_path / "nope"), 512, FileMode(), label="d1")


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HandlerError, match="is a directory; give a regular file or block dev"):
        FileBackend(str(tmp_path), 512, FileMode())


def test_character_device_is_refused() -> None:
    with pytest.raises(HandlerError, match="neither a regular file nor a block device"):
        FileBackend("/dev/null", 512, FileMode())


def test_blockio_on_a_regular_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HandlerError, match=r"BLOCKIO needs a block device but .* regular file"):
        FileBackend(make_file(tmp_path), 512, FileMode(blockio=True))


def test_file_smaller_than_a_block_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HandlerError, match="smaller than one 4096-byte block"):
        FileBackend(make_file(tmp_path, 4095), 4096, FileMode())


def test_o_direct_refused_by_the_file_system_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What tmpfs before Linux 6.6 does: open(O_DIRECT) fails with EINVAL.
    real_open = os.open

    def no_direct_open(path: str, flags: int, *args: Any) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct_open)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(HandlerError, match="does not support O_DIRECT; drop O_DIRECT"):
        FileBackend(make_file(tmp_path), 512, FileMode(o_direct=True))
    assert len(os.listdir("/proc/self/fd")) == before  # the buffered fd was closed


def test_read_only_file_system_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def erofs_open(path: str, flags: int, *args: Any) -> int:
        raise OSError(errno.EROFS, "Read-only file system")

    path = make_file(tmp_path)
    monkeypatch.setattr(os, "open", erofs_open)
    with pytest.raises(HandlerError, match=r"read-only file system; open it READ_ONLY"):
        FileBackend(path, 512, FileMode())


def test_enospc_reaches_the_sbc_layer_as_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = FileBackend(make_file(tmp_path), 512, FileMode())

    def full_disk(*args: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwritev", full_disk)
    with pytest.raises(BackendError, match=r"write of 512 bytes at 0 on .* No space") as info:
        backend.write_bytes(0, bytes(512))
    assert info.value.errno == errno.ENOSPC
    backend.close()


def test_thin_provisioning_probe_passes_without_touching_the_file(tmp_path: Path) -> None:
    path = make_file(tmp_path, MiB)
    backend = open_backend(VdiskParams(name="tp", filename=path, thin_provisioned=True))
    assert os.stat(path).st_size == MiB
    backend.close()


def test_thin_provisioning_on_a_file_system_without_holes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tcmu_scst.handlers import _vdisk_sys

    def no_holes(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(_vdisk_sys, "punch_hole", no_holes)
    before = len(os.listdir("/proc/self/fd"))
    params = VdiskParams(name="tp", filename=make_file(tmp_path), thin_provisioned=True)
    with pytest.raises(HandlerError, match="thin_provisioned needs hole punching"):
        open_backend(params)
    assert len(os.listdir("/proc/self/fd")) == before
