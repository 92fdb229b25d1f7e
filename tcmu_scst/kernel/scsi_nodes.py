"""The /dev nodes of a local SCSI device (sd/sr/st and sg), found through sysfs.

When a LUN is exported through tcm_loop, the kernel's SCSI midlayer scans it
asynchronously and the upper-level drivers bind to it one after another; whoever
wants to use the LUN must wait until the nodes exist. No udev is assumed (the lab
guest has none): node names come from ``/sys/class/scsi_device/<H:C:T:L>/device/
{block,scsi_generic}`` and devtmpfs makes the ``/dev`` entries.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from pathlib import Path

from tcmu_scst.errors import KernelError

SYSFS = Path("/sys")
DEV = Path("/dev")


@dataclass(frozen=True)
class ScsiNodes:
    """A local SCSI device and its nodes (None while absent, or for types without one)."""

    hctl: str  # host:channel:target:lun
    block: str | None  # /dev/sdX or /dev/srN
    sg: str | None  # /dev/sgN


def _first_child(directory: Path) -> str | None:
    try:
        names = sorted(p.name for p in directory.iterdir())
    except OSError:
        return None
    return f"/dev/{names[0]}" if names else None


def scsi_nodes(hctl: str, sysfs: Path = SYSFS) -> ScsiNodes:
    """What sysfs shows now for the device at ``hctl``."""
    device = sysfs / "class/scsi_device" / hctl / "device"
    return ScsiNodes(hctl, _first_child(device / "block"), _first_child(device / "scsi_generic"))


class ScsiNodeTimeout(KernelError):
    """The device's nodes did not appear in time; ``nodes`` holds what was found."""

    def __init__(self, message: str, nodes: ScsiNodes) -> None:
        super().__init__(message)
        self.nodes = nodes
        self.errno = errno.ETIMEDOUT


def wait_for_scsi_nodes(
    hctl: str,
    *,
    need_block: bool = True,
    timeout: float = 15.0,
    sysfs: Path = SYSFS,
    dev: Path = DEV,
) -> ScsiNodes:
    """Poll until the device at ``hctl`` has its sg node (and block node) in ``dev``.

    ``need_block=False`` for device types no block driver binds to (processor,
    changer, tape: st's node is not a block device).
    """
    deadline = time.monotonic() + timeout
    while True:
        nodes = scsi_nodes(hctl, sysfs)
        wanted = [nodes.sg, nodes.block] if need_block else [nodes.sg]
        if all(n is not None and (dev / Path(n).name).exists() for n in wanted):
            return nodes
        if time.monotonic() >= deadline:
            raise ScsiNodeTimeout(
                f"SCSI device {hctl} has no {'sg and block' if need_block else 'sg'} node "
                f"after {timeout:g} s (found block={nodes.block}, sg={nodes.sg}); "
                "check dmesg for the SCSI scan of that LUN",
                nodes,
            )
        time.sleep(0.05)
