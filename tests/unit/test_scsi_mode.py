"""MODE SENSE / MODE SELECT (6 and 10) on an SBC device."""

from __future__ import annotations

from tcmu_scst.command import CHECK_CONDITION, GOOD
from tcmu_scst.scsi.sbc import SbcDevice
from tcmu_scst.testing import scsi_harness as h
from tcmu_scst.testing.scsi_harness import make_disk, run

SIZE = 1 << 20  # 2048 blocks of 512


def _pages(body: bytes) -> dict[int, bytes]:
    out = {}
    pos = 0
    while pos < len(body):
        out[body[pos] & 0x3F] = body[pos : pos + 2 + body[pos + 1]]
        pos += 2 + body[pos + 1]
    return out


def sense6(dev: SbcDevice, page: int, **kw: object) -> bytes:
    reply = run(dev.execute, h.mode_sense6(page, **kw), in_len=255)  # type: ignore[arg-type]
    assert reply.status == GOOD, reply.result
    return reply.data


def test_mode_sense6_all_pages_with_block_descriptor() -> None:
    dev, _ = make_disk()
    data = sense6(dev, 0x3F)
    assert data[0] == len(data) - 1
    assert data[1] == 0
    assert data[2] == 0x10  # DPOFUA, not WP
    assert data[3] == 8
    assert data[4:12] == (2048).to_bytes(4, "big") + b"\x00" + (512).to_bytes(3, "big")
    pages = _pages(data[12:])
    assert sorted(pages) == [0x01, 0x08, 0x0A, 0x1C]
    assert len(pages[0x08]) == 20 and pages[0x08][2] & 0x04  # WCE: write-back default
    assert len(pages[0x01]) == 12 and len(pages[0x0A]) == 12 and len(pages[0x1C]) == 12
    assert pages[0x0A][5] & 0x40  # TAS
    assert pages[0x1C][2] & 0x08  # DEXCPT


def test_mode_sense_dbd_and_wp() -> None:
    dev, _ = make_disk(read_only=True)
    data = sense6(dev, 0x08, dbd=True)
    assert data[2] == 0x90  # WP | DPOFUA
    assert data[3] == 0
    assert data[4] == 0x08 and len(data) == 4 + 20


def test_wce_follows_write_back_and_nv_cache() -> None:
    assert sense6(make_disk(write_back=False)[0], 0x08, dbd=True)[6] & 0x04 == 0
    # SCST reports an NV_CACHE device as write-through.
    assert sense6(make_disk(nv_cache=True)[0], 0x08, dbd=True)[6] & 0x04 == 0


def test_mode_sense10_long_lba_descriptor() -> None:
    dev, _ = make_disk()
    data = run(dev.execute, h.mode_sense10(0x08, llbaa=True), in_len=1024).data
    assert int.from_bytes(data[0:2], "big") == len(data) - 2
    assert data[3] == 0x10
    assert data[4] & 0x01  # LONGLBA
    assert int.from_bytes(data[6:8], "big") == 16
    assert int.from_bytes(data[8:16], "big") == 2048
    assert int.from_bytes(data[20:24], "big") == 512
    assert data[24] == 0x08
    short = run(dev.execute, h.mode_sense10(0x08), in_len=1024).data
    assert int.from_bytes(short[6:8], "big") == 8 and short[4] == 0


def test_mode_sense_page_controls() -> None:
    dev, _ = make_disk(write_back=True)
    changeable = _pages(sense6(dev, 0x3F, pc=1, dbd=True)[4:])
    assert changeable[0x08][2] == 0x04
    assert changeable[0x08][3:] == bytes(17)
    assert changeable[0x0A][2:] == bytes(10)
    assert changeable[0x01][2:] == bytes(10)
    default = _pages(sense6(dev, 0x08, pc=2, dbd=True)[4:])
    assert default[0x08][2] & 0x04
    nv = _pages(sense6(make_disk(nv_cache=True)[0], 0x08, pc=1, dbd=True)[4:])
    assert nv[0x08][2] == 0  # WCE not changeable under NV_CACHE


def test_mode_sense_saved_values_not_supported() -> None:
    reply = run(make_disk()[0].execute, h.mode_sense6(0x08, pc=3), in_len=255)
    assert reply.status == CHECK_CONDITION
    assert reply.sense.code == (5, 0x39, 0x00)


def test_mode_sense_unknown_page_and_subpage() -> None:
    dev, _ = make_disk()
    page = run(dev.execute, h.mode_sense6(0x19), in_len=255)
    assert page.sense.code == (5, 0x24, 0) and page.sense.field == (True, 2, 5)
    sub = run(dev.execute, h.mode_sense6(0x0A, subpage=0x01), in_len=255)
    assert sub.sense.field == (True, 3, 7)
    all_sub = run(dev.execute, h.mode_sense6(0x3F, subpage=0xFF), in_len=255)
    assert all_sub.status == GOOD


def test_mode_sense_allocation_length() -> None:
    reply = run(make_disk()[0].execute, h.mode_sense6(0x3F, alloc=10), in_len=255)
    assert reply.result.data_in_len == 10
    assert reply.data[0] > 10  # MODE DATA LENGTH still reports the full size


# -- MODE SELECT ----------------------------------------------------------------------


def _caching_select6(dev: SbcDevice, wce: bool, block_descriptor: bool = False) -> bytes:
    current = sense6(dev, 0x08, dbd=not block_descriptor)
    params = bytearray(current)
    params[0] = 0  # MODE DATA LENGTH is reserved in MODE SELECT
    at = 4 + params[3]
    params[at + 2] = (params[at + 2] & ~0x04) | (0x04 if wce else 0)
    return bytes(params)


def test_mode_select_flips_write_back_and_flushes_when_disabling() -> None:
    dev, backend = make_disk(write_back=True)
    params = _caching_select6(dev, wce=False)
    reply = run(dev.execute, h.mode_select6(len(params)), data_out=params)
    assert reply.status == GOOD, reply.result
    assert dev.config.write_back is False
    assert backend.flushes == 1
    assert sense6(dev, 0x08, dbd=True)[6] & 0x04 == 0
    params = _caching_select6(dev, wce=True, block_descriptor=True)
    assert run(dev.execute, h.mode_select6(len(params)), data_out=params).status == GOOD
    assert dev.config.write_back is True
    assert backend.flushes == 1


def test_mode_select_write_through_makes_writes_durable() -> None:
    dev, backend = make_disk(write_back=True)
    params = _caching_select6(dev, wce=False)
    run(dev.execute, h.mode_select6(len(params)), data_out=params)
    run(dev.execute, h.rw_cdb(0x2A, 0, 1), data_out=b"z" * 512)
    assert ("write", 0, 512, True) in backend.calls


def test_mode_select10() -> None:
    dev, _ = make_disk(write_back=True)
    current = bytearray(run(dev.execute, h.mode_sense10(0x08, llbaa=True), in_len=1024).data)
    current[0:2] = b"\x00\x00"
    current[24 + 2] &= ~0x04
    reply = run(dev.execute, h.mode_select10(len(current)), data_out=bytes(current))
    assert reply.status == GOOD, reply.result
    assert dev.config.write_back is False


def test_mode_select_unchangeable_field_points_at_it() -> None:
    dev, _ = make_disk()
    params = bytearray(_caching_select6(dev, wce=True))
    params[4 + 2] |= 0x01  # RCD is not changeable
    reply = run(dev.execute, h.mode_select6(len(params)), data_out=bytes(params))
    assert reply.sense.code == (5, 0x26, 0x00)
    assert reply.sense.field == (False, 6, 0)
    params = bytearray(sense6(dev, 0x0A, dbd=True))
    params[0] = 0
    params[4 + 5] = 0  # clear TAS
    reply = run(dev.execute, h.mode_select6(len(params)), data_out=bytes(params))
    assert reply.sense.field == (False, 9, 6)


def test_mode_select_nothing_applied_when_a_later_page_is_bad() -> None:
    dev, backend = make_disk(write_back=True)
    params = bytearray(_caching_select6(dev, wce=False))
    control = bytearray(sense6(dev, 0x0A, dbd=True)[4:])
    control[3] ^= 0x10
    params += control
    reply = run(dev.execute, h.mode_select6(len(params)), data_out=bytes(params))
    assert reply.sense.code == (5, 0x26, 0x00)
    assert reply.sense.field == (False, 24 + 3, 4)
    assert dev.config.write_back is True and backend.flushes == 0


def test_mode_select_page_errors() -> None:
    dev, _ = make_disk()
    good = _caching_select6(dev, wce=True)
    unknown = bytearray(good)
    unknown[4] = 0x19
    assert run(dev.execute, h.mode_select6(len(unknown)), data_out=bytes(unknown)).sense.field == (
        False, 4, 5)
    length = bytearray(good)
    length[5] = 0x10
    assert run(dev.execute, h.mode_select6(len(length)), data_out=bytes(length)).sense.field == (
        False, 5, 7)
    spf = bytearray(good)
    spf[4] |= 0x40
    assert run(dev.execute, h.mode_select6(len(spf)), data_out=bytes(spf)).sense.field == (
        False, 4, 6)
    truncated = good[:-3]
    reply = run(dev.execute, h.mode_select6(len(truncated)), data_out=truncated)
    assert reply.sense.code == (5, 0x1A, 0x00)


def test_mode_select_header_and_block_descriptor_errors() -> None:
    dev, _ = make_disk()
    good = bytearray(_caching_select6(dev, wce=True, block_descriptor=True))
    cases = {
        1: (1, 0x05, 7),  # MEDIUM TYPE
        2: (2, 0x80, 7),  # WP on a writable device
        3: (3, 4, 7),  # BLOCK DESCRIPTOR LENGTH
        4: (4, 0x00, 7),  # NUMBER OF LOGICAL BLOCKS
        11: (9, 0x04, 7),  # BLOCK LENGTH 512 -> 1024
    }
    for index, (pointer, value, bit) in cases.items():
        params = bytearray(good)
        if index == 4:
            params[4:8] = (1234).to_bytes(4, "big")
        elif index == 11:
            params[9:12] = (1024).to_bytes(3, "big")
        else:
            params[index] = value
        reply = run(dev.execute, h.mode_select6(len(params)), data_out=bytes(params))
        assert reply.sense.code == (5, 0x26, 0x00), index
        assert reply.sense.field == (False, pointer, bit), index
    zero_blocks = bytearray(good)
    zero_blocks[4:8] = bytes(4)  # 0 = keep the capacity
    reply = run(dev.execute, h.mode_select6(len(zero_blocks)), data_out=bytes(zero_blocks))
    assert reply.status == GOOD


def test_mode_select_cdb_flags() -> None:
    dev, _ = make_disk()
    params = _caching_select6(dev, wce=True)
    sp = run(dev.execute, h.mode_select6(len(params), sp=True), data_out=params)
    assert sp.sense.code == (5, 0x24, 0) and sp.sense.field == (True, 1, 0)
    pf = run(dev.execute, h.mode_select6(len(params), pf=False), data_out=params)
    assert pf.sense.field == (True, 1, 4)
    assert run(dev.execute, h.mode_select6(0), data_out=b"").status == GOOD
    short = run(dev.execute, h.mode_select6(3), data_out=params[:3])
    assert short.sense.code == (5, 0x1A, 0)


def test_mode_select_write_protect_bit_allowed_on_read_only_device() -> None:
    dev, _ = make_disk(read_only=True)
    params = bytearray(_caching_select6(dev, wce=False))
    assert params[2] & 0x80
    assert run(dev.execute, h.mode_select6(len(params)), data_out=bytes(params)).status == GOOD
