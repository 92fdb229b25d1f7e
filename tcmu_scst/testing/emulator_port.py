"""A ring port over the emulator, with a pipe standing in for the UIO event fd.

The runner's real event loop (poll on a file descriptor, 4-byte event read, notify
write) runs unchanged against it: only the two I/O primitives are replaced.
"""

from __future__ import annotations

import os
import threading

from tcmu_scst.testing.ring_emulator import RingEmulator


class EmulatorPort:
    """``RingPort`` for :class:`RingEmulator`: the kernel side posts events to a pipe."""

    def __init__(self, emulator: RingEmulator) -> None:
        self.emulator = emulator
        self.map = emulator.map
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._counter = 0
        emulator.on_event = self._event

    def _event(self) -> None:
        with self._lock:
            self._counter += 1
        try:
            os.write(self._w, b"e")
        except BlockingIOError:
            pass  # the pipe is full: the reader is already due to wake up

    def fileno(self) -> int:
        return self._r

    def read_event(self) -> int | None:
        try:
            os.read(self._r, 4096)
        except BlockingIOError:
            return None
        with self._lock:
            return self._counter

    def notify(self) -> None:
        self.emulator.notify()

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)
