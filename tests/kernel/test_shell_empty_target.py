"""A TARGET declared with no LUNs of its own, on the real LIO (issue 12.4).

``tcmu-scst config apply`` creates it (a declared target exists), and a LUN added to
Default later in the shell reaches it: under the 0.9.6 rules a target without LUNs of
its own serves Default. Both steps run the ``tcmu-scst`` command as a user would,
with the real daemon serving the backstore; the new LUN must show up as a SCSI disk
whose model is the device name.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import LoopbackTpg
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import apply_config
from tests.kernel.tcmu_rig import DaemonThread

pytestmark = pytest.mark.kernel

WWN = "naa.50014050000e0012"
TPG = f"loopback/{WWN}/tpgt_1"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Path]:
    with open(tmp_path / "d0.img", "wb") as f:
        f.truncate(16 << 20)
    daemon = DaemonThread(tmp_path).start()
    try:
        yield tmp_path
    finally:
        apply_config(Configfs(), conf.parse("", "empty"), tmp_path / "state" / "lio-state.json")
        daemon.stop()


def tcmu_scst(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tcmu_scst", *argv],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"tcmu-scst {' '.join(argv)}: {done.stderr}"
    return done.stdout


def scsi_model(hctl: str, timeout: float = 30.0) -> str:
    model = Path(f"/sys/class/scsi_device/{hctl}/device/model")
    deadline = time.monotonic() + timeout
    while not model.exists():
        assert time.monotonic() < deadline, f"no SCSI device {hctl} appeared"
        time.sleep(0.2)
    return model.read_text().strip()


def test_target_without_luns_is_created_and_serves_default_luns_added_in_the_shell(
    rig: Path,
) -> None:
    cfs = Configfs()
    config = rig / "scst.conf"
    config.write_text(
        f"HANDLER vdisk_fileio {{\n DEVICE d0 {{\n  filename {rig}/d0.img\n }}\n}}\n"
        f"TARGET_DRIVER loopback {{\n TARGET {WWN} {{\n }}\n}}\n"
    )
    state = rig / "state"
    out = tcmu_scst("config", "apply", str(config), "--state-file", str(state / "lio-state.json"))
    assert f"create loopback target {WWN} tpgt_1" in out
    assert cfs.is_dir(TPG) and cfs.listdir(f"{TPG}/lun") == []

    tcmu_scst("shell", "--state-dir", str(state), "--control-socket", str(rig / "control.sock"),
              "/groups/Default/devices", "add", "d0", "0")  # fmt: skip
    assert cfs.listdir(f"{TPG}/lun") == ["lun_0"]
    assert scsi_model(LoopbackTpg(cfs, WWN).hctl(0)) == "d0"
