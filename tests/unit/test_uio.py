"""UIO discovery and binding against a fake sysfs tree (tcmu-abi.md §1)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tcmu_scst.errors import UioError
from tcmu_scst.kernel import uio


def make_uio(sysfs: Path, minor: int, name: str, size: str = "0x0000000000010000") -> None:
    base = sysfs / f"uio{minor}"
    (base / "maps" / "map0").mkdir(parents=True)
    (base / "name").write_text(name + "\n")
    (base / "version").write_text("2\n")
    (base / "maps" / "map0" / "size").write_text(size + "\n")


def test_parse_name_with_and_without_config() -> None:
    n = uio.UioName.parse("tcm-user/3/disk1/vdisk/path=/a/b")
    assert (n.hba, n.device, n.config) == (3, "disk1", "vdisk/path=/a/b")
    assert n.subtype == "vdisk" and n.handler_config == "path=/a/b"
    bare = uio.UioName.parse("tcm-user/0/d")
    assert bare.config == "" and bare.subtype == ""


@pytest.mark.parametrize("bad", ["uio_pdrv", "tcm-user/x/d/c", "tcm-user/1", "tcm-user/1//c"])
def test_parse_name_rejects(bad: str) -> None:
    with pytest.raises(UioError):
        uio.UioName.parse(bad)


def test_map_size_is_hex_with_prefix() -> None:
    assert uio.parse_map_size("0x0000000040800000") == 0x40800000
    with pytest.raises(UioError, match="not a hex number"):
        uio.parse_map_size("lots")


def test_list_devices_keeps_only_tcmu(tmp_path: Path) -> None:
    make_uio(tmp_path, 2, "tcm-user/1/b/vdisk/x")
    make_uio(tmp_path, 0, "tcm-user/0/a/vdisk/y")
    make_uio(tmp_path, 1, "uio_pdrv_genirq")
    found = uio.list_devices(tmp_path, tmp_path)
    assert [(i.minor, i.name.device) for i in found] == [(0, "a"), (2, "b")]
    assert found[1].configfs_dir == "core/user_1/b"
    assert uio.find_device(1, "b", tmp_path, tmp_path).minor == 2
    with pytest.raises(UioError, match="is it enabled"):
        uio.find_device(5, "zz", tmp_path, tmp_path)


def test_open_maps_whole_region(tmp_path: Path) -> None:
    make_uio(tmp_path, 0, "tcm-user/0/a/vdisk/y", "0x0000000000002000")
    (tmp_path / "uio0").mkdir(exist_ok=True)
    dev_dir = tmp_path / "dev"
    dev_dir.mkdir()
    (dev_dir / "uio0").write_bytes(bytes(0x2000))
    info = uio.read_info(0, tmp_path, dev_dir)
    dev = uio.UioDevice(info)
    assert len(dev.map) == 0x2000
    dev.close()


def test_open_size_mismatch_is_precise(tmp_path: Path) -> None:
    make_uio(tmp_path, 0, "tcm-user/0/a/vdisk/y", "0x0000000000100000")
    dev_dir = tmp_path / "dev"
    dev_dir.mkdir()
    (dev_dir / "uio0").write_bytes(bytes(4096))  # smaller than the advertised map
    with pytest.raises(UioError, match="whole region must be mapped"):
        uio.UioDevice(uio.read_info(0, tmp_path, dev_dir))


def test_wrong_version(tmp_path: Path) -> None:
    make_uio(tmp_path, 0, "tcm-user/0/a/vdisk/y")
    (tmp_path / "uio0" / "version").write_text("1\n")
    with pytest.raises(UioError, match="TCMU version '1'"):
        uio.UioDevice(uio.read_info(0, tmp_path, tmp_path))


def test_busy_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_uio(tmp_path, 0, "tcm-user/0/a/vdisk/y")

    def busy(*args: object, **kwargs: object) -> int:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    monkeypatch.setattr(uio.os, "open", busy)
    with pytest.raises(UioError, match="already open by another process"):
        uio.UioDevice(uio.read_info(0, tmp_path, tmp_path))


def test_event_and_notify_primitives(tmp_path: Path) -> None:
    """Over a pipe pair: 4-byte reads, EAGAIN as None, 4-byte notify writes."""
    make_uio(tmp_path, 0, "tcm-user/0/a/vdisk/y", "0x0000000000001000")
    dev_dir = tmp_path / "dev"
    dev_dir.mkdir()
    (dev_dir / "uio0").write_bytes(bytes(4096))
    dev = uio.UioDevice(uio.read_info(0, tmp_path, dev_dir))
    os.close(dev.fd)
    r, w = os.pipe2(os.O_NONBLOCK)
    dev.fd = r
    assert dev.read_event() is None  # EAGAIN
    os.write(w, (7).to_bytes(4, "little"))
    assert dev.wait(1.0)
    assert dev.read_event() == 7
    dev.fd = w
    dev.notify()
    assert os.read(r, 16) == b"\0\0\0\0"
    os.close(r)
    dev.close()
