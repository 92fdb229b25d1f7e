"""The SCST 0.9.6 README's /proc examples through ``tcmu-scst proc`` on the real kernel.

With the real daemon serving the user backstores: open two vdisks, put them in Default
as LUN 0 and 1, add a group with a name and its own LUN 0, create an iSCSI target
through /targets, then look with libiscsi (iscsi-ls, iscsi-inq, whose Product is the
device name) and read /proc/scsi_tgt/sessions while iscsi-perf sessions are open.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcmu_scst import cli
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import apply_config
from tests.kernel.tcmu_rig import DaemonThread, iscsi_perf, product_id

pytestmark = pytest.mark.kernel

IQN = "iqn.2024-01.org.tcmu-scst:shell"
INI_G1 = "iqn.2024-01.org.test:shell-g1"
INI_OTHER = "iqn.2024-01.org.test:shell-other"
PORTAL = "127.0.0.1"
PROC = "/proc/scsi_tgt"
SIZE = 8 << 30


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Path]:
    for name in ("disk1", "disk2"):
        with open(tmp_path / f"{name}.img", "wb") as f:
            # Sparse and large: iscsi-perf reads the whole LUN once, and must still be
            # logged in while /proc/scsi_tgt/sessions is read.
            f.truncate(SIZE)
    daemon = DaemonThread(tmp_path).start()
    try:
        yield tmp_path
    finally:
        state = tmp_path / "state" / "lio-state.json"
        apply_config(Configfs(), conf.parse("", "empty"), state)  # remove what we made
        daemon.stop()


def opts(tmp: Path) -> list[str]:
    return ["--state-dir", str(tmp / "state"), "--control-socket", str(tmp / "control.sock")]


def proc(tmp: Path, path: str, line: str | None = None) -> int:
    return cli.main(["proc", *opts(tmp), f"{PROC}/{path}", *([line] if line else [])])


def shell(tmp: Path, command: str) -> int:
    return cli.main(["shell", *opts(tmp), command])


def product(initiator: str, lun: int) -> str:
    return product_id(initiator, f"iscsi://{PORTAL}/{IQN}/{lun}")


def perf(initiator: str) -> subprocess.Popen[bytes]:
    return iscsi_perf(initiator, f"iscsi://{PORTAL}/{IQN}/0", "-m", "2")


def test_readme_examples_serve_an_iscsi_initiator(
    rig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = [
        ("vdisk/vdisk", f"open disk1 {rig}/disk1.img"),
        ("vdisk/vdisk", f"open disk2 {rig}/disk2.img 4096"),
        ("groups/Default/devices", "add disk1 0"),
        ("groups/Default/devices", "add disk2 1"),
        ("scsi_tgt", "add_group g1"),
        ("groups/g1/names", f"add {INI_G1}"),
        ("groups/g1/devices", "add disk2 0 READ_ONLY"),
    ]
    for path, line in steps:
        assert proc(rig, path, line) == 0, (path, line, capsys.readouterr().err)
        err = capsys.readouterr().err
        # The running model kept between invocations matches the real kernel's tree.
        assert "did not match" not in err and "daemon is not running" not in err, err
    for command in (
        f"/targets/iscsi create {IQN}",
        f"/targets/iscsi/{IQN} add_portal {PORTAL}",
        f"/targets/iscsi/{IQN} enable",
    ):
        assert shell(rig, command) == 0, (command, capsys.readouterr().err)
        err = capsys.readouterr().err
        assert "did not match" not in err and "daemon is not running" not in err, err

    listing = subprocess.run(
        ["iscsi-ls", "-i", INI_OTHER, f"iscsi://{PORTAL}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert IQN in listing.stdout, listing.stdout + listing.stderr
    # Default: LUN 0 and 1 for anyone; g1's member sees its own LUN 0.
    assert product(INI_OTHER, 0) == "disk1"
    assert product(INI_OTHER, 1) == "disk2"
    assert product(INI_G1, 0) == "disk2"

    sessions = [perf(INI_G1), perf(INI_OTHER)]
    try:
        rows: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            capsys.readouterr()
            assert proc(rig, "sessions") == 0
            rows = capsys.readouterr().out.splitlines()
            if any(INI_G1 in r for r in rows) and any(INI_OTHER in r for r in rows):
                break
            time.sleep(0.5)
        print("\n".join(rows))
        if not any(INI_G1 in r for r in rows):
            tpg = f"iscsi/{IQN}/tpgt_1"
            cfs = Configfs()
            raw = cfs.read(f"{tpg}/acls/{INI_G1}/info") + cfs.read(f"{tpg}/dynamic_sessions")
            for p in sessions:
                p.kill()
            errors = [(p.wait(), p.stderr.read() if p.stderr else b"") for p in sessions]
            raise AssertionError(f"no g1 session listed; configfs: {raw!r}; iscsi-perf: {errors}")
        assert rows[0].split() == ["Target", "name", "Initiator", "name", "Group", "name",
                                   "Command", "Count"]  # fmt: skip
        g1_row = next(r.split() for r in rows if INI_G1 in r)
        assert g1_row[:3] == ["iscsi", INI_G1, "g1"]
        assert g1_row[3].isdigit()
        other_row = next(r.split() for r in rows if INI_OTHER in r)
        assert other_row[:3] == ["iscsi", INI_OTHER, "Default"]
    finally:
        for p in sessions:
            p.terminate()
            p.wait(timeout=60)

    capsys.readouterr()
    assert proc(rig, "sgv") == 0
    sgv = capsys.readouterr().out
    assert "sgv-4096" in sgv or "sgv-512" in sgv, sgv
    assert proc(rig, "vdisk/vdisk") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["disk1", str(SIZE >> 20), "512", f"{rig}/disk1.img"]
    assert table[2].split() == ["disk2", str(SIZE >> 20), "4096", f"{rig}/disk2.img"]


IQN_CD = "iqn.2024-01.org.tcmu-scst:shell-cd"


def test_vcdrom_change_reaches_the_daemon(rig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tcmu_scst.service import control

    for name, sectors in (("cd1", 512), ("cd2", 1024)):
        (rig / f"{name}.iso").write_bytes(b"\0" * 2048 * sectors)
    assert proc(rig, "vcdrom/vcdrom", f"open cd1 {rig}/cd1.iso") == 0, capsys.readouterr().err
    assert proc(rig, "groups/Default/devices", "add cd1 0") == 0, capsys.readouterr().err
    for command in (
        f"/targets/iscsi create {IQN_CD}",
        f"/targets/iscsi/{IQN_CD} add_portal {PORTAL}:3262",
        f"/targets/iscsi/{IQN_CD} enable",
    ):
        assert shell(rig, command) == 0, (command, capsys.readouterr().err)
    url = f"iscsi://{PORTAL}:3262/{IQN_CD}/0"
    inq = subprocess.run(["iscsi-inq", "-i", INI_OTHER, url], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert inq.returncode == 0 and "cd1" in inq.stdout, inq.stdout + inq.stderr
    assert proc(rig, "vcdrom/vcdrom", f"change cd1 {rig}/cd2.iso") == 0, capsys.readouterr().err

    def served_config() -> str:
        status = control.ControlClient(rig / "control.sock").status()
        return next(d.dev_config for d in status.devices if d.name == "cd1")

    deadline = time.monotonic() + 30
    while "cd2.iso" not in served_config() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "cd2.iso" in served_config()  # the daemon got RECONFIG and swapped the medium
    capsys.readouterr()
    assert proc(rig, "vcdrom/vcdrom") == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row == ["cd1", "2", f"{rig}/cd2.iso"]
    inq = subprocess.run(["iscsi-inq", "-i", INI_OTHER, url], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert inq.returncode == 0, inq.stderr  # the LUN survived the change
