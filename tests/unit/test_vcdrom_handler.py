"""VcdromHandler over real image files: open, read, change, reconfigure, close."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tcmu_scst.command import CHECK_CONDITION, GOOD, Command, Result, TmrNotice
from tcmu_scst.errors import HandlerError
from tcmu_scst.handlers.vcdrom import (
    ImageFile,
    VcdromHandler,
    VcdromParams,
    open_dev_config,
    to_dev_config,
)
from tcmu_scst.kernel import abi
from tcmu_scst.service import registry
from tcmu_scst.testing.scsi_harness import Reply, make_command, run

BS = 2048


def image(tmp_path: Path, name: str, blocks: int, extra: int = 0, seed: int = 3) -> Path:
    path = tmp_path / name
    path.write_bytes(bytes((seed + i * 13) & 0xFF for i in range(blocks * BS + extra)))
    return path


def go(handler: VcdromHandler, cdb: bytes, in_len: int = 0) -> Reply:
    def execute(cmd: Command) -> Result:
        result: Result | None = handler.handle(cmd)
        assert result is not None
        return result

    return run(execute, cdb, in_len=in_len)


def read10(lba: int, blocks: int) -> bytes:
    return bytes((0x28, 0)) + lba.to_bytes(4, "big") + b"\x00" + blocks.to_bytes(2, "big") + b"\x00"


TUR = bytes(6)
READ_CAPACITY = bytes((0x25,)) + bytes(9)


def test_registry_opens_a_vcdrom_and_reads_the_image(tmp_path: Path) -> None:
    iso = image(tmp_path, "a.iso", 8)
    handler = registry.open_handler(to_dev_config(VcdromParams("cd1", str(iso))))
    assert isinstance(handler, VcdromHandler)
    try:
        assert go(handler, READ_CAPACITY, 8).data == (7).to_bytes(4, "big") + BS.to_bytes(4, "big")
        assert go(handler, read10(2, 3), 3 * BS).data == iso.read_bytes()[2 * BS : 5 * BS]
        assert handler.is_inline(_cmd(READ_CAPACITY)) and not handler.is_inline(_cmd(read10(0, 1)))
        assert handler.proc_read_line().split() == ["cd1", "0", str(iso)]
    finally:
        handler.close()


def _cmd(cdb: bytes) -> Command:
    return make_command(cdb)[0]


def test_an_image_not_a_multiple_of_2048_is_rounded_down_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    iso = image(tmp_path, "odd.iso", 4, extra=100)
    with caplog.at_level(logging.WARNING):
        handler = VcdromHandler(VcdromParams("cd1", str(iso)))
    try:
        assert handler.size == 4 * BS
        assert "not a multiple of 2048" in caplog.text
        reply = go(handler, read10(4, 1), BS)
        assert reply.status == CHECK_CONDITION and reply.sense.code == (0x5, 0x21, 0x00)
    finally:
        handler.close()


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing.iso", "does not exist"),
    (lambda p: p, "not a regular file"),
    (lambda p: image(p, "tiny.iso", 0, extra=2047), "smaller than one 2048-byte sector"),
])
def test_bad_images_are_refused_with_a_clear_message(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    with pytest.raises(HandlerError, match=message):
        VcdromHandler(VcdromParams("cd1", str(make(tmp_path))))


def test_empty_drive_then_change_loads_an_image(tmp_path: Path) -> None:
    handler = open_dev_config("vcdrom/n=cd1")
    try:
        assert go(handler, TUR).sense.code == (0x2, 0x3A, 0x01)
        iso = image(tmp_path, "a.iso", 4)
        handler.change_medium(str(iso))
        assert go(handler, TUR).sense.code == (0x6, 0x28, 0x00)
        assert go(handler, read10(0, 1), BS).data == iso.read_bytes()[:BS]
        assert handler.params.filename == str(iso)
    finally:
        handler.close()


def test_change_closes_the_old_image_and_a_bad_path_keeps_it(tmp_path: Path) -> None:
    a, b = image(tmp_path, "a.iso", 4, seed=1), image(tmp_path, "b.iso", 6, seed=2)
    handler = VcdromHandler(VcdromParams("cd1", str(a)))
    try:
        old = handler.device.medium
        assert isinstance(old, ImageFile)
        with pytest.raises(HandlerError, match="does not exist"):
            handler.change_medium(str(tmp_path / "nope.iso"))
        with pytest.raises(HandlerError, match="not absolute"):
            handler.change_medium("b.iso")
        assert handler.device.medium is old and old.fd >= 0
        handler.change_medium(str(b))
        assert old.fd == -1
        go(handler, TUR)
        assert go(handler, read10(5, 1), BS).data == b.read_bytes()[5 * BS :]
        handler.change_medium(None)
        assert handler.size == 0 and handler.params.filename == ""
    finally:
        handler.close()


def test_change_refused_while_prevented_keeps_the_image_open(tmp_path: Path) -> None:
    a, b = image(tmp_path, "a.iso", 4), image(tmp_path, "b.iso", 4)
    handler = VcdromHandler(VcdromParams("cd1", str(a)))
    try:
        assert go(handler, bytes((0x1E, 0, 0, 0, 1, 0))).status == GOOD
        with pytest.raises(HandlerError, match="prevents medium removal"):
            handler.change_medium(str(b))
        assert handler.params.filename == str(a)
        assert go(handler, read10(0, 1), BS).data == a.read_bytes()[:BS]
    finally:
        handler.close()


def test_reconfigure_swaps_the_medium_in_place_for_the_same_drive(tmp_path: Path) -> None:
    a, b = image(tmp_path, "a.iso", 4), image(tmp_path, "b.iso", 9)
    handler = VcdromHandler(VcdromParams("cd1", str(a)))
    try:
        device = handler.device
        assert handler.reconfigure(to_dev_config(VcdromParams("cd1", str(b)))) is True
        assert handler.device is device and handler.size == 9 * BS
        assert handler.reconfigure(to_dev_config(VcdromParams("cd1", str(b)))) is True
        assert handler.reconfigure(to_dev_config(VcdromParams("cd1"))) is True
        assert handler.size == 0
        assert handler.reconfigure(to_dev_config(VcdromParams("cd2", str(a)))) is False
        assert handler.size == 0  # another drive: left to the daemon's reopen
    finally:
        handler.close()


def test_close_releases_the_image(tmp_path: Path) -> None:
    handler = VcdromHandler(VcdromParams("cd1", str(image(tmp_path, "a.iso", 2))))
    medium = handler.device.medium
    assert isinstance(medium, ImageFile)
    handler.close()
    handler.close()
    assert medium.fd == -1


def test_inquiry_identity_is_stable(tmp_path: Path) -> None:
    one = VcdromHandler(VcdromParams("cd1"))
    two = VcdromHandler(VcdromParams("cd1"))
    page = bytes((0x12, 1, 0x80, 0, 255, 0))
    assert go(one, page, 255).data == go(two, page, 255).data
    assert go(one, bytes((0x12, 0, 0, 0, 96, 0)), 96).data[8:16] == b"SCST_FIO"


def test_an_image_that_shrinks_reads_zeros_not_stale_bytes(tmp_path: Path) -> None:
    iso = image(tmp_path, "a.iso", 4)
    handler = VcdromHandler(VcdromParams("cd1", str(iso)))
    try:
        with open(iso, "r+b") as f:
            f.truncate(2 * BS + 10)  # the size the drive reports is not re-read
        reply = go(handler, read10(2, 2), 2 * BS)
        assert reply.status == GOOD
        assert reply.data == iso.read_bytes()[2 * BS :] + bytes(2 * BS - 10)
    finally:
        handler.close()


def test_a_lun_reset_clears_the_prevent_bit_not_the_persistent_one(tmp_path: Path) -> None:
    handler = VcdromHandler(VcdromParams("cd1", str(image(tmp_path, "a.iso", 16))))
    eject = bytes((0x1B, 0, 0, 0, 0x02, 0))
    while go(handler, TUR).status != GOOD:  # the power-on unit attention first
        pass
    assert go(handler, bytes((0x1E, 0, 0, 0, 1, 0))).status == GOOD  # prevent
    assert go(handler, eject).status == CHECK_CONDITION
    handler.on_tmr(TmrNotice(abi.TCMU_TMR_LUN_RESET, ()))
    assert go(handler, bytes((0x1E, 0, 0, 0, 3, 0))).status == GOOD  # persistent prevent
    assert go(handler, eject).status == CHECK_CONDITION
    handler.on_tmr(TmrNotice(abi.TCMU_TMR_LUN_RESET, ()))
    assert go(handler, eject).status == CHECK_CONDITION  # persistent: survives the reset
    assert go(handler, bytes((0x1E, 0, 0, 0, 2, 0))).status == GOOD  # persistent off
    assert go(handler, eject).status == GOOD
    handler.close()
