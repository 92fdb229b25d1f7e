"""Pass-through handlers on the real kernel: scsi_debug devices of every SCST type,
served through TCMU and seen again through tcm_loop.

For each of types 0, 1, 3, 5, 7, 8 and 0Ch: ``modprobe scsi_debug ptype=N``, serve the
device with the matching handler, and check that ``sg_inq`` through the export shows
the scsi_debug identity. The disk also moves data (written through the export, read
back from scsi_debug's own node); the tape, in serialized mode, answers TEST UNIT
READY and READ BLOCK LIMITS through the export exactly as scsi_debug answers them
directly.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from tcmu_scst.handlers.passthrough import PassthroughHandler
from tcmu_scst.handlers.passthrough_params import PassthroughParams, to_dev_config
from tcmu_scst.kernel.scsi_sysfs import ScsiDeviceInfo

from .tcmu_rig import Served, dd, load_scsi_debug, serve, sg_raw

MiB = 1 << 20
HANDLERS = {
    0x0: "dev_disk",
    0x1: "dev_tape",
    0x3: "dev_processor",
    0x5: "dev_cdrom",
    0x7: "dev_modisk",
    0x8: "dev_changer",
    0xC: "dev_raid",
}


# CDBs sent with sg_raw both through the export and to scsi_debug's own node.
TUR = bytes(6)
READ_BLOCK_LIMITS = bytes([0x05, 0, 0, 0, 0, 0])


def scsi_debug_of_type(modprobe: Callable[..., None], ptype: int) -> ScsiDeviceInfo:
    info = load_scsi_debug(modprobe, f"ptype={ptype}", "dev_size_mb=16", need_block=ptype == 0)
    assert info.device_type == ptype
    return info


def sg_inq(node: str) -> str:
    out = subprocess.run(["sg_inq", node], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"sg_inq {node} failed: {out.stderr}"
    return out.stdout


def inquiry_identity(text: str) -> dict[str, str]:
    wanted = ("Vendor identification", "Product identification", "Peripheral device type")
    fields = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key in wanted:
            fields[key] = value.strip()
    return fields


def export(stack: ExitStack, info: ScsiDeviceInfo, **params: object) -> Served:
    handler = HANDLERS[info.device_type]
    dev_config = to_dev_config(PassthroughParams(handler, info.hctl, **params))
    served = serve(stack, dev_config, 16 * MiB, need_block=info.device_type == 0)
    assert isinstance(served.handler, PassthroughHandler)
    assert served.handler.handler_name == handler
    assert served.lun is not None and served.lun.sg
    return served


@pytest.mark.parametrize("ptype", sorted(HANDLERS), ids=[HANDLERS[t] for t in sorted(HANDLERS)])
def test_inquiry_through_the_export_shows_scsi_debug(
    modprobe: Callable[..., None], lio_stack: ExitStack, ptype: int
) -> None:
    info = scsi_debug_of_type(modprobe, ptype)
    served = export(lio_stack, info)
    assert served.lun is not None and served.lun.sg
    through = inquiry_identity(sg_inq(served.lun.sg))
    direct = inquiry_identity(sg_inq(info.sg or ""))
    assert through["Vendor identification"] == "Linux"
    assert through["Product identification"] == "scsi_debug"
    assert through == direct
    exported = Path("/sys/class/scsi_device") / served.lun.hctl / "device/type"
    assert int(exported.read_text()) == ptype


def test_disk_data_written_through_the_export_is_on_scsi_debug(
    modprobe: Callable[..., None], lio_stack: ExitStack, tmp_path: Path
) -> None:
    info = scsi_debug_of_type(modprobe, 0)
    assert info.block, "scsi_debug disk has no block node"
    served = export(lio_stack, info)
    assert served.lun is not None and served.lun.block
    pattern = os.urandom(MiB)
    src = tmp_path / "pattern"
    src.write_bytes(pattern)
    dd(f"if={src}", f"of={served.lun.block}", "bs=64k", "seek=16", "oflag=direct")
    back = tmp_path / "back"
    dd(f"if={info.block}", f"of={back}", "bs=64k", "skip=16", "count=16", "iflag=direct")
    assert back.read_bytes() == pattern
    # ... and reading through the export gives the same bytes.
    again = tmp_path / "again"
    dd(f"if={served.lun.block}", f"of={again}", "bs=64k", "skip=16", "count=16", "iflag=direct")
    assert again.read_bytes() == pattern


def test_tape_serialized_tur_and_read_block_limits(
    modprobe: Callable[..., None], lio_stack: ExitStack
) -> None:
    info = scsi_debug_of_type(modprobe, 1)
    served = export(lio_stack, info)
    assert isinstance(served.handler, PassthroughHandler) and served.handler.serialized
    assert served.lun is not None and served.lun.sg
    for node in (served.lun.sg, info.sg or ""):
        sg_raw(node, TUR)  # eat a pending UNIT ATTENTION
    tur = sg_raw(served.lun.sg, TUR)
    assert tur.returncode == 0, f"TEST UNIT READY through the export: {tur.stderr}"
    through = sg_raw(served.lun.sg, READ_BLOCK_LIMITS, read=6)
    direct = sg_raw(info.sg or "", READ_BLOCK_LIMITS, read=6)
    # The export answers exactly what the device answers (data, or status and sense).
    print(f"READ BLOCK LIMITS through the export: rc={through.returncode} "
          f"stdout={through.stdout!r} stderr={through.stderr!r}")
    assert (through.returncode, through.stdout) == (direct.returncode, direct.stdout), (
        f"through: {through.stderr}\ndirect: {direct.stderr}"
    )
    assert "SCSI Status" in through.stderr or through.returncode == 0


def test_lun_reset_through_the_export_resets_the_device(
    modprobe: Callable[..., None], lio_stack: ExitStack
) -> None:
    """sg_reset -d on the export: LIO's LUN RESET reaches the handler as a TMR
    notification, and the handler resets scsi_debug (which then raises a reset
    UNIT ATTENTION on its own node)."""
    info = scsi_debug_of_type(modprobe, 0)
    served = export(lio_stack, info)
    assert served.lun is not None and served.lun.sg and info.sg
    served.backstore.set_attrib("tmr_notification", 1)
    for _ in range(3):  # eat the power-on UNIT ATTENTION on the direct node
        sg_raw(info.sg, TUR)
    assert sg_raw(info.sg, TUR).returncode == 0
    tmrs_before = served.runner.stats.tmrs
    reset = subprocess.run(["sg_reset", "-d", served.lun.sg], capture_output=True, text=True,
                           timeout=60)
    assert reset.returncode == 0, reset.stderr
    deadline = time.monotonic() + 10
    while served.runner.stats.tmrs == tmrs_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served.runner.stats.tmrs > tmrs_before, "no TMR notification reached the ring"
    after = sg_raw(info.sg, TUR)
    assert after.returncode != 0 and "Unit Attention" in after.stderr, after.stderr


def test_disk_parallel_writers_in_concurrent_mode(
    modprobe: Callable[..., None], lio_stack: ExitStack, tmp_path: Path
) -> None:
    """Four direct-I/O writers at once through a concurrent dev_disk (four runner
    threads issuing SG_IO side by side): every byte lands where it was written."""
    info = scsi_debug_of_type(modprobe, 0)
    assert info.block
    handler_name = HANDLERS[0]
    dev_config = to_dev_config(PassthroughParams(handler_name, info.hctl))
    served = serve(lio_stack, dev_config, 16 * MiB, threads=4)
    assert isinstance(served.handler, PassthroughHandler) and not served.handler.serialized
    assert served.lun is not None and served.lun.block
    patterns = [os.urandom(2 * MiB) for _ in range(4)]
    writers = []
    for index, pattern in enumerate(patterns):
        src = tmp_path / f"p{index}"
        src.write_bytes(pattern)
        writers.append(subprocess.Popen(
            ["dd", f"if={src}", f"of={served.lun.block}", "bs=128k", f"seek={index * 16}",
             "oflag=direct", "status=none"]
        ))
    assert [w.wait(120) for w in writers] == [0, 0, 0, 0]
    whole = tmp_path / "whole"
    dd(f"if={info.block}", f"of={whole}", "bs=1M", "count=8", "iflag=direct")
    assert whole.read_bytes() == b"".join(patterns)
    started = time.monotonic()
    dd(f"if={served.lun.block}", "of=/dev/null", "bs=1M", "count=16", "iflag=direct")
    elapsed = time.monotonic() - started
    print(f"dev_disk read through the export: {16 / elapsed:.1f} MiB/s (bs=1M, direct)")
