"""Linux system calls the vdisk backends need and Python's ``os`` module lacks.

fallocate(PUNCH_HOLE / ZERO_RANGE) through libc (``os.posix_fallocate`` cannot
punch), and the block-device ioctls BLKGETSIZE64 and BLKSSZGET. Every
function raises ``OSError`` with the kernel's errno; callers translate it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import struct

# <linux/falloc.h>
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

# <linux/fs.h>: _IOR(0x12, 114, size_t), _IO(0x12, 104)
BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKPBSZGET = 0x127B  # _IO(0x12, 123)
BLKROTATIONAL = 0x127E  # _IO(0x12, 126)

_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        lib.fallocate.restype = ctypes.c_int
        _libc = lib
    return _libc


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _load_libc().fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate ``[offset, offset+length)``; it then reads as zeros.

    On a regular file this frees the blocks. On a block device (Linux >= 4.9) the
    kernel issues WRITE ZEROES allowing unmap, and fails with EOPNOTSUPP rather than
    write zeros slowly; unlike BLKDISCARD it guarantees the range reads as zeros.
    """
    _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)


def zero_range(fd: int, offset: int, length: int) -> None:
    """Make the range read as zeros, writing them if the device cannot do better."""
    _fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)


def _ioctl_number(fd: int, request: int, fmt: str) -> int:
    """The number a block-device ``_IOR``-style ioctl writes back (``fmt``: its C type)."""
    out = fcntl.ioctl(fd, request, bytes(struct.calcsize(fmt)))
    return int(struct.unpack(fmt, out)[0])


def block_device_size(fd: int) -> int:
    """Size in bytes of the block device open on ``fd`` (BLKGETSIZE64)."""
    return _ioctl_number(fd, BLKGETSIZE64, "=Q")


def block_device_sector_size(fd: int) -> int:
    """Logical sector size of the block device (BLKSSZGET): the O_DIRECT alignment."""
    return _ioctl_number(fd, BLKSSZGET, "=i")


def block_device_physical_block_size(fd: int) -> int:
    """Physical block size of the block device (BLKPBSZGET), e.g. 4096 on 512e disks."""
    return _ioctl_number(fd, BLKPBSZGET, "=I")


def block_device_rotational(fd: int) -> bool:
    """Whether the block device spins (BLKROTATIONAL: 0 for SSDs, NVMe, RAM disks)."""
    return bool(_ioctl_number(fd, BLKROTATIONAL, "=H"))


def data_extents(fd: int, offset: int, length: int) -> list[tuple[int, int, bool]]:
    """``(offset, length, is_mapped)`` extents of a file range from SEEK_DATA/SEEK_HOLE.

    A file system without hole support reports everything as data, which is the
    truth as far as it knows.
    """
    end = offset + length
    out: list[tuple[int, int, bool]] = []
    pos = offset
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no data at or after pos
                raise
            data = end
        data = min(data, end)
        if data > pos:
            out.append((pos, data - pos, False))
            pos = data
            continue
        hole = min(os.lseek(fd, pos, os.SEEK_HOLE), end)
        out.append((pos, hole - pos, True))
        pos = hole
    return out


def buffer_address(view: memoryview) -> int | None:
    """The memory address of a writable buffer, or None when it cannot be known."""
    if view.readonly or not view.contiguous or len(view) == 0:
        return None
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


# File systems whose data lives in memory: a read or write of them copies pages and
# never waits for a device (unless the pages were swapped out, see memory_backed).
MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})


def mount_fs_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The file system type of the mount holding ``path`` ("" when unknown)."""
    real = os.path.realpath(path)
    best, fs_type = "", ""
    try:
        with open(mountinfo) as f:
            for line in f:
                # <id> <parent> <maj:min> <root> <mount point> <opts> ... - <type> ...
                fields = line.split()
                point = fields[4].replace("\\040", " ")
                if (real == point or real.startswith(point.rstrip("/") + "/")) and len(
                    point
                ) >= len(best):
                    best, fs_type = point, fields[fields.index("-") + 1]
    except (OSError, ValueError, IndexError):
        return ""
    return fs_type


def swap_active(swaps: str = "/proc/swaps") -> bool:
    """True when any swap area is in use (memory pages may have to be read back)."""
    try:
        with open(swaps) as f:
            return len(f.read().strip().splitlines()) > 1
    except OSError:
        return True  # unknown: assume the worst


def memory_backed(path: str) -> bool:
    """True when I/O on ``path`` never waits for a device: tmpfs/ramfs without swap."""
    return mount_fs_type(path) in MEMORY_FILE_SYSTEMS and not swap_active()
