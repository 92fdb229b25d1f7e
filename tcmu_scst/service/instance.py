"""One daemon per kernel: an flock'ed lock file taken before anything touches it.

A second daemon would reset netlink and every ring under the first one's feet (its
start-up recovery), and its control socket would replace the first one's. The lock is
an ``flock`` on ``/run/tcmu-scst/daemon.lock``: the kernel drops it when its holder
dies, however it dies, so a crashed daemon never blocks its successor. The file holds
the holder's pid, for the error message only.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Final

from tcmu_scst.errors import TcmuScstError

DEFAULT_LOCK: Final = Path("/run/tcmu-scst/daemon.lock")


class AlreadyRunning(TcmuScstError):
    """Another daemon holds the lock."""


class InstanceLock:
    def __init__(self, path: Path = DEFAULT_LOCK) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`AlreadyRunning` (never waits)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise TcmuScstError(f"cannot open the daemon lock {self.path}: {err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_pid(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                who = f"pid {holder}" if holder else "another process"
                raise AlreadyRunning(
                    f"another tcmu-scst daemon ({who}) is already serving this kernel "
                    f"({self.path} is locked)"
                ) from None
            raise TcmuScstError(f"cannot lock {self.path}: {err}") from err
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock; the file stays (no unlink race)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
