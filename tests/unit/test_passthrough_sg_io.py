"""The SG_IO binding: header layout, iovecs straight into the caller's buffers, errors."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator

import pytest

from tcmu_scst.errors import HandlerError
from tcmu_scst.handlers.sg_io import (
    SG_SCSI_RESET_DEVICE,
    SgDevice,
    SgDirection,
    SgIoError,
    SgIoHdr,
)
from tests.unit.passthrough_fakes import FakeSg, Reply, Sent

# Offsets from <scsi/sg.h> on x86_64 (gcc offsetof).
OFFSETS = {
    "interface_id": 0, "dxfer_direction": 4, "cmd_len": 8, "mx_sb_len": 9, "iovec_count": 10,
    "dxfer_len": 12, "dxferp": 16, "cmdp": 24, "sbp": 32, "timeout": 40, "flags": 44,
    "pack_id": 48, "usr_ptr": 56, "status": 64, "masked_status": 65, "msg_status": 66,
    "sb_len_wr": 67, "host_status": 68, "driver_status": 70, "resid": 72, "duration": 76,
    "info": 80,
}


def test_header_layout_matches_sg_h() -> None:
    assert ctypes.sizeof(SgIoHdr) == 88
    for name, offset in OFFSETS.items():
        assert getattr(SgIoHdr, name).offset == offset, name


@pytest.fixture
def fd() -> Iterator[int]:
    r, w = os.pipe()
    yield r
    os.close(r)
    os.close(w)


def test_data_in_lands_in_the_views_through_an_iovec(fd: int) -> None:
    fake = FakeSg(lambda sent: Reply(data=bytes(range(1, 13))))
    first, second = bytearray(8), bytearray(8)
    dev = SgDevice(fd, "/dev/sgX", ioctl=fake)
    res = dev.execute(bytes(6), SgDirection.FROM_DEV, [memoryview(first), memoryview(second)], 16)
    assert fake.sent[0].iovec_count == 2  # no bounce: the views themselves
    assert first == bytes(range(1, 9))
    assert second[:4] == bytes(range(9, 13)) and second[4:] == bytes(4)
    assert res.resid == 4 and res.transferred == 12


def test_data_out_is_read_from_the_views_and_cut_at_dxfer_len(fd: int) -> None:
    fake = FakeSg(lambda sent: Reply())
    dev = SgDevice(fd, ioctl=fake)
    dev.execute(bytes(10), SgDirection.TO_DEV, [memoryview(bytearray(b"abcd")),
                                                  memoryview(bytearray(b"efgh"))], 6)
    sent: Sent = fake.sent[0]
    assert sent.data_out == b"abcdef"
    assert sent.dxfer_len == 6 and sent.direction == SgDirection.TO_DEV


def test_readonly_views_go_through_a_bounce_buffer(fd: int) -> None:
    fake = FakeSg(lambda sent: Reply())
    SgDevice(fd, ioctl=fake).execute(
        bytes(10), SgDirection.TO_DEV, [memoryview(b"xyz")], 3
    )
    assert fake.sent[0].iovec_count == 0 and fake.sent[0].data_out == b"xyz"


def test_zero_length_becomes_dxfer_none_and_timeout_is_passed(fd: int) -> None:
    fake = FakeSg(lambda sent: Reply())
    SgDevice(fd, ioctl=fake).execute(bytes(6), SgDirection.FROM_DEV, [], 0, timeout_ms=1234)
    assert fake.sent[0].direction == SgDirection.NONE
    assert fake.sent[0].timeout == 1234


def test_status_sense_host_driver_are_reported(fd: int) -> None:
    sense = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0])
    fake = FakeSg(lambda sent: Reply(status=0x02, sense=sense, host=0, driver=0))
    res = SgDevice(fd, ioctl=fake).execute(bytes(6), SgDirection.NONE)
    assert res.status == 0x02 and res.sense == sense
    assert res.driver_status & 0x0F == 0x08  # DRIVER_SENSE
    assert not res.clean


def test_transfer_longer_than_the_buffer_is_refused_before_the_ioctl(fd: int) -> None:
    fake = FakeSg()
    with pytest.raises(SgIoError, match="exceeds the 4-byte buffer"):
        SgDevice(fd, ioctl=fake).execute(bytes(6), SgDirection.FROM_DEV,
                                         [memoryview(bytearray(4))], 5)
    assert fake.sent == []


def test_ioctl_failure_keeps_errno(fd: int) -> None:
    fake = FakeSg()
    fake.fail_errno = errno.ENODEV
    with pytest.raises(SgIoError) as info:
        SgDevice(fd, "/dev/sg9", ioctl=fake).execute(bytes(6), SgDirection.NONE)
    assert info.value.errno == errno.ENODEV
    assert "/dev/sg9: SG_IO failed" in str(info.value)


def test_reset_device_sends_sg_scsi_reset_device(fd: int) -> None:
    fake = FakeSg()
    SgDevice(fd, ioctl=fake).reset_device()
    assert fake.resets == [SG_SCSI_RESET_DEVICE]


def test_open_missing_node_is_a_handler_error(tmp_path: object) -> None:
    with pytest.raises(HandlerError, match="cannot open /nonexistent/sg0"):
        SgDevice.open("/nonexistent/sg0")


def test_views_over_an_mmap_like_the_ring_are_used_in_place(fd: int) -> None:
    import mmap

    area = mmap.mmap(-1, 3 * 4096)
    ring = memoryview(area)
    views = [ring[4096:8192], ring[0:100]]  # out of order, as data-area blocks can be
    fake = FakeSg(lambda sent: Reply(data=b"\x5a" * 4196))
    res = SgDevice(fd, ioctl=fake).execute(bytes(10), SgDirection.FROM_DEV, views, 4196)
    assert fake.sent[0].iovec_count == 2 and res.transferred == 4196
    assert bytes(ring[4096:8192]) == b"\x5a" * 4096 and bytes(ring[:100]) == b"\x5a" * 100
    assert bytes(ring[100:4096]) == bytes(3996)  # nothing outside the iovecs was touched
    for view in views:
        view.release()
    ring.release()
    area.close()  # no export is left behind: the mapping can be closed
