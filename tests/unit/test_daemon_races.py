"""Nothing hangs, nothing is lost: the daemon's races, each provoked on purpose.

* a dev_config RECONFIG swaps handlers only when no command can reach the old one
  (inline commands, queued ones, and ones fetched during the swap included), and
  gives up (EBUSY, old handler kept) when a command is stuck;
* REMOVED of a device whose command is stuck is answered at once, the other devices
  stay served, and the handler is closed only when the command returns;
* a control client that connects and sends nothing does not stall the main loop;
* a second daemon refuses to start and leaves the first one serving;
* serve_in_thread's stop never closes a handler or port under a running command.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcmu_scst import cli
from tcmu_scst.command import Command, Result
from tcmu_scst.handler import Handler
from tcmu_scst.kernel.netlink import (
    TCMU_CMD_ADDED_DEVICE,
    TCMU_CMD_RECONFIG_DEVICE,
    TCMU_CMD_REMOVED_DEVICE,
    AddedDevice,
    ReconfigDevice,
    RemovedDevice,
)
from tcmu_scst.service import control
from tcmu_scst.service.daemon import Daemon
from tcmu_scst.service.device import serve_in_thread
from tcmu_scst.service.devices import DeviceState
from tcmu_scst.service.instance import AlreadyRunning, InstanceLock
from tcmu_scst.service.messages import Pong
from tcmu_scst.testing.emulator_port import EmulatorPort
from tcmu_scst.testing.ring_emulator import RingEmulator

from .test_daemon import READ10, FakeNetlink, Rig, wait_for

NAME = "tcm-user/4/d/vdisk/one"
DONE_RECONFIG = TCMU_CMD_RECONFIG_DEVICE + 3


class Gated(Handler):
    """Answers READ with its dev_config; blocks on ``gate`` while it is closed and
    records, in one log shared by all instances, when commands end and it closes."""

    handler_name = "vdisk"
    log: list[str] = []
    gate = threading.Event()
    entered = threading.Semaphore(0)

    def __init__(self, config: str) -> None:
        self.config = config
        self.closed = False

    def handle(self, cmd: Command) -> Result:
        Gated.entered.release()
        Gated.gate.wait(10)
        if self.closed:
            Gated.log.append(f"used after close: {self.config}")
        cmd.data.write(self.config.encode()[: cmd.data.length])
        Gated.log.append(f"end {self.config}")
        return Result(data_in_len=min(len(self.config), cmd.data.length))

    def reconfigure(self, dev_config: str) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        Gated.log.append(f"close {self.config}")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    Gated.log = []
    Gated.gate.set()
    Gated.entered = threading.Semaphore(0)
    r = Rig(tmp_path)
    r.daemon.lifecycle.open_handler = Gated
    yield r
    Gated.gate.set()
    if r.thread is not None and r.thread.is_alive():
        r.stop()


def serve(rig: Rig, threads: int, minor: int = 3, name: str = NAME, device_id: int = 1) -> None:
    rig.daemon.lifecycle.threads = threads
    rig.add_uio(minor, name)
    before = len(rig.netlink.replies)
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, name, minor, device_id))
    wait_for(lambda: len(rig.netlink.replies) == before + 1)
    assert rig.netlink.replies[-1][2] == 0


def submit_blocked(rig: Rig, minor: int = 3) -> int:
    """A READ that is inside the handler (gate closed) when this returns."""
    Gated.gate.clear()
    cid = rig.emulators[minor].submit(READ10, data_in_len=512)
    assert Gated.entered.acquire(timeout=5)
    return cid


def data_of(rig: Rig, cid: int, minor: int = 3) -> bytes:
    emu = rig.emulators[minor]
    wait_for(lambda: any(c.cmd_id == cid for c in emu.completions))
    return emu.completion(cid).data_in


def read(rig: Rig, minor: int = 3) -> bytes:
    """One READ through the ring (cmd_ids are reused: wait for a new completion)."""
    emu = rig.emulators[minor]
    count = len(emu.completions)
    cid = emu.submit(READ10, data_in_len=512)
    wait_for(lambda: len(emu.completions) > count)
    return emu.completion(cid).data_in


def release_later(delay: float) -> threading.Timer:
    timer = threading.Timer(delay, Gated.gate.set)
    timer.start()
    return timer


@pytest.mark.parametrize("threads", [0, 2], ids=["inline", "workers"])
def test_reopen_waits_for_the_command_on_the_old_handler(rig: Rig, threads: int) -> None:
    rig.start()
    serve(rig, threads)
    first = submit_blocked(rig)
    release_later(0.3)
    rig.netlink.push(ReconfigDevice(TCMU_CMD_RECONFIG_DEVICE, NAME, 3, 1, dev_cfg="vdisk/two"))
    wait_for(lambda: len(rig.netlink.replies) == 2)
    assert rig.netlink.replies[1] == (DONE_RECONFIG, 1, 0)
    assert data_of(rig, first) == b"vdisk/one"
    # The old handler was closed only after its command ended, never used after.
    assert Gated.log == ["end vdisk/one", "close vdisk/one"]
    assert read(rig) == b"vdisk/two"


def test_commands_fetched_during_a_reopen_reach_the_new_handler(rig: Rig) -> None:
    rig.start()
    serve(rig, 2)
    first = submit_blocked(rig)
    rig.netlink.push(ReconfigDevice(TCMU_CMD_RECONFIG_DEVICE, NAME, 3, 1, dev_cfg="vdisk/two"))
    time.sleep(0.2)  # the main loop is now waiting for `first`
    second = rig.emulators[3].submit(READ10, data_in_len=512)
    time.sleep(0.2)
    Gated.gate.set()
    wait_for(lambda: len(rig.netlink.replies) == 2)
    assert data_of(rig, first) == b"vdisk/one"
    assert data_of(rig, second) == b"vdisk/two"
    assert "close vdisk/one" in Gated.log
    assert not [e for e in Gated.log if e.startswith("used after close")]


def test_reopen_gives_up_on_a_stuck_command_and_keeps_the_old_handler(rig: Rig) -> None:
    rig.daemon.lifecycle.quiesce_wait = 0.3
    rig.start()
    serve(rig, 0)
    first = submit_blocked(rig)
    rig.netlink.push(ReconfigDevice(TCMU_CMD_RECONFIG_DEVICE, NAME, 3, 1, dev_cfg="vdisk/two"))
    wait_for(lambda: len(rig.netlink.replies) == 2, timeout=3)
    assert rig.netlink.replies[1] == (DONE_RECONFIG, 1, -errno.EBUSY)
    Gated.gate.set()
    assert data_of(rig, first) == b"vdisk/one"
    assert read(rig) == b"vdisk/one"
    assert Gated.log.count("close vdisk/two") == 1  # the unused new one
    assert "close vdisk/one" not in Gated.log
    assert rig.daemon.devices[(4, "d")].dev_config == "vdisk/one"


def test_removed_with_a_stuck_command_does_not_stall_other_devices(rig: Rig) -> None:
    rig.daemon.lifecycle.detach_wait = 0.2
    rig.start()
    serve(rig, 2)
    submit_blocked(rig)
    rig.netlink.push(RemovedDevice(TCMU_CMD_REMOVED_DEVICE, NAME, 3, 1))
    other = "tcm-user/5/e/vdisk/other"
    rig.add_uio(4, other)
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, other, 4, 2))
    wait_for(lambda: len(rig.netlink.replies) == 3, timeout=2)
    assert rig.netlink.replies[1:] == [
        (TCMU_CMD_REMOVED_DEVICE + 3, 1, 0),
        (TCMU_CMD_ADDED_DEVICE + 3, 2, 0),
    ]
    assert set(rig.daemon.devices) == {(5, "e")}
    assert "close vdisk/one" not in Gated.log  # its command still runs in it
    Gated.gate.set()
    wait_for(lambda: "close vdisk/one" in Gated.log)
    assert Gated.log.index("end vdisk/one") < Gated.log.index("close vdisk/one")
    assert read(rig, 4) == b"vdisk/other"


def test_a_silent_control_client_does_not_stall_the_main_loop(
    rig: Rig, tmp_path: Path
) -> None:
    rig.daemon.control_path = tmp_path / "control.sock"
    rig.start()
    assert rig.daemon.control is not None
    rig.daemon.control.client_timeout = 1.0
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(tmp_path / "control.sock"))
    try:
        time.sleep(0.1)  # accepted by now
        start = time.monotonic()
        rig.add_uio(3, NAME)
        rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, NAME, 3, 1))
        status = control.ControlClient(tmp_path / "control.sock", timeout=3).status()
        wait_for(lambda: rig.netlink.replies, timeout=3)
        assert time.monotonic() - start < 1.5  # the old blocking read took 2 s
        assert [d.name for d in status.devices] in ([], ["d"])
        # ... and it is dropped after client_timeout.
        silent.settimeout(3)
        assert silent.recv(10) == b""
    finally:
        silent.close()


def test_a_second_daemon_refuses_to_start_and_the_first_keeps_serving(
    rig: Rig, tmp_path: Path
) -> None:
    rig.start()
    serve(rig, 2)
    second_netlink = FakeNetlink()
    reset = tmp_path / "params" / "reset_netlink"
    reset.write_text("untouched\n")
    second = Daemon(
        configfs=rig.cfs,
        netlink=second_netlink,  # type: ignore[arg-type]
        module_params=rig.params,
        sysfs_uio=rig.sysfs,
        dev_dir=tmp_path,
        control_socket=tmp_path / "control.sock",
        lock_file=tmp_path / "daemon.lock",
        open_handler=Gated,
        owns=lambda subtype: subtype == "vdisk",
        open_port=rig.open_port,
    )
    with pytest.raises(AlreadyRunning, match=r"another tcmu-scst daemon \(pid \d+\)"):
        second.start()
    assert not second_netlink.opened and second_netlink.features == []
    assert reset.read_text() == "untouched\n"
    assert control.ControlClient(tmp_path / "control.sock").ping().pid == os.getpid()
    assert read(rig) == b"vdisk/one"
    rig.stop()
    # The lock goes with the first daemon: a successor may start.
    lock = InstanceLock(tmp_path / "daemon.lock")
    lock.acquire()
    lock.release()


def test_cli_daemon_refuses_with_one_line_while_another_holds_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = InstanceLock(tmp_path / "daemon.lock")
    lock.acquire()
    try:
        rc = cli.main([
            "daemon", "--lock-file", str(tmp_path / "daemon.lock"),
            "--control-socket", str(tmp_path / "c.sock"), "--no-hotplug",
            "--state-file", str(tmp_path / "state.json"),
            "--trace-file", str(tmp_path / "trace.json"),
        ])
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("tcmu-scst daemon: error: another")
    assert not (tmp_path / "c.sock").exists()


def test_control_server_never_replaces_a_live_socket(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    first = control.ControlServer(path, lambda req: Pong("first", 1))
    try:
        with pytest.raises(control.ControlError, match="another daemon is listening"):
            control.ControlServer(path, lambda req: Pong("second", 2))
        done = threading.Event()

        def serve() -> None:  # the refused server's probe is in the backlog too
            while not done.is_set():
                select.select([first], [], [], 0.1)
                first.serve_one()

        server = threading.Thread(target=serve)
        server.start()
        try:
            assert control.ControlClient(path).ping().version == "first"
        finally:
            done.set()
            server.join(5)
    finally:
        first.close()
    # A dead daemon's socket (nobody listening) is replaced.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    control.ControlServer(path, lambda req: Pong("x", 1)).close()


def test_serve_in_thread_stop_never_closes_under_a_running_command() -> None:
    Gated.log = []
    Gated.entered = threading.Semaphore(0)
    Gated.gate.clear()
    emu = RingEmulator(cmdr_size=8192, data_size=64 * 1024)
    port = EmulatorPort(emu)
    handler = Gated("vdisk/x")
    port_closed: list[bool] = []
    close_port = port.close
    port.close = lambda: (port_closed.append(True), close_port())  # type: ignore[method-assign]
    _runner, stop = serve_in_thread(port, handler, 0, "t", stop_wait=0.2)
    try:
        cid = emu.submit(READ10, data_in_len=512)
        assert Gated.entered.acquire(timeout=5)
        started = time.monotonic()
        stop()
        assert time.monotonic() - started < 2
        assert not handler.closed and not port_closed
    finally:
        Gated.gate.set()
    wait_for(lambda: handler.closed and port_closed)
    assert emu.completion(cid).data_in == b"vdisk/x"
    assert Gated.log == ["end vdisk/x", "close vdisk/x"]


def start_a_stuck_swap(rig: Rig) -> None:
    """A dev_config RECONFIG that waits for a command stuck in the old handler."""
    rig.start()
    serve(rig, 2)
    submit_blocked(rig)
    rig.netlink.push(ReconfigDevice(TCMU_CMD_RECONFIG_DEVICE, NAME, 3, 1, dev_cfg="vdisk/two"))
    time.sleep(0.1)


def test_other_devices_are_answered_while_a_swap_waits_for_a_stuck_command(rig: Rig) -> None:
    rig.daemon.lifecycle.quiesce_wait = 2.5
    start_a_stuck_swap(rig)
    other = "tcm-user/5/e/vdisk/other"
    rig.add_uio(4, other)
    rig.netlink.push(AddedDevice(TCMU_CMD_ADDED_DEVICE, other, 4, 2))
    wait_for(lambda: len(rig.netlink.replies) == 2, timeout=1.5)  # before the swap gives up
    assert rig.netlink.replies[1] == (TCMU_CMD_ADDED_DEVICE + 3, 2, 0)
    wait_for(lambda: len(rig.netlink.replies) == 3, timeout=5)
    assert rig.netlink.replies[2] == (DONE_RECONFIG, 1, -errno.EBUSY)
    Gated.gate.set()
    assert read(rig, 4) == b"vdisk/other"
    assert read(rig) == b"vdisk/one"


def test_shutdown_during_a_swap_answers_it_and_does_not_hang(rig: Rig) -> None:
    rig.daemon.lifecycle.quiesce_wait = 0.5
    rig.daemon.lifecycle.detach_wait = 0.2
    start_a_stuck_swap(rig)
    started = time.monotonic()
    rig.stop()  # joins the main loop within 10 s or fails
    assert time.monotonic() - started < 3
    assert rig.netlink.replies[-1] == (DONE_RECONFIG, 1, -errno.EBUSY)
    assert rig.netlink.features == [True, False]  # reply support withdrawn at the end
    assert "close vdisk/one" not in Gated.log  # its command still runs
    Gated.gate.set()
    wait_for(lambda: "close vdisk/one" in Gated.log)


def test_a_second_reconfig_during_a_swap_is_refused_at_once(rig: Rig) -> None:
    rig.daemon.lifecycle.quiesce_wait = 2.5
    start_a_stuck_swap(rig)
    dev = rig.daemon.devices[(4, "d")]
    assert dev.state is DeviceState.SWAPPING
    rig.netlink.push(ReconfigDevice(TCMU_CMD_RECONFIG_DEVICE, NAME, 3, 1, dev_cfg="vdisk/three"))
    wait_for(lambda: len(rig.netlink.replies) == 2, timeout=1.5)  # not after the first
    assert rig.netlink.replies[1] == (DONE_RECONFIG, 1, -errno.EBUSY)
    Gated.gate.set()  # the stuck command returns: the first swap goes through
    wait_for(lambda: len(rig.netlink.replies) == 3, timeout=5)
    assert rig.netlink.replies[2] == (DONE_RECONFIG, 1, 0)
    assert dev.state is DeviceState.SERVING and dev.dev_config == "vdisk/two"
    assert "close vdisk/three" not in Gated.log  # never opened
    assert read(rig) == b"vdisk/two"
