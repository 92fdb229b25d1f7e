"""The exception tree of tcmu-scst.

Every error a user can cause or meet derives from :class:`TcmuScstError` and carries
a one-line message that says what failed, why, and (where we know it) what to do.
The CLI prints ``str(error)`` and exits non-zero; nothing else is needed to report it.

::

    TcmuScstError
     +-- KernelError            the kernel ABI said no (UIO, mmap, configfs, netlink)
     |    +-- UioError          opening/mapping/signalling a /dev/uioN device
     |    +-- RingError         the shared ring holds something we cannot accept
     |    +-- ConfigfsError     a configfs operation failed (path and errno kept)
     |    +-- NetlinkError      the TCM-USER generic netlink family
     +-- ConfigError            a config file or command argument is wrong
     +-- HandlerError           a device handler cannot open/serve its device
     +-- LabError               the microVM cannot be built or booted
"""

from __future__ import annotations


class TcmuScstError(Exception):
    """Base of every error raised on purpose by tcmu-scst."""


class KernelError(TcmuScstError):
    """An interface of the running kernel refused or misbehaved."""


class UioError(KernelError):
    """A UIO device could not be found, opened, mapped or signalled."""


class RingError(KernelError):
    """The TCMU ring holds data that violates the ABI (bad version, offsets, lengths)."""


class ConfigfsError(KernelError):
    """A configfs read/write/mkdir/rmdir/symlink failed."""

    def __init__(self, message: str, path: str = "", errno: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


class NetlinkError(KernelError):
    """The TCM-USER generic netlink family is missing or answered with an error."""


class ConfigError(TcmuScstError):
    """A configuration (file, command line, shell argument) is invalid."""

    def __init__(self, message: str, source: str = "", line: int = 0) -> None:
        where = f"{source}:{line}: " if source and line else (f"{source}: " if source else "")
        super().__init__(f"{where}{message}")
        self.source = source
        self.line = line
        self.reason = message


class HandlerError(TcmuScstError):
    """A device handler cannot open or serve its backing device."""


class LabError(TcmuScstError):
    """The lab microVM cannot be prepared, booted or driven."""
