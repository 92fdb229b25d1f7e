"""SPC commands of the emulation: INQUIRY, VPD, REQUEST SENSE, TUR, RSOC, unit attentions."""

from __future__ import annotations

import pytest

from tcmu_scst.command import CHECK_CONDITION, GOOD, Direction, Result
from tcmu_scst.errors import ConfigError
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi.identity import LIO_OUI
from tcmu_scst.scsi.sbc import SbcDevice
from tcmu_scst.testing import scsi_harness as h
from tcmu_scst.testing.scsi_harness import STALE, make_disk, run


def _descriptors(page: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    pos = 4
    while pos < len(page):
        length = page[pos + 3]
        out.append((page[pos] & 0x0F, page[pos + 1] & 0x0F, page[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def test_standard_inquiry() -> None:
    dev, _ = make_disk(removable=True, product="", revision=" 010")
    reply = run(dev.execute, h.inquiry(alloc=96), in_len=96)
    data = reply.data
    assert reply.status == GOOD
    assert len(data) == 74 == data[4] + 5
    assert data[0] == 0x00
    assert data[1] == 0x80  # RMB
    assert data[2] == 0x06
    assert data[3] == 0x12
    assert data[7] == 0x02  # CMDQUE
    assert data[8:16] == b"SCST_FIO"
    assert data[16:32] == b"disk1".ljust(16)
    assert data[32:36] == b" 010"
    assert data[58:64] == bytes.fromhex("00a0046004c0")


def test_inquiry_allocation_length_cuts_and_no_stale_bytes() -> None:
    dev, _ = make_disk()
    reply = run(dev.execute, h.inquiry(alloc=5), in_len=64)
    assert reply.result.data_in_len == 5
    assert reply.buffer[5:] == bytes([STALE]) * 59
    short_buffer = run(dev.execute, h.inquiry(alloc=255), in_len=20)
    assert short_buffer.result.data_in_len == 20


def test_inquiry_allocation_length_zero_transfers_nothing() -> None:
    dev, _ = make_disk()
    reply = run(dev.execute, h.inquiry(alloc=0), in_len=36)
    assert reply.status == GOOD
    assert reply.result.data_in_len == 0


def test_inquiry_page_code_without_evpd_refused() -> None:
    dev, _ = make_disk()
    cdb = bytes((op.INQUIRY, 0, 0x80, 0, 255, 0))
    reply = run(dev.execute, cdb, in_len=255)
    assert reply.status == CHECK_CONDITION
    assert reply.sense.code == (5, 0x24, 0)
    assert reply.sense.field == (True, 2, 7)


def test_inquiry_cmddt_bit_refused() -> None:
    dev, _ = make_disk()
    reply = run(dev.execute, bytes((op.INQUIRY, 0x02, 0, 0, 255, 0)), in_len=255)
    assert reply.sense.field == (True, 1, 1)


def test_vpd_supported_pages() -> None:
    dev, _ = make_disk()
    data = run(dev.execute, h.inquiry(0x00), in_len=255).data
    assert data[:4] == bytes((0, 0, 0, 7))
    assert list(data[4:]) == [0x00, 0x80, 0x83, 0x8F, 0xB0, 0xB1, 0xB2]


def test_unknown_vpd_page_refused() -> None:
    dev, _ = make_disk()
    reply = run(dev.execute, h.inquiry(0x86), in_len=255)
    assert reply.sense.code == (5, 0x24, 0)
    assert reply.sense.field == (True, 2, 7)


def test_vpd_serial_is_stable_and_derived_from_the_name() -> None:
    first = run(make_disk()[0].execute, h.inquiry(0x80), in_len=255).data
    again = run(make_disk()[0].execute, h.inquiry(0x80), in_len=255).data
    other = run(make_disk(name="disk2")[0].execute, h.inquiry(0x80), in_len=255).data
    assert first == again
    assert first != other
    assert first[1] == 0x80 and first[3] == len(first) - 4 == 16
    configured = run(make_disk(serial="ABC123")[0].execute, h.inquiry(0x80), in_len=255).data
    assert configured[4:] == b"ABC123"


def test_vpd_device_identification() -> None:
    dev, _ = make_disk(t10_dev_id="disk1-t10", serial="S1")
    page = run(dev.execute, h.inquiry(0x83), in_len=255).data
    assert page[1] == 0x83
    assert int.from_bytes(page[2:4], "big") == len(page) - 4
    descs = _descriptors(page)
    (cs_naa, type_naa, naa), (cs_t10, type_t10, t10), (cs_vs, type_vs, vs) = descs
    assert (cs_naa, type_naa, len(naa)) == (1, 3, 16)
    assert naa[0] >> 4 == 6
    assert (int.from_bytes(naa[:4], "big") >> 4) & 0xFFFFFF == LIO_OUI
    assert (cs_t10, type_t10, t10) == (2, 1, b"SCST_FIOdisk1-t10")
    assert (cs_vs, type_vs, vs) == (2, 0, b"S1")
    again = run(make_disk(t10_dev_id="disk1-t10", serial="S1")[0].execute, h.inquiry(0x83),
                in_len=255).data
    assert again == page


def test_configured_naa_used_and_bad_one_refused() -> None:
    naa = bytes.fromhex("6001405aabbccddeeff0011223344556")
    dev, _ = make_disk(naa_id=naa)
    page = run(dev.execute, h.inquiry(0x83), in_len=255).data
    assert _descriptors(page)[0][2] == naa
    with pytest.raises(ConfigError, match="naa_id 6001"):
        make_disk(naa_id=b"\x60\x01")


def test_block_limits_vpd() -> None:
    dev, _ = make_disk(thin_provisioned=True, max_transfer_blocks=1024, max_unmap_blocks=4096,
                       max_unmap_descriptors=16, max_write_same_blocks=8192,
                       max_compare_write_blocks=4, lbppbe=3)
    page = run(dev.execute, h.inquiry(0xB0), in_len=255).data
    assert page[1] == 0xB0 and int.from_bytes(page[2:4], "big") == 0x3C
    assert page[4] == 0  # WSNZ
    assert page[5] == 4
    assert int.from_bytes(page[6:8], "big") == 8
    assert int.from_bytes(page[8:12], "big") == 1024
    assert int.from_bytes(page[20:24], "big") == 4096
    assert int.from_bytes(page[24:28], "big") == 16
    assert int.from_bytes(page[28:32], "big") == 8
    assert int.from_bytes(page[36:44], "big") == 8192


def test_block_limits_without_thin_reports_no_unmap() -> None:
    page = run(make_disk()[0].execute, h.inquiry(0xB0), in_len=255).data
    assert page[20:28] == bytes(8)


def test_rotation_rate_vpd() -> None:
    ssd = run(make_disk(rotational=False)[0].execute, h.inquiry(0xB1), in_len=255).data
    hdd = run(make_disk(rotational=True)[0].execute, h.inquiry(0xB1), in_len=255).data
    assert int.from_bytes(ssd[4:6], "big") == 1
    assert int.from_bytes(hdd[4:6], "big") == 0
    assert int.from_bytes(ssd[2:4], "big") == 0x3C


def test_logical_block_provisioning_vpd() -> None:
    thin = run(make_disk(thin_provisioned=True)[0].execute, h.inquiry(0xB2), in_len=255).data
    full = run(make_disk()[0].execute, h.inquiry(0xB2), in_len=255).data
    assert thin[4:8] == bytes((0, 0xE4, 0x02, 0))
    assert full[4:8] == bytes(4)


def test_optical_memory_device_type() -> None:
    dev, _ = make_disk(device_type=0x07)
    assert run(dev.execute, h.inquiry(), in_len=36).data[0] == 0x07
    assert run(dev.execute, h.inquiry(0x80), in_len=36).data[0] == 0x07


def test_unsupported_device_type_and_block_size_refused() -> None:
    with pytest.raises(ConfigError, match="device type"):
        make_disk(device_type=0x05)
    with pytest.raises(ConfigError, match="power of two"):
        make_disk(block_size=1000)


def test_test_unit_ready() -> None:
    dev, _ = make_disk()
    assert run(dev.execute, h.TEST_UNIT_READY).status == GOOD
    bad = run(dev.execute, bytes((0, 0, 0, 0, 1, 0)))
    assert bad.sense.field == (True, 4, 0)


def test_request_sense_no_sense() -> None:
    dev, _ = make_disk()
    reply = run(dev.execute, h.request_sense(), in_len=252)
    assert reply.status == GOOD
    assert len(reply.data) == 18
    assert reply.data[0] == 0x70 and reply.data[2] == 0 and reply.data[12] == 0


def test_request_sense_reports_and_clears_unit_attention() -> None:
    dev, _ = make_disk()
    dev.notify_resized()
    reply = run(dev.execute, h.request_sense(), in_len=252)
    assert (reply.data[2], reply.data[12], reply.data[13]) == (6, 0x2A, 0x09)
    assert run(dev.execute, h.TEST_UNIT_READY).status == GOOD


def test_request_sense_descriptor_format_and_allocation_length() -> None:
    dev, _ = make_disk()
    desc = run(dev.execute, h.request_sense(desc=True), in_len=252).data
    assert desc == bytes((0x72, 0, 0, 0, 0, 0, 0, 0))
    short = run(dev.execute, h.request_sense(alloc=4), in_len=252)
    assert short.result.data_in_len == 4


def test_unit_attention_delivered_once_on_next_non_exempt_command() -> None:
    dev, _ = make_disk()
    dev.notify_resized()
    dev.notify_resized()  # duplicates collapse
    assert run(dev.execute, h.inquiry(), in_len=36).status == GOOD  # INQUIRY is exempt
    ua = run(dev.execute, h.TEST_UNIT_READY)
    assert ua.status == CHECK_CONDITION
    assert ua.sense.code == (6, 0x2A, 0x09)
    assert run(dev.execute, h.TEST_UNIT_READY).status == GOOD


def test_unit_attentions_in_order() -> None:
    dev, _ = make_disk()
    dev.notify_medium_changed()
    dev.notify_mode_changed()
    assert run(dev.execute, h.read_capacity10(), in_len=8).sense.code == (6, 0x28, 0x00)
    assert run(dev.execute, h.read_capacity10(), in_len=8).sense.code == (6, 0x2A, 0x01)
    assert run(dev.execute, h.read_capacity10(), in_len=8).status == GOOD


def test_unknown_opcode_and_unknown_service_action() -> None:
    dev, _ = make_disk()
    for cdb in (bytes((0xC5,)) + bytes(5), bytes((0x60,)) + bytes(15), b"\x7f" + bytes(31),
                bytes((op.UNMAP,)) + bytes(9)):
        reply = run(dev.execute, cdb)
        assert reply.sense.code == (5, 0x20, 0x00), cdb.hex()
    reply = run(dev.execute, bytes((op.SERVICE_ACTION_IN_16, 0x11)) + bytes(14), in_len=32)
    assert reply.sense.code == (5, 0x24, 0x00)
    assert reply.sense.field == (True, 1, 4)
    assert run(dev.execute, b"").sense.code == (5, 0x20, 0x00)


def test_internal_error_becomes_hardware_error() -> None:
    dev, backend = make_disk()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    backend.read = broken  # type: ignore[method-assign]
    reply = run(dev.execute, h.rw_cdb(op.READ_10, 0, 1), in_len=512)
    assert reply.sense.code == (4, 0x44, 0x00)


# -- REPORT SUPPORTED OPERATION CODES -------------------------------------------------


def _all_commands(dev: SbcDevice, rctd: bool = False) -> dict[tuple[int, int | None], bytes]:
    data = run(dev.execute, h.rsoc(rctd=rctd), in_len=8192).data
    length = int.from_bytes(data[:4], "big")
    assert length == len(data) - 4
    step = 20 if rctd else 8
    out = {}
    for pos in range(4, len(data), step):
        desc = data[pos : pos + step]
        sa = int.from_bytes(desc[2:4], "big") if desc[5] & 0x01 else None
        out[(desc[0], sa)] = desc
    return out


def test_rsoc_all_commands_matches_the_device() -> None:
    dev, _ = make_disk()
    listed = _all_commands(dev)
    assert set(listed) == set(dev.supported) | {(op.REPORT_LUNS, None)}
    assert (op.REPORT_LUNS, None) not in dev.supported  # the kernel answers it
    read16 = listed[(op.READ_16, None)]
    assert int.from_bytes(read16[6:8], "big") == 16
    rc16 = listed[(op.SERVICE_ACTION_IN_16, op.SAI_READ_CAPACITY_16)]
    assert rc16[5] == 0x01  # SERVACTV
    assert (op.UNMAP, None) not in listed  # not thin: UNMAP is not supported
    assert (op.UNMAP, None) in _all_commands(make_disk(thin_provisioned=True)[0])


def test_rsoc_all_commands_with_timeouts() -> None:
    listed = _all_commands(make_disk()[0], rctd=True)
    desc = listed[(op.WRITE_10, None)]
    assert desc[5] & 0x02  # CTDP
    assert desc[8:10] == bytes((0, 0x0A))
    assert int.from_bytes(desc[16:20], "big") == 30


def test_rsoc_one_command() -> None:
    dev, _ = make_disk()
    data = run(dev.execute, h.rsoc(options=1, opcode=op.WRITE_10), in_len=512).data
    assert data[1] & 0x07 == 0b011
    assert int.from_bytes(data[2:4], "big") == 10
    assert data[4:14] == op.BY_KEY[(op.WRITE_10, None)].usage
    luns = run(dev.execute, h.rsoc(options=1, opcode=op.REPORT_LUNS), in_len=512).data
    assert luns[1] & 0x07 == 0b011 and int.from_bytes(luns[2:4], "big") == 12
    assert run(dev.execute, bytes((op.REPORT_LUNS,)) + bytes(11)).sense.code == (5, 0x20, 0)
    unsupported = run(dev.execute, h.rsoc(options=1, opcode=0xC0), in_len=512).data
    assert unsupported == bytes((0, 0b001, 0, 0))


def test_rsoc_one_command_with_service_action_and_timeouts() -> None:
    dev, _ = make_disk()
    data = run(dev.execute, h.rsoc(options=2, opcode=op.SERVICE_ACTION_IN_16,
                                   sa=op.SAI_READ_CAPACITY_16, rctd=True), in_len=512).data
    assert data[1] == 0x80 | 0b011
    assert data[4:6] == bytes((0x9E, 0x10))
    assert len(data) == 4 + 16 + 12
    missing = run(dev.execute, h.rsoc(options=2, opcode=op.SERVICE_ACTION_IN_16, sa=0x11),
                  in_len=512).data
    assert missing[1] & 0x07 == 0b001


def test_rsoc_option_mismatches_refused() -> None:
    dev, _ = make_disk()
    sa_opcode = run(dev.execute, h.rsoc(options=1, opcode=op.SERVICE_ACTION_IN_16), in_len=64)
    assert sa_opcode.sense.field == (True, 3, 7)
    plain = run(dev.execute, h.rsoc(options=2, opcode=op.READ_10), in_len=64)
    assert plain.sense.field == (True, 3, 7)
    bad = run(dev.execute, h.rsoc(options=5), in_len=64)
    assert bad.sense.field == (True, 2, 2)


def test_rsoc_allocation_length_respected() -> None:
    reply = run(make_disk()[0].execute, h.rsoc(alloc=12), in_len=8192)
    assert reply.result.data_in_len == 12


# -- LOG SENSE ----------------------------------------------------------------------------


def log_sense(page: int, subpage: int = 0, pc: int = 1, pointer: int = 0, alloc: int = 512,
              sp: bool = False) -> bytes:  # fmt: skip
    return (bytes((0x4D, int(sp), (pc << 6) | page, subpage, 0)) + pointer.to_bytes(2, "big")
            + alloc.to_bytes(2, "big") + b"\x00")  # fmt: skip


def test_log_sense_supported_pages_and_subpages() -> None:
    dev, _ = make_disk()
    assert run(dev.execute, log_sense(0x00), in_len=512).data == bytes((0, 0, 0, 2, 0x00, 0x2F))
    both = run(dev.execute, log_sense(0x00, 0xFF), in_len=512).data
    assert both[:4] == bytes((0x40, 0xFF, 0, 6))
    assert both[4:] == bytes((0x00, 0x00, 0x00, 0xFF, 0x2F, 0x00))


def test_log_sense_informational_exceptions_reports_none() -> None:
    dev, _ = make_disk()
    for pc in range(4):  # no thresholds: every page control reads the same
        page = run(dev.execute, log_sense(0x2F, pc=pc), in_len=512).data
        assert page == bytes((0x2F, 0, 0, 7, 0, 0, 0x03, 3, 0x00, 0x00, 0xFF))
    short = run(dev.execute, log_sense(0x2F, alloc=4), in_len=512)
    assert short.result.data_in_len == 4


def test_log_sense_refusals() -> None:
    dev, _ = make_disk()
    assert run(dev.execute, log_sense(0x0D), in_len=512).sense.field == (True, 2, 5)
    assert run(dev.execute, log_sense(0x2F, 0x01), in_len=512).sense.field == (True, 3, 7)
    assert run(dev.execute, log_sense(0x2F, pointer=1), in_len=512).sense.field == (True, 5, 7)
    assert run(dev.execute, log_sense(0x00, sp=True), in_len=512).sense.field == (True, 1, 0)
    log_select = bytes((0x4C,)) + bytes(9)
    assert run(dev.execute, log_select).sense.code == (5, 0x20, 0x00)


def test_register_local_command_wins_over_the_shared_table_and_keeps_spc_checks() -> None:
    """A device-type-specific opcode reuses SPC's one dispatcher: unit attention,
    reserved-bit check, NOT READY, and RSOC listing come from SpcDevice itself."""
    dev, _ = make_disk()
    calls: list[bytes] = []

    def handler(cmd: object, cdb: bytes) -> Result:
        calls.append(cdb)
        return Result()

    # 34h is SBC PRE-FETCH(10) in the shared table; SSC's READ POSITION reuses it.
    spec = op.local_spec(0x34, "READ POSITION", bytes((0x34, 0x1F) + (0,) * 8), Direction.NONE,
                         media=True)
    dev.register_local(spec, handler)
    assert dev.spec_for(bytes((0x34, 0x06) + (0,) * 8)) is spec
    dev.unit_attentions.post(0x29, 0x00)
    assert run(dev.execute, bytes((0x34, 0x06) + (0,) * 8)).sense.code == (0x06, 0x29, 0x00)
    assert run(dev.execute, bytes((0x34, 0x06) + (0,) * 8)).status == GOOD
    assert calls == [bytes((0x34, 0x06) + (0,) * 8)]
    reserved = run(dev.execute, bytes((0x34, 0x06, 0, 0, 0, 0, 0, 0, 0x01, 0)))
    assert reserved.sense.field == (True, 8, 0)
    dev.started = False
    assert run(dev.execute, bytes((0x34,) + (0,) * 9)).sense.key == 0x02
    dev.unregister(0x34)
    assert dev.spec_for(bytes((0x34,) + (0,) * 9)) is None


def test_ua_exempt_commands_leave_the_attention_pending() -> None:
    dev, _ = make_disk()
    dev.ua_exempt = frozenset({op.READ_CAPACITY})
    dev.unit_attentions.post(0x29, 0x00)
    assert run(dev.execute, h.read_capacity10(), in_len=8).status == GOOD
    assert run(dev.execute, bytes(6)).sense.code == (0x06, 0x29, 0x00)
