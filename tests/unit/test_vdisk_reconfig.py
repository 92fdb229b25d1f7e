"""The vdisk's answers to the daemon's RECONFIG events: resize and write cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tcmu_scst.command import Command, DataBuffer
from tcmu_scst.errors import HandlerError
from tcmu_scst.handlers.vdisk import VdiskHandler
from tcmu_scst.handlers.vdisk_params import VdiskParams

MiB = 1 << 20


def handler(tmp_path: Path, **kw: object) -> VdiskHandler:
    image = tmp_path / "d.img"
    if not image.exists():
        image.write_bytes(b"")
        os.truncate(image, 4 * MiB)
    return VdiskHandler(VdiskParams(name="d", filename=str(image), **kw))  # type: ignore[arg-type]


def test_resize_grows_a_file_and_raises_capacity_changed(tmp_path: Path) -> None:
    h = handler(tmp_path)
    assert h.resize(8 * MiB) == 8 * MiB
    assert (tmp_path / "d.img").stat().st_size == 8 * MiB
    assert h.size == 8 * MiB
    tur = Command(1, bytes(6), DataBuffer([]))
    res = h.handle(tur)
    assert res is not None and res.status == 2
    sense = res.sense
    assert (sense[2] & 0xF, sense[12], sense[13]) == (6, 0x2A, 0x09)  # CAPACITY DATA HAS CHANGED
    h.close()


def test_resize_refuses_to_shrink_and_odd_sizes(tmp_path: Path) -> None:
    h = handler(tmp_path)
    with pytest.raises(HandlerError, match="truncate the file first"):
        h.resize(2 * MiB)
    with pytest.raises(HandlerError, match="multiple of the 512-byte block size"):
        h.resize(MiB + 1)
    h.close()


def test_read_only_file_is_not_grown(tmp_path: Path) -> None:
    h = handler(tmp_path, read_only=True)
    with pytest.raises(HandlerError, match="grow it first"):
        h.resize(8 * MiB)
    h.close()


def test_nullio_takes_any_size() -> None:
    h = VdiskHandler(VdiskParams(name="n", nullio=True))
    assert h.resize(64 * MiB) == 64 * MiB
    assert h.size == 64 * MiB
    h.close()


def test_write_cache_toggle(tmp_path: Path) -> None:
    h = handler(tmp_path)
    assert h.config.write_back
    h.set_write_cache(False)
    assert not h.config.write_back
    h.set_write_cache(True)
    assert h.config.write_back
    h.close()
    nv = handler(tmp_path, nv_cache=True)
    with pytest.raises(HandlerError, match="NV_CACHE"):
        nv.set_write_cache(False)
    nv.close()
