"""TCMU devices as the UIO subsystem shows them (tcmu-abi.md §1).

Discovery reads ``/sys/class/uio/uio*/name`` (``tcm-user/<hba>/<dev>/<cfg>``) and
``maps/map0/size``; :class:`UioDevice` opens ``/dev/uioN``, maps the whole region
(the kernel refuses any other length) and carries the two I/O primitives of the
protocol: the 4-byte event read (kernel -> us) and the 4-byte notify write
(us -> kernel). Every OS call is checked and turned into a precise :class:`UioError`.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tcmu_scst.errors import UioError
from tcmu_scst.kernel import abi

SYSFS_UIO: Final = Path("/sys/class/uio")
DEV_DIR: Final = Path("/dev")
NAME_PREFIX: Final = "tcm-user/"
_NOTIFY: Final = b"\0\0\0\0"


@dataclass(frozen=True)
class UioName:
    """The parts of a TCMU UIO device name ``tcm-user/<hba>/<dev>[/<cfg>]``."""

    hba: int
    device: str
    config: str  # dev_config: "<subtype>/<handler string>", may be ""

    @property
    def subtype(self) -> str:
        """The handler the device asks for: dev_config up to its first '/'."""
        return self.config.split("/", 1)[0]

    @property
    def handler_config(self) -> str:
        """The handler-specific part of dev_config (after the first '/')."""
        return self.config.split("/", 1)[1] if "/" in self.config else ""

    @classmethod
    def parse(cls, name: str) -> UioName:
        if not name.startswith(NAME_PREFIX):
            raise UioError(f"UIO device name {name!r} is not a TCMU device (no {NAME_PREFIX!r})")
        parts = name[len(NAME_PREFIX) :].split("/", 2)
        if len(parts) < 2 or not parts[0].isdigit() or not parts[1]:
            raise UioError(f"malformed TCMU UIO name {name!r}: want tcm-user/<hba>/<dev>/<cfg>")
        return cls(int(parts[0]), parts[1], parts[2] if len(parts) == 3 else "")


@dataclass(frozen=True)
class UioInfo:
    """One TCMU device found in sysfs."""

    minor: int
    name: UioName
    map_size: int
    version: str
    dev_path: Path

    @property
    def configfs_dir(self) -> str:
        """The device's directory relative to the configfs ``target`` root."""
        return f"core/user_{self.name.hba}/{self.name.device}"


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as err:
        raise UioError(f"cannot read {path}: {err.strerror}") from err


def parse_map_size(text: str) -> int:
    """``maps/map0/size`` is printed with %pa: ``0x0000000040800000``."""
    try:
        return int(text.strip(), 16)
    except ValueError as err:
        raise UioError(f"UIO map size {text!r} is not a hex number") from err


def read_info(minor: int, sysfs: Path = SYSFS_UIO, dev_dir: Path = DEV_DIR) -> UioInfo:
    base = sysfs / f"uio{minor}"
    name = UioName.parse(_read_text(base / "name"))
    size = parse_map_size(_read_text(base / "maps" / "map0" / "size"))
    version = _read_text(base / "version")
    return UioInfo(minor, name, size, version, dev_dir / f"uio{minor}")


def list_devices(sysfs: Path = SYSFS_UIO, dev_dir: Path = DEV_DIR) -> list[UioInfo]:
    """Every TCMU UIO device, in minor order. Other UIO drivers are ignored."""
    found: list[UioInfo] = []
    if not sysfs.is_dir():
        return found
    for entry in sysfs.iterdir():
        if not entry.name.startswith("uio") or not entry.name[3:].isdigit():
            continue
        try:
            name = (entry / "name").read_text().strip()
        except OSError:
            continue  # the device went away while we looked
        if not name.startswith(NAME_PREFIX):
            continue
        try:
            found.append(read_info(int(entry.name[3:]), sysfs, dev_dir))
        except UioError:
            continue
    return sorted(found, key=lambda info: info.minor)


def find_device(hba: int, device: str, sysfs: Path = SYSFS_UIO, dev_dir: Path = DEV_DIR) -> UioInfo:
    """The UIO device of configfs ``core/user_<hba>/<device>``."""
    for info in list_devices(sysfs, dev_dir):
        if info.name.hba == hba and info.name.device == device:
            return info
    raise UioError(
        f"no UIO device for core/user_{hba}/{device}: is it enabled (echo 1 > enable)?"
    )


class UioDevice:
    """An open, mapped ``/dev/uioN`` of a TCMU device."""

    def __init__(self, info: UioInfo) -> None:
        self.info = info
        if info.version != str(abi.TCMU_MAILBOX_VERSION):
            raise UioError(
                f"{info.dev_path}: TCMU version {info.version!r}, this handler speaks "
                f"{abi.TCMU_MAILBOX_VERSION}"
            )
        try:
            self.fd = os.open(info.dev_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.EBUSY:
                raise UioError(
                    f"{info.dev_path} ({info.name.device}) is already open by another "
                    "process: only one handler may serve a TCMU device (tcmu-runner?)"
                ) from err
            raise UioError(f"cannot open {info.dev_path}: {err.strerror}") from err
        try:
            self.map = mmap.mmap(
                self.fd, info.map_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
            )
        except (OSError, ValueError) as err:
            os.close(self.fd)
            reason = getattr(err, "strerror", None) or str(err)
            raise UioError(
                f"cannot map {info.map_size:#x} bytes of {info.dev_path}: {reason} "
                "(the whole region must be mapped; does maps/map0/size match the device?)"
            ) from err

    def fileno(self) -> int:
        return self.fd

    def read_event(self) -> int | None:
        """Consume the event counter; ``None`` when nothing is new (non-blocking)."""
        try:
            raw = os.read(self.fd, 4)
        except BlockingIOError:
            return None
        except OSError as err:
            raise UioError(f"event read on {self.info.dev_path} failed: {err.strerror}") from err
        if len(raw) != 4:
            raise UioError(f"event read on {self.info.dev_path} returned {len(raw)} bytes, not 4")
        return int.from_bytes(raw, "little", signed=True)

    def notify(self) -> None:
        """Tell the kernel to collect completions up to ``cmd_tail`` (one 4-byte write)."""
        try:
            written = os.write(self.fd, _NOTIFY)
        except OSError as err:
            raise UioError(f"notify write on {self.info.dev_path} failed: {err.strerror}") from err
        if written != 4:
            raise UioError(f"notify write on {self.info.dev_path} wrote {written} bytes, not 4")

    def wait(self, timeout: float | None) -> bool:
        """Block until an event is pending or ``timeout`` seconds pass; True on event."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else int(timeout * 1000)))

    def close(self) -> None:
        """Unmap and close; the kernel then allows a new open (ring state survives)."""
        try:
            self.map.close()
        except BufferError:
            # Views of the map are still alive somewhere (a handler kept a buffer);
            # closing the fd still releases the device.
            pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
