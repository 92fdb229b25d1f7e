"""SCST trace_level on the real kernel: the shell's writes reach the running daemon,
which then logs the commands the kernel's own initiator (sg via tcm_loop) sends."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

import pytest

from tcmu_scst import cli
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.lio import UserBackstore
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import apply_config
from tests.kernel.tcmu_rig import DaemonThread, export_loop, sg_raw

pytestmark = pytest.mark.kernel

PATTERN = b"TRACEME!" * 64  # LBA 0 of the image


def proc(tmp: Path, path: str, line: str) -> int:
    opts = ["--state-dir", str(tmp / "state"), "--control-socket", str(tmp / "control.sock")]
    return cli.main(["proc", *opts, f"/proc/scsi_tgt/{path}", line])


def read_lba0(sg: str) -> None:
    done = sg_raw(sg, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), read=512)  # READ(10)
    assert done.returncode == 0, done.stderr


def trace_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tcmu_scst.trace"]


def test_shell_trace_level_makes_the_daemon_log_commands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tcmu_scst.trace")
    image = tmp_path / "disk1.img"
    with open(image, "wb") as f:
        f.write(PATTERN)
        f.truncate(64 << 20)
    daemon = DaemonThread(tmp_path).start()
    try:
        with ExitStack() as stack:
            assert proc(tmp_path, "vdisk/vdisk", f"open tracedisk {image}") == 0
            backstore = UserBackstore.find(Configfs(), "tracedisk")
            assert backstore is not None
            # The daemon asks for TMR notifications on every device it serves.
            assert backstore.attrib("tmr_notification") == "1"
            lun = export_loop(stack, backstore)
            assert lun.sg is not None
            read_lba0(lun.sg)
            assert not any("READ(10)" in line for line in trace_lines(caplog))  # default: off
            assert proc(tmp_path, "vdisk/trace_level", "add scsi") == 0
            assert proc(tmp_path, "trace_level", "add buff") == 0  # core OR handler
            read_lba0(lun.sg)
            dump = " ".join(PATTERN[i : i + 4].hex() for i in range(0, 64, 4))
            assert f"READ(10) -> GOOD data-in 512 {dump}" in "\n".join(trace_lines(caplog))
            assert any("READ(10) cdb 28000000000000000100" in x for x in trace_lines(caplog))
            assert proc(tmp_path, "vdisk/trace_level", "del scsi") == 0
            caplog.clear()
            read_lba0(lun.sg)
            assert not any("READ(10)" in line for line in trace_lines(caplog))
    finally:
        apply_config(Configfs(), conf.parse("", "empty"), tmp_path / "state" / "lio-state.json")
        daemon.stop()
