"""Pass-through devices from scst.conf reach the kernel with their handler's options.

dev_config carries serialized/timeout/vendor options for the handler; tapes and
changers get no kernel command timeout (their commands run for hours); every real
pass-through backstore asks the kernel for TMR notifications (aborts, LUN resets).
"""

from __future__ import annotations

from pathlib import Path

from tcmu_scst.handlers.passthrough_params import parse_dev_config
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import apply_config
from tcmu_scst.scst.devconfig import decode_dev_config
from tcmu_scst.testing.fake_configfs import FakeConfigfs

CONFIG = """
HANDLER dev_tape {
    DEVICE 2:0:0:0 {
        serialized 1
        timeout 60
    }
}
HANDLER dev_disk {
    DEVICE 3:0:0:0
}
"""


def test_passthrough_options_timeouts_and_tmr(tmp_path: Path) -> None:
    (tmp_path / "cfs").mkdir()
    cfs = FakeConfigfs(tmp_path / "cfs")
    apply_config(cfs, conf.parse(CONFIG, "t.conf"), tmp_path / "state.json")
    tape = next(p for p in cfs.listdir("core") if cfs.exists(f"core/{p}/2:0:0:0"))
    disk = next(p for p in cfs.listdir("core") if cfs.exists(f"core/{p}/3:0:0:0"))
    tape_rel, disk_rel = f"core/{tape}/2:0:0:0", f"core/{disk}/3:0:0:0"
    params = parse_dev_config(cfs.read(f"{tape_rel}/attrib/dev_config"))
    assert (params.handler, params.hctl, params.serialized, params.timeout) == (
        "dev_tape", "2:0:0:0", True, 60,
    )
    assert cfs.read(f"{tape_rel}/attrib/cmd_time_out") == "0"
    assert cfs.read(f"{disk_rel}/attrib/cmd_time_out") == "30"
    assert cfs.read(f"{tape_rel}/attrib/tmr_notification") == "1"
    assert cfs.read(f"{disk_rel}/attrib/tmr_notification") == "1"
    # and the live backstore reads back as the same model device
    dev = decode_dev_config("2:0:0:0", cfs.read(f"{tape_rel}/attrib/dev_config"))
    assert (dev.name, dev.handler) == ("2:0:0:0", "dev_tape")
    assert dev.params.get("serialized") == "1" and dev.params.get("timeout") == "60"
    # applying again changes nothing
    before = len(cfs.log)
    apply_config(cfs, conf.parse(CONFIG, "t.conf"), tmp_path / "state.json")
    assert len(cfs.log) == before
