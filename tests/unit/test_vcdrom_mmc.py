"""MmcDevice: the MMC command set of a read-only drive, with exact sense data."""

from __future__ import annotations

import threading

import pytest

from tcmu_scst.command import CHECK_CONDITION, GOOD, DataBuffer
from tcmu_scst.errors import HandlerError
from tcmu_scst.scsi import mmc
from tcmu_scst.scsi.block import BackendError
from tcmu_scst.scsi.mmc import CdromConfig, MmcDevice, lba_to_msf
from tcmu_scst.testing.scsi_harness import Reply, inquiry, mode_sense10, run

BS = 2048
NOT_READY, ILLEGAL_REQUEST, UNIT_ATTENTION, MEDIUM_ERROR = 0x2, 0x5, 0x6, 0x3


class BytesMedium:
    """An image in memory; counts closes."""

    def __init__(self, blocks: int, seed: int = 1, fail: bool = False) -> None:
        self.data = bytes((seed * 7 + i) & 0xFF for i in range(blocks * BS))
        self.closed = 0
        self.fail = fail

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0) -> None:
        if self.fail:
            raise BackendError("boom", 5)
        buf.write(self.data[offset : offset + length], buf_offset)

    def close(self) -> None:
        self.closed += 1


def drive(blocks: int | None = 100) -> MmcDevice:
    medium = BytesMedium(blocks) if blocks is not None else None
    return MmcDevice(CdromConfig(name="cd0"), medium)


def go(dev: MmcDevice, cdb: bytes, in_len: int = 0) -> Reply:
    return run(dev.execute, cdb, in_len=in_len)


def assert_sense(reply: Reply, key: int, asc: int, ascq: int) -> None:
    assert reply.status == CHECK_CONDITION
    assert reply.sense.code == (key, asc, ascq)


def tur() -> bytes:
    return bytes(6)


def read10(lba: int, blocks: int) -> bytes:
    return bytes((0x28, 0)) + lba.to_bytes(4, "big") + b"\x00" + blocks.to_bytes(2, "big") + b"\x00"


def read12(lba: int, blocks: int) -> bytes:
    return bytes((0xA8, 0)) + lba.to_bytes(4, "big") + blocks.to_bytes(4, "big") + b"\x00\x00"


def write10(lba: int, blocks: int) -> bytes:
    return bytes((0x2A, 0)) + lba.to_bytes(4, "big") + b"\x00" + blocks.to_bytes(2, "big") + b"\x00"


def read_capacity() -> bytes:
    return bytes((0x25,)) + bytes(9)


def read_toc(fmt: int = 0, msf: bool = False, track: int = 0, alloc: int = 1024,
             control: int = 0) -> bytes:
    return bytes((0x43, 0x02 if msf else 0, fmt, 0, 0, 0, track)) + alloc.to_bytes(2, "big") + \
        bytes((control,))


def get_configuration(rt: int = 0, start: int = 0, alloc: int = 1024) -> bytes:
    return bytes((0x46, rt)) + start.to_bytes(2, "big") + bytes(3) + alloc.to_bytes(2, "big") + \
        b"\x00"


def gesn(classes: int = 1 << 4, polled: bool = True, alloc: int = 8) -> bytes:
    return bytes((0x4A, 1 if polled else 0, 0, 0, classes, 0, 0)) + alloc.to_bytes(2, "big") + \
        b"\x00"


def disc_info(data_type: int = 0, alloc: int = 34) -> bytes:
    return bytes((0x51, data_type)) + bytes(5) + alloc.to_bytes(2, "big") + b"\x00"


def track_info(kind: int, value: int, alloc: int = 36) -> bytes:
    return bytes((0x52, kind)) + value.to_bytes(4, "big") + b"\x00" + alloc.to_bytes(2, "big") + \
        b"\x00"


def start_stop(start: bool, loej: bool, power: int = 0) -> bytes:
    return bytes((0x1B, 0, 0, 0, (power << 4) | (2 if loej else 0) | (1 if start else 0), 0))


def prevent(value: int) -> bytes:
    return bytes((0x1E, 0, 0, 0, value, 0))


def mechanism_status(alloc: int = 8) -> bytes:
    return bytes((0xBD,)) + bytes(7) + alloc.to_bytes(2, "big") + b"\x00\x00"


def settle(dev: MmcDevice) -> None:
    for _ in range(4):
        if go(dev, tur()).status == GOOD:
            return
    raise AssertionError("never ready")


# -- identity ------------------------------------------------------------------------------


def test_inquiry_reports_a_removable_cdrom_claiming_mmc6() -> None:
    data = go(drive(), inquiry(), 96).data
    assert data[0] == 0x05 and data[1] == 0x80
    assert data[58:64] == bytes.fromhex("00a0046004e0")  # SAM-5, SPC-4, MMC-6


# -- READ CAPACITY / READ ------------------------------------------------------------------


def test_read_capacity_reports_2048_byte_blocks() -> None:
    reply = go(drive(100), read_capacity(), 8)
    assert reply.status == GOOD
    assert reply.data == (99).to_bytes(4, "big") + (2048).to_bytes(4, "big")


def test_read10_and_read12_return_the_image() -> None:
    dev = drive(100)
    image = dev.medium.data  # type: ignore[union-attr]
    assert go(dev, read10(3, 2), 2 * BS).data == image[3 * BS : 5 * BS]
    assert go(dev, read12(99, 1), BS).data == image[99 * BS :]


def test_read_past_the_end_is_lba_out_of_range() -> None:
    assert_sense(go(drive(100), read10(99, 2), 2 * BS), ILLEGAL_REQUEST, 0x21, 0x00)


def test_read_failure_is_unrecovered_read_error() -> None:
    dev = MmcDevice(CdromConfig(name="cd0"), BytesMedium(10, fail=True))
    assert_sense(go(dev, read10(0, 1), BS), MEDIUM_ERROR, 0x11, 0x00)


def test_short_buffer_gets_only_what_fits_and_nothing_stale() -> None:
    reply = go(drive(100), read10(0, 2), BS + 100)
    assert reply.result.data_in_len == BS + 100


@pytest.mark.parametrize("cdb", [write10(0, 1), bytes((0xAA, 0)) + bytes(10),
                                 bytes((0x0A, 0, 0, 0, 1, 0)), bytes((0x35,)) + bytes(9)])
def test_writes_are_invalid_opcodes_on_a_read_only_drive(cdb: bytes) -> None:
    assert_sense(run(drive().execute, cdb, data_out=bytes(BS)), ILLEGAL_REQUEST, 0x20, 0x00)


# -- empty drive and tray ------------------------------------------------------------------


@pytest.mark.parametrize("cdb,in_len", [
    (tur(), 0), (read_capacity(), 8), (read10(0, 1), BS), (read12(0, 1), BS),
    (read_toc(), 100), (disc_info(), 34), (track_info(1, 1), 36),
])
def test_every_media_command_on_an_empty_drive_is_medium_not_present_tray_closed(
    cdb: bytes, in_len: int
) -> None:
    assert_sense(go(drive(None), cdb, in_len), NOT_READY, 0x3A, 0x01)


def test_empty_drive_still_answers_configuration_events_and_mode_sense() -> None:
    dev = drive(None)
    config = go(dev, get_configuration(), 1024)
    assert config.status == GOOD and config.data[6:8] == b"\x00\x00"  # no current profile
    event = go(dev, gesn(), 8)
    assert event.status == GOOD and event.data[5] == 0x00  # no medium, tray closed
    assert go(dev, mode_sense10(0x2A), 64).status == GOOD
    assert go(dev, mechanism_status(), 8).status == GOOD


def test_request_sense_on_an_empty_drive_reports_medium_not_present() -> None:
    reply = go(drive(None), bytes((0x03, 0, 0, 0, 18, 0)), 18)
    assert reply.data[2] & 0x0F == NOT_READY and reply.data[12:14] == b"\x3a\x01"


def test_eject_opens_the_tray_and_load_closes_it_with_a_unit_attention() -> None:
    dev = drive()
    assert go(dev, start_stop(start=False, loej=True)).status == GOOD
    assert dev.tray_open
    assert_sense(go(dev, tur()), NOT_READY, 0x3A, 0x02)
    assert_sense(go(dev, read10(0, 1), BS), NOT_READY, 0x3A, 0x02)
    assert go(dev, mechanism_status(), 8).data[1] & 0x10  # DOOR OPEN
    assert go(dev, start_stop(start=True, loej=True)).status == GOOD
    assert not dev.tray_open
    assert_sense(go(dev, tur()), UNIT_ATTENTION, 0x28, 0x00)
    assert go(dev, tur()).status == GOOD


def test_eject_while_prevented_is_refused_and_allowed_after() -> None:
    dev = drive()
    assert go(dev, prevent(0x01)).status == GOOD
    assert_sense(go(dev, start_stop(start=False, loej=True)), ILLEGAL_REQUEST, 0x53, 0x02)
    assert not dev.tray_open
    assert go(dev, prevent(0x03)).status == GOOD  # persistent prevent on
    assert go(dev, prevent(0x00)).status == GOOD  # prevent off; persistent still on
    assert_sense(go(dev, start_stop(start=False, loej=True)), ILLEGAL_REQUEST, 0x53, 0x02)
    assert go(dev, prevent(0x02)).status == GOOD  # persistent prevent off
    assert go(dev, start_stop(start=False, loej=True)).status == GOOD
    assert dev.tray_open


def test_start_stop_without_loej_or_with_a_power_condition_changes_nothing() -> None:
    dev = drive()
    assert go(dev, start_stop(start=False, loej=False)).status == GOOD
    assert go(dev, start_stop(start=False, loej=True, power=3)).status == GOOD
    assert not dev.tray_open and go(dev, tur()).status == GOOD


def test_page_2a_reports_the_lock_state() -> None:
    dev = drive()
    page = go(dev, mode_sense10(0x2A), 64).data[8:]
    assert page[0] == 0x2A and page[6] & 0x02 == 0 and page[6] & 0x08  # unlocked, can eject
    go(dev, prevent(0x01))
    assert go(dev, mode_sense10(0x2A), 64).data[8:][6] & 0x02


# -- medium change -------------------------------------------------------------------------


def test_change_medium_raises_unit_attention_and_a_new_media_event() -> None:
    dev = drive(100)
    old = dev.medium
    new = BytesMedium(50, seed=2)
    assert dev.change_medium(new) is old
    event = go(dev, gesn(), 8)  # GESN is processed despite the pending unit attention
    assert event.data[2] == mmc.CLASS_MEDIA and event.data[4] == mmc.MEDIA_NEW_MEDIA
    assert event.data[5] == 0x02  # media present, tray closed
    assert go(dev, gesn(), 8).data[4] == mmc.MEDIA_NO_CHANGE  # reported once
    assert_sense(go(dev, read_capacity(), 8), UNIT_ATTENTION, 0x28, 0x00)
    assert go(dev, read_capacity(), 8).data[:4] == (49).to_bytes(4, "big")
    assert go(dev, read10(0, 1), BS).data == new.data[:BS]


def test_change_to_nothing_empties_the_drive_with_a_removal_event() -> None:
    dev = drive()
    dev.change_medium(None)
    assert go(dev, gesn(), 8).data[4] == mmc.MEDIA_REMOVAL
    assert_sense(go(dev, tur()), UNIT_ATTENTION, 0x28, 0x00)
    assert_sense(go(dev, tur()), NOT_READY, 0x3A, 0x01)


def test_change_while_prevented_is_refused_with_an_eject_request_event() -> None:
    dev = drive()
    go(dev, prevent(0x01))
    with pytest.raises(HandlerError, match="prevents medium removal"):
        dev.change_medium(BytesMedium(10))
    assert dev.medium is not None and dev.capacity == 100
    assert go(dev, gesn(), 8).data[4] == mmc.MEDIA_EJECT_REQUEST
    assert go(dev, tur()).status == GOOD  # no unit attention: nothing changed


def test_change_closes_an_open_tray() -> None:
    dev = drive()
    go(dev, start_stop(start=False, loej=True))
    dev.change_medium(BytesMedium(10))
    assert not dev.tray_open and dev.has_medium


def test_change_waits_for_reads_in_flight() -> None:
    gate, entered = threading.Event(), threading.Event()

    class SlowMedium(BytesMedium):
        def read(self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0) -> None:
            entered.set()
            gate.wait(5)
            super().read(offset, length, buf, buf_offset)

    dev = MmcDevice(CdromConfig(name="cd0"), SlowMedium(10))
    replies: list[Reply] = []
    reader = threading.Thread(target=lambda: replies.append(go(dev, read10(0, 1), BS)))
    reader.start()
    assert entered.wait(5)
    swapper = threading.Thread(target=dev.change_medium, args=(None,))
    swapper.start()
    swapper.join(0.2)
    assert swapper.is_alive()  # blocked until the read finished
    gate.set()
    reader.join(5)
    swapper.join(5)
    assert not swapper.is_alive() and replies[0].status == GOOD and dev.medium is None


# -- READ TOC ------------------------------------------------------------------------------


def test_lba_to_msf() -> None:
    assert lba_to_msf(0) == bytes((0, 0, 2, 0))
    assert lba_to_msf(4500 - 150) == bytes((0, 1, 0, 0))
    assert lba_to_msf(74 - 150 + 150 * 75) == bytes((0, 2, 30, 74))


def test_toc_format_0_lba_has_track_1_and_lead_out() -> None:
    data = go(drive(100), read_toc(), 100).data
    assert data[:4] == bytes((0, 18, 1, 1))
    assert data[4:12] == bytes((0, 0x14, 1, 0, 0, 0, 0, 0))
    assert data[12:20] == bytes((0, 0x14, 0xAA, 0)) + (100).to_bytes(4, "big")


def test_toc_format_0_msf() -> None:
    data = go(drive(100), read_toc(msf=True), 100).data
    assert data[8:12] == bytes((0, 0, 2, 0))
    assert data[16:20] == lba_to_msf(100)


def test_toc_starting_at_the_lead_out_and_beyond_the_last_track() -> None:
    data = go(drive(), read_toc(track=0xAA), 100).data
    assert data[:2] == (10).to_bytes(2, "big") and data[6] == 0xAA
    assert_sense(go(drive(), read_toc(track=2), 100), ILLEGAL_REQUEST, 0x24, 0x00)


def test_toc_format_1_session_info() -> None:
    data = go(drive(), read_toc(fmt=1), 100).data
    assert data == bytes((0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0))


def test_toc_old_format_field_in_the_control_byte() -> None:
    assert go(drive(), read_toc(control=0x40), 100).data == go(drive(), read_toc(fmt=1), 100).data


def test_full_toc_has_a0_a1_a2_and_track_1() -> None:
    data = go(drive(100), read_toc(fmt=2), 200).data
    assert int.from_bytes(data[:2], "big") == 2 + 4 * 11
    points = [data[4 + 11 * i + 3] for i in range(4)]
    assert points == [0xA0, 0xA1, 0xA2, 0x01]
    assert data[4 + 22 + 8 : 4 + 22 + 11] == lba_to_msf(100)[1:]


def test_toc_pma_atip_are_invalid_fields() -> None:
    for fmt in (3, 4, 5):
        assert_sense(go(drive(), read_toc(fmt=fmt), 100), ILLEGAL_REQUEST, 0x24, 0x00)


def test_toc_is_cut_to_the_allocation_length() -> None:
    assert len(go(drive(), read_toc(alloc=4), 100).data) == 4


# -- GET CONFIGURATION ---------------------------------------------------------------------


def features_of(data: bytes) -> dict[int, bytes]:
    out, pos = {}, 8
    while pos < len(data):
        code = int.from_bytes(data[pos : pos + 2], "big")
        out[code] = data[pos : pos + 4 + data[pos + 3]]
        pos += 4 + data[pos + 3]
    return out


def test_cd_image_is_the_cd_rom_profile_with_its_features_current() -> None:
    data = go(drive(100), get_configuration(), 1024).data
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    assert data[6:8] == b"\x00\x08"
    features = features_of(data)
    assert set(features) == {0x0000, 0x0001, 0x0002, 0x0003, 0x0010, 0x001D, 0x001E, 0x001F,
                             0x0100}
    assert features[0x0000][4:] == bytes((0, 0x10, 0, 0, 0, 0x08, 1, 0))  # CD-ROM current
    assert features[0x0010][2] & 1 and features[0x0010][4:8] == (2048).to_bytes(4, "big")
    assert features[0x001E][2] & 1 and not features[0x001F][2] & 1
    assert features[0x0003][4] == 0x39  # tray, load, eject, lock


def test_large_image_is_a_dvd_rom() -> None:
    class Big(BytesMedium):
        @property
        def size(self) -> int:
            return (mmc.CD_MAX_BLOCKS + 1) * BS

    dev = MmcDevice(CdromConfig(name="dvd"), Big(1))
    data = go(dev, get_configuration(), 1024).data
    assert data[6:8] == b"\x00\x10"
    features = features_of(data)
    assert features[0x001F][2] & 1 and not features[0x001E][2] & 1
    assert features[0x0010][8:10] == (16).to_bytes(2, "big")


def test_rt_01_lists_only_current_features() -> None:
    features = features_of(go(drive(None), get_configuration(rt=1), 1024).data)
    assert 0x0010 not in features and 0x001E not in features
    assert 0x0000 in features and 0x0003 in features


def test_rt_10_returns_one_feature_and_starting_number_filters() -> None:
    assert set(features_of(go(drive(), get_configuration(rt=2, start=3), 1024).data)) == {3}
    assert features_of(go(drive(), get_configuration(rt=2, start=0x20), 1024).data) == {}
    assert min(features_of(go(drive(), get_configuration(start=0x10), 1024).data)) == 0x10


def test_rt_11_is_an_invalid_field() -> None:
    reply = go(drive(), get_configuration(rt=3), 1024)
    assert_sense(reply, ILLEGAL_REQUEST, 0x24, 0x00)
    assert reply.sense.field == (True, 1, 1)


# -- GET EVENT STATUS NOTIFICATION ---------------------------------------------------------


def test_gesn_asynchronous_mode_is_refused() -> None:
    reply = go(drive(), gesn(polled=False), 8)
    assert_sense(reply, ILLEGAL_REQUEST, 0x24, 0x00)
    assert reply.sense.field == (True, 1, 0)


def test_gesn_without_a_supported_class_sets_nea() -> None:
    data = go(drive(), gesn(classes=0x01), 8).data
    assert data == bytes((0, 2, 0x80, 0x56))


def test_gesn_power_management_class() -> None:
    data = go(drive(), gesn(classes=1 << 2), 8).data
    assert data == bytes((0, 6, 2, 0x56, 0, 1, 0, 0))


def test_gesn_media_event_wins_over_a_lower_class_without_event() -> None:
    dev = drive()
    dev.change_medium(BytesMedium(5))
    data = go(dev, gesn(classes=(1 << 2) | (1 << 4)), 8).data
    assert data[2] == 4 and data[4] == mmc.MEDIA_NEW_MEDIA


def test_gesn_short_allocation_keeps_the_event() -> None:
    dev = drive()
    dev.change_medium(BytesMedium(5))
    assert len(go(dev, gesn(alloc=4), 8).data) == 4
    assert go(dev, gesn(), 8).data[4] == mmc.MEDIA_NEW_MEDIA


def test_gesn_reports_eject_and_tray_open() -> None:
    dev = drive()
    go(dev, start_stop(start=False, loej=True))
    data = go(dev, gesn(), 8).data
    assert data[4] == mmc.MEDIA_REMOVAL and data[5] == 0x01  # no media, tray open


# -- disc / track information, mechanism status --------------------------------------------


def test_read_disc_information_describes_a_finalized_single_session_disc() -> None:
    data = go(drive(), disc_info(), 34).data
    assert data[:8] == bytes((0, 32, 0x0E, 1, 1, 1, 1, 0))
    assert_sense(go(drive(), disc_info(data_type=1), 34), ILLEGAL_REQUEST, 0x24, 0x00)


def test_read_track_information_by_track_lba_and_session() -> None:
    dev = drive(100)
    for kind, value in ((1, 1), (0, 50), (2, 1)):
        data = go(dev, track_info(kind, value), 36).data
        assert data[2] == 1 and data[24:28] == (100).to_bytes(4, "big")
    assert_sense(go(dev, track_info(0, 100), 36), ILLEGAL_REQUEST, 0x21, 0x00)
    assert_sense(go(dev, track_info(1, 2), 36), ILLEGAL_REQUEST, 0x24, 0x00)


def test_mechanism_status_header() -> None:
    assert go(drive(), mechanism_status(), 8).data == bytes(8)


def test_rsoc_lists_mmc_commands_but_no_write() -> None:
    data = go(drive(), bytes((0xA3, 0x0C, 0, 0, 0, 0)) + (4096).to_bytes(4, "big") + b"\0\0",
              4096).data
    opcodes = {data[4 + 8 * i] for i in range(int.from_bytes(data[:4], "big") // 8)}
    assert {0x43, 0x46, 0x4A, 0x51, 0x52, 0xBD, 0x28, 0xA8, 0x25} <= opcodes
    assert not opcodes & {0x0A, 0x2A, 0xAA, 0x35}


# -- READ DISC STRUCTURE / GET PERFORMANCE -------------------------------------------------


class BigImage(BytesMedium):
    """A DVD-sized image: larger than an 80-minute CD."""

    @property
    def size(self) -> int:
        return (mmc.CD_MAX_BLOCKS + 1000) * BS


def read_disc_structure(fmt: int, media: int = 0, layer: int = 0, alloc: int = 4096) -> bytes:
    return bytes((0xAD, media, 0, 0, 0, 0, layer, fmt)) + alloc.to_bytes(2, "big") + bytes(2)


def get_performance(data_type: int = 0, kind: int = 0, descriptors: int = 8) -> bytes:
    return (bytes((0xAC, data_type)) + bytes(6) + descriptors.to_bytes(2, "big")
            + bytes((kind, 0)))  # fmt: skip


def test_read_disc_structure_of_a_dvd() -> None:
    dev = MmcDevice(CdromConfig(name="dvd"), BigImage(1))
    settle(dev)
    physical = go(dev, read_disc_structure(0x00), 4096).data
    assert len(physical) == 4 + 2048 and physical[0:2] == (2050).to_bytes(2, "big")
    assert physical[4:7] == bytes((0x01, 0x02, 0x01))  # DVD-ROM, 120 mm, one embossed layer
    start, end = int.from_bytes(physical[8:12], "big"), int.from_bytes(physical[12:16], "big")
    assert start == 0x030000 and end - start + 1 == mmc.CD_MAX_BLOCKS + 1000
    assert go(dev, read_disc_structure(0x01), 64).data == bytes((0, 6, 0, 0, 0, 0, 0, 0))
    listing = go(dev, read_disc_structure(0xFF), 64).data
    assert [listing[i] for i in range(4, len(listing), 4)] == [0x00, 0x01, 0xFF]
    short = go(dev, read_disc_structure(0x00, alloc=8), 4096)
    assert short.result.data_in_len == 8


def test_read_disc_structure_refusals() -> None:
    cd = drive()
    settle(cd)
    assert_sense(go(cd, read_disc_structure(0x00), 4096), 5, 0x30, 0x02)  # a CD is no DVD
    assert go(cd, read_disc_structure(0xFF), 64).status == GOOD  # the list needs no DVD
    empty = drive(None)
    assert_sense(go(empty, read_disc_structure(0x01), 64), 2, 0x3A, 0x01)
    dvd = MmcDevice(CdromConfig(name="dvd"), BigImage(1))
    settle(dvd)
    assert go(dvd, read_disc_structure(0x00, media=1), 64).sense.field == (True, 1, 3)  # BD
    assert go(dvd, read_disc_structure(0x00, layer=1), 64).sense.field == (True, 6, 7)
    assert go(dvd, read_disc_structure(0x04), 64).sense.field == (True, 7, 7)


def test_get_performance_reports_one_read_speed() -> None:
    dev = drive(100)
    settle(dev)
    data = go(dev, get_performance(), 8 + 16 * 8).data
    assert data[0:4] == (20).to_bytes(4, "big") and data[4] == 0
    speed = mmc.READ_SPEED_KBS.to_bytes(4, "big")
    assert data[8:24] == bytes(4) + speed + (99).to_bytes(4, "big") + speed
    write = go(dev, get_performance(data_type=0x04), 64).data  # Write: none on a reader
    assert write == (4).to_bytes(4, "big") + bytes((0x02, 0, 0, 0))
    assert go(dev, get_performance(kind=3), 64).data == (4).to_bytes(4, "big") + bytes(4)
    assert go(dev, get_performance(descriptors=0), 64).data == (4).to_bytes(4, "big") + bytes(4)
    assert go(dev, get_performance(kind=5), 64).sense.field == (True, 10, 7)
    assert_sense(go(drive(None), get_performance(), 64), 2, 0x3A, 0x01)
