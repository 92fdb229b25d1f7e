"""The daemon's event handling over fakes of its I/O edges.

Fakes: netlink (events in, replies out), sysfs UIO entries, module parameters, the
fake configfs, and ring ports over the emulator. The daemon's own code, the device
runner and the ring engine run for real.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcmu_scst.command import Command, Result
from tcmu_scst.errors import HandlerError
from tcmu_scst.handler import Handler
from tcmu_scst.kernel import uio
from tcmu_scst.kernel.netlink import (
    TCMU_CMD_ADDED_DEVICE,
    TCMU_CMD_RECONFIG_DEVICE,
    TCMU_CMD_REMOVED_DEVICE,
    AddedDevice,
    DeviceEvent,
    ReconfigDevice,
    RemovedDevice,
    TcmuModuleParams,
)
from tcmu_scst.scst.ownership import Ownership, save_ownership
from tcmu_scst.service import control
from tcmu_scst.service.daemon import Daemon
from tcmu_scst.testing.emulator_port import EmulatorPort
from tcmu_scst.testing.fake_configfs import FakeConfigfs
from tcmu_scst.testing.ring_emulator import RingEmulator

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0])


class FakeNetlink:
    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK)
        self.queue: list[DeviceEvent] = []
        self.replies: list[tuple[int, int, int]] = []  # (done cmd, device_id, status)
        self.features: list[bool] = []
        self.opened = False

    def open(self) -> FakeNetlink:
        self.opened = True
        return self

    def close(self) -> None:
        self.opened = False

    def fileno(self) -> int:
        return self.r

    def push(self, event: DeviceEvent) -> None:
        self.queue.append(event)
        os.write(self.w, b"e")

    def receive(self) -> list[DeviceEvent]:
        try:
            os.read(self.r, 64)
        except BlockingIOError:
            pass
        out, self.queue = self.queue, []
        return out

    def reply(self, event: DeviceEvent, status: int = 0) -> None:
        self.replies.append((event.done_cmd, event.device_id, status))

    def set_features(self, reply_supported: bool = True) -> bool:
        self.features.append(reply_supported)
        return True


class Disk(Handler):
    handler_name = "vdisk"
    closed: list[str] = []

    def __init__(self, config: str) -> None:
        self.config = config
        self.size = 1 << 20
        self.write_back = True

    def handle(self, cmd: Command) -> Result:
        cmd.data.write(self.config.encode()[: cmd.data.length])
        return Result(data_in_len=min(len(self.config), cmd.data.length))

    def resize(self, size: int) -> int:
        self.size = size
        return size

    def reconfigure(self, dev_config: str) -> bool:
        if dev_config.startswith("vdisk/medium="):  # an in-place change, like vcdrom's
            self.config = dev_config
            return True
        return False

    def close(self) -> None:
        Disk.closed.append(self.config)


def open_handler(config: str) -> Handler:
    if "broken" in config:
        raise HandlerError("vdisk: cannot open /nowhere: No such file or directory")
    return Disk(config)


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.sysfs = tmp / "sysfs"
        self.sysfs.mkdir()
        (tmp / "params").mkdir()
        for name in ("block_netlink", "reset_netlink"):
            (tmp / "params" / name).write_text("0\n")
        self.params = TcmuModuleParams(tmp / "params")
        self.cfs = FakeConfigfs(tmp / "configfs")
        self.netlink = FakeNetlink()
        self.emulators: dict[int, RingEmulator] = {}
        self.daemon = Daemon(
            configfs=self.cfs,
            netlink=self.netlink,  # type: ignore[arg-type]
            module_params=self.params,
            sysfs_uio=self.sysfs,
            dev_dir=tmp,
            control_socket=tmp / "control.sock",
            lock_file=tmp / "daemon.lock",
            threads=2,
            open_handler=open_handler,
            owns=lambda subtype: subtype == "vdisk",
            open_port=self.open_port,
        )
        self.thread: threading.Thread | None = None

    def open_port(self, info: uio.UioInfo) -> EmulatorPort:
        emu = RingEmulator(cmdr_size=8192, data_size=64 * 1024)
        self.emulators[info.minor] = emu
        return EmulatorPort(emu)

    def add_uio(self, minor: int, name: str) -> None:
        base = self.sysfs / f"uio{minor}"
        (base / "maps" / "map0").mkdir(parents=True)
        (base / "name").write_text(name + "\n")
        (base / "version").write_text("2\n")
        (base / "maps" / "map0" / "size").write_text("0x0000000000100000\n")

    def make_backstore(self, hba: int, name: str, config: str) -> None:
        self.cfs.mkdir(f"core/user_{hba}")
        self.cfs.mkdir(f"core/user_{hba}/{name}")
        self.cfs.write(f"core/user_{hba}/{name}/control", f"dev_config={config}")
        self.cfs.write(f"core/user_{hba}/{name}/enable", "1")

    def start(self) -> None:
        self.daemon.start()
        self.thread = threading.Thread(target=self.daemon.run)
        self.thread.start()

    def stop(self) -> None:
        self.daemon.stop()
        if self.thread is not None:
            self.thread.join(10)
            assert not self.thread.is_alive()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    Disk.closed.clear()
    r = Rig(tmp_path)
    yield r
    if r.thread is not None and r.thread.is_alive():
        r.stop()


def wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def read_through(rig: Rig, minor: int) -> bytes:
    emu = rig.emulators[minor]
    seen = len(emu.completions)  # cmd_ids are reused: look only at newer completions
    cid = emu.submit(READ10, data_in_len=512)
    wait_for(lambda: any(c.cmd_id == cid for c in emu.completions[seen:]))
    return emu.completion(cid).data_in


def test_startup_recovers_existing_devices_in_order(rig: Rig) -> None:
    rig.make_backstore(1, "disk1", "vdisk/x")
    rig.add_uio(0, "tcm-user/1/disk1/vdisk/x")
    rig.add_uio(1, "tcm-user/2/other/qcow/img")  # tcmu-runner's: left alone
    rig.start()
    assert set(rig.daemon.devices) == {(1, "disk1")}
    writes = [(op.path, op.value) for op in rig.cfs.ops("write") if "action" in op.path]
    assert writes == [
        ("core/user_1/disk1/action/block_dev", "1"),
        ("core/user_1/disk1/action/reset_ring", "1"),
        ("core/user_1/disk1/action/block_dev", "0"),
    ]
    assert rig.netlink.features == [True]
    assert (rig.sysfs.parent / "params" / "block_netlink").read_text().strip() == "0"
    assert read_through(rig, 0) == b"vdisk/x"
    rig.stop()
    assert rig.netlink.features == [True, False]  # reply support withdrawn at exit
    assert Disk.closed == ["vdisk/x"]


def add_and_serve(rig: Rig, device_id: int) -> None:
    """An ADDED event for a new vdisk (uio3, user_4/d): answered with 0, and served."""
    rig.add_uio(3, "tcm-user/4/d/vdisk/cfg")
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, "tcm-user/4/d/vdisk/cfg", 3, device_id))
    wait_for(lambda: rig.netlink.replies)
    assert rig.netlink.replies[-1] == (TCMU_CMD_ADDED_DEVICE + 3, device_id, 0)
    assert read_through(rig, 3) == b"vdisk/cfg"


def test_added_event_attaches_and_replies(rig: Rig) -> None:
    rig.start()
    add_and_serve(rig, 77)
    assert len(rig.netlink.replies) == 1


def test_event_for_foreign_handler_is_left_alone(rig: Rig) -> None:
    rig.start()
    rig.add_uio(3, "tcm-user/4/d/qcow/img")
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, "tcm-user/4/d/qcow/img", 3, 5))
    time.sleep(0.2)
    assert rig.netlink.replies == []
    assert rig.daemon.devices == {}


def test_failed_open_is_answered_with_an_errno(rig: Rig) -> None:
    rig.start()
    rig.add_uio(3, "tcm-user/4/d/vdisk/broken")
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, "tcm-user/4/d/vdisk/broken", 3, 9))
    wait_for(lambda: rig.netlink.replies)
    assert rig.netlink.replies == [(TCMU_CMD_ADDED_DEVICE + 3, 9, -errno.EINVAL)]
    assert rig.daemon.devices == {}


def test_removed_event_detaches(rig: Rig) -> None:
    rig.start()
    rig.add_uio(3, "tcm-user/4/d/vdisk/cfg")
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, "tcm-user/4/d/vdisk/cfg", 3, 1))
    wait_for(lambda: len(rig.netlink.replies) == 1)
    rig.netlink.push(RemovedDevice(TCMU_CMD_REMOVED_DEVICE, "tcm-user/4/d/vdisk/cfg", 3, 1))
    wait_for(lambda: len(rig.netlink.replies) == 2)
    assert rig.netlink.replies[1] == (TCMU_CMD_REMOVED_DEVICE + 3, 1, 0)
    assert rig.daemon.devices == {}
    assert Disk.closed == ["vdisk/cfg"]


def test_reconfig_size_and_unsupported_write_cache(rig: Rig) -> None:
    rig.start()
    rig.add_uio(3, "tcm-user/4/d/vdisk/cfg")
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, "tcm-user/4/d/vdisk/cfg", 3, 2))
    wait_for(lambda: len(rig.netlink.replies) == 1)
    name = "tcm-user/4/d/vdisk/cfg"
    rig.netlink.push(ReconfigDevice(TCMU_CMD_RECONFIG_DEVICE, name, 3, 2, dev_size=4 << 20))
    rig.netlink.push(ReconfigDevice(TCMU_CMD_RECONFIG_DEVICE, name, 3, 2, write_cache=False))
    wait_for(lambda: len(rig.netlink.replies) == 3)
    done = TCMU_CMD_RECONFIG_DEVICE + 3
    assert rig.netlink.replies[1:] == [(done, 2, 0), (done, 2, -errno.EINVAL)]
    handler = rig.daemon.devices[(4, "d")].handler
    assert isinstance(handler, Disk) and handler.size == 4 << 20


def test_reconfig_dev_config_reopens(rig: Rig) -> None:
    rig.start()
    rig.add_uio(3, "tcm-user/4/d/vdisk/one")
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, "tcm-user/4/d/vdisk/one", 3, 2))
    wait_for(lambda: len(rig.netlink.replies) == 1)
    name = "tcm-user/4/d/vdisk/one"
    rig.netlink.push(ReconfigDevice(TCMU_CMD_RECONFIG_DEVICE, name, 3, 2, dev_cfg="vdisk/two\n"))
    wait_for(lambda: len(rig.netlink.replies) == 2)
    assert rig.netlink.replies[1][2] == 0
    assert Disk.closed == ["vdisk/one"]
    assert read_through(rig, 3) == b"vdisk/two"


def test_control_socket_status(rig: Rig, tmp_path: Path) -> None:
    rig.add_uio(0, "tcm-user/1/disk1/vdisk/x")
    rig.make_backstore(1, "disk1", "vdisk/x")
    rig.start()
    read_through(rig, 0)
    client = control.ControlClient(tmp_path / "control.sock")
    [dev] = client.status().devices
    assert dev.name == "disk1" and dev.commands == 1 and dev.sizes == {"512": 1}
    assert client.ping().pid == os.getpid()
    assert control.daemon_running(tmp_path / "control.sock")
    rig.stop()
    assert not control.daemon_running(tmp_path / "control.sock")


def test_main_loop_runs_the_default_materializer(tmp_path: Path) -> None:
    """Case C (lio-and-scst.md §2.4): a login-only FC session gets its ACL from the daemon."""
    from tcmu_scst.scst import conf
    from tcmu_scst.scst.apply import apply_config

    qla = "21:00:00:24:ff:31:4c:48"
    cfs_root = tmp_path / "cfs"
    cfs_root.mkdir()
    cfs = FakeConfigfs(cfs_root, loaded_modules={"tcm_qla2xxx"})
    (tmp_path / "d0.img").write_bytes(bytes(512))
    (tmp_path / "d1.img").write_bytes(bytes(512))
    text = (
        "HANDLER vdisk_fileio {\n"
        f" DEVICE d0 {{\n  filename {tmp_path}/d0.img\n }}\n"
        f" DEVICE d1 {{\n  filename {tmp_path}/d1.img\n }}\n}}\n"
        f"TARGET_DRIVER qla2x00t {{\n TARGET {qla} {{\n  LUN 0 d0\n"
        "  GROUP g {\n   LUN 0 d1\n   INITIATOR 21:00:00:24:ff:31:4c:49\n  }\n  enabled 1\n"
        " }\n}\n"
    )
    state = tmp_path / "state.json"
    apply_config(cfs, conf.parse(text, "m.conf"), state)
    (tmp_path / "sysfs").mkdir()
    (tmp_path / "params").mkdir()
    for name in ("block_netlink", "reset_netlink"):
        (tmp_path / "params" / name).write_text("0\n")
    daemon = Daemon(
        configfs=cfs,
        netlink=FakeNetlink(),  # type: ignore[arg-type]
        module_params=TcmuModuleParams(tmp_path / "params"),
        sysfs_uio=tmp_path / "sysfs",
        dev_dir=tmp_path,
        control_socket=None,
        lock_file=tmp_path / "daemon.lock",
        state_file=state,
        materialize_every=0.05,
        owns=lambda subtype: False,
    )
    daemon.start()
    loop = threading.Thread(target=daemon.run)
    loop.start()
    try:
        tpg = f"qla2xxx/{qla}/tpgt_1"
        cfs.kernel_set(f"{tpg}/dynamic_sessions", "21:00:00:24:ff:31:4c:50\n\x00")
        wait_for(lambda: cfs.exists(f"{tpg}/acls/21:00:00:24:ff:31:4c:50/lun_0"))
    finally:
        daemon.stop()
        loop.join(10)


def test_reconfig_in_place_keeps_the_handler(rig: Rig) -> None:
    rig.start()
    rig.add_uio(3, "tcm-user/4/d/vdisk/one")
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, "tcm-user/4/d/vdisk/one", 3, 2))
    wait_for(lambda: len(rig.netlink.replies) == 1)
    before = rig.daemon.devices[(4, "d")].handler
    name = "tcm-user/4/d/vdisk/one"
    new = "vdisk/medium=b.iso"
    rig.netlink.push(ReconfigDevice(TCMU_CMD_RECONFIG_DEVICE, name, 3, 2, dev_cfg=new))
    wait_for(lambda: len(rig.netlink.replies) == 2)
    assert rig.netlink.replies[1][2] == 0
    assert rig.daemon.devices[(4, "d")].handler is before
    assert Disk.closed == []
    assert read_through(rig, 3) == new.encode()


def test_set_threads_applies_to_running_devices_and_new_ones(rig: Rig, tmp_path: Path) -> None:
    rig.add_uio(0, "tcm-user/1/disk1/vdisk/x")
    rig.make_backstore(1, "disk1", "vdisk/x")
    rig.start()
    runner = rig.daemon.devices[(1, "disk1")].runner
    wait_for(lambda: len(runner._workers) == 2)
    client = control.ControlClient(tmp_path / "control.sock")
    assert client.set_threads(4) == 4 and runner.threads == 4
    wait_for(lambda: len(runner._workers) == 4)
    assert read_through(rig, 0) == b"vdisk/x"
    add_and_serve(rig, 77)
    assert rig.daemon.devices[(4, "d")].runner.threads == 4
    with pytest.raises(control.ControlError, match=r"threads -1 is out of range 0\.\.256"):
        client.set_threads(-1)


def rig_with_state(tmp_path: Path, ownership: Ownership, poll: float) -> Rig:
    """A started daemon serving disk1, with a state file (polled every ``poll`` s)."""
    state = tmp_path / "lio-state.json"
    save_ownership(state, ownership)
    rig = Rig(tmp_path)
    rig.daemon.state_file = state
    rig.daemon.materialize_every = poll
    rig.add_uio(0, "tcm-user/1/disk1/vdisk/x")
    rig.make_backstore(1, "disk1", "vdisk/x")
    rig.start()
    return rig


def test_threads_from_the_applied_config_beat_the_command_line(tmp_path: Path) -> None:
    rig = rig_with_state(tmp_path, Ownership(threads=6), poll=0)
    try:
        assert rig.daemon.threads == 6
        assert rig.daemon.devices[(1, "disk1")].runner.threads == 6
    finally:
        rig.stop()


def test_served_devices_get_tmr_notifications(rig: Rig) -> None:
    rig.make_backstore(1, "disk1", "vdisk/x")
    rig.add_uio(0, "tcm-user/1/disk1/vdisk/x")
    assert rig.cfs.read("core/user_1/disk1/attrib/tmr_notification").strip() == "0"
    rig.start()
    assert rig.cfs.read("core/user_1/disk1/attrib/tmr_notification").strip() == "1"
    # A device whose configfs entry cannot be written is still served (a warning only).
    add_and_serve(rig, 7)
    assert len(rig.netlink.replies) == 1


def test_a_later_config_apply_of_threads_reaches_running_devices(tmp_path: Path) -> None:
    state = tmp_path / "lio-state.json"
    rig = rig_with_state(tmp_path, Ownership(), poll=0.05)  # no threads: --threads (2)
    try:
        runner = rig.daemon.devices[(1, "disk1")].runner
        assert rig.daemon.threads == 2
        save_ownership(state, Ownership(threads=5))  # what 'config apply' records
        wait_for(lambda: runner.threads == 5 and len(runner._workers) == 5)
        assert rig.daemon.threads == 5
        # The shell sets 3 directly; the file (also 3 after its edit) changes nothing more.
        control.ControlClient(tmp_path / "control.sock").set_threads(3)
        save_ownership(state, Ownership(threads=3))
        time.sleep(0.3)
        assert runner.threads == 3 and rig.daemon.threads == 3
    finally:
        rig.stop()


class SharedDisk(Disk):
    """A handler whose ring-thread work never waits: served by the shared ring loop."""

    shares_ring_loop = True
    threads_seen: set[str] = set()

    def is_inline(self, cmd: Command) -> bool:
        return True

    def handle(self, cmd: Command) -> Result:
        SharedDisk.threads_seen.add(threading.current_thread().name)
        return super().handle(cmd)


def test_devices_that_allow_it_share_one_ring_thread(rig: Rig) -> None:
    SharedDisk.threads_seen.clear()
    rig.daemon.lifecycle.open_handler = lambda config: (
        SharedDisk(config) if "shared" in config else Disk(config))
    rig.start()
    names = {3: "tcm-user/4/a/vdisk/shared-a", 4: "tcm-user/4/b/vdisk/shared-b",
             5: "tcm-user/4/p/vdisk/own"}
    for minor, name in names.items():
        rig.add_uio(minor, name)
        rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, name, minor, minor))
    wait_for(lambda: len(rig.netlink.replies) == 3)
    assert read_through(rig, 3) == b"vdisk/shared-a"
    assert read_through(rig, 4) == b"vdisk/shared-b"
    assert read_through(rig, 5) == b"vdisk/own"
    assert SharedDisk.threads_seen == {"ring-shared"}
    devices = rig.daemon.devices
    assert devices[(4, "a")].thread is None and devices[(4, "b")].thread is None
    assert devices[(4, "p")].thread is not None  # a handler that may wait: its own thread
    ring_threads = {t.name for t in threading.enumerate() if t.name.startswith("ring-")}
    assert ring_threads == {"ring-shared", "ring-p"}

    # A dev_config swap quiesces one device; the loop goes on serving the other.
    name = names[3]
    rig.netlink.push(ReconfigDevice(TCMU_CMD_RECONFIG_DEVICE, name, 3, 3,
                                    dev_cfg="vdisk/shared-c\n"))
    assert read_through(rig, 4) == b"vdisk/shared-b"
    wait_for(lambda: len(rig.netlink.replies) == 4)
    assert rig.netlink.replies[3][2] == 0
    assert read_through(rig, 3) == b"vdisk/shared-c"

    # REMOVED of a shared device: drained, closed, the other one still served.
    rig.netlink.push(RemovedDevice(TCMU_CMD_REMOVED_DEVICE, names[4], 4, 4))
    wait_for(lambda: len(rig.netlink.replies) == 5)
    assert "vdisk/shared-b" in Disk.closed
    assert read_through(rig, 3) == b"vdisk/shared-c"
    rig.stop()
    assert not any(t.name == "ring-shared" for t in threading.enumerate())
    assert sorted(Disk.closed) == ["vdisk/own", "vdisk/shared-a", "vdisk/shared-b",
                                   "vdisk/shared-c"]


def test_without_worker_threads_every_device_keeps_its_own_ring_thread(rig: Rig) -> None:
    # --threads 0 runs disk I/O on the ring thread: one slow device must not hold up
    # the others, so nothing is shared.
    rig.daemon.lifecycle.threads = 0
    rig.daemon.lifecycle.open_handler = SharedDisk
    rig.start()
    rig.add_uio(3, "tcm-user/4/a/vdisk/shared-a")
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, "tcm-user/4/a/vdisk/shared-a", 3, 1))
    wait_for(lambda: len(rig.netlink.replies) == 1)
    assert read_through(rig, 3) == b"vdisk/shared-a"
    assert rig.daemon.devices[(4, "a")].thread is not None


class ApplyWaitingForTheKernel:
    """A hot-plug engine whose apply removes a user backstore: like the kernel's rmdir,
    it waits (here at most 10 s) for the daemon's answer to the REMOVED event."""

    source = None

    def __init__(self, netlink: FakeNetlink, event: DeviceEvent) -> None:
        self.netlink, self.event = netlink, event
        self.worker: threading.Thread | None = None
        self.answered = threading.Event()
        self.events_stopped = False

    def start(self, *args: object, **kwargs: object) -> None:
        pass

    def begin_apply(self) -> None:
        self.worker = threading.Thread(target=self._apply)
        self.worker.start()

    def _apply(self) -> None:
        self.netlink.push(self.event)
        wanted = (self.event.done_cmd, self.event.device_id, 0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if wanted in self.netlink.replies:
                self.answered.set()
                return
            time.sleep(0.01)

    @property
    def busy(self) -> bool:
        return self.worker is not None and self.worker.is_alive()

    def stop_events(self) -> None:
        self.events_stopped = True
        self._apply_under_way()

    def close(self, wait: float = 5.0) -> None:
        self._apply_under_way()
        if self.worker is not None:
            self.worker.join(wait)

    def _apply_under_way(self) -> None:
        # The apply began just before the stop: its event arrives after the main loop's
        # last read, while the daemon shuts down.
        if self.worker is None:
            self.begin_apply()


def test_a_stopping_daemon_answers_its_own_hotplug_apply_then_releases_waiters(
    rig: Rig, tmp_path: Path
) -> None:
    # Seen on the real kernel: the daemon stopped while its hot-plug worker was in a
    # backstore rmdir; nobody answered REMOVED and the rmdir stayed in D state for good.
    removed = RemovedDevice(TCMU_CMD_REMOVED_DEVICE, "tcm-user/4/d/vdisk/cfg", 3, 1)
    engine = ApplyWaitingForTheKernel(rig.netlink, removed)
    rig.daemon.hotplug = engine  # type: ignore[assignment]
    rig.start()
    rig.add_uio(3, "tcm-user/4/d/vdisk/cfg")
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, "tcm-user/4/d/vdisk/cfg", 3, 1))
    wait_for(lambda: len(rig.netlink.replies) == 1)
    assert 3 in {dev.info.minor for dev in rig.daemon.devices.values()}
    reset = tmp_path / "params" / "reset_netlink"
    reset.write_text("0\n")  # the start-up recipe wrote 1
    rig.stop()
    assert engine.answered.is_set(), rig.netlink.replies
    assert engine.events_stopped
    assert rig.daemon.devices == {}
    # Then any writer still waiting (another process's) is released: reset while blocked.
    assert rig.netlink.features[-1] is False
    assert reset.read_text().strip() == "1"
    assert (tmp_path / "params" / "block_netlink").read_text().strip() == "0"


class SizeRoundWaitingForTheKernel(ApplyWaitingForTheKernel):
    """A size-watch round whose dev_size write waits for the daemon's RECONFIG answer;
    it is found under way when the stopping daemon first asks."""

    @property
    def busy(self) -> bool:
        self._apply_under_way()
        return ApplyWaitingForTheKernel.busy.fget(self)  # type: ignore[attr-defined,no-any-return]

    def tick(self) -> None:
        return None


def test_a_stopping_daemon_answers_its_own_size_watch_write(rig: Rig) -> None:
    name = "tcm-user/4/d/vdisk/cfg"
    grown = ReconfigDevice(TCMU_CMD_RECONFIG_DEVICE, name, 3, 1, dev_size=4 << 20)
    round_ = SizeRoundWaitingForTheKernel(rig.netlink, grown)
    rig.daemon.size_watch = round_  # type: ignore[assignment]
    rig.start()
    rig.add_uio(3, name)
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, name, 3, 1))
    wait_for(lambda: len(rig.netlink.replies) == 1)
    handler = rig.daemon.devices[(4, "d")].handler
    rig.stop()
    assert round_.answered.is_set(), rig.netlink.replies
    assert isinstance(handler, Disk) and handler.size == 4 << 20
