"""What a model device becomes in the kernel: TCMU ``dev_config``, size, block size.

The TCMU ``dev_config`` string is ``<subtype>/<handler string>``; the subtype selects
the userspace handler and doubles as our ownership mark: a user backstore whose
``dev_config`` starts with one of ``handler_table.SUBTYPES`` was made by tcmu-scst. Each handler
owns its encoding (its ``*_params`` module); this module only picks the codec, so the
string written here is exactly the one the daemon decodes.
"""

from __future__ import annotations

import logging
import os
import stat

from tcmu_scst.errors import ConfigError, TcmuScstError
from tcmu_scst.handlers import _vdisk_rbd, passthrough_params, perf, vcdrom_params
from tcmu_scst.handlers import vdisk_params as vdisk_codec
from tcmu_scst.handlers.vdisk_params import VdiskParams
from tcmu_scst.kernel import handler_table, parameters, scsi_sysfs
from tcmu_scst.kernel.handler_table import (
    ASSIGNED_HANDLERS,
    BLOCKSIZE,
    SUBTYPES,
    VCDROM,
    Kind,
    block_size_error,
)
from tcmu_scst.scst.model import Device

log = logging.getLogger("tcmu_scst.scst.devconfig")

VDISK_SUBTYPE = "vdisk"
DEFAULT_BLOCK_SIZE = BLOCKSIZE.int_default()
# The block sizes LIO exports are the handler table's (BLOCKSIZE.choices): a 1 GiB
# block size passed the old power-of-two check.
CDROM_BLOCK_SIZE = 2048
# Real pass-through handlers (not the perf ones, which emulate): their options
# (serialized, timeout, vendor opcodes) travel in dev_config.
REAL_PASSTHROUGH = frozenset(handler_table.names(Kind.PASSTHROUGH))
PERF_HANDLERS = frozenset(handler_table.names(Kind.PERF))
# Handlers whose commands may outlast the kernel's per-command timeout (handler_table).
NO_KERNEL_TIMEOUT = frozenset(h.name for h in handler_table.HANDLERS if not h.kernel_timeout)


def owned_dev_config(dev_config: str) -> bool:
    """Whether a live backstore's dev_config marks it as ours."""
    return dev_config.split("/", 1)[0] in SUBTYPES


def vdisk_params(device: Device, setup_id: int = 0) -> VdiskParams | None:
    """The handler's VdiskParams for a vdisk_* device (None for other handlers)."""
    if handler_table.kind_of(device.handler) is not Kind.VDISK:
        return None
    try:
        return vdisk_codec.parse_attributes(
            device.handler, device.name, device.params, setup_id=setup_id
        )
    except TcmuScstError as err:
        raise device.where.error(str(err)) from err


def _handler_dev_config(device: Device, setup_id: int) -> str:
    params = vdisk_params(device, setup_id)
    if params is not None:
        return vdisk_codec.to_dev_config(params)
    if device.handler in REAL_PASSTHROUGH:
        pt = passthrough_params.parse_attributes(device.handler, device.name, device.params)
        return passthrough_params.to_dev_config(pt)
    if device.handler == VCDROM:
        cd = vcdrom_params.parse_attributes(device.name, device.params, setup_id=setup_id)
        return vcdrom_params.to_dev_config(cd)
    if device.handler in PERF_HANDLERS:
        return perf.to_dev_config(perf.PerfParams(device.handler, device.name))
    raise device.where.error(f"device {device.name}: no tcmu-scst handler {device.handler!r}")


def encode_dev_config(device: Device, setup_id: int = 0) -> str:
    """``<subtype>/<encoded parameters>``, at most 255 bytes, without ',' or ':'."""
    try:
        config = _handler_dev_config(device, setup_id)
    except ConfigError as err:
        if err.source:
            raise  # already names the file and line (vdisk_params)
        raise device.where.error(str(err)) from err
    except TcmuScstError as err:
        raise device.where.error(str(err)) from err
    if "," in config or ":" in config or len(config.encode()) > 255:
        raise device.where.error(
            f"device {device.name}: its TCMU dev_config {config[:40]!r}... is longer than 255 "
            "bytes or holds ',' or ':'; shorten or rename the backing file path"
        )
    return config


def decode_dev_config(name: str, dev_config: str) -> Device:
    """The model device a live backstore stands for (inverse of :func:`encode_dev_config`)."""
    subtype = dev_config.partition("/")[0]
    try:
        if subtype == VDISK_SUBTYPE:
            handler, attrs = vdisk_codec.to_attributes(vdisk_codec.parse_dev_config(dev_config))
            return Device(name, handler, dict(attrs))
        if subtype in REAL_PASSTHROUGH:
            pt = passthrough_params.parse_dev_config(dev_config)
            handler, attrs = passthrough_params.to_attributes(pt)
            return Device(pt.hctl, handler, dict(attrs))
        if subtype == VCDROM:
            handler, attrs = vcdrom_params.to_attributes(
                vcdrom_params.parse_dev_config(dev_config)
            )
            return Device(name, handler, dict(attrs))
        if subtype in PERF_HANDLERS:
            return Device(perf.parse_dev_config(dev_config).name, subtype, {})
    except TcmuScstError as err:
        raise ConfigError(f"backstore {name}: {err}") from err
    raise ConfigError(f"backstore {name}: dev_config {dev_config!r} is not a tcmu-scst device")


def _passthrough_geometry(device: Device) -> tuple[int, int] | None:
    """(size, logical block size) of a present pass-through disk, from sysfs."""
    if device.handler not in REAL_PASSTHROUGH:
        return None
    try:
        info = scsi_sysfs.read_device(device.name)
    except (TcmuScstError, OSError):
        return None  # absent now: hot-plug exports it when it appears
    return scsi_sysfs.block_geometry(info)


def block_size_of(device: Device) -> int:
    if device.handler == VCDROM:
        return CDROM_BLOCK_SIZE
    geometry = _passthrough_geometry(device)
    if geometry is not None:
        return geometry[1]
    text = device.params.get(BLOCKSIZE.name)
    if text is None:
        return DEFAULT_BLOCK_SIZE
    # The table's parser, as the handler's codec reads it (its range is checked later,
    # with the file's size).
    where = f"{device.handler} {device.name}: {BLOCKSIZE.name}={text!r}"
    try:
        value = parameters.parse(BLOCKSIZE, where, text)
    except ConfigError as err:
        raise device.where.error(str(err)) from err
    assert isinstance(value, int)
    return value


def size_of(device: Device) -> int:
    """The device size in bytes as known now (0 when the backing file is missing)."""
    if device.handler == vdisk_codec.NULLIO:
        params = vdisk_params(device)  # size or size_mb, as the codec reads them
        assert params is not None  # a vdisk_* handler always has them
        return params.nullio_size
    geometry = _passthrough_geometry(device)
    if geometry is not None:
        return geometry[0]
    if device.handler == vdisk_codec.RBD:
        try:
            return _rbd_size(device)
        except TcmuScstError as err:  # like a missing file: the daemon reports it on open
            log.warning("%s", err)
            return 0
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


def _rbd_size(device: Device) -> int:
    """The image's size; a HandlerError says why the image cannot be opened."""
    return _vdisk_rbd.probe_size(device.params.get("filename", ""), f"device {device.name}")


def _check_rbd_image(device: Device, setup_id: int) -> None:
    """``config check``/``apply``: the image exists and opens (pool, image, binding)."""
    encode_dev_config(device, setup_id)  # the parameters first: no cluster needed for them
    try:
        _rbd_size(device)
    except TcmuScstError as err:
        raise device.where.error(str(err)) from err


def check_device_files(device: Device, setup_id: int = 0) -> None:
    """System checks for ``config check``: backing files exist, sizes are sane."""
    size = block_size_of(device)
    if device.handler in ASSIGNED_HANDLERS:
        if size < 512 or size & (size - 1):  # what the real device reports
            raise device.where.error(
                f"device {device.name}: block size {size} is not a power of two >= 512"
            )
    elif (problem := block_size_error(size)) is not None:
        raise device.where.error(f"device {device.name}: {problem}")
    filename = device.params.get("filename", "")
    if device.handler == vdisk_codec.RBD:
        _check_rbd_image(device, setup_id)
        return
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
    # The parameters as the handler's codec reads them (a relative path, a bad value)
    # before the files: the same message as the shell and proc, which parse first.
    encode_dev_config(device, setup_id)
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
    if filename:
        _check_backing_store(device, filename, size, is_blockdev)


def _check_backing_store(device: Device, filename: str, block_size: int, is_blockdev: bool) -> None:
    """A usable disk: a regular file or block device, not empty, a whole number of blocks.

    ``/dev/null`` (a character device) reads as empty and swallows writes; a file of 0
    bytes (or ``/proc/version``, which stat() says is 0 bytes) gives a disk without one
    block; a size that is not a multiple of the block size leaves a tail the initiator
    cannot address and READ CAPACITY would round away.
    """
    mode = os.stat(filename).st_mode
    if not (stat.S_ISREG(mode) or is_blockdev):
        raise device.where.error(
            f"device {device.name}: {filename} is neither a regular file nor a block device; "
            "point filename at an image file or a disk"
        )
    size = size_of(device)
    if size == 0:
        raise device.where.error(
            f"device {device.name}: backing file {filename} is empty (0 bytes); give it a "
            f"size (e.g. truncate -s 1G {filename})"
        )
    if handler_table.kind_of(device.handler) is Kind.VDISK and size % block_size:
        raise device.where.error(
            f"device {device.name}: backing file {filename} holds {size} bytes, not a whole "
            f"number of {block_size}-byte blocks; resize it to a multiple of {block_size}"
        )
