"""Finding a local SCSI device's /dev nodes through sysfs (tcmu_scst.kernel.scsi_nodes)."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

from tcmu_scst.kernel.scsi_nodes import (
    ScsiNodes,
    ScsiNodeTimeout,
    scsi_nodes,
    wait_for_scsi_nodes,
)


def scanned(sysfs: Path, hctl: str, *, block: str | None, sg: str | None) -> None:
    device = sysfs / "class/scsi_device" / hctl / "device"
    device.mkdir(parents=True)
    if block:
        (device / "block" / block).mkdir(parents=True)
    if sg:
        (device / "scsi_generic" / sg).mkdir(parents=True)


def test_nodes_come_from_sysfs(tmp_path: Path) -> None:
    scanned(tmp_path, "3:0:1:0", block="sdb", sg="sg2")
    scanned(tmp_path, "4:0:1:0", block=None, sg=None)
    assert scsi_nodes("3:0:1:0", tmp_path) == ScsiNodes("3:0:1:0", "/dev/sdb", "/dev/sg2")
    assert scsi_nodes("4:0:1:0", tmp_path) == ScsiNodes("4:0:1:0", None, None)
    assert scsi_nodes("9:0:0:0", tmp_path) == ScsiNodes("9:0:0:0", None, None)


def test_wait_needs_the_dev_entries_not_only_sysfs(tmp_path: Path) -> None:
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    scanned(sysfs, "3:0:1:0", block="sdb", sg="sg2")
    (dev / "sg2").touch()
    with pytest.raises(ScsiNodeTimeout) as exc:
        wait_for_scsi_nodes("3:0:1:0", timeout=0.1, sysfs=sysfs, dev=dev)
    assert exc.value.errno == errno.ETIMEDOUT
    assert exc.value.nodes == ScsiNodes("3:0:1:0", "/dev/sdb", "/dev/sg2")
    assert "sg and block" in str(exc.value) and "dmesg" in str(exc.value)
    # A processor/tape LUN has no block node: the sg node is enough.
    got = wait_for_scsi_nodes("3:0:1:0", need_block=False, timeout=0.1, sysfs=sysfs, dev=dev)
    assert got.sg == "/dev/sg2"


def test_wait_returns_once_the_scan_finishes(tmp_path: Path) -> None:
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()

    def scan_later() -> None:
        scanned(sysfs, "5:0:1:2", block="sdc", sg="sg3")
        (dev / "sg3").touch()
        (dev / "sdc").touch()

    timer = threading.Timer(0.2, scan_later)
    timer.start()
    try:
        nodes = wait_for_scsi_nodes("5:0:1:2", timeout=10, sysfs=sysfs, dev=dev)
    finally:
        timer.join()
    assert nodes == ScsiNodes("5:0:1:2", "/dev/sdc", "/dev/sg3")
