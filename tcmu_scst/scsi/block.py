"""What the SBC emulation needs from a block device: its settings and its backing store.

The emulation (``scsi.sbc``) turns CDBs into calls on a :class:`BlockBackend`; the
vdisk/perf handlers provide backends (a file, a block device, nothing at all). All
offsets and lengths given to a backend are in **bytes** and already range-checked
against :attr:`BlockBackend.size`; a backend never sees an out-of-range request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tcmu_scst.command import DataBuffer


class BackendError(Exception):
    """The backing store failed an operation; ``errno`` says how (EIO, ENOSPC, ...).

    The SBC layer answers it with MEDIUM ERROR (read/write) whose INFORMATION field
    holds the LBA of ``offset`` (else the command's first LBA), or SPACE ALLOCATION
    FAILED for ENOSPC on a thin-provisioned device.
    """

    def __init__(self, message: str, errno: int = 0, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        #: Byte offset in the backing store where it failed, when the backend knows.
        self.offset = offset


class WouldBlock(Exception):
    """The backend was asked not to wait (the ring thread) and would have to.

    Raised before anything visible changed (or after a partial write that the retry
    repeats byte for byte): the command is run again, in full, on a worker thread.
    The SCSI layer lets it pass through; it never becomes sense data.
    """


class BlockBackend(Protocol):
    """The backing store of one block device."""

    @property
    def size(self) -> int:
        """Current size in bytes (it may change: online resize)."""
        ...

    def read(self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0) -> None:
        """Fill ``buf[buf_offset:buf_offset+length]`` from ``offset``; holes read as zeros."""
        ...

    def write(
        self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0, *, fua: bool = False
    ) -> None:
        """Store ``buf[buf_offset:buf_offset+length]`` at ``offset``.

        With ``fua`` (or in a write-through mode) the data must be durable before
        this returns.
        """
        ...

    def write_bytes(self, offset: int, data: bytes, *, fua: bool = False) -> None:
        """Store ``data`` at ``offset`` (WRITE SAME, COMPARE AND WRITE, FORMAT)."""
        ...

    def read_bytes(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset`` (VERIFY, COMPARE AND WRITE)."""
        ...

    def flush(self, offset: int, length: int) -> None:
        """Make ``[offset, offset+length)`` durable (SYNCHRONIZE CACHE); length 0 = to the end."""
        ...

    def discard(self, offset: int, length: int) -> None:
        """Deallocate the range (UNMAP, WRITE SAME with UNMAP); it then reads as zeros."""
        ...

    def mapped(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        """Extents ``(offset, length, is_mapped)`` covering the range (GET LBA STATUS)."""
        ...

    def prefetch(self, offset: int, length: int) -> None:
        """Hint that the range will be read soon (PRE-FETCH)."""
        ...

    def close(self) -> None:
        ...


@dataclass(slots=True)
class BlockDeviceConfig:
    """Everything the emulation reports about a block device (INQUIRY, VPD, MODE pages).

    Mutable on purpose: MODE SELECT may flip ``write_back``, and the daemon changes
    ``write_back``/size on RECONFIG.
    """

    name: str  # SCST device name, e.g. "disk1"
    block_size: int = 512
    lbppbe: int = 0  # logical blocks per physical block exponent (READ CAPACITY 16)
    device_type: int = 0x00  # SBC disk; 0x07 for MO (modisk_perf)
    read_only: bool = False  # WP bit; writes -> DATA PROTECT / WRITE PROTECTED
    write_back: bool = True  # WCE=1 (FILEIO default); False for WRITE_THROUGH
    nv_cache: bool = False  # SYNCHRONIZE CACHE and FUA are no-ops; reported as SCST does
    removable: bool = False  # RMB bit in INQUIRY
    rotational: bool = True  # VPD B1 MEDIUM ROTATION RATE (1 = non-rotating when False)
    thin_provisioned: bool = False  # LBPME/LBPRZ, UNMAP, VPD B2
    vendor: str = "SCST_FIO"  # T10 vendor id, 8 chars
    product: str = ""  # defaults to the device name, 16 chars
    revision: str = " 010"  # 4 chars
    serial: str = ""  # unit serial (VPD 80); stable across restarts
    t10_dev_id: str = ""  # VPD 83 T10 vendor-id designator's vendor-specific part
    naa_id: bytes = b""  # 16-byte NAA IEEE Registered Extended (type 6) designator
    max_transfer_blocks: int = 2048  # VPD B0; larger transfers are refused
    # VPD B0 MAXIMUM UNMAP LBA COUNT: 1 Mi blocks (libiscsi calls more "insanely big").
    max_unmap_blocks: int = 0x100000
    max_unmap_descriptors: int = 256
    max_write_same_blocks: int = 0x400000
    max_compare_write_blocks: int = 255  # VPD B0 MAXIMUM COMPARE AND WRITE LENGTH (<= 255)
    # SCST's vdisk_nullio "dummy": INQUIRY says PERIPHERAL QUALIFIER 001b (not connected)
    # and type 1Fh (no device), so initiators skip the LUN (a LUN 0 placeholder).
    not_connected: bool = False
