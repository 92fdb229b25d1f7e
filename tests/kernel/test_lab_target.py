"""First real-kernel checks of the lab itself: target core, tcm_loop + fileio, scsi_debug."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.lio import FileioBackstore
from tcmu_scst.kernel.scsi_nodes import ScsiNodes, wait_for_scsi_nodes

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
    subprocess.run(
        ["dd", f"if={pattern}", f"of={lun.block}", "bs=1M", "count=8", "oflag=direct",
         "status=none"],
        check=True,
    )
    readback = tmp_path / "readback"
    subprocess.run(
        ["dd", f"if={lun.block}", f"of={readback}", "bs=1M", "count=8", "iflag=direct",
         "status=none"],
        check=True,
    )
    assert readback.read_bytes() == pattern.read_bytes()
    # The bytes went through LIO to the backing file, at the same offsets.
    backing = Path(backstore.info().path)
    assert backstore.info().size == 16 << 20
    assert backing.read_bytes()[: 8 << 20] == pattern.read_bytes()


def test_scsi_debug_appears_after_modprobe(modprobe: Callable[..., None]) -> None:
    modprobe("scsi_debug", "dev_size_mb=8", "num_tgts=1", "max_luns=1")
    driver = Path("/sys/bus/pseudo/drivers/scsi_debug")
    deadline = time.monotonic() + 15
    found: list[Path] = []
    while not found and time.monotonic() < deadline:
        found = [
            d for d in Path("/sys/class/scsi_device").iterdir()
            if (d / "device" / "model").is_file()
            and (d / "device" / "model").read_text().strip() == "scsi_debug"
        ]
        time.sleep(0.1)
    assert driver.is_dir()
    assert found, "no scsi_debug device in /sys/class/scsi_device"
    nodes = wait_for_scsi_nodes(found[0].name)
    assert nodes.block is not None
    size_sectors = int(Path(f"/sys/block/{Path(nodes.block).name}/size").read_text())
    assert size_sectors * 512 == 8 << 20
