"""``tcmu-scst install``: rendering, --root, --vendor, --enable, --uninstall, the units."""

from __future__ import annotations

import io
import shlex
import sys
from pathlib import Path

import pytest

import tcmu_scst
from tcmu_scst import cli
from tcmu_scst.errors import ConfigError
from tcmu_scst.service import install
from tcmu_scst.service.install import MARKER, Layout, find_templates, render

VALUES = {
    "BIN": "/usr/bin/tcmu-scst",
    "PYTHON": "/usr/bin/python3",
    "CONFIG": "/etc/tcmu-scst/scst.conf",
    "FLOCK": "/usr/bin/flock",
    "LOCK": "/run/tcmu-scst/apply.lock",
}


def do_install(root: Path, vendor: bool = False, enable: bool = False) -> list[Path]:
    return install.install(root, Layout.of(vendor), VALUES, enable=enable, out=io.StringIO())


def unit_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not key=value"
        current.setdefault(key, []).append(value)
    return sections


def test_templates_are_found_beside_the_package_in_use() -> None:
    # A checkout (plain or editable) has udev/ beside tcmu_scst/; a wheel installs the
    # templates as data files under the environment's share/ (the quick start's case).
    source = Path(tcmu_scst.__file__).resolve().parents[1] / "udev"
    installed = Path(sys.prefix) / "share" / "tcmu-scst" / "udev"
    assert find_templates() == (source if source.is_dir() else installed)


def test_install_under_root_renders_every_placeholder(tmp_path: Path) -> None:
    written = do_install(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "etc/systemd/system/tcmu-scst-restore.service",
        "etc/systemd/system/tcmu-scst.service",
        "etc/udev/rules.d/60-tcmu-scst.rules",
        "usr/local/share/man/man5/tcmu-scst.conf.5",
        "usr/local/share/man/man8/tcmu-scst.8",
    ]
    for path in written:
        if "/man/" in path.as_posix():
            continue
        text = path.read_text()
        assert text.startswith(MARKER + "\n")
        assert "@" not in text.replace("$env{ACTION}", ""), path
        assert path.stat().st_mode & 0o777 == 0o644


def test_daemon_unit_restarts_on_failure_and_follows_the_config(tmp_path: Path) -> None:
    do_install(tmp_path)
    unit = unit_sections(tmp_path / "etc/systemd/system/tcmu-scst.service")
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert service["Restart"] == ["on-failure"]
    assert service["ExecStart"] == [
        "/usr/bin/tcmu-scst daemon --hotplug-config /etc/tcmu-scst/scst.conf"
    ]
    assert unit["Unit"]["Conflicts"][0].split() == [
        "target.service", "rtslib-fb-targetctl.service"
    ]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_restore_unit_replaces_targetclis_restore_units_after_their_clear(
    tmp_path: Path,
) -> None:
    # Debian 12's rtslib-fb-targetctl.service runs 'targetctl clear' when stopped: that
    # stop must be over before our apply starts, or it wipes what we just applied.
    do_install(tmp_path)
    unit = unit_sections(tmp_path / "etc/systemd/system/tcmu-scst-restore.service")["Unit"]
    for name in ("target.service", "rtslib-fb-targetctl.service"):
        assert name in unit["Conflicts"][0].split()
        assert any(name in after.split() for after in unit["After"])


def test_restore_unit_runs_after_the_daemon_and_takes_the_apply_lock(tmp_path: Path) -> None:
    do_install(tmp_path)
    unit = unit_sections(tmp_path / "etc/systemd/system/tcmu-scst-restore.service")
    after = unit["Unit"]["After"][0].split()
    assert "tcmu-scst.service" in after and "systemd-modules-load.service" in after
    assert unit["Unit"]["ConditionPathExists"] == ["/etc/tcmu-scst/scst.conf"]
    assert unit["Service"]["Type"] == ["oneshot"]
    assert unit["Service"]["RemainAfterExit"] == ["yes"]
    (start,) = unit["Service"]["ExecStart"]
    assert shlex.split(start) == [
        "/usr/bin/flock", "/run/tcmu-scst/apply.lock",
        "/usr/bin/tcmu-scst", "config", "apply", "/etc/tcmu-scst/scst.conf",
    ]  # fmt: skip
    pre = unit["Service"]["ExecStartPre"]
    assert any("target_core_user" in line for line in pre)


def test_udev_rule_wants_the_daemon_with_systemd_and_notifies_without(tmp_path: Path) -> None:
    do_install(tmp_path)
    lines = [
        line
        for line in (tmp_path / "etc/udev/rules.d/60-tcmu-scst.rules").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    uio_systemd, uio_plain, scsi = lines
    for line in (uio_systemd, uio_plain):
        assert 'SUBSYSTEM=="uio"' in line and 'ATTR{name}=="tcm-user/*/*/vdisk/*|' in line
    assert 'TEST=="/run/systemd/system"' in uio_systemd
    assert 'ENV{SYSTEMD_WANTS}+="tcmu-scst.service"' in uio_systemd
    assert 'TEST!="/run/systemd/system"' in uio_plain
    assert 'RUN+="/usr/bin/python3 -m tcmu_scst.service.hotplug notify add uio"' in uio_plain
    assert 'ENV{DEVTYPE}=="scsi_device"' in scsi and 'ACTION=="add|remove"' in scsi
    # Every key of every rule is KEY==/!=/+=/= "value" (udev rejects anything else).
    for line in lines:
        for item in line.split('", '):
            assert any(op in item for op in ('=="', '!="', '+="')), item


def test_vendor_layout_and_enable_links(tmp_path: Path) -> None:
    do_install(tmp_path, vendor=True, enable=True)
    assert (tmp_path / "usr/lib/udev/rules.d/60-tcmu-scst.rules").is_file()
    assert (tmp_path / "usr/lib/systemd/system/tcmu-scst.service").is_file()
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == [
        "tcmu-scst-restore.service",
        "tcmu-scst.service",
    ]
    assert (wants / "tcmu-scst.service").readlink() == Path(
        "/usr/lib/systemd/system/tcmu-scst.service"
    )


def test_install_twice_replaces_and_uninstall_removes_everything(tmp_path: Path) -> None:
    do_install(tmp_path, enable=True)
    do_install(tmp_path, enable=True)  # an upgrade
    removed = install.uninstall(tmp_path, out=io.StringIO())
    assert len(removed) == 7  # 2 links + 3 files + 2 man pages
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() or p.is_symlink()]
    assert leftovers == []


def test_uninstall_keeps_a_file_the_admin_rewrote(tmp_path: Path) -> None:
    do_install(tmp_path)
    mine = tmp_path / "etc/systemd/system/tcmu-scst.service"
    mine.write_text("[Service]\nExecStart=/usr/local/bin/my-daemon\n")
    out = io.StringIO()
    install.uninstall(tmp_path, out=out)
    assert mine.read_text().startswith("[Service]")
    assert f"kept {mine}: changed or not ours" in out.getvalue()


def test_install_refuses_to_overwrite_a_foreign_file(tmp_path: Path) -> None:
    foreign = tmp_path / "etc/udev/rules.d/60-tcmu-scst.rules"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("# someone else's\n")
    with pytest.raises(ConfigError, match="was not installed by tcmu-scst; move it away"):
        do_install(tmp_path)
    assert foreign.read_text() == "# someone else's\n"


@pytest.mark.parametrize(
    ("vendor", "prefix"), [(False, "usr/local/share/man"), (True, "usr/share/man")]
)
def test_install_puts_the_man_pages_where_man_finds_them(
    tmp_path: Path, vendor: bool, prefix: str
) -> None:
    do_install(tmp_path, vendor=vendor)
    for page, section in (("tcmu-scst.8", "man8"), ("tcmu-scst.conf.5", "man5")):
        installed = (tmp_path / prefix / section / page).read_text()
        source = install.find_man_pages()[page].read_text()
        # The marker is a roff comment: man shows the page unchanged.
        assert installed == f"{install.MAN_MARKER}\n{source}"
        assert installed.startswith('.\\" ')
        assert (tmp_path / prefix / section / page).stat().st_mode & 0o777 == 0o644
    install.uninstall(tmp_path, out=io.StringIO())
    assert not list((tmp_path / prefix).rglob("tcmu-scst*"))


def test_a_foreign_man_page_stops_the_install_before_anything_is_written(
    tmp_path: Path,
) -> None:
    foreign = tmp_path / "usr/local/share/man/man8/tcmu-scst.8"
    foreign.parent.mkdir(parents=True)
    foreign.write_text(".TH OTHER 8\n")
    with pytest.raises(ConfigError, match=f"{foreign} exists and was not installed"):
        do_install(tmp_path)
    assert foreign.read_text() == ".TH OTHER 8\n"
    assert not (tmp_path / "etc").exists()  # nothing half-installed


def test_missing_man_pages_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"man page tcmu-scst.8 not found .* reinstall"):
        install.find_man_pages({"tcmu-scst.8": [tmp_path / "tcmu-scst.8"]})


def test_render_refuses_a_placeholder_without_value() -> None:
    with pytest.raises(ConfigError, match="placeholder @NEW@ has no value"):
        render("ExecStart=@NEW@\n", VALUES)


def test_missing_templates_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"templates not found .* reinstall tcmu-scst"):
        find_templates([tmp_path])


def test_cli_install_and_uninstall_under_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["install", "--root", str(tmp_path), "--bin", "/opt/t/tcmu-scst"]) == 0
    unit = tmp_path / "etc/systemd/system/tcmu-scst.service"
    assert "ExecStart=/opt/t/tcmu-scst daemon" in unit.read_text()
    assert f"installed {unit}" in capsys.readouterr().out
    assert cli.main(["install", "--root", str(tmp_path), "--uninstall"]) == 0
    assert not unit.exists()
    assert cli.main(["install", "--root", str(tmp_path), "--uninstall"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
