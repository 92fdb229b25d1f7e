"""Diff + apply on the fake configfs: order, idempotence, declarative removal, rollback."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigError
from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import ApplyError, apply_config
from tcmu_scst.scst.live import read_live
from tcmu_scst.scst.model import ScstConfig
from tcmu_scst.scst.ownership import load_ownership
from tcmu_scst.testing.fake_configfs import FakeConfigfs

IQN = "iqn.2024-01.org.test:t1"
INI_A = "iqn.1991-05.com.microsoft:host-a"
INI_B = "iqn.1993-08.org.debian:01:host-b"
TPG = f"iscsi/{IQN}/tpgt_1"


@pytest.fixture
def cfs(tmp_path: Path) -> FakeConfigfs:
    (tmp_path / "cfs").mkdir()
    return FakeConfigfs(tmp_path / "cfs", loaded_modules={"tcm_qla2xxx", "tcm_fc"})


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for name in ("d0", "d1", "d2"):
        (tmp_path / f"{name}.img").write_bytes(b"\0" * 4096)
    return tmp_path


def config(images: Path, targets: str) -> ScstConfig:
    handler = "HANDLER vdisk_fileio {\n"
    for name in ("d0", "d1", "d2"):
        handler += f" DEVICE {name} {{\n  filename {images}/{name}.img\n }}\n"
    return conf.parse(handler + "}\n" + targets, "t.conf")


def iscsi_conf(body: str) -> str:
    return f"TARGET_DRIVER iscsi {{\n TARGET {IQN} {{\n{body}\n  enabled 1\n }}\n}}\n"


CASE_C = iscsi_conf(
    '  IncomingUser "joe secret123456"\n  LUN 0 d0\n'
    f"  GROUP g1 {{\n   LUN 0 d1\n   LUN 1 d0 {{\n    read_only 1\n   }}\n"
    f"   INITIATOR {INI_A}\n  }}"
)


def apply(cfs: FakeConfigfs, cfg: ScstConfig, tmp_path: Path) -> int:
    return apply_config(cfs, cfg, tmp_path / "state.json").operations


def snapshot(cfs: FakeConfigfs) -> dict[str, str]:
    """Every file's content and link's target under target/ (auth NULL == empty)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(cfs.target):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(cfs.target))
            if path.is_symlink():
                out[rel] = "-> " + cfs.readlink(rel)
            elif path.is_file():
                text = path.read_bytes().decode()
                if rel.rsplit("/", 2)[-2:-1] == ["auth"] and text.strip() == "NULL":
                    text = ""
                out[rel] = text
            else:
                out[rel] = "<dir>"
    return out


def test_creates_backstores_target_luns_acls_in_kernel_order(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    apply(cfs, config(images, CASE_C), tmp_path)
    assert cfs.is_enabled("core/user_0/d0") and cfs.is_enabled("core/user_2/d2")
    assert cfs.read(f"{TPG}/attrib/generate_node_acls") == "0"
    assert cfs.read(f"{TPG}/attrib/demo_mode_discovery") == "1"
    assert cfs.read(f"{TPG}/attrib/authentication") == "1"
    acl = f"{TPG}/acls/{INI_A}"
    assert cfs.read(f"{acl}/tag") == "g1"
    assert cfs.read(f"{acl}/auth/userid") == "joe"
    assert cfs.readlink(iter_links(cfs, f"{acl}/lun_0")[0]) == f"{TPG}/lun/lun_1"
    assert cfs.read(f"{acl}/lun_1/write_protect") == "1"
    assert cfs.read(f"{acl}/lun_0/write_protect") == "0"
    assert cfs.listdir(f"{TPG}/np") == ["0.0.0.0:3260"]
    # Order: backstore enabled before its LUN link; ACL LUN after TPG LUN; enable last.
    assert cfs.index_of("write", "core/user_0/d0/enable") < cfs.index_of(
        "symlink", "lun/lun_0/" + link_name(cfs)
    )
    assert cfs.index_of("mkdir", f"{TPG}/lun/lun_1") < cfs.index_of("mkdir", f"{acl}/lun_0")
    assert cfs.index_of("symlink", f"{acl}/lun_1/", None) < cfs.index_of(
        "write", f"{acl}/lun_1/write_protect"
    )
    assert cfs.log[-1].path == f"{TPG}/enable" and cfs.log[-1].value == "1"


def iter_links(cfs: FakeConfigfs, rel: str) -> list[str]:
    return [f"{rel}/{n}" for n in cfs.listdir(rel) if cfs.is_link(f"{rel}/{n}")]


def link_name(cfs: FakeConfigfs) -> str:
    return iter_links(cfs, f"{TPG}/lun/lun_0")[0].rsplit("/", 1)[-1]


def test_applying_the_same_file_twice_changes_nothing(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    cfg = config(images, CASE_C)
    assert apply(cfs, cfg, tmp_path) > 0
    before = len(cfs.log)
    result = apply_config(cfs, config(images, CASE_C), tmp_path / "state.json")
    assert result.steps == [] and result.operations == 0
    assert len(cfs.log) == before


def test_empty_file_clears_everything_we_own_but_nothing_foreign(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    foreign = UserBackstore.create(cfs, "theirs", UserBackstoreOptions("file//x", 4096))
    cfs.ensure_fabric("iscsi")
    cfs.mkdir("iscsi/iqn.2000-01.com.other:t")
    apply(cfs, config(images, CASE_C), tmp_path)
    apply(cfs, conf.parse("", "empty.conf"), tmp_path)
    assert cfs.listdir("iscsi") == ["discovery_auth", "iqn.2000-01.com.other:t", "lio_version"]
    assert [d.name for d in UserBackstore.all(cfs)] == ["theirs"]
    assert foreign.enabled
    assert load_ownership(tmp_path / "state.json").targets == []


def test_changes_apply_only_the_difference(cfs: FakeConfigfs, images: Path, tmp_path: Path) -> None:
    apply(cfs, config(images, CASE_C), tmp_path)
    mark = len(cfs.log)
    changed = iscsi_conf(
        '  IncomingUser "joe secret123456"\n  LUN 0 d0\n'
        f"  GROUP g1 {{\n   LUN 0 d1\n   LUN 1 d0\n   INITIATOR {INI_B}\n  }}"
    )
    apply(cfs, config(images, changed), tmp_path)
    new_ops = [(o.op, o.path) for o in cfs.log[mark:]]
    # ACL A removed, ACL B created; no backstore or TPG LUN was touched.
    assert ("rmdir", f"{TPG}/acls/{INI_A}") in new_ops
    assert ("mkdir", f"{TPG}/acls/{INI_B}") in new_ops
    assert not any(path.startswith("core/") for _, path in new_ops)
    assert not any(path.startswith(f"{TPG}/lun/") for _, path in new_ops)
    assert cfs.read(f"{TPG}/acls/{INI_B}/lun_1/write_protect") == "0"


def test_read_only_flip_is_a_single_write(cfs: FakeConfigfs, images: Path, tmp_path: Path) -> None:
    apply(cfs, config(images, CASE_C), tmp_path)
    mark = len(cfs.log)
    apply(cfs, config(images, CASE_C.replace("read_only 1", "read_only 0")), tmp_path)
    assert [(o.op, o.path, o.value) for o in cfs.log[mark:]] == [
        ("write", f"{TPG}/acls/{INI_A}/lun_1/write_protect", "0")
    ]


def test_changed_device_parameters_recreate_backstore_and_its_luns(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    apply(cfs, config(images, CASE_C), tmp_path)
    other = images / "other.img"
    other.write_bytes(b"\0" * 4096)
    cfg = config(images, CASE_C)
    cfg.devices[0].params["filename"] = str(other)
    apply(cfs, cfg, tmp_path)
    live = read_live(cfs, load_ownership(tmp_path / "state.json"))
    assert str(other) in live.backstores["d0"].backstore.dev_config or "other" in (
        live.backstores["d0"].backstore.dev_config
    )
    tgt = live.targets[0]
    assert tgt.tpg.luns == {0: "d0", 1: "d1"}
    assert {m.number: m.tpg_lun for m in tgt.tpg.acls[0].mapped_luns} == {0: 1, 1: 0}
    assert apply(cfs, cfg, tmp_path) == 0


class FailingConfigfs(FakeConfigfs):
    """Fails the n-th change (mkdir/rmdir/write/symlink/unlink) with a kernel errno."""

    fail_at = -1

    def _tick(self) -> None:
        self.fail_at -= 1
        if self.fail_at == 0:
            raise OSError(errno.ENOMEM, "injected failure")

    def _do_mkdir(self, path: Path) -> None:
        self._tick()
        super()._do_mkdir(path)

    def _do_write(self, path: Path, data: bytes) -> None:
        self._tick()
        super()._do_write(path, data)

    def _do_symlink(self, target: Path, link: Path) -> None:
        self._tick()
        super()._do_symlink(target, link)

    def _do_rmdir(self, path: Path) -> None:
        self._tick()
        super()._do_rmdir(path)

    def _do_unlink(self, path: Path) -> None:
        self._tick()
        super()._do_unlink(path)


OTHER = (
    "TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.org.test:t2 {\n  LUN 0 d2\n  enabled 1\n }\n}\n"
    "TARGET_DRIVER scst_local {\n TARGET local {\n  LUN 0 d1\n }\n}\n"
)


def test_failure_at_any_point_rolls_back_to_exactly_the_previous_tree(
    tmp_path: Path, images: Path
) -> None:
    (tmp_path / "count").mkdir()
    counter = FailingConfigfs(tmp_path / "count")
    apply(counter, config(images, CASE_C), tmp_path / "count")
    mark = len(counter.log)
    apply(counter, config(images, OTHER), tmp_path / "count")
    total = len(counter.log) - mark  # changes made by the second apply
    assert total > 20
    # A spread of failure points (the fake is slow): first, every 4th, last.
    for fail_at in sorted({1, *range(2, total, 4), total}):
        root = tmp_path / f"cfs{fail_at}"
        root.mkdir()
        cfs = FailingConfigfs(root)
        apply(cfs, config(images, CASE_C), root)
        before = snapshot(cfs)
        state_before = (root / "state.json").read_text()
        cfs.fail_at = fail_at
        with pytest.raises(ApplyError) as info:
            apply(cfs, config(images, OTHER), root)  # removes t1, creates t2 and loopback
        assert "injected failure" in str(info.value), fail_at
        assert "all changes undone" in str(info.value), str(info.value)
        assert snapshot(cfs) == before, fail_at
        assert json.loads((root / "state.json").read_text()) == json.loads(state_before)
        cfs.fail_at = -1
        assert apply(cfs, config(images, CASE_C), root) == 0  # still exactly the old setup


def test_foreign_target_with_the_same_name_is_refused(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    cfs.ensure_fabric("iscsi")
    cfs.mkdir(f"iscsi/{IQN}")
    mark = len(cfs.log)
    with pytest.raises(ConfigError, match="already exists but was not created by tcmu-scst"):
        apply(cfs, config(images, CASE_C), tmp_path)
    assert len(cfs.log) == mark


def test_case_b_demo_mode_and_loopback_nexus_before_luns(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    body = (
        iscsi_conf("  LUN 0 d0 {\n   read_only 1\n  }\n  LUN 1 d1 {\n   read_only 1\n  }")
        + "TARGET_DRIVER scst_local {\n TARGET local {\n  LUN 0 d0\n"
        "  GROUP g {\n   LUN 0 d2\n  }\n }\n}\n"
    )
    apply(cfs, config(images, body), tmp_path)
    assert cfs.read(f"{TPG}/attrib/generate_node_acls") == "1"
    assert cfs.read(f"{TPG}/attrib/demo_mode_write_protect") == "1"
    loops = cfs.listdir("loopback")
    wwns = [w for w in loops if w.startswith("naa.")]
    assert len(wwns) == 2
    for wwn in wwns:
        rel = f"loopback/{wwn}/tpgt_1"
        assert cfs.index_of("write", f"{rel}/nexus") < cfs.index_of("mkdir", f"{rel}/lun/lun_0")
    assert apply(cfs, config(images, body), tmp_path) == 0


def test_fc_targets_on_the_fake(cfs: FakeConfigfs, images: Path, tmp_path: Path) -> None:
    body = (
        "TARGET_DRIVER qla2x00t {\n TARGET 21:00:00:24:ff:31:4c:48 {\n"
        "  GROUP g {\n   LUN 0 d0\n   INITIATOR 21:00:00:24:ff:31:4c:49\n  }\n"
        "  enabled 1\n }\n}\n"
        "TARGET_DRIVER fcst {\n TARGET 20:00:00:11:22:33:44:55 {\n"
        "  GROUP g {\n   LUN 0 d1\n   INITIATOR 20:00:00:11:22:33:44:66\n  }\n }\n}\n"
    )
    apply(cfs, config(images, body), tmp_path)
    qla = "qla2xxx/21:00:00:24:ff:31:4c:48/tpgt_1"
    assert cfs.read(f"{qla}/attrib/demo_mode_login_only") == "1"  # case A on qla2xxx
    assert cfs.read(f"{qla}/enable") == "1"
    assert cfs.exists(f"{qla}/acls/21:00:00:24:ff:31:4c:49/lun_0")
    assert cfs.exists("fc/20:00:00:11:22:33:44:55/tpgt_1/acls/20:00:00:11:22:33:44:66/lun_0")
    assert cfs.read("fc/20:00:00:11:22:33:44:55/tpgt_1/enable") == "0"
    assert apply(cfs, config(images, body), tmp_path) == 0


def test_acl_for_an_initiator_with_a_dynamic_session_is_recreated_clean(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    demo = iscsi_conf("  LUN 0 d0\n  LUN 1 d1")
    apply(cfs, config(images, demo), tmp_path)
    cfs.kernel_set(f"{TPG}/dynamic_sessions", f"{INI_A}\n\x00")
    mark = len(cfs.log)
    apply(cfs, config(images, iscsi_conf(
        f"  LUN 0 d0\n  LUN 1 d1\n  GROUP g {{\n   LUN 0 d1\n   INITIATOR {INI_A}\n  }}"
    )), tmp_path)  # fmt: skip
    acl_ops = [o.op for o in cfs.log[mark:] if o.path == f"{TPG}/acls/{INI_A}"]
    assert acl_ops == ["mkdir", "rmdir", "mkdir"]


def test_our_subtypes_are_exactly_the_daemons_handlers() -> None:
    from tcmu_scst.kernel.handler_table import SUBTYPES
    from tcmu_scst.service.registry import FACTORIES

    assert set(FACTORIES) == SUBTYPES


def test_disabling_a_target_happens_first_and_enabling_last(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    apply(cfs, config(images, CASE_C), tmp_path)
    mark = len(cfs.log)
    apply(cfs, config(images, CASE_C.replace("enabled 1", "enabled 0")), tmp_path)
    assert [(o.path, o.value) for o in cfs.log[mark:]] == [(f"{TPG}/enable", "0")]
    mark = len(cfs.log)
    apply(cfs, config(images, CASE_C.replace(INI_A, INI_B)), tmp_path)
    ops = cfs.log[mark:]
    assert (ops[-1].path, ops[-1].value) == (f"{TPG}/enable", "1")
    assert (ops[0].op, ops[0].path) == ("unlink", ops[0].path)
    assert ops[0].path.startswith(f"{TPG}/acls/{INI_A}/")


def test_renamed_device_and_renumbered_group_converge_in_one_apply(
    cfs: FakeConfigfs, images: Path, tmp_path: Path
) -> None:
    apply(cfs, config(images, CASE_C), tmp_path)
    text = CASE_C.replace("LUN 0 d1", "LUN 0 d2")  # group g1 now sees d2 at LUN 0
    apply(cfs, config(images, text), tmp_path)
    live = read_live(cfs, load_ownership(tmp_path / "state.json"))
    tgt = live.targets[0]
    acl = tgt.tpg.acls[0]
    seen = {m.number: (tgt.tpg.luns[m.tpg_lun], m.write_protect) for m in acl.mapped_luns}
    assert seen == {0: ("d2", False), 1: ("d0", True)}
    assert "d1" not in tgt.tpg.luns.values()  # no longer exported anywhere here
    assert "d1" in live.backstores  # but still a device of the config
    assert apply(cfs, config(images, text), tmp_path) == 0
