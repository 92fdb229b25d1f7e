"""``tcmu-scst config check|apply|save`` end to end on the fake configfs."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest

from tcmu_scst import cli
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.scst import cli as config_cli
from tcmu_scst.scst import conf
from tcmu_scst.testing.fake_configfs import FakeConfigfs

IQN = "iqn.2024-01.org.test:t1"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeConfigfs:
    (tmp_path / "cfs").mkdir()
    cfs = FakeConfigfs(tmp_path / "cfs")

    def use_fake(args: argparse.Namespace) -> Configfs:
        return cfs

    monkeypatch.setattr(config_cli, "_configfs", use_fake)
    return cfs


def write_conf(tmp_path: Path, targets: str, name: str = "scst.conf") -> Path:
    (tmp_path / "d0.img").write_bytes(b"\0" * 4096)
    (tmp_path / "d1.img").write_bytes(b"\0" * 4096)
    path = tmp_path / name
    path.write_text(
        "HANDLER vdisk_fileio {\n"
        f" DEVICE d0 {{\n  filename {tmp_path}/d0.img\n }}\n"
        f" DEVICE d1 {{\n  filename {tmp_path}/d1.img\n  blocksize 4096\n }}\n}}\n" + targets
    )
    return path


TARGETS = (
    f"TARGET_DRIVER iscsi {{\n TARGET {IQN} {{\n"
    '  IncomingUser "joe secret123456"\n  HeaderDigest CRC32C\n  portal 192.0.2.1\n'
    "  LUN 0 d0\n  GROUP g1 {\n   LUN 0 d1\n   LUN 1 d0 {\n    read_only 1\n   }\n"
    "   INITIATOR iqn.1991-05.com.microsoft:host-a\n  }\n  enabled 1\n }\n}\n"
    "TARGET_DRIVER scst_local {\n TARGET local {\n  LUN 0 d1\n"
    "  GROUP g2 {\n   LUN 0 d0\n   INITIATOR naa.5001405000000002\n  }\n }\n}\n"
)


def run(tmp_path: Path, *argv: str) -> int:
    state = ["--state-file", str(tmp_path / "state.json"), "--configfs-root", str(tmp_path)]
    return cli.main(["config", *argv, *state])


def test_check_validates_and_changes_nothing(
    fake: FakeConfigfs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_conf(tmp_path, TARGETS)
    assert run(tmp_path, "check", str(path)) == 0
    out = capsys.readouterr().out
    assert f"{path}: OK (2 devices, 2 targets)" in out
    assert "apply would make" in out
    assert fake.log == []


def test_check_reports_missing_backing_file_with_line(
    fake: FakeConfigfs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_conf(tmp_path, "")
    (tmp_path / "d1.img").unlink()
    assert run(tmp_path, "check", str(path)) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"tcmu-scst config: error: {path}:5: device d1: backing file {tmp_path}/d1.img does "
        f"not exist; create it (e.g. truncate -s 1G {tmp_path}/d1.img) or fix the path"
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("  blocksize 1000\n", "block size 1000 is not one LIO exports; use 512, 1024, "
         "2048 or 4096"),
        ("", ""),
    ],
)  # fmt: skip
def test_check_block_size(
    fake: FakeConfigfs,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    params: str,
    message: str,
) -> None:
    (tmp_path / "x.img").write_bytes(b"\0" * 4096)
    path = tmp_path / "b.conf"
    path.write_text(f"HANDLER vdisk_fileio {{\n DEVICE x {{\n  filename {tmp_path}/x.img\n"
                    f"{params} }}\n}}\n")  # fmt: skip
    code = run(tmp_path, "check", str(path))
    err = capsys.readouterr().err
    assert (code, message in err) == ((1, True) if message else (0, True))
    if message:
        assert err.startswith(f"tcmu-scst config: error: {path}:2: ")


def test_comma_in_backing_path_is_refused_with_the_fix(
    fake: FakeConfigfs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a,b.img").write_bytes(b"\0" * 512)
    path = tmp_path / "c.conf"
    path.write_text(f"HANDLER vdisk_fileio {{\n DEVICE x {{\n  filename {tmp_path}/a,b.img\n"
                    " }\n}\n")  # fmt: skip
    assert run(tmp_path, "check", str(path)) == 1
    err = capsys.readouterr().err
    assert "contains ',' which TCMU dev_config cannot carry; rename the file or point at a " \
        "symlink without ','" in err  # fmt: skip
    assert f"{path}:2:" in err


def test_apply_then_save_gives_an_equivalent_file_that_applies_as_no_op(
    fake: FakeConfigfs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_conf(tmp_path, TARGETS)
    assert run(tmp_path, "apply", str(path)) == 0
    assert "applied" in capsys.readouterr().out
    saved = tmp_path / "out" / "saved.conf"
    assert run(tmp_path, "save", str(saved)) == 0
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    assert [p.name for p in saved.parent.iterdir()] == ["saved.conf"]  # no temp file left
    original = conf.parse(path.read_text(), "a")
    again = conf.parse(saved.read_text(), "b")
    assert [(d.name, d.handler) for d in again.devices] == [("d0", "vdisk_fileio"),
                                                            ("d1", "vdisk_fileio")]  # fmt: skip
    assert again.devices[1].params.get("blocksize") == "4096"
    by_name = {t.name: t for t in again.targets}
    t1 = by_name[IQN]
    assert t1.luns == original.targets[0].luns
    assert t1.groups == original.targets[0].groups
    assert t1.incoming_users == [("joe", "secret123456")]
    assert t1.portals == ["192.0.2.1:3260"] and t1.attributes == {"HeaderDigest": "CRC32C"}
    assert by_name["local"].luns == original.targets[1].luns
    assert by_name["local"].groups == original.targets[1].groups
    fake_ops = len(fake.log)
    assert run(tmp_path, "apply", str(saved)) == 0
    assert "nothing to change" in capsys.readouterr().out
    assert len(fake.log) == fake_ops


def test_dry_run_prints_plan_and_changes_nothing(
    fake: FakeConfigfs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_conf(tmp_path, TARGETS)
    assert run(tmp_path, "apply", str(path), "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"would create iscsi target {IQN} tpgt_1" in out
    assert fake.log == []


def test_legacy_file_applies_and_errors_are_one_line(
    fake: FakeConfigfs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "d0.img").write_bytes(b"\0" * 512)
    legacy = tmp_path / "old.conf"
    legacy.write_text(
        f"[HANDLER vdisk]\nDEVICE d0,{tmp_path}/d0.img\n[ASSIGNMENT Default]\nDEVICE d0,0\n"
        f"[TARGETS enable]\nHOST {IQN}\n"
    )
    assert run(tmp_path, "apply", str(legacy)) == 0
    assert fake.read(f"iscsi/{IQN}/tpgt_1/attrib/generate_node_acls") == "1"
    bad = tmp_path / "bad.conf"
    bad.write_text("[ASSIGNMENT Default]\nDEVICE nosuch,0\n")
    assert run(tmp_path, "apply", str(bad)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:2:" in err


def test_missing_file_is_a_clear_error(
    fake: FakeConfigfs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "check", str(tmp_path / "nope.conf")) == 1
    assert capsys.readouterr().err == (
        f"tcmu-scst config: error: {tmp_path}/nope.conf: config file not found; create it or "
        "name another file\n"
    )


def test_target_without_luns_is_created_and_gets_default_luns_added_in_the_shell(
    fake: FakeConfigfs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tcmu_scst.shell import cli as shell_cli

    monkeypatch.setattr(shell_cli, "_configfs", lambda args: fake)
    wwn = "naa.5001405aaaaaaaaa"
    path = write_conf(tmp_path, f"TARGET_DRIVER loopback {{\n TARGET {wwn} {{\n }}\n}}\n")
    state = ["--state-file", str(tmp_path / "state" / "lio-state.json")]
    assert cli.main(["config", "apply", str(path), "--configfs-root", str(tmp_path), *state]) == 0
    assert "nothing to change" not in capsys.readouterr().out
    assert fake.is_dir(f"loopback/{wwn}/tpgt_1")
    shell = ["shell", "--configfs-root", str(tmp_path), "--state-dir", str(tmp_path / "state"),
             "--control-socket", str(tmp_path / "no.sock")]  # fmt: skip
    assert cli.main([*shell, "/groups/Default/devices", "add", "d0", "0"]) == 0
    lun0 = f"loopback/{wwn}/tpgt_1/lun/lun_0"
    assert any(fake.is_link(f"{lun0}/{name}") for name in fake.listdir(lun0))
    model = conf.parse((tmp_path / "state" / "running.conf").read_text())
    assert [(t.fabric, t.name, t.luns) for t in model.targets] == [("loopback", wwn, [])]


def test_the_shell_continues_from_the_applied_file_with_its_global_default_group(
    fake: FakeConfigfs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rebuilt from LIO, Default's LUNs would become the target's own and the next
    # Default LUN would go nowhere (or be refused: no LUN 0 in Default).
    from tcmu_scst.shell import cli as shell_cli

    monkeypatch.setattr(shell_cli, "_configfs", lambda args: fake)
    wwn = "naa.5001405aaaaaaaaa"
    path = write_conf(
        tmp_path,
        f"GROUP Default {{\n LUN 0 d0\n}}\nTARGET_DRIVER loopback {{\n TARGET {wwn} {{\n }}\n}}\n",
    )
    state = ["--state-file", str(tmp_path / "state" / "lio-state.json")]
    assert cli.main(["config", "apply", str(path), "--configfs-root", str(tmp_path), *state]) == 0
    shell = ["shell", "--configfs-root", str(tmp_path), "--state-dir", str(tmp_path / "state"),
             "--control-socket", str(tmp_path / "no.sock")]  # fmt: skip
    assert cli.main([*shell, "/groups/Default/devices", "add", "d1", "1"]) == 0
    assert fake.listdir(f"loopback/{wwn}/tpgt_1/lun") == ["lun_0", "lun_1"]
    model = conf.parse((tmp_path / "state" / "running.conf").read_text())
    assert [(t.name, t.luns) for t in model.targets] == [(wwn, [])]
    assert [lun.device for lun in model.group("Default").luns] == ["d0", "d1"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--format", "modern", "{file}"],
        ["apply", "--dry-run", "{file}"],
        ["apply", "{file}", "--dry-run"],
        ["apply", "--format", "auto", "--dry-run", "{file}"],
    ],
)
def test_options_may_come_before_or_after_the_file(
    fake: FakeConfigfs, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    path = write_conf(tmp_path, TARGETS)
    assert run(tmp_path, *(a.format(file=path) for a in argv)) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert f"{path}: OK" in captured.out or f"would create iscsi target {IQN}" in captured.out
    assert fake.log == []


def test_config_without_an_action_or_with_an_unknown_one_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["config"], ["config", "frobnicate"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2
        assert "check" in capsys.readouterr().err
