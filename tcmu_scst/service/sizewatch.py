"""Backing stores that grow on their own: the daemon resizes the device as ``resync_size``.

An RBD image is resized by ``rbd resize`` on any client of the cluster; SCST's admin
would then ``resync_size`` the device. Here the daemon looks, every few seconds, at
the devices whose handler can tell (:meth:`Handler.grown_size`) and, when one has
grown, writes the new size to the device's ``dev_size`` in configfs: the kernel sends
the daemon its RECONFIG, and the handler queues CAPACITY DATA HAS CHANGED as it does
for an admin's resize, so the kernel's size and the initiators' agree.

The checks and the write run on a thread of their own, never on the main loop: the
configfs write waits for the kernel's netlink RECONFIG to be answered by the main
loop, and a handler's size read may wait for its backing store (a cluster that does
not answer). While one round is under way, later ticks start none.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from tcmu_scst.errors import TcmuScstError
from tcmu_scst.handler import Handler

log = logging.getLogger(__name__)

#: Seconds between two looks at the devices' sizes.
SIZE_WATCH_EVERY = 5.0

#: (configfs directory for messages, the device's handler, how to set its dev_size)
Watched = tuple[str, Handler, Callable[[int], None]]


class SizeWatch:
    """Starts a round of size checks on :meth:`tick`, one round at a time."""

    def __init__(self, watched: Callable[[], Iterable[Watched]]) -> None:
        self.watched = watched
        self._lock = threading.Lock()
        self._round: threading.Thread | None = None

    def tick(self) -> threading.Thread | None:
        """From the main loop's timer: start a round unless one runs or nothing grows
        on its own; returns the round's thread (tests join it)."""
        devices = [w for w in self.watched() if w[1].watches_size]
        if not devices:
            return None
        with self._lock:
            if self.busy:
                return None
            self._round = threading.Thread(target=self._check, args=(devices,),
                                           name="size-watch", daemon=True)  # fmt: skip
            self._round.start()
            return self._round

    @property
    def busy(self) -> bool:
        """A round is under way (its dev_size write may wait for the main loop)."""
        return self._round is not None and self._round.is_alive()

    def _check(self, devices: list[Watched]) -> None:
        for configfs_dir, handler, set_dev_size in devices:
            try:
                grown = handler.grown_size()
                if grown is None:
                    continue
                log.info("%s: the backing store grew to %d bytes; resizing the device",
                         configfs_dir, grown)
                set_dev_size(grown)
            except (TcmuScstError, OSError) as err:
                log.warning("%s: size check failed: %s", configfs_dir, err)
