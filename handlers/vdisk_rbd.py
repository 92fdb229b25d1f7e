"""vdisk_rbd: a virtual SCSI disk on a Ceph RBD image (``filename rbd:POOL/IMAGE``).

The same device as a FILEIO vdisk (the SBC emulation, identities, modes) over
:class:`~tcmu_scst.handlers._vdisk_rbd.RbdBackend`. Plain READ and WRITE(10/16), the
whole of a data path, go to librbd's aio: the worker thread checks the command,
takes the range lock shared (COMPARE AND WRITE takes it exclusive), submits and
returns ``None``; librbd's completion callback answers the command, so a slow
cluster holds no thread per command. Everything else (flush, unmap, WRITE SAME,
COMPARE AND WRITE, VERIFY...) runs on the workers as for a file, each librbd call
an aio the worker waits for. Every operation has a deadline (``_vdisk_rbd``), so a
cluster that stops answering gives the initiator an answer in bounded time.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from tcmu_scst.command import BUSY, Command, Result
from tcmu_scst.errors import HandlerError
from tcmu_scst.scsi.block import BackendError
from tcmu_scst.scsi.sense import SenseError

from ._vdisk_rbd import RbdBackend
from .vdisk import VdiskHandler
from .vdisk_params import VdiskParams

log = logging.getLogger("tcmu_scst.handlers.vdisk_rbd")

#: The answer to I/O while librbd still holds operations the cluster never answered
#: (their deadline did, see ``_aio_deadline``), and while the backend replaces its
#: cluster client (until the new one serves): BUSY, "not executed, try again"
#: (tcmu-runner answers BUSY while it recovers a device too). Nothing new is queued
#: behind them, and no newer write can overtake a stale one. Linux retries BUSY
#: until the command's time budget ((retries + 1) x the device timeout) is spent.
BUSY_RESULT = Result(BUSY)


class RbdHandler(VdiskHandler):
    """One open vdisk_rbd device."""

    handler_name: ClassVar[str] = "vdisk_rbd"
    watches_size: ClassVar[bool] = True  # ``rbd resize`` on any client of the cluster
    backend: RbdBackend

    def __init__(self, params: VdiskParams) -> None:
        if not params.rbd:
            raise HandlerError(f"vdisk_rbd {params.name}: {params.filename!r} is no rbd: name")
        super().__init__(params)

    def handle(self, cmd: Command) -> Result | None:
        device = self.device
        if not device.is_io(cmd):
            return device.execute(cmd)
        # Admitted, or BUSY: while the backend replaces its client, no command may
        # reach the old one (it is fenced off once the admitted ones were answered).
        backend = self.backend
        if not backend.enter():
            return BUSY_RESULT
        handed_off = False  # to librbd, whose completion (done) leaves
        try:
            extent = device.plain_extent(cmd)
            if extent is None:
                return device.execute(cmd)
            bs = self.config.block_size
            offset, length = extent.lba * bs, extent.blocks * bs
            data = cmd.data.read(0, length) if extent.writing else b""
            ticket = device.lock_shared(extent)

            def done(error: BackendError | None) -> None:
                try:
                    device.unlock_shared(ticket)
                    result = device.plain_result(extent, error)
                except Exception:  # on librbd's thread nobody would see it: answer
                    log.exception("vdisk %s: answering %r failed", self.params.name, cmd)
                    result = SenseError.internal_target_failure().result()
                backend.leave()
                cmd.complete(result)

            handed_off = True
            if extent.writing:
                backend.aio_write(offset, data, extent.durable, done)
            else:
                backend.aio_read(offset, length, cmd.data, done)
            return None
        finally:
            if not handed_off:
                backend.leave()

    def try_inline(self, cmd: Command) -> Result | None:
        # The data path completes asynchronously; only a refusal is answered here.
        return BUSY_RESULT if self.backend.busy else None

    def grown_size(self) -> int | None:
        if self.backend.busy:
            return None  # the cluster holds operations: no call that could wait too
        size = self.backend.image_size()
        return size if size > self.backend.size else None

    def resize(self, size: int) -> int:
        """RECONFIG of ``dev_size``: the image grown elsewhere (``rbd resize``), or grown
        here to ``size``; shrinking is refused. Initiators get CAPACITY DATA HAS CHANGED."""
        bs = self.params.blocksize
        if size <= 0 or size % bs:
            raise HandlerError(f"vdisk {self.params.name}: size {size} is not a positive "
                               f"multiple of the {bs}-byte block size")
        backend = self.backend
        current = backend.refresh_size()
        if size > current:
            if self.params.read_only:
                raise HandlerError(f"vdisk {self.params.name}: {backend.spec} holds {current} "
                                   f"bytes, less than {size}, and is READ_ONLY; rbd resize it")
            current = backend.grow(size)
        elif size < current:
            raise HandlerError(f"vdisk {self.params.name}: {backend.spec} holds {current} "
                               f"bytes; shrinking to {size} would hide data")
        self.device.notify_resized()
        return current
