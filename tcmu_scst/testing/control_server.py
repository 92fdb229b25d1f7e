"""A control socket server on a thread of its own, for tests of clients (the shell,
the udev notify helper): the real ControlServer and socket, a test's ``handle``."""

from __future__ import annotations

import contextlib
import select
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from tcmu_scst.service.control import ControlServer
from tcmu_scst.service.messages import Answer, Request


@contextlib.contextmanager
def serving(path: Path, handle: Callable[[Request], Answer]) -> Iterator[ControlServer]:
    """Answer every request on ``path`` with ``handle`` until the block ends."""
    server = ControlServer(path, handle)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if select.select([server], [], [], 0.05)[0]:
                server.serve_one()

    thread = threading.Thread(target=loop, name="control-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5)
        server.close()
