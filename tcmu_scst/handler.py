"""The interface a device handler implements.

The per-device runner (``service.device``) takes commands off the ring and calls
:meth:`Handler.handle`. Commands a handler marks inline (:meth:`Handler.is_inline`,
cheap emulation such as INQUIRY) run on the ring thread; the others are first
offered to :meth:`Handler.try_inline` there (I/O that needs no waiting, such as a
page-cache hit) and otherwise run on worker threads, so that the ring loop never
blocks on disk. A handler that completes
asynchronously (for example a pass-through with its own queue) returns ``None`` from
``handle`` and calls ``cmd.complete(result)`` later, from any thread, exactly once.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from tcmu_scst.command import Command, Result, TmrNotice
from tcmu_scst.errors import HandlerError
from tcmu_scst.kernel.fastpath import PlainPlan


class Handler(abc.ABC):
    """One open device: it owns the backing store and answers SCSI commands."""

    #: SCST's handler name (``vdisk``, ``vcdrom``, ``dev_disk``, ...).
    handler_name: ClassVar[str] = ""

    #: True when the work this handler does on the ring thread (:meth:`is_inline`
    #: commands, :meth:`try_inline` attempts) never waits for a device: the daemon
    #: may then serve its ring from one thread shared with other such devices
    #: (service.ringloop) instead of a ring thread of its own. A pass-through device
    #: that stops answering must not stall its neighbours: False by default.
    shares_ring_loop: ClassVar[bool] = False

    #: True when the backing store can grow by itself (an RBD image resized by another
    #: client) and :meth:`grown_size` tells: the daemon then checks it every few
    #: seconds (service.sizewatch). A file grown under a FILEIO vdisk is not watched:
    #: as in SCST, its admin runs ``resync_size``.
    watches_size: ClassVar[bool] = False

    @abc.abstractmethod
    def handle(self, cmd: Command) -> Result | None:
        """Execute ``cmd``; return its result, or ``None`` if completed asynchronously.

        Must never raise for a bad CDB: that is a CHECK CONDITION result. An
        exception escaping here is a handler bug; the runner answers it with
        HARDWARE ERROR / INTERNAL TARGET FAILURE and logs it.
        """

    def is_inline(self, cmd: Command) -> bool:
        """True when ``cmd`` is cheap and non-blocking enough to run on the ring thread."""
        return False

    def plain_plan(self) -> PlainPlan | None:
        """What the compiled path may answer for this device right now (plain
        READ/WRITE on a file, :mod:`tcmu_scst.kernel.fastpath`), or None: every
        command goes through :meth:`handle`. Called on the ring thread once per
        wake-up, while the runner's dispatch lock is held."""
        return None

    def try_inline(self, cmd: Command) -> Result | None:
        """Execute a non-inline command on the ring thread if it needs no waiting.

        Returns its result, or ``None`` when it would have to wait (for a disk, a
        sync): then nothing was answered and the runner hands it to a worker, which
        calls :meth:`handle`. Handlers that complete asynchronously never answer
        here. Default: never (every I/O command goes to a worker).
        """
        return None

    def grown_size(self) -> int | None:
        """The backing store's size in bytes (whole blocks) when it has grown beyond the
        size served, else None. Called off the main loop; may wait for the store."""
        return None

    def on_tmr(self, notice: TmrNotice) -> None:
        """A task-management notification (abort, LUN reset). Default: nothing to do."""

    def resize(self, size: int) -> int:
        """RECONFIG of ``dev_size``: pick up a resized backing store; returns the new size.

        Implementations queue CAPACITY DATA HAS CHANGED for the initiators. The
        default refuses (the daemon answers the kernel with -EOPNOTSUPP).
        """
        raise HandlerError(f"{self.handler_name or type(self).__name__}: no online resize")

    def set_write_cache(self, enabled: bool) -> None:
        """RECONFIG of ``emulate_write_cache``: switch write-back caching (WCE)."""
        raise HandlerError(f"{self.handler_name or type(self).__name__}: write cache is fixed")

    def reconfigure(self, dev_config: str) -> bool:
        """RECONFIG of ``dev_config``: apply it in place and return True (vcdrom swaps its
        medium this way), or return False and the daemon opens a new handler instead."""
        return False

    def close(self) -> None:
        """Release the backing store. Called once, after the last command completed."""
