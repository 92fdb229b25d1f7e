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
     |    +-- ConfigErrors      every error found in one file (one line each)
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


class ConfigErrors(ConfigError):
    """All the errors of one file, so an admin fixes them in one pass.

    Behaves as its first error (``source``, ``line``, ``reason``); ``str()`` is every
    error on its own line, in file order.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        first = errors[0]
        super().__init__(first.reason, first.source, first.line)
        self.errors = list(errors)
        self.args = ("\n".join(str(err) for err in self.errors),)

    def __str__(self) -> str:
        return str(self.args[0])


class ErrorCollector:
    """Gathers ConfigErrors instead of stopping at the first (``with collector.guard():``)."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, error: ConfigError) -> None:
        if isinstance(error, ConfigErrors):
            self.errors.extend(error.errors)
        else:
            self.errors.append(error)

    def guard(self) -> _Guard:
        return _Guard(self)

    def raise_if_any(self) -> None:
        """Raise every gathered error at once (sorted by line, duplicates dropped)."""
        if not self.errors:
            return
        unique = list({str(err): err for err in self.errors}.values())
        unique.sort(key=lambda err: (err.source, err.line))
        raise ConfigErrors(unique)


class _Guard:
    def __init__(self, collector: ErrorCollector) -> None:
        self.collector = collector

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: BaseException | None, tb: object) -> bool:
        if isinstance(value, ConfigError):
            self.collector.add(value)
            return True
        return False


class HandlerError(TcmuScstError):
    """A device handler cannot open or serve its backing device."""


class LabError(TcmuScstError):
    """The lab microVM cannot be prepared, booted or driven."""
