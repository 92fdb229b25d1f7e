"""TcmuNetlink against the scripted kernel (only send/recv are replaced)."""

from __future__ import annotations

import errno
import select
import struct
from pathlib import Path

import pytest

from tcmu_scst.errors import NetlinkError
from tcmu_scst.kernel import netlink as nl
from tcmu_scst.kernel.netlink import (
    AddedDevice,
    ReconfigDevice,
    RemovedDevice,
    TcmuModuleParams,
    TcmuNetlink,
)
from tcmu_scst.testing.fake_netlink import FakeTcmuKernel, Reply

DEV = "tcm-user/3/d1/file//x"


@pytest.fixture
def kernel() -> FakeTcmuKernel:
    return FakeTcmuKernel()


@pytest.fixture
def client(kernel: FakeTcmuKernel) -> TcmuNetlink:
    return TcmuNetlink(kernel).open()


def test_open_resolves_family_and_joins_config(kernel: FakeTcmuKernel, client: TcmuNetlink) -> None:
    assert (client.family_id, client.group_id) == (kernel.family_id, kernel.group_id)
    assert kernel.joined == [kernel.group_id]
    assert struct.unpack_from("=H", kernel.sent[0], 4)[0] == nl.GENL_ID_CTRL


def test_set_features_and_eopnotsupp() -> None:
    kernel = FakeTcmuKernel()
    client = TcmuNetlink(kernel).open()
    assert client.set_features(True) is True
    assert client.set_features(False) is True
    assert kernel.features == [1, 0]
    old = FakeTcmuKernel(set_features_errno=errno.EOPNOTSUPP)
    assert TcmuNetlink(old).open().set_features(True) is False
    denied = FakeTcmuKernel(set_features_errno=errno.EPERM)
    with pytest.raises(NetlinkError, match="EPERM"):
        TcmuNetlink(denied).open().set_features(True)


def test_events_and_exact_replies(kernel: FakeTcmuKernel, client: TcmuNetlink) -> None:
    client.set_features(True)
    kernel.emit_added(DEV, 0, 7)
    readable, _, _ = select.select([client.fileno()], [], [], 1)
    assert readable
    (added,) = client.receive()
    assert isinstance(added, AddedDevice) and added.device_id == 7 and added.minor == 0
    client.reply(added, 0)
    kernel.emit_reconfig(DEV, 0, 7, dev_size=1 << 20)
    (reconfig,) = client.receive()
    assert isinstance(reconfig, ReconfigDevice) and reconfig.dev_size == 1 << 20
    client.reply(reconfig, -errno.EOPNOTSUPP)
    kernel.emit_removed(DEV, 0, 7)
    (removed,) = client.receive()
    assert isinstance(removed, RemovedDevice)
    client.reply(removed)
    assert kernel.replies == [
        Reply(nl.TCMU_CMD_ADDED_DEVICE_DONE, 0, 7),
        Reply(nl.TCMU_CMD_RECONFIG_DEVICE_DONE, -errno.EOPNOTSUPP, 7),
        Reply(nl.TCMU_CMD_REMOVED_DEVICE_DONE, 0, 7),
    ]
    assert kernel.pending() == {} and kernel.hung == []


def test_reply_refused_by_kernel_raises(kernel: FakeTcmuKernel, client: TcmuNetlink) -> None:
    stale = AddedDevice(cmd=1, device=DEV, minor=0, device_id=99)
    with pytest.raises(NetlinkError, match="EINVAL"):
        client.reply(stale, 0)
    with pytest.raises(NetlinkError, match="negative errno"):
        client.reply(stale, 5)


def test_events_arriving_during_a_request_are_kept(
    kernel: FakeTcmuKernel, client: TcmuNetlink
) -> None:
    kernel.emit_added(DEV, 0, 1)
    kernel.emit_added("tcm-user/4/d2", 1, 2)
    client.set_features(True)  # reads past both events to find its ACK
    events = client.receive()
    assert [e.device_id for e in events] == [1, 2]
    assert events[1].dev_config == ""


def test_unknown_family_gives_modprobe_hint() -> None:
    class NoTcmu(FakeTcmuKernel):
        def _handle(self, mtype: int, seq: int, raw: bytes) -> bytes:
            from tcmu_scst.testing.fake_netlink import build_error

            return build_error(seq, errno.ENOENT, raw)

    with pytest.raises(NetlinkError, match="modprobe target_core_user"):
        TcmuNetlink(NoTcmu()).open()


def test_not_open_and_close(kernel: FakeTcmuKernel) -> None:
    with pytest.raises(NetlinkError, match="not open"):
        TcmuNetlink().receive()
    client = TcmuNetlink(kernel)
    with client:
        assert client.family_id == kernel.family_id
    assert kernel.closed


def test_module_params(tmp_path: Path) -> None:
    for name, value in (
        ("block_netlink", "0\n"),
        ("reset_netlink", ""),
        ("global_max_data_area_mb", "2048\n"),
    ):
        (tmp_path / name).write_text(value)
    params = TcmuModuleParams(tmp_path)
    assert params.block_netlink is False
    assert params.global_max_data_area_mb == 2048
    assert params.release_stuck_writers(grace=0)
    assert (tmp_path / "reset_netlink").read_text() == "1"
    assert (tmp_path / "block_netlink").read_text() == "0"
    params.set_block_netlink(True)
    assert params.block_netlink is True
    with pytest.raises(NetlinkError, match="target_core_user"):
        TcmuModuleParams(tmp_path / "missing").set_block_netlink(True)
