"""The daemon's udev side: a pipe-backed fake monitor (pyudev's own test style), the
real Hotplug logic, the real declarative apply on the fake configfs, a fake sysfs."""

from __future__ import annotations

import os
import selectors
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tcmu_scst.errors import ConfigError, ConfigfsError
from tcmu_scst.kernel.lio import UserBackstore
from tcmu_scst.kernel.netlink import TCMU_CMD_ADDED_DEVICE, AddedDevice
from tcmu_scst.service import control, messages
from tcmu_scst.service.hotplug import (
    ApplyLock,
    Hotplug,
    UdevEvent,
    event_of,
    live_passthrough,
    main,
    monitor_source,
    notify,
)
from tcmu_scst.service.messages import HotplugAction
from tcmu_scst.testing.control_server import serving
from tcmu_scst.testing.fake_configfs import FakeConfigfs
from tests.unit.test_daemon import Rig, wait_for
from tests.unit.test_hotplug_rules import add_scsi

IQN = "iqn.2024-01.org.test:hp"
TPG = f"iscsi/{IQN}/tpgt_1"


@dataclass
class FakeAttributes:
    values: dict[str, str]

    def asstring(self, name: str) -> str:
        return self.values[name]


@dataclass
class FakeDevice:
    action: str
    subsystem: str
    sys_name: str
    device_type: str | None
    attributes: FakeAttributes


class FakeMonitor:
    """Readable through a pipe exactly while events are queued, like a netlink socket."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK)
        self.queue: list[FakeDevice] = []

    def fileno(self) -> int:
        return self.r

    def emit(self, action: str, subsystem: str, sys_name: str, devtype: str | None = None,
             name: str = "") -> None:  # fmt: skip
        attrs = FakeAttributes({"name": name} if name else {})
        self.queue.append(FakeDevice(action, subsystem, sys_name, devtype, attrs))
        os.write(self.w, b"e")

    def poll(self, timeout: float | None = None) -> FakeDevice | None:
        try:
            os.read(self.r, 1)
        except BlockingIOError:
            return None
        return self.queue.pop(0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Host:
    """The daemon's side of the wiring: selector, timers, rescan/prune counters."""

    selector: selectors.BaseSelector
    timers: list[tuple[float, Callable[[], None]]]
    rescans: int = 0
    prunes: int = 0

    def every(self, seconds: float, callback: Callable[[], None]) -> None:
        self.timers.append((seconds, callback))

    def pump(self) -> None:
        for key, _ in self.selector.select(timeout=0):
            key.data()


CONF = textwrap.dedent(
    f"""\
    HANDLER vdisk_nullio {{
        DEVICE null0
    }}
    HANDLER dev_disk {{
        DEVICE backup0 {{
            vendor Linux
            serial 2000
        }}
    }}
    TARGET_DRIVER iscsi {{
        TARGET {IQN} {{
            LUN 0 null0
            LUN 1 backup0
        }}
    }}
    """
)


class Setup:
    def __init__(self, tmp: Path, apply: Any = None) -> None:
        self.tmp = tmp
        (tmp / "cfs").mkdir()
        self.cfs = FakeConfigfs(tmp / "cfs")
        self.sysfs = tmp / "sys"
        self.sysfs.mkdir()
        self.config = tmp / "scst.conf"
        self.config.write_text(CONF)
        self.monitor = FakeMonitor()
        self.clock = Clock()
        self.hotplug = Hotplug(
            config_path=self.config,
            state_file=tmp / "state.json",
            sysfs=self.sysfs,
            lock_path=tmp / "run/apply.lock",
            open_source=lambda: self.monitor,
            apply=apply,
            settle=1.0,
            clock=self.clock,
        )
        self.host = Host(selectors.DefaultSelector(), [])

    def start(self) -> None:
        def rescan() -> None:
            self.host.rescans += 1

        def prune() -> None:
            self.host.prunes += 1

        self.hotplug.start(
            self.host.selector, self.host.every, configfs=self.cfs, rescan=rescan, prune=prune
        )

    def settle(self) -> None:
        """Deliver queued events, let the settle time pass, run the timers, wait."""
        self.host.pump()
        self.clock.now += 1.5
        self.hotplug.tick()
        self.hotplug.wait_idle()

    def luns(self) -> list[str]:
        base = Path(self.cfs.target) / TPG / "lun"
        return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.hotplug.close()
    s.host.selector.close()


def test_start_registers_the_monitor_and_two_timers(setup: Setup) -> None:
    setup.start()
    assert setup.host.selector.get_key(setup.monitor.fileno()).data == setup.hotplug.on_readable
    assert [period for period, _ in setup.host.timers] == [0.25, 30.0]


def test_tcm_user_uio_add_rescans_after_the_settle_time(setup: Setup) -> None:
    setup.start()
    setup.hotplug.check_due = None  # the start-up check is tested elsewhere
    setup.monitor.emit("add", "uio", "uio3", name="tcm-user/1/d0/vdisk/x")
    setup.host.pump()
    setup.hotplug.tick()
    assert setup.host.rescans == 0  # netlink ADDED gets the first go
    setup.clock.now += 1.0
    setup.hotplug.tick()
    assert setup.host.rescans == 1
    setup.hotplug.tick()
    assert setup.host.rescans == 1  # once per event burst


def test_foreign_uio_devices_are_ignored_and_remove_prunes(setup: Setup) -> None:
    setup.start()
    setup.monitor.emit("add", "uio", "uio0", name="uio_pdrv_genirq")
    setup.monitor.emit("remove", "uio", "uio3")
    setup.settle()
    assert (setup.host.rescans, setup.host.prunes) == (0, 1)
    assert setup.hotplug.events_seen == 2


def test_scsi_add_exports_the_matching_device_and_remove_withdraws_it(setup: Setup) -> None:
    setup.start()
    setup.settle()  # start-up check: nothing present, nothing live -> no apply
    assert setup.hotplug.applies == 0
    add_scsi(setup.sysfs, "2:0:0:0", serial="2000")
    for devtype, name in (("scsi_host", "host2"), ("scsi_target", "target2:0:0"),
                          ("scsi_device", "2:0:0:0")):  # fmt: skip
        setup.monitor.emit("add", "scsi", name, devtype)
    setup.settle()
    assert setup.hotplug.applies == 1
    assert live_passthrough(setup.cfs) == {"2:0:0:0"}
    bs = next(b for b in UserBackstore.all(setup.cfs) if b.name == "2:0:0:0")
    assert setup.cfs.read(f"{bs.rel}/attrib/dev_config").startswith("dev_disk/")
    assert setup.luns() == ["lun_0", "lun_1"]
    # An unrelated device comes: nothing to do.
    add_scsi(setup.sysfs, "3:0:0:0", serial="other")
    setup.monitor.emit("add", "scsi", "3:0:0:0", "scsi_device")
    setup.settle()
    assert setup.hotplug.applies == 1
    # The disk goes: LUN 1 and its backstore go, LUN 0 stays.
    for leftover in sorted((setup.sysfs / "class/scsi_device/2:0:0:0").rglob("*"), reverse=True):
        leftover.unlink() if leftover.is_file() else leftover.rmdir()
    (setup.sysfs / "class/scsi_device/2:0:0:0").rmdir()
    setup.monitor.emit("remove", "scsi", "2:0:0:0", "scsi_device")
    setup.settle()
    assert setup.hotplug.applies == 2
    assert live_passthrough(setup.cfs) == frozenset()
    assert setup.luns() == ["lun_0"]
    assert [b.name for b in UserBackstore.all(setup.cfs)] == ["null0"]


def test_events_are_debounced_into_one_check(tmp_path: Path) -> None:
    applied: list[frozenset[str]] = []
    s = Setup(tmp_path, apply=lambda cfs, res: applied.append(res.passthrough_addresses))
    s.start()
    s.hotplug.check_due = None
    add_scsi(s.sysfs, "2:0:0:0", serial="2000")
    s.monitor.emit("add", "scsi", "2:0:0:0", "scsi_device")
    s.host.pump()
    s.clock.now += 0.8
    s.monitor.emit("change", "scsi", "2:0:0:0", "scsi_device")
    s.host.pump()
    s.clock.now += 0.8  # 1.6 s after the first event, 0.8 s after the last
    s.hotplug.tick()
    s.hotplug.wait_idle()
    assert applied == []
    s.clock.now += 0.3
    s.hotplug.tick()
    s.hotplug.wait_idle()
    assert applied == [frozenset({"2:0:0:0"})]


def test_a_busy_lock_defers_the_apply(tmp_path: Path) -> None:
    applied: list[int] = []
    s = Setup(tmp_path, apply=lambda cfs, res: applied.append(1))
    s.start()
    add_scsi(s.sysfs, "2:0:0:0", serial="2000")
    other = ApplyLock(tmp_path / "run/apply.lock")
    assert other.try_acquire()  # e.g. the boot unit's flock(1)
    s.settle()
    assert applied == [] and s.hotplug.check_due is not None
    other.release()
    s.settle()
    assert applied == [1]


def test_a_failed_apply_is_not_retried_until_an_event(tmp_path: Path) -> None:
    calls: list[int] = []

    def failing(cfs: Any, res: Any) -> None:
        calls.append(1)
        raise ConfigfsError("mkdir core/user_0/2:0:0:0: No such device", "core/user_0", 19)

    s = Setup(tmp_path, apply=failing)
    s.start()
    add_scsi(s.sysfs, "2:0:0:0", serial="2000")
    s.settle()
    assert calls == [1] and "No such device" in s.hotplug.last_error
    s.hotplug.audit()
    s.settle()
    assert calls == [1]  # the audit does not hammer a failing apply
    s.monitor.emit("change", "scsi", "2:0:0:0", "scsi_device")
    s.settle()
    assert calls == [1, 1]


def test_a_missing_or_broken_config_applies_nothing(tmp_path: Path) -> None:
    applied: list[int] = []
    s = Setup(tmp_path, apply=lambda cfs, res: applied.append(1))
    s.start()
    add_scsi(s.sysfs, "2:0:0:0", serial="2000")
    s.config.write_text("HANDLER dev_disk {\n DEVICE nolabel\n}\n")
    s.settle()
    assert "neither an address" in s.hotplug.last_error
    s.config.unlink()
    s.hotplug.request_check()
    s.settle()
    assert applied == []


def test_without_an_event_source_the_audit_still_runs(setup: Setup) -> None:
    def no_monitor() -> FakeMonitor:
        raise ConfigError("cannot listen to kernel uevents: [Errno 93] Protocol not supported")

    setup.hotplug.open_source = no_monitor
    setup.start()
    assert setup.hotplug.source is None
    assert setup.host.selector.get_map() == {}
    add_scsi(setup.sysfs, "2:0:0:0", serial="2000")
    setup.hotplug.audit()
    setup.settle()
    assert live_passthrough(setup.cfs) == {"2:0:0:0"}
    assert setup.hotplug.handle_request(HotplugAction.STATUS).listening is False


def test_control_requests(setup: Setup) -> None:
    setup.start()
    setup.hotplug.check_due = None
    setup.hotplug.handle_request(HotplugAction.CHECK)
    assert setup.hotplug.check_due == setup.clock.now
    with pytest.raises(ValueError, match="'explode' is not one of status, check"):
        messages.decode_request({"op": "hotplug", "action": "explode"})


def test_event_of_reads_a_pyudev_like_device() -> None:
    dev = FakeDevice("add", "uio", "uio2", None, FakeAttributes({"name": "tcm-user/1/a/vdisk/b"}))
    assert event_of(dev) == UdevEvent("add", "uio", "uio2", "", "tcm-user/1/a/vdisk/b")
    gone = FakeDevice("add", "uio", "uio2", None, FakeAttributes({}))
    assert event_of(gone).uio_name == ""


def test_monitor_source_follows_udevd(tmp_path: Path) -> None:
    assert monitor_source(tmp_path / "control") == "kernel"
    (tmp_path / "control").touch()
    assert monitor_source(tmp_path / "control") == "udev"


# ---- inside the real daemon ----------------------------------------------------------


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    if r.thread is not None and r.thread.is_alive():
        r.stop()


def attach_hotplug(rig: Rig, tmp: Path) -> FakeMonitor:
    monitor = FakeMonitor()
    rig.daemon.hotplug = Hotplug(
        config_path=tmp / "absent.conf",
        sysfs=tmp / "nosys",
        lock_path=tmp / "apply.lock",
        open_source=lambda: monitor,
        settle=0.05,
    )
    return monitor


def test_daemon_attaches_a_device_seen_only_through_udev(rig: Rig, tmp_path: Path) -> None:
    monitor = attach_hotplug(rig, tmp_path)
    rig.start()
    rig.add_uio(5, "tcm-user/2/late/vdisk/cfg")  # its netlink ADDED was lost
    monitor.emit("add", "uio", "uio5", name="tcm-user/2/late/vdisk/cfg")
    wait_for(lambda: (2, "late") in rig.daemon.devices)
    # The ADDED that comes after all is answered with success, not "already served".
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, "tcm-user/2/late/vdisk/cfg", 5, 9))
    wait_for(lambda: rig.netlink.replies)
    assert rig.netlink.replies == [(TCMU_CMD_ADDED_DEVICE + 3, 9, 0)]
    reply = control.ControlClient(rig.daemon.control_path or Path()).hotplug()
    assert reply.listening is True and reply.events == 1
    rig.stop()


def test_daemon_prunes_a_device_whose_uio_entry_vanished(rig: Rig, tmp_path: Path) -> None:
    monitor = attach_hotplug(rig, tmp_path)
    rig.make_backstore(1, "d1", "vdisk/x")
    rig.add_uio(0, "tcm-user/1/d1/vdisk/x")
    rig.start()
    assert (1, "d1") in rig.daemon.devices
    for path in sorted((rig.sysfs / "uio0").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (rig.sysfs / "uio0").rmdir()
    monitor.emit("remove", "uio", "uio0")
    wait_for(lambda: not rig.daemon.devices)
    rig.stop()


def test_daemon_without_hotplug_refuses_the_op(rig: Rig) -> None:
    with pytest.raises(control.ControlError, match="hot-plug is off in this daemon"):
        rig.daemon.handle_request(messages.HotplugQuery())


# ---- the udev rule's notify helper ---------------------------------------------------


def test_notify_pokes_a_running_daemon(tmp_path: Path) -> None:
    seen: list[messages.Request] = []

    def handle(request: messages.Request) -> messages.Answer:
        seen.append(request)
        if isinstance(request, messages.Rescan):
            return messages.Status(2, ())
        return messages.HotplugStatus(True, "scst.conf", 1, 0, False, "")

    with serving(tmp_path / "c.sock", handle):
        assert notify("add", "uio", tmp_path / "c.sock") == 0
        assert notify("remove", "scsi", tmp_path / "c.sock") == 0
    assert seen == [messages.Rescan(), messages.HotplugQuery(HotplugAction.CHECK)]


def test_notify_without_a_daemon_succeeds_quietly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert notify("add", "scsi", tmp_path / "none.sock") == 0
    assert "the tcmu-scst daemon is not running" in capsys.readouterr().err
    assert main(["bogus"]) == 2


def test_an_unreadable_configfs_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tcmu_scst.kernel.configfs import Configfs

    s = Setup(tmp_path)
    s.start()
    assert s.hotplug.cfs is not None
    s.hotplug.cfs = Configfs(tmp_path / "not-mounted")
    add_scsi(s.sysfs, "2:0:0:0", serial="2000")
    s.settle()
    s.hotplug.audit()
    s.settle()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "not-mounted/target/core" in errors[0].getMessage()
    s.hotplug.cfs = s.cfs  # configfs is there now: the next audit exports the disk
    s.hotplug.audit()
    s.settle()
    assert live_passthrough(s.cfs) == {"2:0:0:0"} and s.hotplug.last_error == ""
    s.hotplug.close()
