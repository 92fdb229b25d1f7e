"""An in-memory :class:`~tcmu_scst.scsi.block.BlockBackend` for tests and benchmarks.

A bytearray holds the data; a set of deallocated granules (``granularity`` bytes,
default 512) records what a discard released, so GET LBA STATUS has something to
report. Failures can be injected per operation with :meth:`MemoryBackend.fail`.
Every call is recorded in :attr:`MemoryBackend.calls` (operation, offset, length,
fua) so tests can check what the emulation asked for.
"""

from __future__ import annotations

import threading

from tcmu_scst.command import DataBuffer
from tcmu_scst.scsi.block import BackendError


class MemoryBackend:
    """BlockBackend over a bytearray, with a discard map and fault injection."""

    def __init__(self, size: int, *, granularity: int = 512, fill: int = 0) -> None:
        self.data = bytearray([fill]) * size
        self.granularity = granularity
        self.unmapped: set[int] = set()  # granule indexes that were discarded
        self.calls: list[tuple[str, int, int, bool]] = []
        self.flushes = 0
        self.closed = False
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()  # guards calls/unmapped, not the data

    # -- test helpers -------------------------------------------------------------

    def fail(self, operation: str, errno: int) -> None:
        """Make every later ``operation`` ("read", "write", "flush", ...) raise with ``errno``."""
        self._failures[operation] = errno

    def heal(self) -> None:
        self._failures.clear()

    def resize(self, size: int) -> None:
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data.extend(bytes(size - len(self.data)))

    def _enter(self, operation: str, offset: int, length: int, fua: bool = False) -> None:
        with self._lock:
            self.calls.append((operation, offset, length, fua))
        if offset < 0 or length < 0 or offset + length > len(self.data):
            raise AssertionError(
                f"{operation} {offset}+{length} outside a {len(self.data)}-byte backend: "
                "the SBC layer must range-check before calling"
            )
        errno = self._failures.get(operation)
        if errno is not None:
            raise BackendError(f"injected {operation} failure", errno)

    def _mapped(self, offset: int, length: int) -> None:
        if not self.unmapped or length == 0:
            return
        g = self.granularity
        with self._lock:
            self.unmapped.difference_update(range(offset // g, (offset + length - 1) // g + 1))

    # -- BlockBackend ------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0) -> None:
        self._enter("read", offset, length)
        buf.write(memoryview(self.data)[offset : offset + length], buf_offset)

    def write(
        self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0, *, fua: bool = False
    ) -> None:
        self._enter("write", offset, length, fua)
        self.data[offset : offset + length] = buf.read(buf_offset, length)
        self._mapped(offset, length)

    def write_bytes(self, offset: int, data: bytes, *, fua: bool = False) -> None:
        self._enter("write_bytes", offset, len(data), fua)
        self.data[offset : offset + len(data)] = data
        self._mapped(offset, len(data))

    def read_bytes(self, offset: int, length: int) -> bytes:
        self._enter("read_bytes", offset, length)
        return bytes(self.data[offset : offset + length])

    def flush(self, offset: int, length: int) -> None:
        self._enter("flush", offset, length)
        self.flushes += 1

    def discard(self, offset: int, length: int) -> None:
        self._enter("discard", offset, length)
        g = self.granularity
        first = -(-offset // g)
        last = (offset + length) // g
        # Whole granules are released; partial ones are zeroed but stay mapped.
        self.data[offset : offset + length] = bytes(length)
        with self._lock:
            self.unmapped.update(range(first, last))

    def mapped(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        self._enter("mapped", offset, length)
        g = self.granularity
        end = offset + length
        with self._lock:
            holes = sorted(i for i in self.unmapped if i * g < end and (i + 1) * g > offset)
        extents: list[tuple[int, int, bool]] = []
        pos = offset
        for index in holes:
            lo, hi = max(index * g, offset), min((index + 1) * g, end)
            if lo > pos:
                extents.append((pos, lo - pos, True))
            if extents and not extents[-1][2] and extents[-1][0] + extents[-1][1] == lo:
                extents[-1] = (extents[-1][0], hi - extents[-1][0], False)
            else:
                extents.append((lo, hi - lo, False))
            pos = hi
        if pos < end:
            extents.append((pos, end - pos, True))
        return extents

    def prefetch(self, offset: int, length: int) -> None:
        self._enter("prefetch", offset, length)

    def close(self) -> None:
        self.closed = True
