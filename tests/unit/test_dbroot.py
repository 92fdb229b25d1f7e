"""The target core's PR/ALUA directories: created where the kernel's threads look."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.errors import TcmuScstError
from tcmu_scst.kernel.dbroot import ensure_metadata_dirs, kernel_threads_root
from tcmu_scst.testing.fake_configfs import FakeConfigfs

from .test_daemon import Rig


def test_creates_pr_and_alua_under_dbroot_once(tmp_path: Path) -> None:
    cfs = FakeConfigfs(tmp_path / "configfs")
    cfs.write("dbroot", "/var/target")
    kroot = tmp_path / "kroot"
    created = ensure_metadata_dirs(cfs, kroot)
    assert created == [kroot / "var/target/pr", kroot / "var/target/alua"]
    assert all(p.is_dir() for p in created)
    assert ensure_metadata_dirs(cfs, kroot) == []  # idempotent


def test_a_file_in_the_way_is_a_precise_error(tmp_path: Path) -> None:
    cfs = FakeConfigfs(tmp_path / "configfs")
    (tmp_path / "kroot/etc/target").mkdir(parents=True)
    (tmp_path / "kroot/etc/target/pr").write_text("")
    with pytest.raises(TcmuScstError, match="/etc/target/pr exists and is not a directory"):
        ensure_metadata_dirs(cfs, tmp_path / "kroot")


def test_nothing_without_a_kernel(tmp_path: Path) -> None:
    cfs = FakeConfigfs(tmp_path / "configfs")
    assert ensure_metadata_dirs(cfs, None) == []


def test_kernel_threads_root_is_kthreadds_or_ours(tmp_path: Path) -> None:
    (tmp_path / "2").mkdir()
    (tmp_path / "2/comm").write_text("kthreadd\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "2/root").symlink_to(tmp_path / "elsewhere")
    assert kernel_threads_root(tmp_path) == tmp_path / "2/root"
    (tmp_path / "2/comm").write_text("systemd\n")  # a container's pid 2
    assert kernel_threads_root(tmp_path) == Path("/")
    assert kernel_threads_root(tmp_path / "nothing") == Path("/")


def test_daemon_start_creates_them_before_serving(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.daemon.kernel_root = tmp_path / "kroot"
    rig.start()
    try:
        assert (tmp_path / "kroot/etc/target/pr").is_dir()  # the fake's dbroot
        assert (tmp_path / "kroot/etc/target/alua").is_dir()
    finally:
        rig.stop()
