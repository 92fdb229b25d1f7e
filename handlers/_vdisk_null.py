"""The NULLIO backing store: no I/O at all, for measuring the path above the disk.

Writes succeed and are forgotten; reads return zeros. The zeros are written into
the buffer every time: a ring buffer may still hold another command's data, and
handing that to an initiator would leak it.
"""

from __future__ import annotations

from tcmu_scst.command import DataBuffer

from .vdisk_params import NULLIO_DEFAULT_SIZE


class NullBackend:
    """A :class:`~tcmu_scst.scsi.block.BlockBackend` that stores nothing."""

    def __init__(self, size: int = NULLIO_DEFAULT_SIZE, block_size: int = 512) -> None:
        self._size = size - size % block_size

    @property
    def size(self) -> int:
        return self._size

    def refresh_size(self) -> int:
        return self._size

    def set_size(self, size: int, block_size: int = 512) -> int:
        """NULLIO has no store: its size is whatever the admin says (RECONFIG dev_size)."""
        self._size = size - size % block_size
        return self._size

    def read(self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0) -> None:
        buf.fill_zero(buf_offset, length)

    def write(
        self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0, *, fua: bool = False
    ) -> None:
        pass

    def write_bytes(self, offset: int, data: bytes, *, fua: bool = False) -> None:
        pass

    def read_bytes(self, offset: int, length: int) -> bytes:
        return bytes(length)

    def flush(self, offset: int, length: int) -> None:
        pass

    def discard(self, offset: int, length: int) -> None:
        pass

    def mapped(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        return [(offset, length, True)]

    def prefetch(self, offset: int, length: int) -> None:
        pass

    def close(self) -> None:
        pass
