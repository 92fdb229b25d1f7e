"""First real-kernel checks of the lab itself: target core, tcm_loop + fileio, scsi_debug."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.lio import FileioBackstore
from tcmu_scst.kernel.scsi_nodes import ScsiNodes
from tests.kernel.tcmu_rig import dd, load_scsi_debug

pytestmark = pytest.mark.kernel


def test_target_core_version_is_readable(configfs: Configfs) -> None:
    version = configfs.read("version")
    assert "Target Engine Core ConfigFS Infrastructure" in version
    assert os.uname().release in version


def test_target_core_user_is_loaded() -> None:
    assert Path("/sys/module/target_core_user").is_dir()


def test_fileio_over_tcm_loop_round_trip(
    fileio_backstore: Callable[..., FileioBackstore],
    loop_export: Callable[..., ScsiNodes],
    tmp_path: Path,
) -> None:
    backstore = fileio_backstore(size=16 << 20)
    lun = loop_export(backstore, lun=0)
    assert lun.block is not None and lun.block.startswith("/dev/sd")
    assert lun.sg is not None and lun.sg.startswith("/dev/sg")
    pattern = tmp_path / "pattern"
    pattern.write_bytes(os.urandom(8 << 20))
    dd(f"if={pattern}", f"of={lun.block}", "bs=1M", "count=8", "oflag=direct")
    readback = tmp_path / "readback"
    dd(f"if={lun.block}", f"of={readback}", "bs=1M", "count=8", "iflag=direct")
    assert readback.read_bytes() == pattern.read_bytes()
    # The bytes went through LIO to the backing file, at the same offsets.
    backing = Path(backstore.info().path)
    assert backstore.info().size == 16 << 20
    assert backing.read_bytes()[: 8 << 20] == pattern.read_bytes()


def test_scsi_debug_appears_after_modprobe(modprobe: Callable[..., None]) -> None:
    info = load_scsi_debug(modprobe, "dev_size_mb=8", need_block=True)
    assert Path("/sys/bus/pseudo/drivers/scsi_debug").is_dir()
    assert info.block is not None and info.sg is not None
    size_sectors = int(Path(f"/sys/block/{Path(info.block).name}/size").read_text())
    assert size_sectors * 512 == 8 << 20
