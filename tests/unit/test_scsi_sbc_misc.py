"""SBC management commands: capacity, cache, prefetch, WRITE SAME, UNMAP, LBA status, start/stop."""

from __future__ import annotations

import errno

from tcmu_scst.command import CHECK_CONDITION, GOOD
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi.block import BlockDeviceConfig
from tcmu_scst.scsi.sbc import SbcDevice, lba_extents
from tcmu_scst.testing import scsi_harness as h
from tcmu_scst.testing.scsi_harness import make_disk, run

BS = 512
BLOCKS = 2048


# -- READ CAPACITY ----------------------------------------------------------------------


def test_read_capacity_10_and_16() -> None:
    dev, _ = make_disk(lbppbe=3)
    rc10 = run(dev.execute, h.read_capacity10(), in_len=8).data
    assert rc10 == (BLOCKS - 1).to_bytes(4, "big") + BS.to_bytes(4, "big")
    rc16 = run(dev.execute, h.read_capacity16(), in_len=32).data
    assert len(rc16) == 32
    assert int.from_bytes(rc16[0:8], "big") == BLOCKS - 1
    assert int.from_bytes(rc16[8:12], "big") == BS
    assert rc16[12] == 0 and rc16[13] == 3 and rc16[14] == 0


def test_read_capacity_16_thin_bits_and_allocation_length() -> None:
    dev, _ = make_disk(thin_provisioned=True)
    assert run(dev.execute, h.read_capacity16(), in_len=32).data[14] == 0xC0
    short = run(dev.execute, h.read_capacity16(alloc=12), in_len=32)
    assert short.result.data_in_len == 12


def test_read_capacity_obsolete_lba_without_pmi_refused() -> None:
    dev, _ = make_disk()
    reply = run(dev.execute, h.read_capacity10(lba=5), in_len=8)
    assert reply.sense.field == (True, 2, 7)
    assert run(dev.execute, h.read_capacity10(lba=5, pmi=True), in_len=8).status == GOOD


class _HugeBackend:
    """Just a size: 2^32 + 10 blocks, more than READ CAPACITY(10) can express."""

    size = ((1 << 32) + 10) * BS

    def close(self) -> None:
        pass


def test_read_capacity_10_saturates_for_huge_devices() -> None:
    dev = SbcDevice(BlockDeviceConfig(name="big"), _HugeBackend())  # type: ignore[arg-type]
    rc10 = run(dev.execute, h.read_capacity10(), in_len=8).data
    assert rc10[:4] == b"\xff\xff\xff\xff"
    rc16 = run(dev.execute, h.read_capacity16(), in_len=32).data
    assert int.from_bytes(rc16[0:8], "big") == (1 << 32) + 9
    sense = run(dev.execute, h.mode_sense6(0x08), in_len=255).data
    assert sense[4:8] == b"\xff\xff\xff\xff"


def test_resize_is_visible_and_announced() -> None:
    dev, backend = make_disk()
    backend.resize(4096 * BS)
    dev.notify_resized()
    ua = run(dev.execute, h.read_capacity16(), in_len=32)
    assert ua.status == CHECK_CONDITION and ua.sense.code == (6, 0x2A, 0x09)
    rc16 = run(dev.execute, h.read_capacity16(), in_len=32).data
    assert int.from_bytes(rc16[0:8], "big") == 4095


# -- SYNCHRONIZE CACHE / PRE-FETCH --------------------------------------------------------


def test_synchronize_cache() -> None:
    dev, backend = make_disk()
    assert run(dev.execute, h.rw_cdb(op.SYNCHRONIZE_CACHE, 4, 8)).status == GOOD
    assert run(dev.execute, h.rw_cdb(op.SYNCHRONIZE_CACHE_16, 0, 0, byte1=0x02)).status == GOOD
    assert [c for c in backend.calls if c[0] == "flush"] == [
        ("flush", 4 * BS, 8 * BS, False), ("flush", 0, 0, False)]
    past = run(dev.execute, h.rw_cdb(op.SYNCHRONIZE_CACHE, BLOCKS, 1))
    assert past.sense.code == (5, 0x21, 0)


def test_synchronize_cache_nv_cache_is_a_no_op_and_errors_are_write_errors() -> None:
    nv, nv_backend = make_disk(nv_cache=True)
    assert run(nv.execute, h.rw_cdb(op.SYNCHRONIZE_CACHE, 0, 0)).status == GOOD
    assert nv_backend.flushes == 0
    dev, backend = make_disk()
    backend.fail("flush", errno.EIO)
    assert run(dev.execute, h.rw_cdb(op.SYNCHRONIZE_CACHE, 0, 0)).sense.code == (3, 0x0C, 0)


def test_pre_fetch() -> None:
    dev, backend = make_disk()
    # GOOD, not CONDITION MET: the backend's prefetch is only a hint (see _pre_fetch).
    assert run(dev.execute, h.rw_cdb(op.PRE_FETCH, 1, 2)).status == GOOD
    assert run(dev.execute, h.rw_cdb(op.PRE_FETCH_16, 1, 2, byte1=0x02)).status == GOOD
    assert run(dev.execute, h.rw_cdb(op.PRE_FETCH, BLOCKS - 4, 0)).status == GOOD
    assert [c[1:3] for c in backend.calls if c[0] == "prefetch"] == [
        (BS, 2 * BS), (BS, 2 * BS), ((BLOCKS - 4) * BS, 4 * BS)]
    assert run(dev.execute, h.rw_cdb(op.PRE_FETCH, BLOCKS, 1)).sense.code == (5, 0x21, 0)
    assert run(dev.execute, h.rw_cdb(op.PRE_FETCH, BLOCKS, 0)).sense.code == (5, 0x21, 0)


# -- WRITE SAME ------------------------------------------------------------------------


def test_write_same_fills_the_range() -> None:
    dev, backend = make_disk()
    block = bytes(range(256)) * 2
    assert run(dev.execute, h.rw_cdb(op.WRITE_SAME, 3, 5), data_out=block).status == GOOD
    assert backend.data[3 * BS : 8 * BS] == block * 5
    assert backend.data[8 * BS : 9 * BS] == bytes(BS)


def test_write_same_zero_blocks_means_to_the_end() -> None:
    dev, backend = make_disk()
    block = b"\x5a" * BS
    assert run(dev.execute, h.rw_cdb(op.WRITE_SAME_16, BLOCKS - 10, 0),
               data_out=block).status == GOOD
    assert backend.data[(BLOCKS - 10) * BS :] == block * 10
    at_end = run(dev.execute, h.rw_cdb(op.WRITE_SAME_16, BLOCKS, 0), data_out=block)
    assert at_end.sense.code == (5, 0x21, 0x00)
    limited, _ = make_disk(max_write_same_blocks=8)
    reply = run(limited.execute, h.rw_cdb(op.WRITE_SAME_16, BLOCKS - 10, 0), data_out=block)
    assert reply.sense.field == (True, 10, 7)


def test_write_same_limits_and_fields() -> None:
    dev, _ = make_disk(max_write_same_blocks=8)
    block = bytes(BS)
    over = run(dev.execute, h.rw_cdb(op.WRITE_SAME, 0, 9), data_out=block)
    assert over.sense.field == (True, 7, 7)
    anchor = run(dev.execute, h.rw_cdb(op.WRITE_SAME, 0, 1, byte1=0x10), data_out=block)
    assert anchor.sense.field == (True, 1, 4)
    lbdata = run(dev.execute, h.rw_cdb(op.WRITE_SAME_16, 0, 1, byte1=0x02), data_out=block)
    assert lbdata.sense.field == (True, 1, 1)
    not_thin = run(dev.execute, h.rw_cdb(op.WRITE_SAME, 0, 1, byte1=0x08), data_out=block)
    assert not_thin.sense.field == (True, 1, 3)
    short = run(dev.execute, h.rw_cdb(op.WRITE_SAME, 0, 1), data_out=bytes(BS - 1))
    assert short.sense.code == (5, 0x0E, 0x03)
    longer = run(dev.execute, h.rw_cdb(op.WRITE_SAME, 0, 1), data_out=bytes(2 * BS))
    assert longer.status == GOOD
    past = run(dev.execute, h.rw_cdb(op.WRITE_SAME, BLOCKS - 1, 2), data_out=block)
    assert past.sense.code == (5, 0x21, 0)


def test_write_same_ndob_writes_zeros_without_data_out() -> None:
    dev, backend = make_disk()
    backend.data[:] = b"\xff" * len(backend.data)
    assert run(dev.execute, h.rw_cdb(op.WRITE_SAME_16, 2, 3, byte1=0x01)).status == GOOD
    assert backend.data[2 * BS : 5 * BS] == bytes(3 * BS)
    assert backend.data[5 * BS] == 0xFF


def test_write_same_unmap_discards_zero_blocks_only() -> None:
    dev, backend = make_disk(thin_provisioned=True)
    backend.data[:] = b"\x11" * len(backend.data)
    zero = run(dev.execute, h.rw_cdb(op.WRITE_SAME_16, 4, 4, byte1=0x08), data_out=bytes(BS))
    assert zero.status == GOOD
    assert ("discard", 4 * BS, 4 * BS, False) in backend.calls
    assert backend.data[4 * BS : 8 * BS] == bytes(4 * BS)
    ndob = run(dev.execute, h.rw_cdb(op.WRITE_SAME_16, 10, 2, byte1=0x09))
    assert ndob.status == GOOD and ("discard", 10 * BS, 2 * BS, False) in backend.calls
    data = run(dev.execute, h.rw_cdb(op.WRITE_SAME, 20, 2, byte1=0x08), data_out=b"\x07" * BS)
    assert data.status == GOOD
    assert backend.data[20 * BS : 22 * BS] == b"\x07" * (2 * BS)
    assert not [c for c in backend.calls if c[0] == "discard" and c[1] == 20 * BS]


# -- UNMAP ------------------------------------------------------------------------------


def test_unmap_discards_and_get_lba_status_reports_it() -> None:
    dev, backend = make_disk(thin_provisioned=True)
    backend.data[:] = b"\x22" * len(backend.data)
    params = h.unmap_params([(8, 8), (100, 4), (50, 0)])
    assert run(dev.execute, h.unmap(len(params)), data_out=params).status == GOOD
    assert backend.data[8 * BS : 16 * BS] == bytes(8 * BS)
    assert backend.data[100 * BS : 104 * BS] == bytes(4 * BS)
    assert backend.data[16 * BS] == 0x22
    data = run(dev.execute, h.get_lba_status(0), in_len=4096).data
    assert int.from_bytes(data[0:4], "big") == len(data) - 4
    descriptors = [
        (int.from_bytes(data[p : p + 8], "big"), int.from_bytes(data[p + 8 : p + 12], "big"),
         data[p + 12] & 0x0F)
        for p in range(8, len(data), 16)
    ]
    assert descriptors == [(0, 8, 0), (8, 8, 1), (16, 84, 0), (100, 4, 1), (104, BLOCKS - 104, 0)]


def test_unmap_merges_adjacent_and_overlapping_descriptors() -> None:
    # One backend call per run of blocks, not one per descriptor (libiscsi sends 256
    # one-block descriptors; on RBD each discard is a round trip to the OSD).
    dev, backend = make_disk(thin_provisioned=True)
    backend.data[:] = b"\x33" * len(backend.data)
    params = h.unmap_params([(12, 4), (8, 4), (2, 1), (0, 2), (30, 5), (32, 1), (16, 0)])
    assert run(dev.execute, h.unmap(len(params)), data_out=params).status == GOOD
    discards = [c for c in backend.calls if c[0] == "discard"]
    assert discards == [("discard", 0, 3 * BS, False), ("discard", 8 * BS, 8 * BS, False),
                        ("discard", 30 * BS, 5 * BS, False)]
    assert backend.data[: 3 * BS] == bytes(3 * BS) and backend.data[3 * BS] == 0x33
    assert backend.data[8 * BS : 16 * BS] == bytes(8 * BS) and backend.data[16 * BS] == 0x33


def test_unmap_write_through_flushes_the_holes() -> None:
    dev, backend = make_disk(thin_provisioned=True, write_back=False)
    params = h.unmap_params([(8, 8)])
    assert run(dev.execute, h.unmap(len(params)), data_out=params).status == GOOD
    assert ("flush", 8 * BS, 8 * BS, False) in backend.calls


def test_unmap_parameter_list_checks() -> None:
    dev, backend = make_disk(thin_provisioned=True, max_unmap_descriptors=2, max_unmap_blocks=16)
    assert run(dev.execute, h.unmap(0), data_out=b"").status == GOOD
    short = run(dev.execute, h.unmap(6), data_out=bytes(6))
    assert short.sense.code == (5, 0x1A, 0)
    claims_more = h.unmap_params([(0, 1)], bd_len=32)
    assert run(dev.execute, h.unmap(len(claims_more)),
               data_out=claims_more).sense.code == (5, 0x1A, 0)
    inconsistent = h.unmap_params([(0, 1)], data_len=10)
    reply = run(dev.execute, h.unmap(len(inconsistent)), data_out=inconsistent)
    assert reply.sense.code == (5, 0x26, 0) and reply.sense.field == (False, 2, 7)
    too_many = h.unmap_params([(0, 1), (2, 1), (4, 1)])
    reply = run(dev.execute, h.unmap(len(too_many)), data_out=too_many)
    assert reply.sense.code == (5, 0x26, 0)
    too_long = h.unmap_params([(0, 10), (20, 10)])
    reply = run(dev.execute, h.unmap(len(too_long)), data_out=too_long)
    assert reply.sense.code == (5, 0x26, 0) and reply.sense.field == (False, 16, 7)
    past = h.unmap_params([(0, 1), (BLOCKS - 1, 2)])
    assert run(dev.execute, h.unmap(len(past)), data_out=past).sense.code == (5, 0x21, 0)
    anchor = run(dev.execute, h.unmap(24, anchor=True), data_out=h.unmap_params([(0, 1)]))
    assert anchor.sense.field == (True, 1, 0)
    assert not [c for c in backend.calls if c[0] == "discard"]  # all validated first


def test_unmap_ignores_a_trailing_partial_descriptor() -> None:
    dev, backend = make_disk(thin_provisioned=True)
    params = h.unmap_params([(0, 1)])
    padded = params[:2] + (len(params) - 8 + 8).to_bytes(2, "big") + params[4:] + bytes(8)
    padded = (len(padded) - 2).to_bytes(2, "big") + padded[2:]
    assert run(dev.execute, h.unmap(len(padded)), data_out=padded).status == GOOD
    assert [c for c in backend.calls if c[0] == "discard"] == [("discard", 0, BS, False)]


def test_unmap_parameter_list_length_longer_than_buffer() -> None:
    dev, _ = make_disk(thin_provisioned=True)
    params = h.unmap_params([(0, 1)])
    assert run(dev.execute, h.unmap(100), data_out=params).status == GOOD
    reply = run(dev.execute, h.unmap(24), data_out=params[:7])
    assert reply.sense.code == (5, 0x1A, 0)


# -- GET LBA STATUS ---------------------------------------------------------------------


def test_get_lba_status_fully_provisioned_and_limits() -> None:
    dev, _ = make_disk()
    data = run(dev.execute, h.get_lba_status(10), in_len=4096).data
    assert len(data) == 24
    assert int.from_bytes(data[8:16], "big") == 10
    assert int.from_bytes(data[16:20], "big") == BLOCKS - 10
    assert data[20] == 0
    assert run(dev.execute, h.get_lba_status(BLOCKS), in_len=64).sense.code == (5, 0x21, 0)
    assert run(dev.execute, h.get_lba_status(0, alloc=0), in_len=64).result.data_in_len == 0


def test_get_lba_status_allocation_length_limits_descriptors() -> None:
    dev, backend = make_disk(thin_provisioned=True)
    for lba in range(0, 40, 4):
        backend.discard(lba * BS, 2 * BS)
    full = run(dev.execute, h.get_lba_status(0), in_len=4096).data
    assert int.from_bytes(full[0:4], "big") == len(full) - 4 == 4 + 16 * 20
    cut = run(dev.execute, h.get_lba_status(0, alloc=40), in_len=4096)
    assert cut.result.data_in_len == 40
    assert int.from_bytes(cut.data[0:4], "big") == 4 + 16 * 2


def test_lba_extents_rounds_partial_blocks_to_mapped() -> None:
    extents = [(0, 700, True), (700, 1400, False), (2100, 100, True)]
    assert lba_extents(extents, 0, 5, 512) == [(0, 2, True), (2, 2, False), (4, 1, True)]
    assert lba_extents([], 3, 9, 512) == [(3, 6, True)]


# -- START STOP UNIT / PREVENT ALLOW MEDIUM REMOVAL -----------------------------------------


def test_stop_makes_media_access_not_ready_until_start() -> None:
    dev, backend = make_disk()
    assert run(dev.execute, h.start_stop(start=False)).status == GOOD
    assert backend.flushes == 1
    for cdb, in_len in ((h.TEST_UNIT_READY, 0), (h.rw_cdb(op.READ_10, 0, 1), BS),
                        (h.rw_cdb(op.SYNCHRONIZE_CACHE, 0, 0), 0)):
        reply = run(dev.execute, cdb, in_len=in_len)
        assert reply.sense.code == (2, 0x04, 0x02), cdb.hex()
    assert run(dev.execute, h.inquiry(), in_len=36).status == GOOD
    assert run(dev.execute, h.read_capacity10(), in_len=8).status == GOOD
    sense = run(dev.execute, h.request_sense(), in_len=18).data
    assert (sense[2], sense[12], sense[13]) == (2, 0x04, 0x02)
    assert run(dev.execute, h.start_stop(start=True)).status == GOOD
    assert run(dev.execute, h.TEST_UNIT_READY).status == GOOD


def test_stop_with_no_flush_and_bad_fields() -> None:
    dev, backend = make_disk()
    assert run(dev.execute, h.start_stop(start=False, no_flush=True)).status == GOOD
    assert backend.flushes == 0
    assert run(dev.execute, h.start_stop(start=True, loej=True)).sense.field == (True, 4, 1)


def test_power_conditions_are_accepted_and_ignore_start_and_loej() -> None:
    dev, backend = make_disk(removable=True)
    for power in range(1, 16):
        assert run(dev.execute, h.start_stop(start=False, loej=True, power=power)).status == GOOD
    assert run(dev.execute, h.TEST_UNIT_READY).status == GOOD
    assert backend.flushes == 0


def test_removable_eject_and_load() -> None:
    dev, backend = make_disk(removable=True)
    assert run(dev.execute, h.start_stop(start=False, loej=True)).status == GOOD
    assert backend.flushes == 1
    assert run(dev.execute, h.TEST_UNIT_READY).sense.code == (2, 0x3A, 0x00)
    reply = run(dev.execute, h.rw_cdb(op.READ_10, 0, 1), in_len=BS)
    assert reply.sense.code == (2, 0x3A, 0x00)
    rc16 = run(dev.execute, h.read_capacity16(), in_len=32)
    assert rc16.sense.code == (2, 0x3A, 0x00)  # no medium, no capacity (libiscsi NoMediaSBC)
    assert run(dev.execute, h.read_capacity10(), in_len=8).sense.code == (2, 0x3A, 0x00)
    assert run(dev.execute, h.start_stop(start=True, loej=True)).status == GOOD
    # The initiator loaded the medium it ejected: ready at once, no unit attention.
    assert run(dev.execute, h.TEST_UNIT_READY).status == GOOD
    assert run(dev.execute, h.read_capacity10(), in_len=8).status == GOOD


def test_stopped_unit_still_reports_its_capacity() -> None:
    dev, _ = make_disk(removable=True)
    assert run(dev.execute, h.start_stop(start=False)).status == GOOD
    assert run(dev.execute, h.TEST_UNIT_READY).sense.code == (2, 0x04, 0x02)
    assert run(dev.execute, h.read_capacity10(), in_len=8).status == GOOD


def test_eject_refused_while_removal_is_prevented() -> None:
    dev, _ = make_disk(removable=True)
    prevent = bytes((op.ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 1, 0))
    allow = bytes((op.ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0, 0))
    assert run(dev.execute, prevent).status == GOOD
    reply = run(dev.execute, h.start_stop(start=False, loej=True))
    assert reply.sense.code == (5, 0x53, 0x02)
    assert run(dev.execute, h.TEST_UNIT_READY).status == GOOD
    assert run(dev.execute, allow).status == GOOD
    assert run(dev.execute, h.start_stop(start=False, loej=True)).status == GOOD
    # Prevention locks the medium out as well as in (libiscsi PreventAllow.Eject).
    assert run(dev.execute, prevent).status == GOOD
    load = run(dev.execute, h.start_stop(start=True, loej=True))
    assert load.sense.code == (5, 0x53, 0x02)
    assert run(dev.execute, h.TEST_UNIT_READY).sense.code == (2, 0x3A, 0x00)
    assert run(dev.execute, allow).status == GOOD
    assert run(dev.execute, h.start_stop(start=True, loej=True)).status == GOOD
    assert run(dev.execute, h.TEST_UNIT_READY).status == GOOD


def test_logical_unit_reset_clears_prevention() -> None:
    dev, _ = make_disk(removable=True)
    assert run(dev.execute, bytes((op.ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 1, 0))).status == GOOD
    assert run(dev.execute, h.start_stop(start=False, loej=True)).sense.code == (5, 0x53, 0x02)
    dev.reset()
    assert run(dev.execute, h.start_stop(start=False, loej=True)).status == GOOD


def test_prevent_allow_medium_removal() -> None:
    dev, _ = make_disk(removable=True)
    assert run(dev.execute, bytes((op.ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 1, 0))).status == GOOD
    assert run(dev.execute, bytes((op.ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0, 0))).status == GOOD
    bad = run(dev.execute, bytes((op.ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 2, 0)))
    assert bad.sense.field == (True, 4, 1)


# -- READ DEFECT DATA ---------------------------------------------------------------------


def test_read_defect_data_10_lists_nothing_in_the_format_asked() -> None:
    dev, _ = make_disk()
    cdb = bytes([0x37, 0, 0x18 | 0x05, 0, 0, 0, 0, 0, 32, 0])  # PLIST+GLIST, physical sector
    reply = run(dev.execute, cdb, in_len=32)
    assert reply.status == GOOD and reply.data == bytes([0, 0x1D, 0, 0])
    plain = run(dev.execute, bytes([0x37, 0, 0, 0, 0, 0, 0, 0, 32, 0]), in_len=32)
    assert plain.data == bytes(4)  # libiscsi's ReadDefectData10.Simple
    short = run(dev.execute, bytes([0x37, 0, 0x10, 0, 0, 0, 0, 0, 2, 0]), in_len=32)
    assert short.result.data_in_len == 2 and short.data == bytes([0, 0x10])


def test_read_defect_data_12_header_and_refusals() -> None:
    dev, _ = make_disk()
    cdb = bytes([0xB7, 0x08 | 0x03, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0])  # GLIST, long block
    reply = run(dev.execute, cdb, in_len=64)
    assert reply.status == GOOD and reply.data == bytes([0, 0x0B]) + bytes(6)
    bad_format = run(dev.execute, bytes([0xB7, 0x07]) + bytes(10), in_len=64)
    assert bad_format.sense.code == (5, 0x24, 0x00) and bad_format.sense.field == (True, 1, 2)
    reserved = run(dev.execute, bytes([0x37, 0x01, 0, 0, 0, 0, 0, 0, 32, 0]), in_len=32)
    assert reserved.sense.code == (5, 0x24, 0x00)  # a reserved CDB bit: refused
