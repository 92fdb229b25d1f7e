"""The pass-through handler with a fake SG_IO: open checks, CDB checks, data, errors."""

from __future__ import annotations

import errno
import logging
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tcmu_scst.command import CHECK_CONDITION, GOOD, Command, DataBuffer, Result
from tcmu_scst.errors import HandlerError
from tcmu_scst.handlers import passthrough, sg_io
from tcmu_scst.handlers.passthrough import (
    HANDLER_CLASSES,
    PassthroughHandler,
    open_dev_config,
    open_passthrough,
)
from tcmu_scst.handlers.passthrough_params import PassthroughParams
from tcmu_scst.service import registry
from tests.unit.passthrough_fakes import FakeSg, Reply, Sent, SimpleDevice, make_sysfs, ua_sense

Opener = Callable[..., PassthroughHandler]


@pytest.fixture
def opener(tmp_path: Path) -> Opener:
    def make(
        handler: str = "dev_disk",
        device_type: int = 0,
        fake: FakeSg | None = None,
        **params: object,
    ) -> PassthroughHandler:
        root = tmp_path / f"{handler}-{len(list(tmp_path.iterdir()))}"
        root.mkdir()
        sysfs = make_sysfs(root, "1:0:1:0", device_type)
        return open_passthrough(
            PassthroughParams(handler, "1:0:1:0", **params),
            sysfs=sysfs, dev_root=root / "dev", ioctl=fake or FakeSg(),
        )

    return make


def cmd(cdb: bytes, data: bytes | bytearray | int = 0, cmd_id: int = 1) -> Command:
    raw = bytearray(data)
    views = [memoryview(raw)] if raw else []
    return Command(cmd_id, cdb, DataBuffer(views))


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


def sense_of(result: Result | None) -> tuple[int, int, int]:
    assert result is not None and result.status == CHECK_CONDITION
    return result.sense[2] & 0x0F, result.sense[12], result.sense[13]


def test_every_handler_class_is_registered_for_its_subtype() -> None:
    for name in HANDLER_CLASSES:
        assert registry.FACTORIES[name] is passthrough.open_dev_config
    assert sorted(HANDLER_CLASSES) == sorted(
        ["dev_disk", "dev_tape", "dev_processor", "dev_cdrom", "dev_modisk", "dev_changer",
         "dev_raid"]
    )


def test_open_reads_block_size_and_names_the_class(opener: Opener) -> None:
    fake = FakeSg(SimpleDevice(block_size=4096))
    handler = opener(fake=fake)
    assert type(handler).handler_name == "dev_disk"
    assert handler.state.block_size == 4096
    assert fake.cdbs()[0][0] == 0x25
    handler.close()


def test_wrong_type_is_refused_with_the_right_handler_named(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, "1:0:1:0", 1)
    with pytest.raises(HandlerError, match=r"^1:0:1:0 is a tape \(type 1\); use dev_tape$"):
        open_passthrough(PassthroughParams("dev_disk", "1:0:1:0"), sysfs=sysfs,
                         dev_root=tmp_path / "dev", ioctl=FakeSg())


def test_unserved_type_and_missing_device(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, "1:0:1:0", 0x0D)
    with pytest.raises(HandlerError, match=r"enclosure .*no pass-through handler serves"):
        open_passthrough(PassthroughParams("dev_disk", "1:0:1:0"), sysfs=sysfs,
                         dev_root=tmp_path / "dev", ioctl=FakeSg())
    with pytest.raises(HandlerError, match="no SCSI device at 2:0:0:0"):
        open_passthrough(PassthroughParams("dev_disk", "2:0:0:0"), sysfs=sysfs,
                         dev_root=tmp_path / "dev", ioctl=FakeSg())


def test_no_sg_node_says_load_sg(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, "1:0:1:0", 0, sg=None)
    with pytest.raises(HandlerError, match="modprobe sg"):
        open_passthrough(PassthroughParams("dev_disk", "1:0:1:0"), sysfs=sysfs,
                         dev_root=tmp_path / "dev", ioctl=FakeSg())


def test_open_dev_config_reaches_the_device_nodes(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, "1:0:1:0", 8)
    fake = FakeSg()
    import tcmu_scst.handlers.passthrough as module

    real = module.open_passthrough

    def patched(params: PassthroughParams, **kwargs: object) -> PassthroughHandler:
        return real(params, sysfs=sysfs, dev_root=tmp_path / "dev", ioctl=fake)

    monkeypatch.setattr(module, "open_passthrough", patched)
    handler = open_dev_config("dev_changer/hctl=1%3A0%3A1%3A0;to=5")
    assert handler.handler_name == "dev_changer" and handler.serialized
    assert handler.timeout_ms == 5000
    handler.close()


def test_probe_retries_past_unit_attention(opener: Opener) -> None:
    device = SimpleDevice(block_size=2048)
    calls: list[int] = []

    def responder(sent: Sent) -> Reply:
        calls.append(sent.cdb[0])
        if len(calls) == 1:
            return Reply(status=CHECK_CONDITION, sense=ua_sense())
        return device(sent)

    handler = opener("dev_cdrom", 5, FakeSg(responder))
    assert calls == [0x25, 0x25] and handler.state.block_size == 2048
    handler.close()


def test_read_returns_device_data_and_residual(opener: Opener) -> None:
    device = SimpleDevice()
    device.storage[512:1024] = b"\xab" * 512
    handler = opener(fake=FakeSg(device))
    command = cmd(read10(1, 1), 1024)  # initiator expects more than the CDB asks
    result = handler.handle(command)
    assert result is not None and result.status == GOOD and result.data_in_len == 512
    assert command.data.read(0, 512) == b"\xab" * 512
    handler.close()


def test_write_sends_exactly_the_cdb_length(opener: Opener) -> None:
    device = SimpleDevice()
    fake = FakeSg(device)
    handler = opener(fake=fake)
    payload = bytes(range(256)) * 2 + b"extra"
    result = handler.handle(cmd(write10(2, 1), payload))
    assert result is not None and result.status == GOOD and result.data_in_len is None
    assert fake.sent[-1].dxfer_len == 512 and fake.sent[-1].direction == sg_io.SgDirection.TO_DEV
    assert device.storage[1024:1536] == payload[:512]
    handler.close()


def test_short_data_out_is_refused_unsent(opener: Opener) -> None:
    fake = FakeSg()
    handler = opener(fake=fake)
    before = len(fake.sent)
    assert sense_of(handler.handle(cmd(write10(0, 2), 512))) == (0x5, 0x24, 0x00)
    assert len(fake.sent) == before
    handler.close()


def test_data_in_never_exceeds_the_buffer(opener: Opener) -> None:
    fake = FakeSg(lambda sent: Reply(data=b"\x11" * 4096))
    handler = opener("dev_raid", 0xC, fake)
    command = cmd(bytes([0xBA, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]), 100)
    result = handler.handle(command)
    assert fake.sent[-1].dxfer_len == 100
    assert result is not None and result.data_in_len == 100
    handler.close()


def test_unknown_opcode_is_refused_and_logged_once(opener: Opener,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeSg()
    handler = opener(fake=fake)
    before = len(fake.sent)
    with caplog.at_level(logging.DEBUG, "tcmu_scst.handlers.passthrough"):
        for _ in range(3):
            assert sense_of(handler.handle(cmd(bytes([0xC1]) + bytes(9)))) == (0x5, 0x20, 0)
    assert len(fake.sent) == before
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "refused opcode c1h" in warnings[0].getMessage()
    handler.close()


def test_vendor_opcodes_are_forwarded_with_the_whole_buffer(opener: Opener) -> None:
    fake = FakeSg(lambda sent: Reply(data=b"V" * 10))
    handler = opener(fake=fake, vendor_in=frozenset({0xC1}), vendor_out=frozenset({0xC2}))
    result = handler.handle(cmd(bytes([0xC1]) + bytes(9), 64))
    assert result is not None and result.data_in_len == 10
    assert fake.sent[-1].direction == sg_io.SgDirection.FROM_DEV
    handler.handle(cmd(bytes([0xC2]) + bytes(9), b"hello"))
    assert fake.sent[-1].direction == sg_io.SgDirection.TO_DEV
    assert fake.sent[-1].data_out == b"hello"
    handler.close()


def test_no_data_command_with_a_buffer_returns_zeros_not_old_bytes(opener: Opener) -> None:
    handler = opener()
    result = handler.handle(cmd(bytes(6), b"\xee" * 32))  # TEST UNIT READY
    assert result is not None and result.status == GOOD and result.data_in_len == 0
    handler.close()


def test_device_sense_reaches_the_initiator(opener: Opener) -> None:
    sense = bytes([0x70, 0, 0x03, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x11, 0x00, 0, 0, 0, 0])
    device = SimpleDevice()

    def responder(sent: Sent) -> Reply:
        if sent.cdb[0] == 0x28:
            return Reply(status=CHECK_CONDITION, sense=sense)
        return device(sent)

    handler = opener(fake=FakeSg(responder))
    result = handler.handle(cmd(read10(0, 1), 512))
    assert result is not None and result.sense == sense and result.data_in_len == 0
    handler.close()


def test_vanished_device_answers_lun_not_supported_without_ioctls(opener: Opener) -> None:
    fake = FakeSg()
    handler = opener(fake=fake)
    fake.fail_errno = errno.ENODEV
    assert sense_of(handler.handle(cmd(bytes(6)))) == (0x5, 0x25, 0x00)
    fake.fail_errno = None
    before = len(fake.sent)
    assert sense_of(handler.handle(cmd(bytes(6)))) == (0x5, 0x25, 0x00)
    assert len(fake.sent) == before
    handler.close()


def test_no_connect_host_status_marks_the_device_gone(opener: Opener) -> None:
    fake = FakeSg()
    handler = opener(fake=fake)
    fake.responder = lambda sent: Reply(host=sg_io.DID_NO_CONNECT)
    assert sense_of(handler.handle(cmd(bytes(6)))) == (0x5, 0x25, 0x00)
    fake.responder = SimpleDevice()
    assert sense_of(handler.handle(cmd(bytes(6)))) == (0x5, 0x25, 0x00)
    handler.close()


def test_an_offline_device_is_gone_until_it_runs_again(opener: Opener, tmp_path: Path) -> None:
    """Issue 14: an offline SCSI device answers DID_NO_CONNECT; the LUN reports the
    loss without ioctls, and serves again once the device is ``running``."""
    fake = FakeSg()
    handler = opener(fake=fake)
    state = next(tmp_path.glob("*/sys/class/scsi_device/1:0:1:0/device")) / "state"
    for as_errno in (False, True):  # DID_NO_CONNECT, or sg's ENXIO for offline
        state.write_text("offline\n")
        if as_errno:
            fake.fail_errno = errno.ENXIO
        else:
            fake.responder = lambda sent: Reply(host=sg_io.DID_NO_CONNECT)
        assert sense_of(handler.handle(cmd(bytes(6)))) == (0x5, 0x25, 0x00)
        fake.responder, fake.fail_errno = SimpleDevice(), None
        before = len(fake.sent)
        assert sense_of(handler.handle(cmd(bytes(6)))) == (0x5, 0x25, 0x00)
        assert len(fake.sent) == before
        state.write_text("running\n")
        result = handler.handle(cmd(bytes(6)))
        assert result is not None and result.status == GOOD
    handler.close()


def test_a_detached_device_stays_gone_even_if_its_address_runs_again(
    opener: Opener, tmp_path: Path
) -> None:
    """ENODEV: the sg node was detached (the device deleted). A new device at the
    same address is not this one: the LUN stays gone until it is reopened."""
    fake = FakeSg()
    handler = opener(fake=fake)
    state = next(tmp_path.glob("*/sys/class/scsi_device/1:0:1:0/device")) / "state"
    fake.fail_errno = errno.ENODEV
    assert sense_of(handler.handle(cmd(bytes(6)))) == (0x5, 0x25, 0x00)
    fake.fail_errno = None
    state.write_text("running\n")
    before = len(fake.sent)
    assert sense_of(handler.handle(cmd(bytes(6)))) == (0x5, 0x25, 0x00)
    assert len(fake.sent) == before
    handler.close()


def test_read_capacity_answers_update_the_block_size(opener: Opener) -> None:
    device = SimpleDevice(block_size=512)
    handler = opener("dev_modisk", 7, FakeSg(device))
    assert handler.state.block_size == 512
    device.block_size = 2048  # medium changed
    result = handler.handle(cmd(bytes([0x25]) + bytes(9), 8))
    assert result is not None and result.status == GOOD
    assert handler.state.block_size == 2048
    # READ(10) of one block now needs 2048 bytes of buffer for a write
    assert sense_of(handler.handle(cmd(write10(0, 1), 512))) == (0x5, 0x24, 0)
    handler.close()


def test_tape_block_size_follows_mode_select(opener: Opener) -> None:
    fake = FakeSg(SimpleDevice(tape_block=0))
    handler = opener("dev_tape", 1, fake, serialized=False)
    assert handler.state.block_size == 0
    mode = bytes([0, 0, 0x10, 8]) + bytes([0, 0, 0, 0, 0]) + (1024).to_bytes(3, "big")
    result = handler.handle(cmd(bytes([0x15, 0x10, 0, 0, 12, 0]), mode))
    assert result is not None and result.status == GOOD
    assert handler.state.block_size == 1024
    assert fake.sent[-1].data_out == mode
    # WRITE(6) FIXED of 2 blocks needs 2048 bytes now
    assert sense_of(handler.handle(cmd(bytes([0x0A, 1, 0, 0, 2, 0]), 1024))) == (0x5, 0x24, 0)
    handler.close()


def test_timeout_reaches_the_ioctl(opener: Opener) -> None:
    fake = FakeSg()
    handler = opener(fake=fake, timeout=7)
    handler.handle(cmd(bytes(6)))
    assert fake.sent[-1].timeout == 7000
    handler.close()


def test_cdb_shorter_than_its_opcode_group_is_refused(opener: Opener) -> None:
    fake = FakeSg()
    handler = opener(fake=fake)
    before = len(fake.sent)
    assert sense_of(handler.handle(cmd(bytes([0x89, 0, 0, 0, 0, 0]), 512))) == (0x5, 0x24, 0)
    assert len(fake.sent) == before
    handler.close()
