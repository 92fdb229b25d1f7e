"""LIO core backstores over the primitive :class:`Configfs`: TCMU user backstores
(``core/user_N/<name>``, the product) and in-kernel fileio ones (``core/fileio_N/<name>``,
the reference the lab compares the product with).

Creation order (what the kernel needs): ``mkdir`` HBA and device, ``control`` keys (one per
write, so a refused key is named), ``wwn/vpd_unit_serial``, ``enable``, then the timeouts
(``cmd_time_out`` is refused once the device is exported). Like rtslib, one HBA per device,
with the lowest index unused by any backend's HBA, allocated under a lock file.

Defaults "for real workloads":

- ``hw_max_sectors`` = 1 MiB per command (2048 x 512 B): large sequential I/O is not split
  into the kernel's default 64 KiB pieces (128 sectors), which would multiply ring entries.
- ``max_data_area_mb`` = 64. The kernel's default of 1024 is per device and pages, once
  touched, stay allocated until global pruning, so a host with many devices pins GiBs.
  The kernel's queue depth for TCMU is 128, so the worst case (128 x 1 MiB) needs 128 MiB;
  when the area is full the kernel does not fail commands, it parks them in its qfull queue
  (``qfull_time_out``), so 64 MiB only throttles at 64 concurrent 1 MiB transfers, far
  above what one backing file or disk sustains, while 4-128 KiB mixes fit hundreds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tcmu_scst.errors import ConfigError, ConfigfsError
from tcmu_scst.kernel.configfs import DEFAULT_ROOT, Configfs

DEFAULT_MAX_TRANSFER = 1 << 20
DEFAULT_MAX_DATA_AREA_MB = 64
DEFAULT_BLOCK_SIZE = 512
# rtslib's lock file, so our allocations and targetcli's never pick the same index.
RTSLIB_LOCK = Path("/var/run/rtslib_backstore.lock")
_HBA_RE = re.compile(r"^(user|fileio|iblock|pscsi|rd_mcp)_(\d+)$")
MAX_DEV_CONFIG = 255  # TCMU_CONFIG_LEN - 1
NAME_MAX = 255


def validate_object_name(name: str, what: str, limit: int = NAME_MAX) -> str:
    """Check only what configfs needs of a name: non-empty, no '/', no whitespace, length."""
    if not name or name in (".", ".."):
        raise ConfigError(f"{what} name {name!r} is empty or reserved; choose another name")
    if "/" in name or any(c.isspace() for c in name) or "\x00" in name:
        raise ConfigError(
            f"{what} name {name!r} contains '/', whitespace or NUL, which configfs cannot "
            "hold; rename it"
        )
    if len(name.encode()) > limit:
        raise ConfigError(f"{what} name {name!r} is longer than {limit} bytes; shorten it")
    return name


def validate_dev_config(dev_config: str) -> str:
    """A TCMU dev_config: ``<subtype>/<rest>``, no ',' or newline (the kernel splits on them)."""
    if "," in dev_config or "\n" in dev_config:
        raise ConfigError(
            f"dev_config {dev_config!r} contains ',' or a newline: the kernel splits control "
            "options on them and would silently truncate it; use another separator"
        )
    if "/" not in dev_config or dev_config.startswith("/"):
        raise ConfigError(
            f"dev_config {dev_config!r} must be '<subtype>/<handler config>' "
            "(the text before the first '/' selects the handler)"
        )
    if len(dev_config.encode()) > MAX_DEV_CONFIG:
        raise ConfigError(f"dev_config is longer than {MAX_DEV_CONFIG} bytes; shorten it")
    return dev_config


@dataclass(frozen=True)
class UserBackstoreOptions:
    """What goes into ``control`` (and the timeouts) when a user backstore is created."""

    dev_config: str
    dev_size: int
    hw_block_size: int = DEFAULT_BLOCK_SIZE
    hw_max_sectors: int | None = None  # None: DEFAULT_MAX_TRANSFER / hw_block_size
    max_data_area_mb: int = DEFAULT_MAX_DATA_AREA_MB
    # Command ring size; None leaves the kernel's default (8 MiB, also its maximum).
    cmd_ring_size_mb: int | None = None
    # None leaves the kernel default (follow the module flag); -1 never waits for replies.
    nl_reply_supported: int | None = None
    serial: str | None = None
    cmd_time_out: int | None = None
    qfull_time_out: int | None = None

    def control_tokens(self) -> list[str]:
        validate_dev_config(self.dev_config)
        if self.dev_size < 0 or self.hw_block_size <= 0 or self.max_data_area_mb <= 0:
            raise ConfigError(
                "dev_size must be >= 0, hw_block_size and max_data_area_mb > 0 "
                f"(got {self.dev_size}, {self.hw_block_size}, {self.max_data_area_mb})"
            )
        sectors = self.hw_max_sectors or max(1, DEFAULT_MAX_TRANSFER // self.hw_block_size)
        tokens = [
            f"dev_config={self.dev_config}",
            f"dev_size={self.dev_size}",
            f"hw_block_size={self.hw_block_size}",
            f"hw_max_sectors={sectors}",
            f"max_data_area_mb={self.max_data_area_mb}",
        ]
        if self.cmd_ring_size_mb is not None:
            if self.cmd_ring_size_mb <= 0:
                raise ConfigError(f"cmd_ring_size_mb must be > 0, got {self.cmd_ring_size_mb}")
            tokens.append(f"cmd_ring_size_mb={self.cmd_ring_size_mb}")
        if self.nl_reply_supported is not None:
            tokens.append(f"nl_reply_supported={self.nl_reply_supported}")
        return tokens


@dataclass(frozen=True)
class UserDeviceInfo:
    """The parsed ``info`` file of a user backstore (keys absent on old kernels are None)."""

    status: str
    max_queue_depth: int | None
    sector_size: int | None
    hw_max_sectors: int | None
    config: str | None  # None when the kernel prints NULL
    size: int
    max_data_area_mb: int | None
    data_pages_per_blk: int | None
    cmd_ring_size_mb: int | None


_INT_KEYS = {
    "Max Queue Depth": "max_queue_depth",
    "SectorSize": "sector_size",
    "HwMaxSectors": "hw_max_sectors",
    "MaxDataAreaMB": "max_data_area_mb",
    "DataPagesPerBlk": "data_pages_per_blk",
    "CmdRingSizeMB": "cmd_ring_size_mb",
}


def parse_user_info(text: str) -> UserDeviceInfo:
    """Parse ``Status: ... Config: <cfg|NULL> Size: <n> MaxDataAreaMB: ...``."""
    status = re.search(r"Status:\s*(\S+)", text)
    config = re.search(r"Config:\s(.*?)\sSize:\s*(\d+)", text, re.S)
    if status is None or config is None:
        raise ConfigfsError(
            f"cannot parse TCMU device info {text!r}: expected 'Status:' and 'Config: ... Size:'"
            "; is this a user backstore?",
            "info",
            errno.EINVAL,
        )
    ints: dict[str, int | None] = {}
    for label, key in _INT_KEYS.items():
        m = re.search(rf"{label}:\s*(-?\d+)", text)
        ints[key] = int(m.group(1)) if m else None
    cfg = config.group(1)
    return UserDeviceInfo(
        status=status.group(1),
        config=None if cfg == "NULL" else cfg,
        size=int(config.group(2)),
        **ints,
    )


@contextlib.contextmanager
def _hba_lock(cfs: Configfs) -> Iterator[None]:
    # rtslib's lock when on the real tree; a private one next to a fake tree.
    path = RTSLIB_LOCK if cfs.root == DEFAULT_ROOT else cfs.root / ".backstore.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise ConfigfsError(
            f"cannot open HBA allocation lock {path}: {err.strerror}; run as root",
            str(path),
            err.errno or 0,
        ) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def hba_indexes(cfs: Configfs) -> set[int]:
    """Indexes of all existing HBAs, whatever their backend."""
    out = set()
    for name in cfs.listdir("core"):
        m = _HBA_RE.match(name)
        if m:
            out.add(int(m.group(2)))
    return out


def _allocate_hba(cfs: Configfs, plugin: str) -> int:
    """mkdir ``core/<plugin>_<N>`` with the lowest N unused by any backend; return N."""
    with _hba_lock(cfs):
        used = hba_indexes(cfs)
        index = min(set(range(len(used) + 1)) - used)
        cfs.mkdir(f"core/{plugin}_{index}")
    return index


_B = TypeVar("_B", bound="CoreBackstore")


class CoreBackstore:
    """A LIO core device ``core/<plugin>_<hba_index>/<name>`` (one HBA per device)."""

    plugin = ""  # set by each subclass: the HBA name prefix

    def __init__(self, cfs: Configfs, hba_index: int, name: str) -> None:
        self.cfs = cfs
        self.hba_index = hba_index
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.rel!r})"

    @property
    def hba(self) -> str:
        return f"core/{self.plugin}_{self.hba_index}"

    @property
    def rel(self) -> str:
        return f"{self.hba}/{self.name}"

    # ---- lookup ------------------------------------------------------------------

    @classmethod
    def all(cls: type[_B], cfs: Configfs) -> list[_B]:
        out = []
        for hba in cfs.listdir("core"):
            m = _HBA_RE.match(hba)
            if m and m.group(1) == cls.plugin:
                for name in cfs.listdir(f"core/{hba}"):
                    if cfs.is_dir(f"core/{hba}/{name}"):
                        out.append(cls(cfs, int(m.group(2)), name))
        return out

    @classmethod
    def find(cls: type[_B], cfs: Configfs, name: str) -> _B | None:
        for dev in cls.all(cfs):
            if dev.name == name:
                return dev
        return None

    # ---- creation ----------------------------------------------------------------

    @classmethod
    def _create(cls: type[_B], cfs: Configfs, name: str, configure: Callable[[_B], None]) -> _B:
        """Allocate the HBA, mkdir the device, ``configure`` it; undo everything on failure."""
        validate_object_name(name, "backstore")
        if cls.find(cfs, name) is not None:
            raise ConfigError(
                f"a {cls.plugin} backstore named {name!r} already exists; delete it first"
            )
        dev = cls(cfs, _allocate_hba(cfs, cls.plugin), name)
        try:
            cfs.mkdir(dev.rel)
            configure(dev)
        except BaseException:
            dev._remove_quietly()
            raise
        return dev

    def _remove_quietly(self) -> None:
        for rel in (self.rel, self.hba):
            with contextlib.suppress(ConfigfsError):
                if self.cfs.exists(rel):
                    self.cfs.rmdir(rel)

    def delete(self) -> None:
        """Remove the device, then its HBA if no other device is left in it."""
        self.cfs.rmdir(self.rel)
        if not [n for n in self.cfs.listdir(self.hba) if self.cfs.is_dir(f"{self.hba}/{n}")]:
            self.cfs.rmdir(self.hba)

    # ---- state and attributes common to every backend -------------------------------

    @property
    def enabled(self) -> bool:
        return self.cfs.read(f"{self.rel}/enable") == "1"

    def attrib(self, key: str) -> str:
        return self.cfs.read(f"{self.rel}/attrib/{key}")

    def set_attrib(self, key: str, value: str | int) -> None:
        self.cfs.write(f"{self.rel}/attrib/{key}", str(value))

    def serial(self) -> str:
        text = self.cfs.read(f"{self.rel}/wwn/vpd_unit_serial")
        return text.split(":", 1)[1].strip() if ":" in text else text.strip()

    def set_serial(self, serial: str) -> None:
        if not serial or any(c.isspace() for c in serial) or len(serial) > 254:
            raise ConfigError(f"unit serial {serial!r} must be 1..254 printable non-space chars")
        self.cfs.write(f"{self.rel}/wwn/vpd_unit_serial", serial)


class UserBackstore(CoreBackstore):
    """A TCMU device ``core/user_<hba_index>/<name>``."""

    plugin = "user"

    @classmethod
    def create(cls, cfs: Configfs, name: str, options: UserBackstoreOptions) -> UserBackstore:
        """Create, configure and enable a user backstore; undo everything on failure."""
        tokens = options.control_tokens()

        def configure(dev: UserBackstore) -> None:
            for token in tokens:
                cfs.write(f"{dev.rel}/control", token)
            if options.serial is not None:
                dev.set_serial(options.serial)
            cfs.write(f"{dev.rel}/enable", "1")
            if options.cmd_time_out is not None:
                dev.set_cmd_time_out(options.cmd_time_out)
            if options.qfull_time_out is not None:
                dev.set_qfull_time_out(options.qfull_time_out)

        return cls._create(cfs, name, configure)

    # ---- state and attributes ----------------------------------------------------------

    def info(self) -> UserDeviceInfo:
        return parse_user_info(self.cfs.read(f"{self.rel}/info"))

    @property
    def uio_name(self) -> str:
        """The name the kernel gives the UIO device: ``tcm-user/<N>/<dev>[/<cfg>]``."""
        config = self.attrib("dev_config")
        base = f"tcm-user/{self.hba_index}/{self.name}"
        return f"{base}/{config}" if config else base

    def set_cmd_time_out(self, seconds: int) -> None:
        """Per-command timeout; the kernel refuses it once the device is exported on a LUN."""
        if seconds < 0:
            raise ConfigError(f"cmd_time_out must be >= 0 seconds, got {seconds}")
        self.set_attrib("cmd_time_out", seconds)

    def set_qfull_time_out(self, seconds: int) -> None:
        """-1: wait for ring space forever (kernel default); >= 0: fail after that long."""
        if seconds < -1:
            raise ConfigError(f"qfull_time_out must be -1 or >= 0 seconds, got {seconds}")
        self.set_attrib("qfull_time_out", seconds)

    def set_dev_size(self, size: int) -> None:
        """Resize; after enable this sends a netlink RECONFIG that a daemon must answer."""
        self.set_attrib("dev_size", size)

    def set_dev_config(self, dev_config: str) -> None:
        self.set_attrib("dev_config", validate_dev_config(dev_config))

    def set_write_cache(self, enabled: bool) -> None:
        self.set_attrib("emulate_write_cache", int(enabled))

    # ---- actions -------------------------------------------------------------------

    @property
    def blocked(self) -> bool:
        return self.cfs.read(f"{self.rel}/action/block_dev") == "blocked"

    def block(self) -> None:
        """New commands fail with BUSY until :meth:`unblock`."""
        self.cfs.write(f"{self.rel}/action/block_dev", "1")

    def unblock(self) -> None:
        self.cfs.write(f"{self.rel}/action/block_dev", "0")

    def reset_ring(self, mode: int = 1) -> None:
        """Complete every pending command (1: BUSY, retryable; 2: CHECK CONDITION)."""
        if mode not in (1, 2):
            raise ConfigError(f"reset_ring mode must be 1 (BUSY) or 2 (CHECK CONDITION): {mode}")
        self.cfs.write(f"{self.rel}/action/reset_ring", str(mode))


@dataclass(frozen=True)
class FileioInfo:
    """The parts of a fileio device's ``info`` file we use."""

    path: str  # the backing file, as given in fd_dev_name
    size: int  # bytes


def parse_fileio_info(text: str) -> FileioInfo:
    """Parse ``... TCM FILEIO ID: 0  File: <path>  Size: <bytes>  Mode: ...``."""
    m = re.search(r"File:\s*(\S+)\s+Size:\s*(\d+)", text)
    if m is None:
        raise ConfigfsError(
            f"cannot parse fileio device info {text!r}: expected 'File: <path>  Size: <n>'"
            "; is this a fileio backstore?",
            "info",
            errno.EINVAL,
        )
    return FileioInfo(path=m.group(1), size=int(m.group(2)))


class FileioBackstore(CoreBackstore):
    """LIO's in-kernel file backstore ``core/fileio_<hba_index>/<name>``.

    Not what tcmu-scst serves (that is :class:`UserBackstore`): the kernel reads and
    writes the file itself. The lab uses it as the reference that our TCMU handlers
    are compared with (compliance runs, benchmarks, tcm_loop checks).
    """

    plugin = "fileio"

    @classmethod
    def create(
        cls, cfs: Configfs, name: str, path: Path, size: int, *, buffered: bool = False
    ) -> FileioBackstore:
        """Create and enable a fileio device of ``size`` bytes on ``path``.

        The kernel opens the file with O_CREAT (a missing file is created, sparse) and
        needs ``fd_dev_size`` for a regular file. ``buffered``: write-back through the
        page cache (``fd_buffered_io``, write cache enabled) instead of O_DSYNC.
        """
        if size <= 0:
            raise ConfigError(f"fileio size must be > 0 bytes, got {size}")
        backing = str(path)
        if not path.is_absolute() or "," in backing or any(c.isspace() for c in backing):
            raise ConfigError(
                f"fileio backing file {backing!r} must be an absolute path without ',' or "
                "whitespace (the kernel splits control options on them)"
            )
        tokens = [f"fd_dev_name={backing}", f"fd_dev_size={size}"]
        if buffered:
            tokens.append("fd_buffered_io=1")

        def configure(dev: FileioBackstore) -> None:
            for token in tokens:  # one per write, so a refused key is named
                cfs.write(f"{dev.rel}/control", token)
            cfs.write(f"{dev.rel}/enable", "1")

        return cls._create(cfs, name, configure)

    def info(self) -> FileioInfo:
        return parse_fileio_info(self.cfs.read(f"{self.rel}/info"))
