"""A minimal writer for the cpio "newc" format the kernel unpacks as initramfs.

Written in Python (no cpio binary needed, deterministic output): directories, regular
files and symlinks, all owned by root, mtime 0 so identical inputs give identical
archives.
"""

from __future__ import annotations

import stat
from typing import BinaryIO

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


def _pad4(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


class CpioWriter:
    """Append entries to a newc archive; call :meth:`close` to write the trailer."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1
        self._offset = 0
        self._closed = False

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._offset += len(data)

    def _entry(self, name: str, mode: int, data: bytes, nlink: int = 1) -> None:
        if self._closed:
            raise ValueError("cpio archive already closed")
        encoded = name.lstrip("/").encode() + b"\0"
        fields = (
            self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0,
        )
        header = _MAGIC + b"".join(b"%08X" % f for f in fields)
        self._write(header + encoded)
        self._write(_pad4(self._offset))
        self._write(data)
        self._write(_pad4(self._offset))
        self._ino += 1

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, b"", nlink=2)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def close(self) -> None:
        if not self._closed:
            self._entry(_TRAILER, 0, b"")
            self._write(_pad4(self._offset))
            self._closed = True
