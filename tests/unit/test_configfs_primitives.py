"""The primitive Configfs API on a plain directory (no kernel emulation)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigfsError
from tcmu_scst.kernel.configfs import Configfs, hint_for
from tcmu_scst.testing.no_configfs import NoConfigfsKernel


@pytest.fixture
def cfs(tmp_path: Path) -> Configfs:
    (tmp_path / "target").mkdir()
    return Configfs(tmp_path)


def test_read_strips_trailing_newlines_and_nuls(cfs: Configfs) -> None:
    (cfs.target / "dynamic_sessions").write_bytes(b"iqn.a\niqn.b\n\x00")
    assert cfs.read("dynamic_sessions") == "iqn.a\niqn.b"


def test_write_is_exact_without_added_newline(cfs: Configfs) -> None:
    (cfs.target / "control").write_bytes(b"")
    cfs.write("control", "dev_config=file/x,dev_size=4096")
    assert (cfs.target / "control").read_bytes() == b"dev_config=file/x,dev_size=4096"


def test_write_to_missing_file_does_not_create_it(cfs: Configfs) -> None:
    with pytest.raises(ConfigfsError) as exc:
        cfs.write("nosuch", "1")
    assert exc.value.errno == errno.ENOENT
    assert not (cfs.target / "nosuch").exists()
    assert "nosuch" in str(exc.value) and "ENOENT" in str(exc.value)


def test_mkdir_rmdir_listdir_exists(cfs: Configfs) -> None:
    cfs.mkdir("core")
    cfs.mkdir("core/user_0")
    assert cfs.listdir("core") == ["user_0"]
    assert cfs.exists("core/user_0") and cfs.is_dir("core/user_0")
    cfs.rmdir("core/user_0")
    assert not cfs.exists("core/user_0")


def test_symlink_is_absolute_and_readlink_relative(cfs: Configfs) -> None:
    cfs.mkdir("core")
    cfs.mkdir("core/dev")
    cfs.mkdir("lun")
    cfs.symlink("core/dev", "lun/alias")
    raw = os.readlink(cfs.target / "lun/alias")
    assert raw == str(cfs.target / "core/dev")
    assert cfs.is_link("lun/alias")
    assert cfs.readlink("lun/alias") == "core/dev"
    cfs.unlink("lun/alias")
    assert not cfs.exists("lun/alias")


def test_enotempty_error_carries_path_errno_and_hint(cfs: Configfs) -> None:
    cfs.mkdir("a")
    cfs.mkdir("a/b")
    with pytest.raises(ConfigfsError) as exc:
        cfs.rmdir("a")
    assert exc.value.errno == errno.ENOTEMPTY
    assert exc.value.path == "a"
    assert "remove its LUNs/ACLs first" in str(exc.value)


def test_relative_paths_only(cfs: Configfs) -> None:
    with pytest.raises(ConfigfsError):
        cfs.read("/etc/passwd")
    with pytest.raises(ConfigfsError):
        cfs.read("core/../../x")


def test_hints_cover_common_kernel_errnos() -> None:
    assert "device not enabled" in hint_for(errno.ENODEV)
    assert "value refused by the kernel" in hint_for(errno.EINVAL)
    assert "remove its LUNs/ACLs first" in hint_for(errno.EBUSY)
    assert hint_for(errno.EEXIST) and hint_for(errno.ENOENT) and hint_for(errno.EPERM)
    assert "wrong kind of object" in hint_for(errno.EFAULT)
    assert "daemon" in hint_for(errno.ESRCH)


def test_available_and_ensure_mounted_on_fake_root(tmp_path: Path) -> None:
    cfs = Configfs(tmp_path)
    assert not cfs.available()
    with pytest.raises(ConfigfsError, match="not the real configfs root"):
        cfs.ensure_mounted()
    (tmp_path / "target").mkdir()
    assert cfs.available()
    cfs.ensure_mounted()  # nothing to do, no mount attempted


def _one_line_reason(cfs: Configfs) -> str:
    with pytest.raises(ConfigfsError) as caught:
        cfs.ensure_mounted()
    text = str(caught.value)
    assert "\n" not in text and "dmesg" not in text
    return text


def test_a_kernel_without_configfs_is_named_as_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    cfs = NoConfigfsKernel(tmp_path)
    reason = _one_line_reason(cfs)
    assert "this kernel has no configfs" in reason and "CONFIG_CONFIGFS_FS" in reason
    assert "modprobe: FATAL: Module configfs not found" in reason
    assert "run as root" not in reason  # we are root
    assert cfs.ran == ["modprobe configfs"]  # no mount attempted
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    cfs = NoConfigfsKernel(tmp_path)
    reason = _one_line_reason(cfs)
    assert "this kernel has no configfs" in reason and cfs.ran == []


def test_configfs_not_mounted_needs_root_and_lio_missing_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    cfs = NoConfigfsKernel(tmp_path, "nodev\tconfigfs\n")
    cfs.root.mkdir(parents=True)  # configfs registered, not mounted
    assert "only root can mount it; run with sudo" in _one_line_reason(cfs)
    assert cfs.ran == []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    # Root: the mount's own error, without the trailing dmesg hint.
    assert "mount -t configfs none" in _one_line_reason(cfs)
    monkeypatch.setattr(os.path, "ismount", lambda path: True)
    reason = _one_line_reason(cfs)  # mounted, but target_core_mod cannot be loaded
    assert "Module target_core_mod not found" in reason and "CONFIG_TARGET_CORE" in reason
    assert "run as root" not in reason
