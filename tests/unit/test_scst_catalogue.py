"""SCST 3.x attributes: applied, accepted with a file:line warning, or refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigError
from tcmu_scst.scst import catalogue, commands, conf
from tcmu_scst.scst.apply import apply_config
from tcmu_scst.scst.catalogue import Level
from tcmu_scst.testing.fake_configfs import FakeConfigfs
from tests.unit.test_scst_cli import fake, run

__all__ = ["fake"]  # the fixture, used by name

FIXTURE = Path(__file__).parent.parent / "fixtures" / "scst3" / "scstadmin-write-config.conf"


def scstadmin_file(tmp_path: Path) -> Path:
    with open(tmp_path / "disk01.img", "wb") as image:
        image.truncate(1 << 20)
    path = tmp_path / "scst.conf"
    path.write_text(FIXTURE.read_text().replace("@DIR@", str(tmp_path)))
    return path


def test_a_file_written_by_scstadmin_checks_with_one_warning_per_attribute(
    fake: FakeConfigfs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = scstadmin_file(tmp_path)
    assert run(tmp_path, "check", str(path)) == 0
    out = capsys.readouterr().out.splitlines()
    warnings = [line for line in out if line.startswith("warning: ")]
    assert f"warning: {path}:5: max_tasklet_cmd has no effect here: SCST core tuning; LIO's " \
        "core has its own and no equivalent knob" in warnings  # fmt: skip
    assert f"warning: {path}:47: TARGET_DRIVER copy_manager has no effect here: EXTENDED " \
        "COPY is served by the tcmu-scst handler between the LUNs an initiator sees" \
        in warnings  # fmt: skip
    assert f"warning: {path}:84: QueuedCommands has no effect here: LIO's queue depth is per " \
        "ACL (cmdsn_depth)" in warnings  # fmt: skip
    # Every warning names the file and its own line, once.
    lines = [w.removeprefix(f"warning: {path}:").split(":")[0] for w in warnings]
    assert len(lines) == len(set(lines)) == 42
    assert out[-1].startswith(f"{path}: OK (1 devices, 1 targets)")


def test_a_file_written_by_scstadmin_applies_what_lio_has(tmp_path: Path) -> None:
    config = commands.load(scstadmin_file(tmp_path))
    (tmp_path / "cfs").mkdir()
    cfs = FakeConfigfs(tmp_path / "cfs")
    apply_config(cfs, config, tmp_path / "state.json")
    tpg = "iscsi/iqn.2006-10.net.vlnb:tgt/tpgt_1"
    assert cfs.read(f"{tpg}/param/MaxBurstLength") == "1048576"  # applied
    assert cfs.read(f"{tpg}/param/InitialR2T") == "No"
    assert not cfs.exists(f"{tpg}/param/QueuedCommands")  # ignored, warned
    assert cfs.read(f"{tpg}/attrib/generate_node_acls") == "0"  # pattern group: case C
    (device,) = config.devices
    assert "prod_id" not in device.params and device.params["filename"].endswith("disk01.img")
    # The no-effect target attributes are kept, so "config save" writes them back.
    assert config.targets[0].attributes["NopInInterval"] == "30"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_taskletcmd 10\n",
         "c.conf:1: unknown keyword 'max_taskletcmd' at top level; expected HANDLER, "
         "TARGET_DRIVER, GROUP, DEVICE_GROUP, setup_id, threads"),
        ("HANDLER vdisk_nullio {\n trace_levl 0\n}\n",
         "c.conf:2: unknown keyword 'trace_levl' at HANDLER vdisk_nullio; expected DEVICE"),
        ("TARGET_DRIVER iscsi {\n iSNSServr x\n}\n",
         "c.conf:2: unknown keyword 'iSNSServr' at TARGET_DRIVER iscsi; expected TARGET, enabled"),
        # An iSCSI-only attribute on another driver is unknown there.
        ("TARGET_DRIVER scst_local {\n TARGET t {\n  NopInInterval 30\n }\n}\n",
         "c.conf:3: unknown keyword 'NopInInterval' at TARGET t; expected LUN, GROUP, enabled, "
         "IncomingUser, OutgoingUser, portal, allowed_portal or an iSCSI parameter"),
        ("TARGET_DRIVER copy_manager {\n TARGET copy_manager_tgt {\n  bogus 1\n }\n}\n",
         "c.conf:3: unknown keyword 'bogus' at TARGET copy_manager_tgt; expected LUN"),
        ("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.x:t {\n  cpu_mask\n }\n}\n",
         "c.conf:3: cpu_mask needs a value"),
    ],
)  # fmt: skip
def test_unknown_attributes_are_errors_at_every_level(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        conf.parse(text, "c.conf")
    assert str(info.value) == message


def test_an_iscsi_parameter_on_another_fabric_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown keyword 'HeaderDigest' at TARGET t"):
        conf.parse("TARGET_DRIVER scst_local {\n TARGET t {\n  HeaderDigest None\n }\n}\n", "c")


def test_the_catalogue_declares_each_attribute_once_per_level() -> None:
    keys = [(e.level, e.name) for e in catalogue.entries()]
    assert len(keys) == len(set(keys))
    assert catalogue.ignored(Level.TARGET, "NopInInterval", "iscsi") is not None
    assert catalogue.ignored(Level.TARGET, "NopInInterval", "qla2xxx") is None
    assert catalogue.ignored(Level.DEVICE, "size", "vdisk_nullio") is None  # applied there
    assert not catalogue.ISCSI_PARAMS & {e.name for e in catalogue.entries()}
