"""``tcmu-scst proc`` and ``tcmu-scst shell`` end to end: /proc forms, reads, exit status."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcmu_scst import cli
from tcmu_scst.errors import ConfigError
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.scst import conf
from tcmu_scst.service.messages import (
    Answer,
    DeviceStatus,
    GetStatus,
    Ping,
    Pong,
    Request,
    SetThreads,
    SetTraceLevel,
    Status,
    ThreadsSet,
    TraceLevels,
)
from tcmu_scst.shell import cli as shell_cli
from tcmu_scst.shell.proc import node_path
from tcmu_scst.testing.control_server import serving
from tcmu_scst.testing.fake_configfs import FakeConfigfs

IQN = "iqn.2024-01.org.test:t1"
INI = "iqn.1994-05.com.redhat:client"
TPG = f"iscsi/{IQN}/tpgt_1"
SESSION_INFO = (
    f"InitiatorName: {INI}\nInitiatorAlias: \n"
    "LIO Session ID: 1   ISID: 0x80 4d 5a c1 00 00  TSIH: 1  SessionType: Normal\n"
    "Session State: TARG_SESS_STATE_LOGGED_IN\n"
)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeConfigfs:
    (tmp_path / "cfs").mkdir()
    cfs = FakeConfigfs(tmp_path / "cfs")

    def use_fake(args: argparse.Namespace) -> Configfs:
        return cfs

    monkeypatch.setattr(shell_cli, "_configfs", use_fake)
    return cfs


def opts(tmp: Path) -> list[str]:
    return [
        "--configfs-root", str(tmp / "cfs"), "--state-dir", str(tmp / "state"),
        "--control-socket", str(tmp / "daemon.sock"), "--sysfs", str(tmp / "sys"),
    ]  # fmt: skip


def proc(tmp: Path, path: str, *line: str) -> int:
    return cli.main(["proc", *opts(tmp), path, *line])


def shell(tmp: Path, *words: str) -> int:
    return cli.main(["shell", *opts(tmp), *words])


def model(tmp: Path) -> Any:
    return conf.parse((tmp / "state" / "running.conf").read_text())


def test_node_paths() -> None:
    assert node_path("/proc/scsi_tgt/scsi_tgt") == "/"
    assert node_path("/proc/scsi_tgt/vdisk/vdisk") == "/vdisk"
    assert node_path("/proc/scsi_tgt/vcdrom/vcdrom") == "/vcdrom"
    assert node_path("/proc/scsi_tgt/groups/G/devices") == "/groups/G/devices"
    assert node_path("vdisk/trace_level") == "/vdisk/trace_level"
    assert node_path("/proc/scsi_tgt/sessions") == "/sessions"


def test_every_proc_write_form(
    tmp_path: Path, fake: FakeConfigfs, capsys: pytest.CaptureFixture[str]
) -> None:
    img = tmp_path / "disk1.img"
    img.write_bytes(b"\0" * (1 << 20))
    (tmp_path / "sys/class/scsi_device/1:0:1:0").mkdir(parents=True)
    P = "/proc/scsi_tgt"
    writes = [
        ("vdisk/vdisk", f"open disk1 {img}"),
        ("vdisk/vdisk", f"open disk2 {img} 4096 WRITE_THROUGH READ_ONLY"),
        ("vdisk/vdisk", "open disk3 NULLIO"),
        ("vdisk/vdisk", "close disk3"),
        ("vdisk/vdisk", "resync_size disk1"),
        ("vcdrom/vcdrom", "open cd1"),
        ("vcdrom/vcdrom", f"change cd1 {img}"),
        ("vcdrom/vcdrom", "close cd1"),
        ("scsi_tgt", "assign 1:0:1:0 dev_disk"),
        ("scsi_tgt", "add_group g1"),
        ("scsi_tgt", "add_group g2"),
        ("scsi_tgt", "del_group g2"),
        ("groups/Default/devices", "add disk1 0"),
        ("groups/Default/devices", "add 1:0:1:0 1 READ_ONLY"),
        ("groups/Default/devices", "del 1:0:1:0"),
        ("groups/g1/devices", "add disk2 0 READ_ONLY"),
        ("groups/g1/devices", "clear"),
        ("groups/g1/names", f"add {INI}"),
        ("groups/g1/names", "add iqn.2000-01.com.example:x"),
        ("groups/g1/names", "del iqn.2000-01.com.example:x"),
        ("threads", "8"),
        ("trace_level", "none"),
        ("trace_level", "value 0x10"),
        ("trace_level", "add scsi"),
        ("vdisk/trace_level", "default"),
        ("vdisk/trace_level", "set mgmt"),
        ("vdisk/trace_level", "del mgmt"),
    ]
    for file, line in writes:
        assert proc(tmp_path, f"{P}/{file}", line) == 0, (file, line, capsys.readouterr().err)
    config = model(tmp_path)
    assert [d.name for d in config.devices] == ["disk1", "disk2", "1:0:1:0"]
    assert config.threads == 8
    assert config.group("g2") is None
    g1 = config.group("g1")
    assert g1.initiators == [INI] and g1.luns == []
    assert [(x.number, x.device) for x in config.group("Default").luns] == [(0, "disk1")]
    capsys.readouterr()
    assert proc(tmp_path, f"{P}/trace_level") == 0
    assert capsys.readouterr().out.strip() == "buff | scsi"
    assert proc(tmp_path, f"{P}/vdisk/vdisk") == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[2].split() == ["disk2", "1", "4096", "WT", "RO", str(img)]


def test_proc_refusals(
    tmp_path: Path, fake: FakeConfigfs, capsys: pytest.CaptureFixture[str]
) -> None:
    assert proc(tmp_path, "/proc/scsi_tgt/scsi_tgt", "ls") == 1
    assert "does not take 'ls'" in capsys.readouterr().err
    assert proc(tmp_path, "/proc/scsi_tgt/nosuch", "x") == 1
    assert "no such /proc/scsi_tgt file" in capsys.readouterr().err
    assert proc(tmp_path, "/proc/scsi_tgt/groups/Default/devices", "add nosuch 0") == 1
    err = capsys.readouterr().err
    assert err.startswith("tcmu-scst proc: error: no device nosuch") and err.count("\n") == 1
    assert proc(tmp_path, "/proc/scsi_tgt/scsi_tgt", "add_group a b") == 1
    err = capsys.readouterr().err
    assert "add_group a b: got 2 positional parameters, expected exactly 1" in err
    assert "usage: add_group group" in err


def test_sessions_read_format(
    tmp_path: Path, fake: FakeConfigfs, capsys: pytest.CaptureFixture[str]
) -> None:
    assert proc(tmp_path, "/proc/scsi_tgt/vdisk/vdisk", "open d0 NULLIO") == 0
    assert proc(tmp_path, "/proc/scsi_tgt/groups/Default/devices", "add d0 0") == 0
    assert proc(tmp_path, "/proc/scsi_tgt/scsi_tgt", "add_group g1") == 0
    assert proc(tmp_path, "/proc/scsi_tgt/groups/g1/devices", "add d0 0") == 0
    assert proc(tmp_path, "/proc/scsi_tgt/groups/g1/names", f"add {INI}") == 0
    assert shell(tmp_path, f"/targets/iscsi create {IQN}") == 0
    assert shell(tmp_path, "/targets/loopback create local") == 0
    fake.kernel_set(f"{TPG}/acls/{INI}/info", SESSION_INFO)
    fake.kernel_set(f"{TPG}/acls/{INI}/lun_0/statistics/scsi_auth_intr/num_cmds", "17")
    fake.kernel_set(f"{TPG}/dynamic_sessions", "iqn.2000-01.com.example:other\n\x00")
    capsys.readouterr()
    assert proc(tmp_path, "/proc/scsi_tgt/sessions") == 0
    lines = capsys.readouterr().out.splitlines()
    fmt = "%-20s %-45s %-35s %-15s"
    header = fmt % ("Target name", "Initiator name", "Group name", "Command Count")
    assert lines[0] == header.rstrip()
    assert (fmt % ("iscsi", INI, "g1", "17")).rstrip() in lines
    assert (fmt % ("iscsi", "iqn.2000-01.com.example:other", "Default", "-")).rstrip() in lines
    assert any(line.startswith("scst_local ") and " Default " in line for line in lines)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[list[Request]]:
    """A stand-in daemon on the control socket answering status/set_threads/trace_level."""
    seen: list[Request] = []

    def device(name: str, commands: int, sizes: dict[str, int]) -> DeviceStatus:
        return DeviceStatus(name, 1, 0, "vdisk", "vdisk/x", 3, commands, 0, 0, 0, sizes)

    def handle(request: Request) -> Answer:
        seen.append(request)
        match request:
            case Ping():
                return Pong("test", 1)
            case GetStatus():
                devices = (device("d0", 5, {"512": 3, "4096": 1}),
                           device("d1", 2, {"4096": 2}))
                return Status(3, devices)
            case SetThreads(threads=n):
                return ThreadsSet(n)
            case SetTraceLevel(owner=owner, mask=mask):
                return TraceLevels({owner: mask})
        raise AssertionError(request)

    with serving(tmp_path / "daemon.sock", handle):
        yield seen


def test_daemon_backed_files(
    tmp_path: Path,
    fake: FakeConfigfs,
    daemon: list[Request],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert proc(tmp_path, "/proc/scsi_tgt/threads") == 0
    assert capsys.readouterr().out.strip() == "3"
    assert proc(tmp_path, "/proc/scsi_tgt/threads", "0x6") == 0
    assert SetThreads(6) in daemon
    assert proc(tmp_path, "/proc/scsi_tgt/sgv") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["Name", "Hit", "Total"]
    assert out[1].split() == ["sgv-512", "-", "3"]
    assert out[2].split() == ["sgv-4096", "-", "3"]
    assert out[-1] == "2 device(s) served, 7 command(s) in all"
    assert proc(tmp_path, "/proc/scsi_tgt/vdisk/trace_level", "add debug") == 0
    sent = [r for r in daemon if isinstance(r, SetTraceLevel)]
    assert sent and sent[-1].owner == "vdisk" and sent[-1].mask & 0x200


def test_shell_one_shot_script_and_stdin(
    tmp_path: Path,
    fake: FakeConfigfs,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert shell(tmp_path, "add_group", "g1") == 0
    assert shell(tmp_path, "add_group", "g1") == 1
    assert "tcmu-scst shell: error: group g1 already exists" in capsys.readouterr().err
    script = tmp_path / "setup.tcmu"
    script.write_text(
        "# comment\n\n/vdisk open d0 NULLIO\n/groups/g1/devices add d0 0\n"
        "/groups/g1/devices add d0 1\n/groups/g1/names add never.reached\n"
    )
    assert shell(tmp_path, "-f", str(script)) == 1
    assert f"{script}:5: device d0 is already LUN 0" in capsys.readouterr().err
    assert model(tmp_path).group("g1").initiators == []  # stopped at the error
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("/groups/g1/names add iqn.2024-01.x:y\nls"
                        " /groups\n"))
    assert shell(tmp_path) == 0
    assert "g1" in capsys.readouterr().out
    assert model(tmp_path).group("g1").initiators == ["iqn.2024-01.x:y"]


def test_needs_root_on_the_system_configfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tcmu_scst.testing.no_configfs import NoConfigfsKernel

    kernel = NoConfigfsKernel(tmp_path, "nodev\tconfigfs\n")
    kernel.target.mkdir(parents=True)  # mounted, LIO loaded
    monkeypatch.setattr(shell_cli, "_configfs", lambda args: kernel)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert cli.main(["shell", "ls"]) == 1
    assert capsys.readouterr().err == (
        "tcmu-scst shell: error: the shell changes LIO's configfs, which needs root; "
        "run with sudo\n"
    )


def test_daemon_records_trace_levels(tmp_path: Path, fake: FakeConfigfs) -> None:
    from tcmu_scst.service.daemon import Daemon

    daemon = Daemon(
        configfs=fake,
        netlink=object(),  # type: ignore[arg-type]  # never started: no netlink needed
        sysfs_uio=tmp_path,
        dev_dir=tmp_path,
        control_socket=None,
    )
    reply = daemon.handle_request(SetTraceLevel("vdisk", 0x200))
    assert reply == TraceLevels({"vdisk": 0x200})
    with pytest.raises(ValueError, match="mask"):
        SetTraceLevel("vdisk", -1)


@pytest.mark.parametrize("euid", [0, 1000])
def test_without_configfs_what_needs_no_kernel_works_and_the_rest_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], euid: int
) -> None:
    from tcmu_scst.scst import cli as config_cli
    from tcmu_scst.testing.no_configfs import NoConfigfsKernel

    monkeypatch.setattr(os, "geteuid", lambda: euid)
    kernel = NoConfigfsKernel(tmp_path)
    monkeypatch.setattr(shell_cli, "_configfs", lambda args: kernel)
    monkeypatch.setattr(config_cli, "_configfs", lambda args: kernel)
    local = ["--state-dir", str(tmp_path / "state"), "--control-socket", str(tmp_path / "d.sock")]

    def fails(*argv: str) -> str:
        assert cli.main(list(argv)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "dmesg" not in err and "run as root" not in err
        return err

    assert cli.main(["shell", *local, "help"]) == 0
    assert "AVAILABLE COMMANDS" in capsys.readouterr().out
    assert cli.main(["shell", *local, "/vdisk", "help", "open"]) == 0
    assert "open NAME [PATH]" in capsys.readouterr().out
    assert cli.main(["proc", *local, "/proc/scsi_tgt/help"]) == 0
    assert "add_group GROUP" in capsys.readouterr().out
    assert "cannot read script" in fails("shell", *local, "-f", str(tmp_path / "missing"))
    for argv in (["shell", *local, "ls"], ["proc", *local, "/proc/scsi_tgt/vdisk/vdisk"]):
        assert "this kernel has no configfs (not in /proc/filesystems" in fails(*argv)
    script = tmp_path / "s.txt"
    script.write_text("help\n/groups/Default/devices show\n")
    assert f"{script}:2: this kernel has no configfs" in fails("shell", *local, "-f", str(script))
    assert not (tmp_path / "state").exists()
    (tmp_path / "d0.img").write_bytes(b"\0" * 4096)
    path = tmp_path / "scst.conf"
    path.write_text(
        f"HANDLER vdisk_fileio {{\n DEVICE d0 {{\n  filename {tmp_path}/d0.img\n }}\n}}\n"
    )
    assert cli.main(["config", "check", "--format", "modern", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK (1 devices, 0 targets)\n"
    assert "this kernel has no configfs" in fails("config", "apply", "--dry-run", str(path))


@pytest.mark.parametrize(
    ("group", "name", "message"),
    [
        ("g" * 64, None,
         f"group name {'g' * 32!r}... is 64 bytes; LIO's ACL tag holds 63: shorten it"),
        ("g", "foo",
         "initiator name 'foo' is not an iSCSI name; write iqn.YYYY-MM.reversed.domain[:id], "
         "eui.<16 hex digits> or naa.<16 or 32 hex digits> (RFC 3720 3.2.6.3)"),
        ("g", "IQN.2024-01.ORG.X:H",
         "initiator name 'IQN.2024-01.ORG.X:H' has upper-case letters: iSCSI names are "
         "case-folded (RFC 3722) and LIO compares them exactly; write iqn.2024-01.org.x:h"),
    ],
)  # fmt: skip
def test_file_shell_and_proc_refuse_the_same_input_with_the_same_message(
    tmp_path: Path,
    fake: FakeConfigfs,
    capsys: pytest.CaptureFixture[str],
    group: str,
    name: str | None,
    message: str,
) -> None:
    P = "/proc/scsi_tgt"
    text = f"GROUP {group} {{\n" + (f" INITIATOR {name}\n" if name else "") + "}\n"
    with pytest.raises(ConfigError) as from_file:
        conf.parse(text, "f.conf")
    assert str(from_file.value).startswith(f"f.conf:{2 if name else 1}: {message}")
    if name is None:
        assert proc(tmp_path, f"{P}/scsi_tgt", f"add_group {group}") == 1
        assert shell(tmp_path, "add_group", group) == 1
    else:
        assert proc(tmp_path, f"{P}/scsi_tgt", f"add_group {group}") == 0
        assert proc(tmp_path, f"{P}/groups/{group}/names", f"add {name}") == 1
        assert shell(tmp_path, f"/groups/{group}/names", "add", name) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-2:] == [f"tcmu-scst proc: error: {message}", f"tcmu-scst shell: error: {message}"]


@pytest.mark.parametrize("block_size", [8192, 1 << 30])
def test_file_shell_and_proc_refuse_a_block_size_lio_cannot_export_alike(
    tmp_path: Path, fake: FakeConfigfs, capsys: pytest.CaptureFixture[str], block_size: int
) -> None:
    """The shell and proc took any power of two; the file refused past 4096."""
    message = f"block size {block_size} is not one LIO exports; use 512, 1024, 2048 or 4096"
    image = tmp_path / "d0.img"
    image.write_bytes(b"\0" * (1 << 16))
    path = tmp_path / "scst.conf"
    path.write_text(
        f"HANDLER vdisk_fileio {{\n DEVICE d0 {{\n  filename {image}\n"
        f"  blocksize {block_size}\n }}\n}}\n"
    )
    assert cli.main(["config", "check", str(path)]) == 1
    assert proc(tmp_path, "/proc/scsi_tgt/vdisk/vdisk", f"open d0 {image} {block_size}") == 1
    assert shell(tmp_path, "/vdisk", "open", "d0", str(image), str(block_size)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-3:] == [
        f"tcmu-scst config: error: {path}:2: device d0: {message}",
        f"tcmu-scst proc: error: {message}",
        f"tcmu-scst shell: error: {message}",
    ]


@pytest.mark.parametrize("threads", [0, 257])
def test_file_shell_and_proc_refuse_a_thread_count_alike(
    tmp_path: Path, fake: FakeConfigfs, capsys: pytest.CaptureFixture[str], threads: int
) -> None:
    message = f"threads {threads} is out of range 1..256"
    with pytest.raises(ConfigError) as from_file:
        conf.parse(f"threads {threads}\n", "f.conf")
    assert str(from_file.value) == f"f.conf:1: {message}"
    assert proc(tmp_path, "/proc/scsi_tgt/threads", str(threads)) == 1
    assert shell(tmp_path, "/threads", "set", str(threads)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-2:] == [f"tcmu-scst proc: error: {message}", f"tcmu-scst shell: error: {message}"]
