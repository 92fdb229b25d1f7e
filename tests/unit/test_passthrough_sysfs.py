"""Finding local SCSI devices by address and by identity in (a fake) sysfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.errors import HandlerError
from tcmu_scst.kernel.scsi_sysfs import (
    block_geometry,
    find_by_identity,
    list_devices,
    read_device,
    serial_from_vpd80,
    wwn_from_vpd83,
)
from tests.unit.passthrough_fakes import make_sysfs

NAA = bytes.fromhex("6001405aabbccddeeff0011223344556")


def vpd83(*designators: tuple[int, int, int, bytes]) -> bytes:
    body = b"".join(
        bytes([code_set, (assoc << 4) | kind, 0, len(value)]) + value
        for code_set, assoc, kind, value in designators
    )
    return bytes([0, 0x83]) + len(body).to_bytes(2, "big") + body


def test_read_device(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, "2:0:0:1", 1, vendor="HP", model="Ultrium 5-SCSI",
                       serial="  HU123 ", block=None, sg="sg4")
    info = read_device("2:0:0:1", sysfs)
    assert (info.device_type, info.vendor, info.model, info.rev) == (1, "HP", "Ultrium 5-SCSI",
                                                                       "0191")
    assert info.sg == "/dev/sg4" and info.block is None
    assert info.serial == "HU123"
    assert info.describe() == "2:0:0:1 is a tape (type 1)"


def test_missing_device_and_bad_address(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path)
    with pytest.raises(HandlerError, match="no SCSI device at 9:0:0:0"):
        read_device("9:0:0:0", sysfs)
    with pytest.raises(HandlerError, match="not a SCSI address"):
        read_device("sda", sysfs)


def test_vpd_parsers() -> None:
    assert serial_from_vpd80(bytes([0, 0x80, 0, 5]) + b"AB12\0") == "AB12"
    assert serial_from_vpd80(bytes([0, 0x83, 0, 0])) == ""
    page = vpd83(
        (0x2, 0, 0x1, b"LIO-ORG disk"),  # T10 vendor id
        (0x1, 1, 0x3, bytes(8)),  # an NAA of the target port: not the LU
        (0x1, 0, 0x3, NAA),
    )
    assert wwn_from_vpd83(page) == "naa." + NAA.hex()
    assert wwn_from_vpd83(vpd83((0x2, 0, 0x1, b"Linux   scsi_debug  2000"))) == (
        "t10.Linux scsi_debug 2000"
    )


def test_wwid_attribute_wins_over_vpd83(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, wwid="naa.33333330000007d0", vpd83=vpd83((0x1, 0, 0x3, NAA)))
    assert read_device("1:0:1:0", sysfs).wwn == "naa.33333330000007d0"


def test_find_by_identity(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, "1:0:0:0", 0, serial="S1", vpd83=vpd83((0x1, 0, 0x3, NAA)))
    for hctl, serial in (("1:0:1:0", "S2"), ("10:0:0:0", "S3")):
        device = sysfs / "class/scsi_device" / hctl / "device"
        device.mkdir(parents=True)
        (device / "type").write_text("1\n")
        (device / "vendor").write_text("IBM     \n")
        (device / "model").write_text("ULT3580-TD8     \n")
        (device / "vpd_pg80").write_bytes(bytes([1, 0x80, 0, 2]) + serial.encode())
    assert [d.hctl for d in list_devices(sysfs)] == ["1:0:0:0", "1:0:1:0", "10:0:0:0"]
    assert [d.hctl for d in find_by_identity(vendor="IBM", sysfs=sysfs)] == [
        "1:0:1:0", "10:0:0:0"
    ]
    assert [d.hctl for d in find_by_identity(vendor="IBM", serial="S3", sysfs=sysfs)] == [
        "10:0:0:0"
    ]
    assert [d.hctl for d in find_by_identity(model="scsi_debug", sysfs=sysfs)] == ["1:0:0:0"]
    for wwn in ("naa." + NAA.hex(), NAA.hex().upper(), "0x" + NAA.hex()):
        assert [d.hctl for d in find_by_identity(wwn=wwn, sysfs=sysfs)] == ["1:0:0:0"]
    assert find_by_identity(serial="nope", sysfs=sysfs) == []
    with pytest.raises(HandlerError, match="give at least one"):
        find_by_identity(sysfs=sysfs)


def test_block_geometry(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, "1:0:1:0", 0, block="sdc")
    (sysfs / "block/sdc/queue").mkdir(parents=True)
    (sysfs / "block/sdc/size").write_text("32768\n")
    (sysfs / "block/sdc/queue/logical_block_size").write_text("4096\n")
    info = read_device("1:0:1:0", sysfs)
    assert info.block == "/dev/sdc"
    assert block_geometry(info, sysfs) == (16 << 20, 4096)
    tape = make_sysfs(tmp_path / "t", "2:0:0:0", 1)
    assert block_geometry(read_device("2:0:0:0", tape), tape) is None
