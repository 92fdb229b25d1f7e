"""SCST's vdisk handler: a virtual SCSI disk over a file, a block device or nothing.

:class:`VdiskHandler` opens the backing store chosen by the parameters (FILEIO with
its WRITE_THROUGH / NV_CACHE / READ_ONLY / O_DIRECT variants, BLOCKIO, NULLIO) and
answers commands through the SBC emulation (``tcmu_scst.scsi.sbc.SbcDevice``).
Commands that touch no data (INQUIRY, MODE SENSE, READ CAPACITY, ...) are inline;
reads, writes, flushes and unmaps run on worker threads.

The parameter model (:class:`VdiskParams`) and its three textual forms live in
``vdisk_params`` and are re-exported here: the shell, the config file and the
daemon all import them from this module.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, ClassVar, Final

from tcmu_scst.command import Command, Result, TmrNotice
from tcmu_scst.errors import HandlerError
from tcmu_scst.handler import Handler
from tcmu_scst.kernel import abi
from tcmu_scst.kernel.fastpath import PlainPlan
from tcmu_scst.scsi.block import BlockDeviceConfig, WouldBlock
from tcmu_scst.scsi.sbc import plain_reject_masks

from . import _vdisk_sys as sysio
from ._vdisk_file import FileBackend, FileMode
from ._vdisk_null import NullBackend
from ._vdisk_rbd import RbdBackend
from .vdisk_params import (
    BLOCKIO,
    FILEIO,
    HANDLER_NAMES,
    NULLIO,
    NULLIO_DEFAULT_SIZE,
    ProcCommand,
    VdiskParams,
    check_block_size,
    crc32c_linux,
    parse_attributes,
    parse_dev_config,
    parse_proc_command,
    parse_proc_open,
    proc_read_header,
    proc_read_line,
    to_attributes,
    to_dev_config,
    to_proc_open,
)

if TYPE_CHECKING:
    from tcmu_scst.scsi.sbc import SbcDevice

__all__ = [
    "BLOCKIO",
    "FILEIO",
    "HANDLER_NAMES",
    "NULLIO",
    "NULLIO_DEFAULT_SIZE",
    "ProcCommand",
    "VdiskHandler",
    "VdiskParams",
    "block_device_config",
    "check_block_size",
    "crc32c_linux",
    "open_backend",
    "open_dev_config",
    "parse_attributes",
    "parse_dev_config",
    "parse_proc_command",
    "parse_proc_open",
    "proc_read_header",
    "proc_read_line",
    "to_attributes",
    "to_dev_config",
    "to_proc_open",
]

log = logging.getLogger("tcmu_scst.handlers.vdisk")

_PLAIN_REJECT: Final = plain_reject_masks()

Backend = FileBackend | NullBackend | RbdBackend

# READ(6/10/12/16) and WRITE(6/10/12/16): what try_inline attempts on the ring thread.
_TRY_INLINE_OPCODES = frozenset({0x08, 0x28, 0xA8, 0x88, 0x0A, 0x2A, 0xAA, 0x8A})
_READ_OPCODES = frozenset({0x08, 0x28, 0xA8, 0x88})
# READs of at least this many bytes go to the workers even when they would not wait.
# A READ is copied twice: preadv into the data area, then the kernel's copy out of it
# in the completion notify's write(). Both release the GIL, so on two workers two
# large READs are copied at once; on the ring thread they were copied one after the
# other. Large WRITEs stay: buffered writes to one file serialize on its inode lock
# (tmpfs, ext4), and the hand-off only adds its cost (bench/runner_bench.py: 1 MiB
# writes 228 -> 270 µs on workers). Below 1 MiB the hand-off cost more than it saved
# on the host; 512 KiB is a guess between the two, only 1 MiB was measured in the VM
# (README, "How the data path is fast", item 6).
INLINE_MAX_READ_BYTES: Final = 512 << 10


def open_backend(params: VdiskParams) -> Backend:
    """Open the backing store ``params`` describe; HandlerError says why it cannot."""
    params.validate()
    if params.nullio:
        return NullBackend(params.nullio_size, params.blocksize)
    if params.rbd:
        return RbdBackend(params.filename, params.blocksize, read_only=params.read_only,
                          write_through=params.write_through, label=params.name)
    mode = FileMode(
        read_only=params.read_only,
        write_through=params.write_through,
        nv_cache=params.nv_cache,
        o_direct=params.o_direct,
        blockio=params.blockio,
    )
    backend = FileBackend(params.filename, params.blocksize, mode, label=params.name)
    if params.thin_provisioned:
        try:
            backend.check_discard()
        except HandlerError:
            backend.close()
            raise
    return backend


def block_device_config(params: VdiskParams, backend: Backend | None = None) -> BlockDeviceConfig:
    """What the SBC emulation reports for this device (INQUIRY, VPD, MODE pages).

    On a block device (BLOCKIO, or FILEIO over a device node) the geometry follows the
    real device: a non-rotating device (SSD, NVMe) is reported non-rotating whatever
    ``rotational`` says, and a physical block larger than the logical one becomes the
    LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT, so initiators align their I/O.
    """
    rotational, lbppbe = params.rotational, 0
    if isinstance(backend, FileBackend) and backend.is_block_device:
        rotational, lbppbe = _device_geometry(backend, params)
    return BlockDeviceConfig(
        name=params.name,
        block_size=params.blocksize,
        read_only=params.read_only,
        write_back=not params.write_through,
        nv_cache=params.nv_cache,
        removable=params.removable,
        rotational=rotational,
        lbppbe=lbppbe,
        thin_provisioned=params.thin_provisioned,
        vendor=params.vendor,
        product=params.product,
        serial=params.effective_usn,
        t10_dev_id=params.effective_t10_dev_id,
        naa_id=params.naa_id,
        not_connected=params.dummy,
    )


def _device_geometry(backend: FileBackend, params: VdiskParams) -> tuple[bool, int]:
    try:
        spins = sysio.block_device_rotational(backend.fd)
        physical = sysio.block_device_physical_block_size(backend.fd)
    except OSError as err:
        log.warning("%s: cannot read %s's geometry (%s); reporting the configured one",
                    params.name, params.filename, err)
        return params.rotational, 0
    lbppbe = 0
    while params.blocksize << (lbppbe + 1) <= physical and lbppbe < 15:
        lbppbe += 1
    return params.rotational and spins, lbppbe


class VdiskHandler(Handler):
    """One open vdisk device."""

    handler_name: ClassVar[str] = "vdisk"
    # Inline work is SCSI emulation in memory and RWF_NOWAIT attempts (never O_DIRECT).
    shares_ring_loop: ClassVar[bool] = True

    def __init__(self, params: VdiskParams) -> None:
        self.params = params.validate()
        self.backend: Backend = open_backend(params)
        try:
            self.config = block_device_config(params, self.backend)
            self.device: SbcDevice = _sbc_device(self.config, self.backend)
        except BaseException:
            self.backend.close()
            raise
        self._closed = False
        # The file backend's transfer that never waits, for the flat READ/WRITE path.
        self._transfer = (self.backend.transfer_nowait
                          if isinstance(self.backend, FileBackend) else None)
        log.info(
            "vdisk %s: opened %s (%s), %d bytes in %d-byte blocks",
            params.name, params.filename or "-", self.mode_names(), self.backend.size,
            params.blocksize,
        )

    @classmethod
    def from_dev_config(cls, text: str) -> VdiskHandler:
        """Open the device a TCMU ``dev_config`` string (``vdisk/...``) describes."""
        return cls(parse_dev_config(text))

    @property
    def size(self) -> int:
        return self.backend.size

    def mode_names(self) -> str:
        """The 0.9.6 flags in effect, e.g. ``FILEIO WRITE_THROUGH``."""
        p = self.params
        kind = "NULLIO" if p.nullio else "BLOCKIO" if p.blockio else "RBD" if p.rbd else "FILEIO"
        flags = [
            name
            for name, on in (
                ("WRITE_THROUGH", p.write_through),
                ("NV_CACHE", p.nv_cache),
                ("READ_ONLY", p.read_only),
                ("O_DIRECT", p.o_direct),
                ("REMOVABLE", p.removable),
            )
            if on
        ]
        return " ".join([kind, *flags])

    def handle(self, cmd: Command) -> Result | None:
        return self.device.execute(cmd)

    def is_inline(self, cmd: Command) -> bool:
        cdb = cmd.cdb
        if cdb and cdb[0] in _TRY_INLINE_OPCODES:
            return False  # READ/WRITE: no table lookup on the hot path
        return not self.device.is_io(cmd)

    def try_inline(self, cmd: Command) -> Result | None:
        # READ and WRITE only: one backend call each, which the backend attempts
        # without waiting (RWF_NOWAIT, or a memory file system); anything that would
        # wait, or must be durable first, goes to a worker and runs again in full.
        # READ/WRITE(10/16) of a file take the flat path's single call first.
        if cmd.data.length >= INLINE_MAX_READ_BYTES and cmd.cdb[0] in _READ_OPCODES:
            return None  # a large READ: on a worker, copied in parallel with others
        transfer = self._transfer
        if transfer is not None:
            try:
                result = self.device.try_plain_nowait(cmd, transfer)
            except WouldBlock:
                return None
            if result is not None:
                return result
        backend = self.backend
        if not cmd.cdb or cmd.cdb[0] not in _TRY_INLINE_OPCODES:
            return None
        if isinstance(backend, NullBackend):
            return self.device.execute(cmd)  # no store: nothing ever waits
        if isinstance(backend, RbdBackend):
            return None
        return backend.try_nowait(lambda: self.device.execute(cmd))

    def plain_plan(self) -> PlainPlan | None:
        # Plain READ/WRITE of a file through its page cache (not O_DIRECT: its
        # alignment rules are DirectIO's), on the terms try_inline applies to them.
        backend = self.backend
        if (not isinstance(backend, FileBackend) or backend.direct
                or not backend.nowait_allowed(False)):
            return None
        state = self.device.plain_state()
        if state is None:
            return None
        return PlainPlan(
            backend.fd, state.block_size, state.blocks, state.max_blocks,
            state.writable and backend.nowait_allowed(True, state.durable),
            backend.nowait_allowed(True, state.durable_fua),
            backend.nowait_rwf, INLINE_MAX_READ_BYTES, *_PLAIN_REJECT,
        )

    def on_tmr(self, notice: TmrNotice) -> None:
        self.device.abort_commands(notice.cmd_ids)  # an EXTENDED COPY stops between chunks
        if notice.tmr_type in abi.RESET_TMRS:
            self.device.reset()  # e.g. a LUN reset clears PREVENT MEDIUM REMOVAL

    def resync_size(self) -> int:
        """Re-read the backing size (SCST ``resync_size``) and tell the emulation."""
        size = self.backend.refresh_size()
        self.device.notify_resized()
        return size

    def resize(self, size: int) -> int:
        """RECONFIG of ``dev_size``: the device takes the size the admin wrote.

        SCST's ``resync_size`` follows the backing file; here the kernel also tells the
        size. A writable regular file smaller than that is grown (sparse); a block
        device or read-only file must already be large enough. Shrinking below the
        backing store's size is refused: it would hide data without the admin cutting
        the file first. Initiators get CAPACITY DATA HAS CHANGED.
        """
        bs = self.params.blocksize
        if size <= 0 or size % bs:
            raise HandlerError(
                f"vdisk {self.params.name}: size {size} is not a positive multiple of the "
                f"{bs}-byte block size"
            )
        backend = self.backend
        if isinstance(backend, NullBackend):
            backend.set_size(size, bs)
            self.device.notify_resized()
            return size
        if isinstance(backend, RbdBackend):
            raise HandlerError(f"vdisk {self.params.name}: an RBD image resizes in vdisk_rbd")
        current = backend.refresh_size()
        if size > current:
            if self.params.read_only or backend.is_block_device:
                raise HandlerError(
                    f"vdisk {self.params.name}: {self.params.filename} holds {current} bytes, "
                    f"less than {size}; grow it first"
                )
            try:
                os.truncate(self.params.filename, size)
            except OSError as err:
                raise HandlerError(
                    f"vdisk {self.params.name}: cannot grow {self.params.filename} to {size} "
                    f"bytes: {err.strerror}"
                ) from err
            current = backend.refresh_size()
        elif size < current:
            raise HandlerError(
                f"vdisk {self.params.name}: {self.params.filename} holds {current} bytes; "
                f"shrinking to {size} would hide data: truncate the file first, then resize"
            )
        self.device.notify_resized()
        return current

    def set_write_cache(self, enabled: bool) -> None:
        """RECONFIG of ``emulate_write_cache``: WCE on or off (MODE SENSE page 08)."""
        if self.params.nv_cache:
            raise HandlerError(
                f"vdisk {self.params.name}: NV_CACHE devices report write-through and "
                "ignore cache flushes; the write cache setting cannot change"
            )
        if not enabled and self.config.write_back:
            self.backend.flush(0, 0)  # nothing acknowledged stays only in the cache
        self.config.write_back = enabled
        self.device.notify_mode_changed()

    def proc_read_line(self) -> str:
        """This device's row in the 0.9.6 ``/proc/scsi_tgt/vdisk/vdisk`` listing."""
        return proc_read_line(self.params, self.backend.size)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.backend.close()


def open_dev_config(dev_config: str) -> VdiskHandler:
    """The daemon's factory (``service.registry``): open a ``vdisk/...`` device."""
    params = parse_dev_config(dev_config)
    if params.rbd:
        from .vdisk_rbd import RbdHandler  # a subclass of VdiskHandler: imported late

        return RbdHandler(params)
    return VdiskHandler(params)


def _sbc_device(config: BlockDeviceConfig, backend: Backend) -> SbcDevice:
    try:
        from tcmu_scst.scsi.sbc import SbcDevice
    except ImportError as exc:  # pragma: no cover - only while sbc.py is being written
        raise HandlerError(f"vdisk: the SBC emulation is not available: {exc}") from exc
    return SbcDevice(config, backend)
