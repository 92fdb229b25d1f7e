"""Hot-plug on the real kernel (lab guest: no udevd, so the daemon hears raw uevents).

* a user backstore made by hand is attached through the uevent path alone;
* scsi_debug + an identity rule in scst.conf: exported on add, withdrawn on removal,
  then the module unloads with no task stuck in D state;
* a reboot-like sequence runs the installed units' commands: the setup comes back.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import LoopbackTpg
from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions
from tcmu_scst.scst import conf, devconfig
from tcmu_scst.scst.apply import apply_config
from tcmu_scst.scst.model import Device
from tcmu_scst.service import control, install
from tcmu_scst.service.hotplug import Hotplug, load_config
from tests.kernel.tcmu_rig import DaemonThread, wait_until

pytestmark = pytest.mark.kernel

IQN = "iqn.2024-01.org.tcmu-scst:hotplug"
TPG = f"iscsi/{IQN}/tpgt_1"
TPG_LUNS = Configfs().path(f"{TPG}/lun")


def d_state_tasks() -> list[str]:
    stuck = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "D":
            stuck.append(stat.parent.name)
    return stuck


class NoNetlink:
    """A netlink stand-in that never delivers: only the uevent path can attach."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def open(self) -> NoNetlink:
        return self

    def close(self) -> None:
        pass

    def fileno(self) -> int:
        return self.r

    def receive(self) -> list[object]:
        return []

    def reply(self, event: object, status: int = 0) -> None:
        raise AssertionError("no event was delivered, so none is answered")

    def set_features(self, reply_supported: bool = True) -> bool:
        return False


def daemon_with_hotplug(tmp: Path, config: Path, netlink: object | None = None) -> DaemonThread:
    """The daemon on a thread with a hot-plug engine reading ``config``."""
    hotplug = Hotplug(
        config_path=config,
        state_file=tmp / "state.json",
        lock_path=tmp / "apply.lock",
        settle=0.5,
    )
    return DaemonThread(tmp, hotplug=hotplug, netlink=netlink)  # type: ignore[arg-type]


def nullio_dev_config(name: str) -> str:
    return devconfig.encode_dev_config(Device(name, "vdisk_nullio", {"size_mb": "16"}))


def test_a_backstore_made_by_hand_is_attached_through_uevents_alone(
    configfs: Configfs, tmp_path: Path
) -> None:
    options = UserBackstoreOptions(
        dev_config=nullio_dev_config("hand0"), dev_size=16 << 20, nl_reply_supported=-1
    )
    with daemon_with_hotplug(tmp_path, tmp_path / "none.conf", NoNetlink()) as d:
        assert d.hotplug.source is not None, "no uevent monitor in the guest"
        backstore = UserBackstore.create(configfs, "hand0", options)
        try:
            wait_until(lambda: d.serves("hand0"), "the daemon to attach hand0", 15)
            assert d.hotplug.events_seen >= 1
        finally:
            backstore.delete()  # no REMOVED reaches the daemon: the uio remove uevent must
        wait_until(lambda: not d.serves("hand0"), "the daemon to let hand0 go", 15)


RULE_CONF = f"""\
HANDLER vdisk_nullio {{
    DEVICE null0 {{
        size_mb 16
    }}
}}
HANDLER dev_disk {{
    DEVICE sdbg {{
        vendor Linux
        model scsi_debug
    }}
}}
TARGET_DRIVER iscsi {{
    TARGET {IQN} {{
        LUN 0 null0
        LUN 1 sdbg
        enabled 1
    }}
}}
"""


@pytest.fixture
def rule_config(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "scst.conf"
    path.write_text(RULE_CONF)
    yield path
    apply_config(Configfs(), conf.parse("", "empty"), tmp_path / "state.json")


def scsi_debug_hctl() -> str | None:
    """scsi_debug's own device (not a re-export of it through tcm_loop)."""
    for entry in Path("/sys/class/scsi_device").glob("*"):
        host = Path(f"/sys/class/scsi_host/host{entry.name.split(':')[0]}/proc_name")
        if host.read_text().strip() == "scsi_debug":
            return entry.name
    return None


def test_scsi_debug_is_exported_by_identity_and_withdrawn_on_removal(
    rule_config: Path, tmp_path: Path, modprobe: Callable[..., None]
) -> None:
    with daemon_with_hotplug(tmp_path, rule_config) as d:
        # The boot restore: no scsi_debug yet -> only LUN 0 (null0).
        apply_config(Configfs(), load_config(rule_config).config, tmp_path / "state.json")
        assert (TPG_LUNS / "lun_0").is_dir()
        assert not (TPG_LUNS / "lun_1").exists()
        modprobe("scsi_debug", "dev_size_mb=8")
        wait_until(scsi_debug_hctl, "scsi_debug's device")
        hctl = scsi_debug_hctl()
        assert hctl is not None
        wait_until(lambda: (TPG_LUNS / "lun_1").is_dir(), "LUN 1 for scsi_debug")
        assert d.serves(hctl), f"{hctl} not served: {d.daemon.describe_devices()}"
        link = next(p for p in (TPG_LUNS / "lun_1").iterdir() if p.is_symlink())
        assert link.resolve().name == hctl

        # Served, the sg node is open: the module is in use, and says so at once.
        busy = subprocess.run(["rmmod", "scsi_debug"], capture_output=True, text=True,
                              timeout=30)  # fmt: skip
        assert busy.returncode != 0 and "in use" in busy.stderr

        # Hot-unplug: the device goes; LUN 1 and its backstore go, LUN 0 stays.
        Path(f"/sys/class/scsi_device/{hctl}/device/delete").write_text("1")
        wait_until(lambda: not (TPG_LUNS / "lun_1").exists(), "LUN 1 to go")
        wait_until(lambda: not d.serves(hctl), "the daemon to let the device go")
        wait_until(lambda: not d.hotplug.busy, "the apply to finish (HBA removal)")
        assert (TPG_LUNS / "lun_0").is_dir()
        assert hctl not in {b.name for b in UserBackstore.all(Configfs())}
        done = subprocess.run(["rmmod", "scsi_debug"], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert d_state_tasks() == []
        assert d.hotplug.last_error == ""


def test_a_daemon_stopped_during_a_hotplug_withdrawal_leaves_nothing_waiting(
    rule_config: Path, tmp_path: Path, modprobe: Callable[..., None]
) -> None:
    # The withdrawal's backstore rmdir waits, uninterruptibly, for the daemon's answer
    # to REMOVED; a daemon that stopped answering first left it (and every later
    # configfs reader) in D state for good: seen in CI, 2 runs in 9 in the lab.
    d = daemon_with_hotplug(tmp_path, rule_config).start()
    try:
        apply_config(Configfs(), load_config(rule_config).config, tmp_path / "state.json")
        modprobe("scsi_debug", "dev_size_mb=8")
        wait_until(scsi_debug_hctl, "scsi_debug's device")
        hctl = scsi_debug_hctl()
        assert hctl is not None
        wait_until(lambda: (TPG_LUNS / "lun_1").is_dir(), "LUN 1 for scsi_debug")
        Path(f"/sys/class/scsi_device/{hctl}/device/delete").write_text("1")
        # Polled finely: the apply lasts about a second.
        wait_until(lambda: d.hotplug.busy, "the hot-plug apply to begin", 15, every=0.005)
    finally:
        d.stop()  # at once, while that apply is under way
    # Nothing waits for an answer: configfs reads return, no task is in D state.
    listing = subprocess.run(["ls", "-R", str(Configfs().path("core"))],
                             capture_output=True, timeout=20)  # fmt: skip
    assert listing.returncode == 0
    wait_until(lambda: d_state_tasks() == [], "no task in D state", 10)
    assert hctl not in {b.name for b in UserBackstore.all(Configfs())}


# ---- reboot-like: the installed units' commands --------------------------------------

BOOT_CONF = f"""\
HANDLER vdisk_nullio {{
    DEVICE boot0 {{
        size_mb 16
    }}
}}
TARGET_DRIVER iscsi {{
    TARGET {IQN} {{
        LUN 0 boot0
        enabled 1
    }}
}}
"""
ETC_CONF = Path("/etc/tcmu-scst/scst.conf")
STATE = Path("/var/lib/tcmu-scst/lio-state.json")


def exec_lines(unit: Path, key: str) -> list[list[str]]:
    out = []
    for line in unit.read_text().splitlines():
        if line.startswith(f"{key}="):
            out.append(shlex.split(line.split("=", 1)[1]))
    return out


def run_unit_pre(unit: Path) -> None:
    for argv in exec_lines(unit, "ExecStartPre"):
        optional = argv[0].startswith("-")
        argv[0] = argv[0].lstrip("-")
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert optional or result.returncode == 0, (argv, result.stderr)


def start_daemon(unit: Path) -> subprocess.Popen[bytes]:
    run_unit_pre(unit)
    (argv,) = exec_lines(unit, "ExecStart")
    proc = subprocess.Popen(argv)
    wait_until(lambda: control.daemon_running(), "the daemon's control socket", 90)
    return proc


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


@pytest.fixture
def units(tmp_path: Path) -> Iterator[Path]:
    values = {
        "BIN": f"{sys.executable} -m tcmu_scst.cli",
        "PYTHON": sys.executable,
        "CONFIG": str(ETC_CONF),
        "FLOCK": "/usr/bin/flock",
        "LOCK": str(install.DEFAULT_LOCK),
    }
    install.install(tmp_path / "root", install.Layout.of(False), values, enable=True)
    ETC_CONF.parent.mkdir(parents=True, exist_ok=True)
    ETC_CONF.write_text(BOOT_CONF)
    yield tmp_path / "root/etc/systemd/system"
    ETC_CONF.unlink()
    apply_config(Configfs(), conf.parse("", "empty"), STATE)


def test_reboot_like_sequence_restores_the_saved_setup(units: Path) -> None:
    daemon_unit, restore_unit = units / install.DAEMON_UNIT, units / install.RESTORE_UNIT
    proc = start_daemon(daemon_unit)
    try:
        subprocess.run(exec_lines(restore_unit, "ExecStart")[0], check=True, timeout=120)
        wait_until(lambda: (TPG_LUNS / "lun_0").is_dir(), "the first setup")
    finally:
        stop_daemon(proc)

    # "Reboot": the daemon is gone, the kernel's LIO tree is empty, the files remain.
    saved_state = STATE.read_text()
    apply_config(Configfs(), conf.parse("", "empty"), STATE)
    assert not Configfs().exists(f"iscsi/{IQN}")
    assert not any(b.name == "boot0" for b in UserBackstore.all(Configfs()))
    STATE.write_text(saved_state)

    proc = start_daemon(daemon_unit)  # tcmu-scst.service
    try:
        run_unit_pre(restore_unit)  # tcmu-scst-restore.service, after the daemon
        for argv in exec_lines(restore_unit, "ExecStart"):
            result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr
        assert (TPG_LUNS / "lun_0").is_dir()
        assert Configfs().read(f"{TPG}/enable") == "1"
        client = control.ControlClient()
        assert [dev.name for dev in client.status().devices] == ["boot0"]
        hot = client.hotplug()
        assert hot.listening is True and hot.last_error == ""
    finally:
        stop_daemon(proc)


# ---- what the initiator sees: REPORTED LUNS DATA HAS CHANGED ------------------------

LOOP_WWN = "naa.5001405abcdef012"
LOOP_CONF = (
    RULE_CONF.replace("TARGET_DRIVER iscsi", "TARGET_DRIVER scst_local")
    .replace(f"TARGET {IQN}", f"TARGET {LOOP_WWN}")
    .replace("        enabled 1\n", "")
)


def test_the_remaining_lun_reports_the_change_after_an_unplug(
    tmp_path: Path, modprobe: Callable[..., None]
) -> None:
    path = tmp_path / "scst.conf"
    path.write_text(LOOP_CONF)
    tpg = LoopbackTpg(Configfs(), LOOP_WWN)
    try:
        with daemon_with_hotplug(tmp_path, path) as d:
            modprobe("scsi_debug", "dev_size_mb=8")
            wait_until(scsi_debug_hctl, "scsi_debug's device")
            hctl = scsi_debug_hctl()
            assert hctl is not None
            d.hotplug.request_check()
            # The TPG itself appears only with the hot-plug apply.
            wait_until(lambda: tpg.exists and 1 in tpg.luns(), "LUN 1 on tcm_loop")
            lun0 = tpg.wait_for_lun(0)
            tpg.wait_for_lun(1)
            sg = lun0.sg
            assert sg is not None
            subprocess.run(["sg_turs", sg], capture_output=True, timeout=30)  # old UAs
            Path(f"/sys/class/scsi_device/{hctl}/device/delete").write_text("1")
            wait_until(lambda: 1 not in tpg.luns(), "LUN 1 to go")
            assert not Path(f"/sys/class/scsi_device/{tpg.hctl(1)}").exists()
            turs = subprocess.run(["sg_turs", "-v", sg], capture_output=True,
                                  text=True, timeout=30)  # fmt: skip
            report = (turs.stdout + turs.stderr).lower()
            assert "reported luns data has changed" in report, report
            again = subprocess.run(["sg_turs", sg], capture_output=True, timeout=30)
            assert again.returncode == 0  # a unit attention, not I/O errors forever
            assert d.hotplug.last_error == ""
            # Withdrawn while the daemon serves: removing a tcm_loop LUN removes the
            # initiator's sd, whose SYNCHRONIZE CACHE is then answered at once. With no
            # daemon it waits for TCMU's cmd_time_out and the SCSI error handler (95 s).
            d.hotplug.wait_idle()
            apply_config(Configfs(), conf.parse("", "empty"), tmp_path / "state.json")
            assert not tpg.exists
    finally:
        apply_config(Configfs(), conf.parse("", "empty"), tmp_path / "state.json")
