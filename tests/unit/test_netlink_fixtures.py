"""Decode the TCM-USER datagrams recorded from a real 6.1 kernel (tests/fixtures/netlink)."""

from __future__ import annotations

from pathlib import Path

from tcmu_scst.kernel.netlink import (
    AddedDevice,
    DeviceEvent,
    ReconfigDevice,
    RemovedDevice,
    TcmuGenlMsg,
    TcmuNetlink,
    decode,
    decode_event,
    split_messages,
)
from tcmu_scst.testing.fake_netlink import FakeTcmuKernel

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "netlink"
FAMILY = 32
DEVICE = "tcm-user/0/kt_netlink/kt/netlink"


def load(name: str) -> DeviceEvent:
    data = (FIXTURES / name).read_bytes()
    ((mtype, flags, seq, raw),) = split_messages(data)
    assert (mtype, flags, seq) == (FAMILY, 0, 0)
    event = decode_event(decode(TcmuGenlMsg, raw))
    assert event is not None
    return event


def test_added() -> None:
    event = load("01_added.bin")
    assert event == AddedDevice(cmd=1, device=DEVICE, minor=0, device_id=3, version=2)
    assert (event.hba_index, event.name, event.dev_config) == (0, "kt_netlink", "kt/netlink")


def test_reconfig_dev_size_without_pad() -> None:
    event = load("02_reconfig_dev_size.bin")
    assert isinstance(event, ReconfigDevice)
    assert (event.dev_size, event.dev_cfg, event.write_cache) == (128 << 20, None, None)
    assert event.device_id == 3


def test_reconfig_write_cache_and_dev_config() -> None:
    cache = load("03_reconfig_write_cache.bin")
    assert isinstance(cache, ReconfigDevice) and cache.write_cache is True
    cfg = load("04_reconfig_dev_config.bin")
    assert isinstance(cfg, ReconfigDevice) and cfg.dev_cfg == "kt/renamed"
    assert cfg.dev_size is None


def test_removed_carries_renamed_device() -> None:
    event = load("05_removed.bin")
    assert isinstance(event, RemovedDevice)
    assert event.device == "tcm-user/0/kt_netlink/kt/renamed"
    assert event.done_cmd == 5


def test_client_receives_recorded_datagrams() -> None:
    kernel = FakeTcmuKernel(family_id=FAMILY)
    client = TcmuNetlink(kernel).open()
    for path in sorted(FIXTURES.glob("*.bin")):
        kernel.deliver(path.read_bytes())
    kinds = []
    for _ in range(5):
        kinds += [type(e).__name__ for e in client.receive()]
    assert kinds == ["AddedDevice"] + ["ReconfigDevice"] * 3 + ["RemovedDevice"]
