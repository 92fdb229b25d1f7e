"""DEVICE_GROUP / TARGET_GROUP onto LIO's alua/ groups on the fake configfs (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import ApplyError, apply_config
from tcmu_scst.scst.live import read_live
from tcmu_scst.scst.mapping import derived_naa
from tcmu_scst.scst.model import ScstConfig
from tcmu_scst.scst.ownership import load_ownership
from tcmu_scst.scst.save import live_config
from tcmu_scst.testing.fake_configfs import FakeConfigfs
from tests.unit.test_scst_apply import FailingConfigfs

WEST = derived_naa("loopback", "west", "Default")
EAST = derived_naa("loopback", "east", "Default")


def text(images: Path, west: str = "active", east: str = "standby", east_id: int = 2,
         alua: bool = True) -> str:  # fmt: skip
    body = "HANDLER vdisk_fileio {\n"
    for name in ("d0", "d1"):
        body += f" DEVICE {name} {{\n  filename {images}/{name}.img\n }}\n"
    body += "}\nTARGET_DRIVER scst_local {\n"
    for target in ("west", "east"):
        body += f" TARGET {target} {{\n  LUN 0 d0\n  LUN 1 d1\n }}\n"
    body += "}\n"
    if alua:
        body += (
            "DEVICE_GROUP dg {\n DEVICE d0\n"
            f" TARGET_GROUP tw {{\n  group_id 1\n  state {west}\n  preferred\n  TARGET west\n }}\n"
            f" TARGET_GROUP te {{\n  group_id {east_id}\n  state {east}\n  TARGET east\n }}\n"
            "}\n"
        )
    return body


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for name in ("d0", "d1"):
        (tmp_path / f"{name}.img").write_bytes(b"\0" * 4096)
    return tmp_path


@pytest.fixture
def cfs(tmp_path: Path) -> FakeConfigfs:
    (tmp_path / "cfs").mkdir()
    return FakeConfigfs(tmp_path / "cfs")


def apply(cfs: Configfs, cfg: ScstConfig, tmp_path: Path) -> int:
    return apply_config(cfs, cfg, tmp_path / "state.json").operations


def group_of(cfs: Configfs, wwn: str, lun: int) -> str:
    shown = cfs.read(f"loopback/{wwn}/tpgt_1/lun/lun_{lun}/alua_tg_pt_gp")
    return shown.splitlines()[0].removeprefix("TG Port Alias: ")


def test_groups_are_made_on_each_device_and_the_luns_join_them(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    apply(cfs, conf.parse(text(images)), tmp_path)
    d0 = "core/user_0/d0"
    assert cfs.read(f"{d0}/alua/tw/tg_pt_gp_id") == "1"
    assert cfs.read(f"{d0}/alua/tw/alua_access_state") == "0"
    assert cfs.read(f"{d0}/alua/tw/preferred") == "1"
    assert cfs.read(f"{d0}/alua/te/tg_pt_gp_id") == "2"
    assert cfs.read(f"{d0}/alua/te/alua_access_state") == "2"
    assert cfs.read(f"{d0}/alua/te/preferred") == "0"
    assert group_of(cfs, WEST, 0) == "tw"
    assert group_of(cfs, EAST, 0) == "te"
    # d1 is in no device group: its LUNs stay in LIO's default group, no groups made.
    assert group_of(cfs, WEST, 1) == "default_tg_pt_gp"
    assert cfs.listdir("core/user_1/d1/alua") == ["default_tg_pt_gp"]
    # The kernel order: id before state, the LUN link before the membership.
    assert cfs.index_of("write", "alua/te/tg_pt_gp_id") < cfs.index_of(
        "write", "alua/te/alua_access_state"
    )
    assert cfs.index_of("symlink", f"{EAST}/tpgt_1/lun/lun_0") < cfs.index_of(
        "write", f"{EAST}/tpgt_1/lun/lun_0/alua_tg_pt_gp"
    )
    assert apply(cfs, conf.parse(text(images)), tmp_path) == 0


def test_swapping_states_writes_only_the_states_active_first(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    apply(cfs, conf.parse(text(images)), tmp_path)
    mark = len(cfs.log)
    apply(cfs, conf.parse(text(images, west="standby", east="active")), tmp_path)
    changes = [(op.op, op.path, op.value) for op in cfs.log[mark:]]
    assert changes == [
        ("write", "core/user_0/d0/alua/te/alua_access_state", "0"),
        ("write", "core/user_0/d0/alua/tw/alua_access_state", "2"),
    ]
    assert group_of(cfs, EAST, 0) == "te"


def test_a_new_group_id_remakes_the_group_and_rejoins_its_luns(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    apply(cfs, conf.parse(text(images)), tmp_path)
    apply(cfs, conf.parse(text(images, east_id=9)), tmp_path)
    assert cfs.read("core/user_0/d0/alua/te/tg_pt_gp_id") == "9"
    assert cfs.read("core/user_0/d0/alua/te/alua_access_state") == "2"
    assert group_of(cfs, EAST, 0) == "te"
    assert apply(cfs, conf.parse(text(images, east_id=9)), tmp_path) == 0


def test_removing_the_device_group_and_clearing_everything(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    apply(cfs, conf.parse(text(images)), tmp_path)
    apply(cfs, conf.parse(text(images, alua=False)), tmp_path)
    assert cfs.listdir("core/user_0/d0/alua") == ["default_tg_pt_gp"]
    assert group_of(cfs, EAST, 0) == "default_tg_pt_gp"
    apply(cfs, conf.parse(text(images)), tmp_path)
    # An empty file removes the groups, then the backstores holding them.
    apply(cfs, conf.parse(""), tmp_path)
    assert not cfs.exists("core/user_0")


def test_config_save_gives_the_device_groups_back_with_live_states(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    config = conf.parse(text(images))
    apply(cfs, config, tmp_path)
    ownership = load_ownership(tmp_path / "state.json")
    saved = live_config(cfs, ownership)
    assert saved.device_groups == config.device_groups
    assert conf.parse(conf.write(saved)).device_groups == config.device_groups
    # A state changed behind the file's back (STPG, targetcli) is what save writes.
    cfs.write("core/user_0/d0/alua/te/alua_access_state", "0")
    saved = live_config(cfs, ownership)
    assert [tg.state for tg in saved.device_groups[0].target_groups] == ["active", "active"]


def test_live_reading_sees_groups_and_memberships(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    apply(cfs, conf.parse(text(images)), tmp_path)
    live = read_live(cfs, load_ownership(tmp_path / "state.json"))
    assert {g.name: (g.group_id, g.state) for g in live.port_groups["d0"]} == {
        "tw": (1, 0),
        "te": (2, 2),
    }
    assert live.lun_groups[("loopback", EAST, 0)] == "te"


def _alua_state(cfs: FakeConfigfs) -> tuple[object, ...]:
    groups = {
        rel: (cfs.read(f"{rel}/tg_pt_gp_id"), cfs.read(f"{rel}/alua_access_state"),
              cfs.read(f"{rel}/preferred"))
        for rel in sorted(cfs.alua.ids)
    }  # fmt: skip
    return groups, dict(sorted(cfs.alua.members.items()))


@pytest.mark.parametrize("fail_at", range(1, 12))
def test_a_failed_alua_apply_is_undone(tmp_path: Path, images: Path, fail_at: int) -> None:
    (tmp_path / "cfs").mkdir()
    cfs = FailingConfigfs(tmp_path / "cfs")
    apply(cfs, conf.parse(text(images)), tmp_path)
    before = _alua_state(cfs)
    cfs.fail_at = fail_at
    # New id for te (remove + make + rejoin) and swapped states: every kind of step.
    after = conf.parse(text(images, west="standby", east="active", east_id=5))
    try:
        apply(cfs, after, tmp_path)
    except ApplyError as err:
        assert "all changes undone" in str(err), str(err)
        assert _alua_state(cfs) == before
        cfs.fail_at = -1
        assert apply(cfs, conf.parse(text(images)), tmp_path) == 0
    else:
        assert fail_at > 6  # fewer changes than the failure point: applied in full
        assert cfs.read("core/user_0/d0/alua/te/tg_pt_gp_id") == "5"
