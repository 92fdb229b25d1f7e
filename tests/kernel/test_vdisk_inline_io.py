"""I/O tried on the ring thread first (Handler.try_inline) against the real kernel.

The Python path's choices (the compiled path, which takes plain READ/WRITEs first, is
switched off here; test_compiled_path_vm.py covers it):

* tmpfs: RWF_NOWAIT is refused (EOPNOTSUPP), but a memory file system never waits
  for a device: READ and WRITE are answered on the ring thread; a flush still runs on
  a worker.
* ext4 (on a loop device): cached reads are answered with RWF_NOWAIT on the ring
  thread; the kernel refuses RWF_NOWAIT for buffered writes, so after the first
  attempt every write goes to a worker, and the data is right either way.
* READs of INLINE_MAX_READ_BYTES or more go to the workers (two copied at once);
  WRITEs of any size stay on the ring thread.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tcmu_scst.command import Command, Result
from tcmu_scst.handlers import _vdisk_sys as sysio
from tcmu_scst.handlers._vdisk_file import FileBackend
from tcmu_scst.handlers.vdisk import (
    INLINE_MAX_READ_BYTES,
    VdiskHandler,
    VdiskParams,
    to_dev_config,
)

from .tcmu_rig import serve

pytestmark = pytest.mark.kernel

MiB = 1 << 20
RW_OPCODES = {0x28, 0x2A, 0x88, 0x8A}
READ_OPCODES = {0x28, 0x88}


class Recording(VdiskHandler):
    """vdisk, noting on which thread each READ/WRITE was answered."""

    def __init__(self, params: VdiskParams) -> None:
        super().__init__(params)
        self.lock = threading.Lock()
        self.inline: list[int] = []  # opcodes answered by try_inline
        self.worker: list[tuple[int, str]] = []  # (opcode, thread) answered by handle
        self.read_sizes: list[tuple[int, bool]] = []  # (bytes, inline) of each READ

    def try_inline(self, cmd: Command) -> Result | None:
        result = super().try_inline(cmd)
        if result is not None:
            with self.lock:
                self.inline.append(cmd.cdb[0])
                if cmd.cdb[0] in READ_OPCODES:
                    self.read_sizes.append((cmd.data.length, True))
        return result

    def handle(self, cmd: Command) -> Result | None:
        with self.lock:
            self.worker.append((cmd.cdb[0], threading.current_thread().name))
            if cmd.cdb[0] in READ_OPCODES:
                self.read_sizes.append((cmd.data.length, False))
        return super().handle(cmd)


def dd(*args: str) -> None:
    subprocess.run(["dd", *args, "status=none"], check=True, timeout=120)


def _serve_file(stack: ExitStack, image: Path, size: int) -> tuple[Recording, str]:
    with open(image, "wb") as f:
        f.truncate(size)
    stack.callback(lambda: image.unlink(missing_ok=True))
    params = VdiskParams(name="inline", filename=str(image))
    handler = Recording(params)
    served = serve(stack, to_dev_config(params), size, handler=handler)
    # These tests are about the Python path's choices (try_inline or a worker); the
    # compiled path, which answers plain READ/WRITEs before try_inline is asked, is
    # tested on its own (test_compiled_path_vm.py).
    served.runner.accelerator = None
    assert served.lun is not None and served.lun.block
    return handler, served.lun.block


def _round_trip(dev: str, tmp_path: Path) -> None:
    data = os.urandom(2 * MiB)
    (tmp_path / "in").write_bytes(data)
    dd(f"if={tmp_path / 'in'}", f"of={dev}", "bs=64k", "seek=8", "oflag=direct")
    dd(f"if={dev}", f"of={tmp_path / 'out'}", "bs=64k", "skip=8", "count=32", "iflag=direct")
    assert (tmp_path / "out").read_bytes() == data


def test_tmpfs_reads_and_writes_are_answered_on_the_ring_thread(
    lio_stack: ExitStack, tmp_path: Path
) -> None:
    image = Path("/run/inline-io.img")
    assert sysio.mount_fs_type(str(image)) == "tmpfs"
    handler, dev = _serve_file(lio_stack, image, 16 * MiB)
    assert isinstance(handler.backend, FileBackend) and handler.backend.memory_backed
    _round_trip(dev, tmp_path)
    assert handler.inline.count(0x2A) >= 32 and handler.inline.count(0x28) >= 32
    assert not [op for op, _ in handler.worker if op in RW_OPCODES]
    # SYNCHRONIZE CACHE must reach the disk before GOOD: never on the ring thread.
    subprocess.run(["sg_sync", dev], check=True, timeout=60)
    assert any(op == 0x35 and name.startswith("tcmu-io-") for op, name in handler.worker)


@pytest.fixture
def ext4_dir(tmp_path: Path) -> Iterator[Path]:
    """An ext4 file system on a loop device over a file in /run (RWF_NOWAIT reads)."""
    backing = Path("/run/inline-ext4.img")
    with open(backing, "wb") as f:
        f.truncate(96 * MiB)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["modprobe", "ext4"], check=True, timeout=60)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(backing)], check=True, timeout=120)
    subprocess.run(["mount", "-o", "loop", str(backing), str(mnt)], check=True, timeout=60)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, timeout=60)
        backing.unlink(missing_ok=True)


def test_ext4_cached_reads_inline_writes_on_workers(
    lio_stack: ExitStack, tmp_path: Path, ext4_dir: Path
) -> None:
    handler, dev = _serve_file(lio_stack, ext4_dir / "disk.img", 16 * MiB)
    backend = handler.backend
    assert isinstance(backend, FileBackend) and not backend.memory_backed
    _round_trip(dev, tmp_path)
    # The kernel refused RWF_NOWAIT for a buffered write once; writes went to workers.
    assert not backend.nowait_writes
    assert 0x2A not in handler.inline
    assert [op for op, name in handler.worker if op == 0x2A and name.startswith("tcmu-io-")]
    # The written blocks are in the page cache: reading them again is answered inline.
    before = handler.inline.count(0x28)
    dd(f"if={dev}", "of=/dev/null", "bs=64k", "skip=8", "count=32", "iflag=direct")
    assert backend.nowait_reads
    assert handler.inline.count(0x28) - before >= 16


def test_large_reads_on_workers_large_writes_on_the_ring_thread(
    lio_stack: ExitStack, tmp_path: Path
) -> None:
    image = Path("/run/inline-large.img")
    handler, dev = _serve_file(lio_stack, image, 16 * MiB)
    # 1 MiB per request (the backstore allows it: hw_max_sectors), not split smaller.
    queue = Path("/sys/block") / Path(dev).name / "queue"
    assert int((queue / "max_hw_sectors_kb").read_text()) >= 1024
    (queue / "max_sectors_kb").write_text("1024")
    data = os.urandom(4 * MiB)
    (tmp_path / "in").write_bytes(data)
    dd(f"if={tmp_path / 'in'}", f"of={dev}", "bs=1M", "seek=2", "oflag=direct")
    dd(f"if={dev}", f"of={tmp_path / 'out'}", "bs=1M", "skip=2", "count=4", "iflag=direct")
    assert (tmp_path / "out").read_bytes() == data
    # Every large WRITE was answered on the ring thread (tmpfs never waits).
    assert handler.inline.count(0x2A) >= 4
    assert not [op for op, _ in handler.worker if op in (0x2A, 0x8A)]
    # Large READs on workers, small ones (the partition scan's) inline.
    large = [(n, inline) for n, inline in handler.read_sizes if n >= INLINE_MAX_READ_BYTES]
    assert len(large) >= 4 and not any(inline for _, inline in large)
    assert all(inline for n, inline in handler.read_sizes if n < INLINE_MAX_READ_BYTES)
    assert all(name.startswith("tcmu-io-") for op, name in handler.worker if op == 0x28)
