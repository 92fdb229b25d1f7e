"""The ring thread's non-blocking attempts on a FILEIO backing file (try_nowait)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tcmu_scst.command import DataBuffer
from tcmu_scst.handlers import _vdisk_sys as sysio
from tcmu_scst.handlers._vdisk_file import FileBackend, FileMode
from tcmu_scst.scsi.block import BackendError

MiB = 1 << 20


def backend(tmp_path: Path, mode: FileMode | None = None) -> FileBackend:
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.write(b"A" * 4096)
        f.truncate(MiB)
    return FileBackend(str(path), 512, mode or FileMode())


def on_disk(tmp_path: Path) -> FileBackend:
    """A write-back file as on ext4/xfs, wherever the test runs: RWF_NOWAIT is used."""
    b = backend(tmp_path)
    b.memory_backed = False
    return b


def buf(n: int = 4096) -> DataBuffer:
    return DataBuffer([memoryview(bytearray(n))])


def fake_os_call(monkeypatch: pytest.MonkeyPatch, name: str, code: int) -> list[int]:
    """os.<name> fails with ``code`` when given RWF_NOWAIT; returns the flags seen."""
    real = getattr(os, name)
    seen: list[int] = []

    def call(fd: int, views: object, offset: int, flags: int = 0) -> int:
        seen.append(flags)
        if flags & os.RWF_NOWAIT:
            raise OSError(code, os.strerror(code))
        return int(real(fd, views, offset, flags))

    monkeypatch.setattr(os, name, call)
    return seen


def test_cached_read_answers_with_rwf_nowait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = on_disk(tmp_path)
    real = os.preadv
    seen: list[int] = []
    monkeypatch.setattr(os, "preadv", lambda fd, v, o, f=0: seen.append(f) or real(fd, v, o, f))
    out = buf()
    assert b.try_nowait(lambda: b.read(0, 4096, out)) is None  # read() returns None...
    assert bytes(out.views[0]) == b"A" * 4096  # ...but the data is there
    assert seen == [os.RWF_NOWAIT]
    b.read(0, 4096, buf())  # outside an attempt: no flag
    assert seen[-1] == 0
    b.close()


def test_eagain_means_would_block_and_is_retried_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = on_disk(tmp_path)
    fake_os_call(monkeypatch, "preadv", errno.EAGAIN)
    out = buf()
    assert b.try_nowait(lambda: b.read(0, 4096, out) or "done") is None
    assert b.nowait_reads  # EAGAIN is "not now", not "never"
    b.read(0, 4096, out)  # the worker's full read
    assert bytes(out.views[0]) == b"A" * 4096
    b.close()


def test_refused_nowait_is_never_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = on_disk(tmp_path)
    seen = fake_os_call(monkeypatch, "pwritev", errno.EOPNOTSUPP)
    data = DataBuffer([memoryview(b"B" * 512)])
    assert b.try_nowait(lambda: b.write(0, 512, data) or "done") is None
    assert not b.nowait_writes
    assert b.try_nowait(lambda: b.write(0, 512, data) or "done") is None
    assert seen == [os.RWF_NOWAIT]  # the second attempt never reached the kernel
    b.close()


def test_short_nowait_read_is_left_to_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = on_disk(tmp_path)
    monkeypatch.setattr(os, "preadv", lambda fd, v, o, f=0: 512)  # partly cached
    assert b.try_nowait(lambda: b.read(0, 4096, buf()) or "done") is None
    b.close()


def test_durable_writes_never_run_inline(tmp_path: Path) -> None:
    b = backend(tmp_path)
    b.memory_backed = True
    data = DataBuffer([memoryview(b"C" * 512)])
    # FUA on a write-back file: fdatasync before GOOD, so never on the ring thread.
    assert b.try_nowait(lambda: b.write(0, 512, data, fua=True) or "done") is None
    assert b.read_bytes(0, 512) == b"A" * 512  # nothing was written
    assert b.try_nowait(lambda: b.write(0, 512, data) or "done") == "done"
    assert b.read_bytes(0, 512) == b"C" * 512
    b.close()
    wt = backend(tmp_path, FileMode(write_through=True))
    assert not wt.nowait_writes and wt.nowait_reads
    wt.close()


def test_direct_and_read_only_modes(tmp_path: Path) -> None:
    ro = backend(tmp_path, FileMode(read_only=True))
    assert ro.nowait_reads and not ro.nowait_writes
    data = DataBuffer([memoryview(b"D" * 512)])
    with pytest.raises(BackendError):
        ro.try_nowait(lambda: ro.write(0, 512, data))  # EROFS stays an error
    ro.close()


def test_real_errors_stay_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = on_disk(tmp_path)
    fake_os_call(monkeypatch, "preadv", errno.EIO)
    with pytest.raises(BackendError, match="read of 4096 bytes"):
        b.try_nowait(lambda: b.read(0, 4096, buf()))
    b.close()


def test_memory_file_system_detection(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "23 22 0:5 / /run rw,nosuid - tmpfs tmpfs rw\n"
        "24 23 0:6 / /run/big\\040disk rw - xfs /dev/sdb rw\n"
    )
    assert sysio.mount_fs_type("/run/x.img", str(info)) == "tmpfs"
    assert sysio.mount_fs_type("/runner/x.img", str(info)) == "ext4"
    assert sysio.mount_fs_type("/run/big disk/x.img", str(info)) == "xfs"
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n")
    assert not sysio.swap_active(str(swaps))
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n/swap file 1 0 -2\n")
    assert sysio.swap_active(str(swaps))


def test_vdisk_try_inline_reads_writes_and_declines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tcmu_scst.command import GOOD, Command
    from tcmu_scst.handlers.vdisk import VdiskHandler, VdiskParams

    path = tmp_path / "v.img"
    with open(path, "wb") as f:
        f.truncate(MiB)
    handler = VdiskHandler(VdiskParams(name="v", filename=str(path)))
    fb = handler.backend
    assert isinstance(fb, FileBackend)
    fb.memory_backed = True
    write10 = bytes([0x2A, 0, 0, 0, 0, 4, 0, 0, 1, 0])
    read10 = bytes([0x28, 0, 0, 0, 0, 4, 0, 0, 1, 0])
    w = Command(1, write10, DataBuffer([memoryview(b"E" * 512)]))
    assert handler.try_inline(w) == (GOOD, b"", None)
    r = Command(2, read10, buf(512))
    result = handler.try_inline(r)
    assert result is not None and result.data_in_len == 512
    assert bytes(r.data.views[0]) == b"E" * 512
    # FUA: durable before GOOD, never on the ring thread, nothing written by the try.
    fua = Command(5, bytes([0x2A, 0x08, 0, 0, 0, 4, 0, 0, 1, 0]),
                  DataBuffer([memoryview(b"F" * 512)]))
    assert handler.try_inline(fua) is None
    assert fb.read_bytes(4 * 512, 512) == b"E" * 512
    # Not READ/WRITE: never attempted (SYNCHRONIZE CACHE waits for the disk).
    assert handler.try_inline(Command(3, bytes([0x35]) + bytes(9))) is None
    # A read that would wait: declined, no sense data, the worker's handle() answers.
    fb.memory_backed = False
    fake_os_call(monkeypatch, "preadv", errno.EAGAIN)
    r2 = Command(4, read10, buf(512))
    assert handler.try_inline(r2) is None
    full = handler.handle(r2)
    assert full is not None and full.status == GOOD
    assert bytes(r2.data.views[0]) == b"E" * 512
    handler.close()


def test_large_reads_go_to_workers_large_writes_stay(tmp_path: Path) -> None:
    from tcmu_scst.command import GOOD, Command
    from tcmu_scst.handlers.vdisk import INLINE_MAX_READ_BYTES, VdiskHandler, VdiskParams

    path = tmp_path / "v.img"
    with open(path, "wb") as f:
        f.truncate(4 * MiB)
    handler = VdiskHandler(VdiskParams(name="v", filename=str(path)))
    fb = handler.backend
    assert isinstance(fb, FileBackend)
    fb.memory_backed = True  # everything could run inline
    big = INLINE_MAX_READ_BYTES // 512
    payload = os.urandom(INLINE_MAX_READ_BYTES)

    def cdb(op: int, blocks: int) -> bytes:
        return bytes([op, 0, 0, 0, 0, 8, 0, *blocks.to_bytes(2, "big"), 0])

    # A large WRITE: on the ring thread (parallel writers of one file serialize anyway).
    w = Command(1, cdb(0x2A, big), DataBuffer([memoryview(payload)]))
    assert handler.try_inline(w) == (GOOD, b"", None)
    # A large READ: declined untouched, the worker's handle() reads it in full.
    r = Command(2, cdb(0x28, big), buf(INLINE_MAX_READ_BYTES))
    assert handler.try_inline(r) is None
    assert bytes(r.data.views[0]) == bytes(INLINE_MAX_READ_BYTES)  # not read by the try
    full = handler.handle(r)
    assert full is not None and full.status == GOOD
    assert bytes(r.data.views[0]) == payload
    # One block less: still inline.
    small = Command(3, cdb(0x28, big - 1), buf(INLINE_MAX_READ_BYTES - 512))
    result = handler.try_inline(small)
    assert result is not None and result.data_in_len == INLINE_MAX_READ_BYTES - 512
    assert bytes(small.data.views[0]) == payload[:-512]
    handler.close()
