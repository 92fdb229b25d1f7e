"""BLOCKIO over a real block device reports that device's geometry.

scsi_debug with ``physblk_exp=3`` is a 512-byte-sector disk with 4096-byte physical
blocks and a non-rotating medium. Exported through our vdisk BLOCKIO and seen by the
kernel's sd over tcm_loop, the LUN must say the same: READ CAPACITY(16) LOGICAL BLOCKS
PER PHYSICAL BLOCK EXPONENT 3 (sd: physical_block_size 4096) and VPD B1 rate 1 (sd:
rotational 0), although the vdisk was opened with the default ``rotational``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config

from .tcmu_rig import load_scsi_debug, serve

pytestmark = pytest.mark.kernel

MiB = 1 << 20


def test_blockio_reports_the_devices_physical_blocks_and_rotation(
    lio_stack: ExitStack, modprobe: Callable[..., None]
) -> None:
    disk = load_scsi_debug(modprobe, "dev_size_mb=16", "physblk_exp=3", need_block=True).block
    assert disk is not None
    name = Path(disk).name
    assert Path(f"/sys/block/{name}/queue/physical_block_size").read_text().strip() == "4096"
    assert Path(f"/sys/block/{name}/queue/rotational").read_text().strip() == "0"
    served = serve(lio_stack, to_dev_config(VdiskParams("geo1", disk, blockio=True)), 16 * MiB)
    assert served.lun is not None and served.lun.block is not None
    ours = Path(served.lun.block).name
    queue = Path(f"/sys/block/{ours}/queue")
    assert (queue / "logical_block_size").read_text().strip() == "512"
    assert (queue / "physical_block_size").read_text().strip() == "4096"
    assert (queue / "rotational").read_text().strip() == "0"
    cap = subprocess.run(["sg_readcap", "-l", served.lun.block], capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    assert "Logical blocks per physical block exponent=3" in cap.stdout, cap.stdout
    # The exported disk goes before scsi_debug can be unloaded (modprobe's teardown).
    lio_stack.close()
    delete = Path(f"/sys/block/{name}/device/delete")
    if delete.exists():
        delete.write_text("1")
