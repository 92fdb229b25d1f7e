"""TCM-USER netlink against the real kernel (lab guest only).

With reply support on, every configfs write that sends an event blocks (uninterruptibly)
until our ``*_DONE``; so the writes run in a worker thread watched by a timeout that, if
it fires, releases the writer through block_netlink/reset_netlink. The module-global reply
flag is always restored (SET_FEATURES 0) so later tests never block.

The raw kernel datagrams are saved under ``$TCMU_SCST_RESULTS`` or ``/results/netlink``
(when writable) to become the fixtures in tests/fixtures/netlink/.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions
from tcmu_scst.kernel.netlink import (
    AddedDevice,
    DeviceEvent,
    KernelNetlinkSocket,
    ReconfigDevice,
    RemovedDevice,
    TcmuModuleParams,
    TcmuNetlink,
    split_messages,
)
from tests.kernel.tcmu_rig import uio_names

NAME = "kt_netlink"
T = TypeVar("T")


class RecordingSocket(KernelNetlinkSocket):
    """The real socket, keeping every received datagram."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[bytes] = []

    def recv(self) -> bytes:
        data = super().recv()
        self.received.append(data)
        return data


class Responder(threading.Thread):
    """Answers every event for device NAME with status 0."""

    def __init__(self, client: TcmuNetlink) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.events: list[DeviceEvent] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.client.fileno()], [], [], 0.1)
            if not ready:
                continue
            try:
                for event in self.client.receive():
                    if event.name == NAME:
                        self.events.append(event)
                        self.client.reply(event, 0)
            except BaseException as err:
                self.errors.append(err)
                return


def guarded(fn: Callable[[], T], timeout: float = 30.0) -> T:
    """Run a possibly blocking configfs write; release it if nobody answered in time."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:
            box["error"] = err

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        TcmuModuleParams().release_stuck_writers()
        worker.join(10)
        raise AssertionError(f"configfs write still blocked after {timeout}s (released)")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def save_fixtures(client: TcmuNetlink, sock: RecordingSocket) -> list[str]:
    base = os.environ.get("TCMU_SCST_RESULTS", "/results")
    out = Path(base) / "netlink"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError:
        return []
    names = []
    counter = 0
    for datagram in sock.received:
        kinds = {mtype for mtype, _f, _s, _r in split_messages(datagram)}
        if kinds != {client.family_id}:
            continue  # ACKs and nlctrl replies
        counter += 1
        cmd = datagram[16]
        path = out / f"{counter:02d}_cmd{cmd}.bin"
        path.write_bytes(datagram)
        names.append(path.name)
    (out / "family_id.txt").write_text(f"{client.family_id}\n")
    return names


def test_events_are_received_and_answered() -> None:
    cfs = Configfs()
    params = TcmuModuleParams()
    assert not params.block_netlink
    sock = RecordingSocket()
    client = TcmuNetlink(sock).open()
    responder = Responder(client)
    dev: UserBackstore | None = None
    assert client.set_features(True)
    try:
        responder.start()
        opts = UserBackstoreOptions(dev_config="kt/netlink", dev_size=64 << 20)
        dev = guarded(lambda: UserBackstore.create(cfs, NAME, opts))
        assert dev.attrib("nl_reply_supported") == "1"  # took the module flag at enable
        assert dev.uio_name in uio_names()

        guarded(lambda: dev.set_dev_size(128 << 20) if dev else None)
        assert dev.info().size == 128 << 20
        guarded(lambda: dev.set_write_cache(True) if dev else None)
        assert dev.attrib("emulate_write_cache") == "1"
        guarded(lambda: dev.set_dev_config("kt/renamed") if dev else None)
        assert f"tcm-user/{dev.hba_index}/{NAME}/kt/renamed" in uio_names()

        doomed = dev
        guarded(doomed.delete)
        dev = None
    finally:
        if dev is not None:
            with contextlib.suppress(Exception):
                guarded(dev.delete)
        responder.stop.set()
        responder.join(5)
        client.set_features(False)
        names = save_fixtures(client, sock)
        client.close()
    print("saved fixtures:", names)
    print("events:", *responder.events, sep="\n  ")
    assert responder.errors == []
    kinds = [type(e) for e in responder.events]
    assert kinds == [AddedDevice, ReconfigDevice, ReconfigDevice, ReconfigDevice, RemovedDevice]
    added = responder.events[0]
    assert added.device == f"tcm-user/{added.hba_index}/{NAME}/kt/netlink"
    assert len({e.device_id for e in responder.events}) == 1
    size, cache, cfg = responder.events[1:4]
    assert isinstance(size, ReconfigDevice) and size.dev_size == 128 << 20
    assert isinstance(cache, ReconfigDevice) and cache.write_cache is True
    assert isinstance(cfg, ReconfigDevice) and cfg.dev_cfg is not None
    assert cfg.dev_cfg.rstrip("\n") == "kt/renamed"
    assert not params.block_netlink


def test_reply_flag_outlives_the_socket_that_set_it() -> None:
    """tcmu-abi.md §3.4: SET_FEATURES 1 stays in force after its sender closes."""
    cfs = Configfs()
    setter = TcmuNetlink().open()
    assert setter.set_features(True)
    setter.close()
    client = TcmuNetlink(RecordingSocket()).open()
    responder = Responder(client)
    responder.start()
    dev: UserBackstore | None = None
    try:
        opts = UserBackstoreOptions(dev_config="kt/flag", dev_size=1 << 20)
        dev = guarded(lambda: UserBackstore.create(cfs, NAME, opts))
        assert dev.attrib("nl_reply_supported") == "1"
        doomed = dev
        guarded(doomed.delete)
        dev = None
    finally:
        if dev is not None:
            with contextlib.suppress(Exception):
                guarded(dev.delete)
        responder.stop.set()
        responder.join(5)
        client.set_features(False)
        client.close()
    assert [type(e) for e in responder.events] == [AddedDevice, RemovedDevice]
    assert responder.errors == []
