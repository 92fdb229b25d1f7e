"""What a model device becomes in the kernel: TCMU ``dev_config``, size, block size.

The TCMU ``dev_config`` string is ``<subtype>/<handler string>``; the subtype selects
the userspace handler and doubles as our ownership mark: a user backstore whose
``dev_config`` starts with one of :data:`SUBTYPES` was made by tcmu-scst.

The vdisk parameter encoding belongs to ``tcmu_scst.handlers.vdisk`` (the daemon
decodes it there); this module asks that module first and only falls back to a simple
``key=value;key=value`` form (values percent-encoded) while it is not installed.
"""

from __future__ import annotations

import importlib
import os
import stat
from typing import Any

from tcmu_scst.errors import ConfigError, TcmuScstError
from tcmu_scst.kernel.devconfig import quote, unquote
from tcmu_scst.scst.model import PASSTHROUGH_HANDLERS, Device

VDISK_SUBTYPE = "vdisk"
# Subtypes this tool writes; a pass-through device uses its handler name as subtype.
SUBTYPES = frozenset({VDISK_SUBTYPE, "vcdrom", *PASSTHROUGH_HANDLERS})
DEFAULT_BLOCK_SIZE = 512
CDROM_BLOCK_SIZE = 2048
NULLIO_DEFAULT_SIZE = 5 * 1024**4 // 2  # SCST's VDISK_NULLIO_SIZE (fallback only)

_VDISK_MODULE = "tcmu_scst.handlers.vdisk_params"
_PASSTHROUGH_MODULE = "tcmu_scst.handlers.passthrough_params"
_SYSFS_MODULE = "tcmu_scst.handlers.scsi_sysfs"
# Real pass-through handlers (not the perf ones, which emulate): their options
# (serialized, timeout, vendor opcodes) travel in dev_config.
REAL_PASSTHROUGH = frozenset(
    {"dev_disk", "dev_tape", "dev_processor", "dev_cdrom", "dev_modisk", "dev_changer", "dev_raid"}
)
# Tapes and changers run commands for hours (rewind, inventory): the kernel's per-command
# timeout (30 s by default) would fail them; the initiator keeps its own timeouts.
NO_KERNEL_TIMEOUT = frozenset({"dev_tape", "dev_changer"})


def _optional_module(name: str) -> Any:
    """A handlers module, or None where the handlers package is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _vdisk_module() -> Any:
    """The vdisk parameter model, or None where the handlers package is not installed."""
    return _optional_module(_VDISK_MODULE)


def subtype_of(device: Device) -> str:
    if device.handler.startswith("vdisk_"):
        return VDISK_SUBTYPE
    return device.handler


def owned_dev_config(dev_config: str) -> bool:
    """Whether a live backstore's dev_config marks it as ours."""
    return dev_config.split("/", 1)[0] in SUBTYPES


def vdisk_params(device: Device, setup_id: int = 0) -> Any:
    """The handler's VdiskParams for a vdisk_* device (None without the handlers package)."""
    module = _vdisk_module()
    if module is None or not device.handler.startswith("vdisk_"):
        return None
    try:
        return module.parse_attributes(
            device.handler, device.name, device.params, setup_id=setup_id
        )
    except TcmuScstError as err:
        raise device.where.error(str(err)) from err


def _fallback_encoding(device: Device) -> str:
    # Only while tcmu_scst.handlers is not installed (source tree): key=value;... with
    # percent-encoded values, so no ',' or ':' reaches the kernel.
    if device.handler in PASSTHROUGH_HANDLERS:
        items = {"hctl": device.name}
    elif device.handler == "vcdrom":
        items = {"n": device.name, **device.params}
    else:
        items = {"n": device.name, "mode": device.handler.removeprefix("vdisk_"), **device.params}
    return ";".join(f"{k}={quote(v)}" for k, v in items.items())


def encode_dev_config(device: Device, setup_id: int = 0) -> str:
    """``<subtype>/<encoded parameters>``, at most 255 bytes, without ',' or ':'."""
    params = vdisk_params(device, setup_id)
    passthrough = _optional_module(_PASSTHROUGH_MODULE)
    if params is not None:
        try:
            config: str = _vdisk_module().to_dev_config(params)
        except TcmuScstError as err:
            raise device.where.error(str(err)) from err
    elif device.handler in REAL_PASSTHROUGH and passthrough is not None:
        try:
            pt = passthrough.parse_attributes(device.handler, device.name, device.params)
            config = passthrough.to_dev_config(pt)
        except TcmuScstError as err:
            raise device.where.error(str(err)) from err
    else:
        config = f"{subtype_of(device)}/{_fallback_encoding(device)}"
    if "," in config or ":" in config or len(config.encode()) > 255:
        raise device.where.error(
            f"device {device.name}: its TCMU dev_config {config[:40]!r}... is longer than 255 "
            "bytes or holds ',' or ':'; shorten or rename the backing file path"
        )
    return config


def decode_dev_config(name: str, dev_config: str) -> Device:
    """The model device a live backstore stands for (inverse of :func:`encode_dev_config`)."""
    subtype, _, body = dev_config.partition("/")
    module = _vdisk_module()
    tokens = body.split(";")
    fallback_form = any(token.startswith("mode=") for token in tokens)
    if subtype == VDISK_SUBTYPE and module is not None and not fallback_form:
        try:
            handler, attrs = module.to_attributes(module.parse_dev_config(dev_config))
        except TcmuScstError as err:
            raise ConfigError(f"backstore {name}: {err}") from err
        return Device(name, handler, dict(attrs))
    items = dict(token.partition("=")[::2] for token in tokens if token)
    values = {key: unquote(value, f"backstore {name}") for key, value in items.items()}
    values.pop("n", None)
    if subtype == VDISK_SUBTYPE:
        return Device(name, "vdisk_" + values.pop("mode", "fileio"), values)
    passthrough = _optional_module(_PASSTHROUGH_MODULE)
    if subtype in REAL_PASSTHROUGH and passthrough is not None:
        try:
            handler, attrs = passthrough.to_attributes(passthrough.parse_dev_config(dev_config))
        except TcmuScstError as err:
            raise ConfigError(f"backstore {name}: {err}") from err
        pt = passthrough.parse_dev_config(dev_config)
        return Device(pt.hctl, handler, dict(attrs))
    if subtype in PASSTHROUGH_HANDLERS:
        return Device(values.get("hctl", name), subtype, {})
    return Device(name, subtype, values)


def _passthrough_geometry(device: Device) -> tuple[int, int] | None:
    """(size, logical block size) of a present pass-through disk, from sysfs."""
    sysfs = _optional_module(_SYSFS_MODULE)
    if sysfs is None or device.handler not in REAL_PASSTHROUGH:
        return None
    try:
        info = sysfs.read_device(device.name)
    except (TcmuScstError, OSError):
        return None  # absent now: hot-plug exports it when it appears
    geometry: tuple[int, int] | None = sysfs.block_geometry(info)
    return geometry


def block_size_of(device: Device) -> int:
    if device.handler == "vcdrom":
        return CDROM_BLOCK_SIZE
    geometry = _passthrough_geometry(device)
    if geometry is not None:
        return geometry[1]
    text = device.params.get("blocksize", str(DEFAULT_BLOCK_SIZE))
    try:
        return int(text)
    except ValueError:
        raise device.where.error(
            f"device {device.name}: blocksize {text!r} is not a number; use 512 or 4096"
        ) from None


def size_of(device: Device) -> int:
    """The device size in bytes as known now (0 when the backing file is missing)."""
    if device.handler == "vdisk_nullio":
        if "size" in device.params:
            return int(device.params["size"])
        if "size_mb" in device.params:
            return int(device.params["size_mb"]) << 20
        params = vdisk_params(device)
        return int(params.nullio_size) if params is not None else NULLIO_DEFAULT_SIZE
    geometry = _passthrough_geometry(device)
    if geometry is not None:
        return geometry[0]
    filename = device.params.get("filename")
    if not filename:
        return 0
    try:
        info = os.stat(filename)
    except OSError:
        return 0
    if stat.S_ISBLK(info.st_mode):
        fd = os.open(filename, os.O_RDONLY)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)
    return info.st_size


def check_device_files(device: Device, setup_id: int = 0) -> None:
    """System checks for ``config check``: backing files exist, sizes are sane."""
    size = block_size_of(device)
    if size < 512 or size & (size - 1):
        raise device.where.error(
            f"device {device.name}: block size {size} is not a power of two >= 512; "
            "use 512, 1024, 2048 or 4096"
        )
    filename = device.params.get("filename", "")
    if "," in filename:
        raise ConfigError(
            f"device {device.name}: path {filename!r} contains ',' which TCMU dev_config "
            "cannot carry; rename the file or point at a symlink without ','",
            device.where.source,
            device.where.line,
        )
    needs_file = device.handler in ("vdisk_fileio", "vdisk_blockio")
    if needs_file and not filename:
        raise device.where.error(f"device {device.name}: set 'filename /path/to/image'")
    if filename and not os.path.exists(filename):
        raise device.where.error(
            f"device {device.name}: backing file {filename} does not exist; create it "
            f"(e.g. truncate -s 1G {filename}) or fix the path"
        )
    is_blockdev = bool(filename) and stat.S_ISBLK(os.stat(filename).st_mode)
    if device.handler == "vdisk_blockio" and not is_blockdev:
        raise device.where.error(
            f"device {device.name}: vdisk_blockio needs a block device and {filename} is "
            "not one; use vdisk_fileio for regular files"
        )
    if filename and os.path.isdir(filename):
        raise device.where.error(f"device {device.name}: {filename} is a directory, not a file")
    encode_dev_config(device, setup_id)
