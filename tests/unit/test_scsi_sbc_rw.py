"""SBC data commands: READ/WRITE, VERIFY, WRITE AND VERIFY, COMPARE AND WRITE."""

from __future__ import annotations

import errno

import pytest

from tcmu_scst.command import CHECK_CONDITION, GOOD, Command, DataBuffer
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi.block import BackendError
from tcmu_scst.testing import scsi_harness as h
from tcmu_scst.testing.scsi_harness import STALE, make_disk, run

BS = 512
BLOCKS = 2048  # make_disk's default 1 MiB

READS = (op.READ_6, op.READ_10, op.READ_12, op.READ_16)
WRITES = (op.WRITE_6, op.WRITE_10, op.WRITE_12, op.WRITE_16)
LENGTH_FIELD = {6: 4, 10: 7, 12: 6, 16: 10}


def pattern(blocks: int, seed: int = 1) -> bytes:
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(blocks * BS))


@pytest.mark.parametrize(("write", "read"), list(zip(WRITES, READS, strict=True)))
def test_write_then_read_round_trip(write: int, read: int) -> None:
    dev, backend = make_disk()
    data = pattern(3, write)
    assert run(dev.execute, h.rw_cdb(write, 100, 3), data_out=data).status == GOOD
    assert backend.data[100 * BS : 103 * BS] == data
    reply = run(dev.execute, h.rw_cdb(read, 100, 3), in_len=3 * BS)
    assert reply.status == GOOD
    assert reply.data == data
    assert reply.result.data_in_len == 3 * BS


def test_six_byte_transfer_length_zero_means_256() -> None:
    dev, backend = make_disk()
    data = pattern(256)
    assert run(dev.execute, h.rw_cdb(op.WRITE_6, 10, 0), data_out=data).status == GOOD
    assert backend.data[10 * BS : 266 * BS] == data
    reply = run(dev.execute, h.rw_cdb(op.READ_6, 10, 0), in_len=256 * BS)
    assert reply.data == data


@pytest.mark.parametrize("opcode", [*READS[1:], *WRITES[1:]])
def test_transfer_length_zero_is_good_and_touches_nothing(opcode: int) -> None:
    dev, backend = make_disk()
    reply = run(dev.execute, h.rw_cdb(opcode, 5, 0), in_len=0)
    assert reply.status == GOOD
    assert not [c for c in backend.calls if c[0] in ("read", "write")]


@pytest.mark.parametrize("opcode", [*READS, *WRITES])
def test_lba_out_of_range(opcode: int) -> None:
    dev, _ = make_disk()
    size = 2
    is_write = opcode in WRITES
    edge = run(dev.execute, h.rw_cdb(opcode, BLOCKS - 2, size),
               data_out=pattern(size) if is_write else None, in_len=size * BS)
    assert edge.status == GOOD
    past = run(dev.execute, h.rw_cdb(opcode, BLOCKS - 1, size),
               data_out=pattern(size) if is_write else None, in_len=size * BS)
    assert past.status == CHECK_CONDITION
    assert past.sense.code == (5, 0x21, 0x00)
    assert past.sense.field is None


def test_huge_lba_out_of_range() -> None:
    dev, _ = make_disk()
    reply = run(dev.execute, h.rw_cdb(op.READ_16, (1 << 64) - 1, 1), in_len=BS)
    assert reply.sense.code == (5, 0x21, 0x00)


@pytest.mark.parametrize("opcode", [*READS, *WRITES])
def test_transfer_length_over_block_limit(opcode: int) -> None:
    dev, _ = make_disk(max_transfer_blocks=8)
    reply = run(dev.execute, h.rw_cdb(opcode, 0, 9), data_out=pattern(9), in_len=9 * BS)
    assert reply.sense.code == (5, 0x24, 0x00)
    assert reply.sense.field == (True, LENGTH_FIELD[op.cdb_length(opcode) or 0], 7)


def test_read_into_smaller_buffer_never_overruns() -> None:
    dev, backend = make_disk()
    backend.data[0 : 4 * BS] = pattern(4)
    reply = run(dev.execute, h.rw_cdb(op.READ_10, 0, 4), in_len=1000)
    assert reply.status == GOOD
    assert reply.result.data_in_len == 1000
    assert reply.data == pattern(4)[:1000]


def test_read_into_larger_buffer_reports_only_what_was_read() -> None:
    dev, backend = make_disk()
    backend.data[0:BS] = pattern(1)
    reply = run(dev.execute, h.rw_cdb(op.READ_10, 0, 1), in_len=4 * BS)
    assert reply.result.data_in_len == BS
    assert reply.buffer[BS:] == bytes([STALE]) * (3 * BS)


@pytest.mark.parametrize("size", [BS - 1, BS + 100, 2 * BS - 1])
def test_write_buffer_ending_inside_a_block_refused(size: int) -> None:
    dev, backend = make_disk()
    reply = run(dev.execute, h.rw_cdb(op.WRITE_10, 0, 2), data_out=b"q" * size)
    assert reply.sense.code == (5, 0x0E, 0x03)
    assert backend.data[: 2 * BS] == bytes(2 * BS)


def test_write_longer_buffer_writes_only_what_the_cdb_says() -> None:
    dev, backend = make_disk()
    backend.data[: 2 * BS] = b"a" * (2 * BS)
    reply = run(dev.execute, h.rw_cdb(op.WRITE_10, 0, 1), data_out=b"b" * (2 * BS))
    assert reply.status == GOOD
    assert backend.data[: 2 * BS] == b"b" * BS + b"a" * BS


def test_write_shorter_buffer_writes_only_the_blocks_it_holds() -> None:
    dev, backend = make_disk()
    backend.data[: 2 * BS] = b"a" * (2 * BS)
    reply = run(dev.execute, h.rw_cdb(op.WRITE_10, 0, 2), data_out=b"b" * BS)
    assert reply.status == GOOD
    assert backend.data[: 2 * BS] == b"b" * BS + b"a" * BS
    empty = run(dev.execute, h.rw_cdb(op.WRITE_10, 0, 1), data_out=b"")
    assert empty.status == GOOD
    assert not [c for c in backend.calls if c[0] == "write" and c[2] != BS]


def test_fua_and_write_modes() -> None:
    dev, backend = make_disk()
    run(dev.execute, h.rw_cdb(op.WRITE_10, 0, 1), data_out=pattern(1))
    run(dev.execute, h.rw_cdb(op.WRITE_10, 1, 1, byte1=0x08), data_out=pattern(1))
    run(dev.execute, h.rw_cdb(op.WRITE_16, 2, 1, byte1=0x18), data_out=pattern(1))
    assert [c[3] for c in backend.calls if c[0] == "write"] == [False, True, True]
    nv, nv_backend = make_disk(nv_cache=True)
    run(nv.execute, h.rw_cdb(op.WRITE_10, 0, 1, byte1=0x08), data_out=pattern(1))
    assert [c[3] for c in nv_backend.calls if c[0] == "write"] == [False]
    wt, wt_backend = make_disk(write_back=False)
    run(wt.execute, h.rw_cdb(op.WRITE_12, 0, 1), data_out=pattern(1))
    assert [c[3] for c in wt_backend.calls if c[0] == "write"] == [True]


def test_dpo_accepted_on_read() -> None:
    dev, _ = make_disk()
    assert run(dev.execute, h.rw_cdb(op.READ_10, 0, 1, byte1=0x18), in_len=BS).status == GOOD


def test_read_only_refuses_every_write_type_command() -> None:
    dev, backend = make_disk(read_only=True, thin_provisioned=True)
    cdbs = [
        (h.rw_cdb(op.WRITE_10, 0, 1), pattern(1)),
        (h.rw_cdb(op.WRITE_6, 0, 1), pattern(1)),
        (h.rw_cdb(op.WRITE_VERIFY_16, 0, 1), pattern(1)),
        (h.rw_cdb(op.WRITE_SAME, 0, 1), pattern(1)),
        (h.rw_cdb(op.WRITE_SAME_16, 0, 1, byte1=0x01), None),
        (h.compare_and_write(0, 1), bytes(2 * BS)),
        (h.unmap(24), h.unmap_params([(0, 1)])),
    ]
    for cdb, data in cdbs:
        reply = run(dev.execute, cdb, data_out=data)
        assert reply.sense.code == (7, 0x27, 0x00), cdb.hex()
    assert run(dev.execute, h.rw_cdb(op.READ_10, 0, 1), in_len=BS).status == GOOD
    assert not [c for c in backend.calls if c[0] in ("write", "write_bytes", "discard")]


def test_backend_errors_become_medium_errors() -> None:
    dev, backend = make_disk()
    backend.fail("read", errno.EIO)
    backend.fail("write", errno.EIO)
    assert run(dev.execute, h.rw_cdb(op.READ_10, 0, 1), in_len=BS).sense.code == (3, 0x11, 0)
    assert run(dev.execute, h.rw_cdb(op.WRITE_10, 0, 1),
               data_out=pattern(1)).sense.code == (3, 0x0C, 0)
    backend.heal()
    backend.fail("write", errno.ENOSPC)
    assert run(dev.execute, h.rw_cdb(op.WRITE_10, 0, 1),
               data_out=pattern(1)).sense.code == (3, 0x0C, 0)


def test_medium_errors_carry_the_lba_in_the_information_field() -> None:
    """Issue 14: MEDIUM ERROR with the LBA (VALID bit, INFORMATION): the command's
    first block when the backend cannot say more, the failing block when it can."""
    dev, backend = make_disk()
    backend.fail("read", errno.EIO)
    backend.fail("write", errno.ENOSPC)
    for cdb in (h.rw_cdb(op.READ_10, 77, 2), h.rw_cdb(op.READ_16, 77, 2),
                h.rw_cdb(op.READ_6, 77, 2)):
        reply = run(dev.execute, cdb, in_len=2 * BS)
        assert (reply.sense.code, reply.sense.information) == ((3, 0x11, 0), 77), cdb.hex()
    for cdb in (h.rw_cdb(op.WRITE_10, 9, 1), h.rw_cdb(op.WRITE_16, 9, 1)):
        reply = run(dev.execute, cdb, data_out=pattern(1))
        assert (reply.sense.code, reply.sense.information) == ((3, 0x0C, 0), 9), cdb.hex()
    backend.heal()

    def cut_short(offset: int, length: int, *args: object, **kwargs: object) -> None:
        raise BackendError("the file ends", errno.EIO, offset=offset + 3 * BS)

    backend.read = cut_short  # type: ignore[method-assign]
    reply = run(dev.execute, h.rw_cdb(op.READ_10, 40, 8), in_len=8 * BS)
    assert (reply.sense.code, reply.sense.information) == ((3, 0x11, 0), 43)


def test_enospc_on_thin_device_is_space_allocation_failed() -> None:
    dev, backend = make_disk(thin_provisioned=True)
    backend.fail("write", errno.ENOSPC)
    reply = run(dev.execute, h.rw_cdb(op.WRITE_16, 0, 1), data_out=pattern(1))
    assert reply.sense.code == (7, 0x27, 0x07)


def test_iovec_layout_does_not_matter() -> None:
    dev, _ = make_disk()
    data = pattern(5)
    run(dev.execute, h.rw_cdb(op.WRITE_10, 7, 5), data_out=data, iovecs=7)
    for iovecs in (1, 2, 13):
        assert run(dev.execute, h.rw_cdb(op.READ_10, 7, 5), in_len=5 * BS,
                   iovecs=iovecs).data == data


# -- VERIFY ---------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [op.VERIFY, op.VERIFY_12, op.VERIFY_16])
def test_verify_bytchk_modes(opcode: int) -> None:
    dev, backend = make_disk()
    data = pattern(4)
    backend.data[8 * BS : 12 * BS] = data
    assert run(dev.execute, h.rw_cdb(opcode, 8, 4)).status == GOOD
    assert run(dev.execute, h.rw_cdb(opcode, 8, 4, byte1=0x02), data_out=data).status == GOOD
    bad = bytearray(data)
    bad[1000] ^= 0xFF
    reply = run(dev.execute, h.rw_cdb(opcode, 8, 4, byte1=0x02), data_out=bytes(bad))
    assert reply.sense.code == (0xE, 0x1D, 0x00)
    assert reply.sense.information == 1000
    reserved = run(dev.execute, h.rw_cdb(opcode, 8, 4, byte1=0x04), data_out=data)
    assert reserved.sense.field == (True, 1, 2)
    past = run(dev.execute, h.rw_cdb(opcode, BLOCKS - 1, 2))
    assert past.sense.code == (5, 0x21, 0)


def test_verify_bytchk_3_compares_one_block_with_each() -> None:
    dev, backend = make_disk()
    block = pattern(1, 9)
    backend.data[0 : 3 * BS] = block * 3
    assert run(dev.execute, h.rw_cdb(op.VERIFY_16, 0, 3, byte1=0x06),
               data_out=block).status == GOOD
    backend.data[2 * BS + 5] ^= 0x01
    reply = run(dev.execute, h.rw_cdb(op.VERIFY_16, 0, 3, byte1=0x06), data_out=block)
    assert reply.sense.code == (0xE, 0x1D, 0x00)
    assert reply.sense.information == 2 * BS + 5
    short = run(dev.execute, h.rw_cdb(op.VERIFY_16, 0, 3, byte1=0x06), data_out=block[:100])
    assert short.sense.code == (5, 0x0E, 0x03)


def test_verify_read_error() -> None:
    dev, backend = make_disk()
    backend.fail("read_bytes", errno.EIO)
    reply = run(dev.execute, h.rw_cdb(op.VERIFY, 0, 1, byte1=0x02), data_out=bytes(BS))
    assert reply.sense.code == (3, 0x11, 0)


# -- WRITE AND VERIFY -------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [op.WRITE_VERIFY, op.WRITE_VERIFY_12, op.WRITE_VERIFY_16])
def test_write_and_verify(opcode: int) -> None:
    dev, backend = make_disk()
    data = pattern(2, opcode)
    assert run(dev.execute, h.rw_cdb(opcode, 4, 2), data_out=data).status == GOOD
    assert run(dev.execute, h.rw_cdb(opcode, 6, 2, byte1=0x02), data_out=data).status == GOOD
    assert backend.data[4 * BS : 8 * BS] == data * 2
    writes = [c for c in backend.calls if c[0] == "write"]
    assert all(c[3] for c in writes)  # verification is of the medium: durable write
    assert [c[0] for c in backend.calls].count("read_bytes") == 2
    reserved = run(dev.execute, h.rw_cdb(opcode, 4, 2, byte1=0x04), data_out=data)
    assert reserved.sense.field == (True, 1, 2)


def test_write_and_verify_detects_a_bad_medium() -> None:
    dev, backend = make_disk()
    original = backend.read_bytes

    def corrupting(offset: int, length: int) -> bytes:
        data = bytearray(original(offset, length))
        data[7] ^= 0x40
        return bytes(data)

    backend.read_bytes = corrupting  # type: ignore[method-assign]
    reply = run(dev.execute, h.rw_cdb(op.WRITE_VERIFY, 0, 1, byte1=0x02), data_out=pattern(1))
    assert reply.sense.code == (0xE, 0x1D, 0x00)
    assert reply.sense.information == 7


# -- COMPARE AND WRITE -----------------------------------------------------------------


def test_compare_and_write_success_and_miscompare() -> None:
    dev, backend = make_disk()
    old, new = pattern(2, 1), pattern(2, 2)
    backend.data[10 * BS : 12 * BS] = old
    assert run(dev.execute, h.compare_and_write(10, 2), data_out=old + new).status == GOOD
    assert backend.data[10 * BS : 12 * BS] == new
    reply = run(dev.execute, h.compare_and_write(10, 2), data_out=old + pattern(2, 3))
    assert reply.sense.code == (0xE, 0x1D, 0x00)
    assert reply.sense.information == first_difference(old, new)
    assert backend.data[10 * BS : 12 * BS] == new  # nothing written on miscompare


def first_difference(a: bytes, b: bytes) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)


def test_compare_and_write_fields() -> None:
    dev, backend = make_disk(max_compare_write_blocks=2)
    assert run(dev.execute, h.compare_and_write(0, 0), data_out=b"").status == GOOD
    too_many = run(dev.execute, h.compare_and_write(0, 3), data_out=bytes(6 * BS))
    assert too_many.sense.field == (True, 13, 7)
    past = run(dev.execute, h.compare_and_write(BLOCKS - 1, 2), data_out=bytes(4 * BS))
    assert past.sense.code == (5, 0x21, 0)
    short = run(dev.execute, h.compare_and_write(0, 2), data_out=bytes(2 * BS))
    assert short.sense.code == (5, 0x0E, 0x03)
    # 256 blocks encoded in the 1-byte field is 0, with 512 blocks of Data-Out
    wrapped = run(dev.execute, h.compare_and_write(0, 0), data_out=bytes(512 * BS))
    assert wrapped.sense.field == (True, 13, 7)
    run(dev.execute, h.compare_and_write(0, 1, byte1=0x08), data_out=bytes(2 * BS))
    assert [c[3] for c in backend.calls if c[0] == "write"] == [True]


def test_is_io_classifies_blocking_commands() -> None:
    dev, _ = make_disk()

    def cmd(cdb: bytes) -> Command:
        return Command(1, cdb, DataBuffer(()))

    assert dev.is_io(cmd(h.rw_cdb(op.READ_10, 0, 1)))
    assert dev.is_io(cmd(h.rw_cdb(op.SYNCHRONIZE_CACHE, 0, 0)))
    assert not dev.is_io(cmd(h.inquiry()))
    assert not dev.is_io(cmd(h.read_capacity16()))
    assert not dev.is_io(cmd(h.unmap(24)))  # not thin: not supported, answered inline


# -- ORWRITE -----------------------------------------------------------------------------


def test_orwrite_ors_the_data_into_the_blocks() -> None:
    dev, backend = make_disk()
    backend.data[20 * BS : 22 * BS] = bytes([0xA5]) * (2 * BS)
    reply = run(dev.execute, h.rw_cdb(op.ORWRITE_16, 20, 2), data_out=bytes([0x5A]) * (2 * BS))
    assert reply.status == GOOD
    assert backend.data[20 * BS : 22 * BS] == b"\xff" * (2 * BS)
    assert backend.data[19 * BS : 20 * BS] == bytes(BS)  # neighbours untouched
    assert backend.data[22 * BS : 23 * BS] == bytes(BS)
    mixed = pattern(1, 9)
    backend.data[30 * BS : 31 * BS] = pattern(1, 4)
    run(dev.execute, h.rw_cdb(op.ORWRITE_16, 30, 1), data_out=mixed)
    expected = bytes(a | b for a, b in zip(pattern(1, 4), mixed, strict=True))
    assert backend.data[30 * BS : 31 * BS] == expected


def test_orwrite_fields_and_refusals() -> None:
    dev, backend = make_disk()
    assert run(dev.execute, h.rw_cdb(op.ORWRITE_16, 0, 0), data_out=b"").status == GOOD
    past = run(dev.execute, h.rw_cdb(op.ORWRITE_16, BLOCKS - 1, 2), data_out=bytes(2 * BS))
    assert past.sense.code == (5, 0x21, 0)
    protect = run(dev.execute, h.rw_cdb(op.ORWRITE_16, 0, 1, byte1=0x20), data_out=bytes(BS))
    assert protect.sense.field == (True, 1, 5)  # ORPROTECT: no protection information
    run(dev.execute, h.rw_cdb(op.ORWRITE_16, 0, 1, byte1=0x18), data_out=bytes(BS))  # DPO+FUA
    assert [c[3] for c in backend.calls if c[0] == "write"] == [True]  # FUA kept
    ro, ro_backend = make_disk(read_only=True)
    refused = run(ro.execute, h.rw_cdb(op.ORWRITE_16, 0, 1), data_out=bytes(BS))
    assert refused.sense.code == (7, 0x27, 0x00)
    assert not [c for c in ro_backend.calls if c[0] == "write"]
