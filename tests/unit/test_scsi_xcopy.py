"""EXTENDED COPY (LID1), RECEIVE COPY RESULTS and VPD 8Fh of the SBC emulation."""

from __future__ import annotations

import errno
import threading

import pytest

from tcmu_scst.command import BUSY, GOOD
from tcmu_scst.scsi import xcopy
from tcmu_scst.scsi.identity import naa_designator
from tcmu_scst.scsi.sbc import SbcDevice
from tcmu_scst.scsi.xcopy import CopyEndpoint
from tcmu_scst.testing import scsi_harness as h
from tcmu_scst.testing.memory_backend import MemoryBackend
from tcmu_scst.testing.scsi_harness import make_disk, run

BS = 512
BLOCKS = 2048  # 1 MiB disks


def xcopy_cdb(length: int) -> bytes:
    return bytes((0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0)) + length.to_bytes(4, "big") + bytes(2)


def rcr_cdb(sa: int, list_id: int = 0, alloc: int = 1024) -> bytes:
    return bytes((0x84, sa, list_id, 0, 0, 0, 0, 0, 0, 0)) + alloc.to_bytes(4, "big") + bytes(2)


def cscd(device: SbcDevice, *, kind: int = 0xE4, block_length: int = BS, naa: bytes | None = None,
         byte1: int = 0) -> bytes:
    value = naa if naa is not None else naa_designator(device.config)
    designator = bytes((0x01, 0x03, 0, len(value))) + value
    desc = bytes((kind, byte1, 0, 0)) + designator.ljust(24, b"\0")
    return desc + bytes((0,)) + block_length.to_bytes(3, "big")


def segment(src: int, dst: int, blocks: int, src_lba: int, dst_lba: int, *, kind: int = 0x02,
            dc: bool = False) -> bytes:
    return (bytes((kind, 0x02 if dc else 0)) + (24).to_bytes(2, "big") + src.to_bytes(2, "big")
            + dst.to_bytes(2, "big") + bytes(2) + blocks.to_bytes(2, "big")
            + src_lba.to_bytes(8, "big") + dst_lba.to_bytes(8, "big"))


def params(cscds: list[bytes], segments: list[bytes], *, list_id: int = 1, usage: int = 0,
           inline: int = 0) -> bytes:
    targets, segs = b"".join(cscds), b"".join(segments)
    header = (bytes((list_id, usage << 3)) + len(targets).to_bytes(2, "big") + bytes(4)
              + len(segs).to_bytes(4, "big") + inline.to_bytes(4, "big"))
    return header + targets + segs


def send(dev: SbcDevice, plist: bytes) -> h.Reply:
    return run(dev.execute, xcopy_cdb(len(plist)), plist)


def fill(backend: MemoryBackend, lba: int, blocks: int, byte: int) -> None:
    backend.data[lba * BS : (lba + blocks) * BS] = bytes([byte]) * (blocks * BS)


class TwoDevices:
    """A scope over two disks, with a switch for the access rule."""

    def __init__(self, *devices: SbcDevice) -> None:
        self.devices = devices
        self.allowed = True

    def resolve(self, designator: bytes) -> CopyEndpoint | None:
        return next((d for d in self.devices if d.copy_designator() == designator), None)

    def may_copy(self, origin: CopyEndpoint, other: CopyEndpoint) -> bool:
        return self.allowed


def test_copy_within_one_lun_is_byte_identical_and_held_status_is_returned_once() -> None:
    dev, backend = make_disk()
    fill(backend, 0, 300, 0x41)
    reply = send(dev, params([cscd(dev)], [segment(0, 0, 300, 0, BLOCKS - 300)]))
    assert reply.status == GOOD
    assert backend.data[(BLOCKS - 300) * BS :] == bytes([0x41]) * (300 * BS)
    status = run(dev.execute, rcr_cdb(0x00, 1), in_len=64)
    assert status.status == GOOD
    assert status.data[4] == xcopy.STATUS_DONE and status.data[5:7] == b"\x00\x01"
    assert int.from_bytes(status.data[8:12], "big") == 300 * BS
    again = run(dev.execute, rcr_cdb(0x00, 1), in_len=64)
    assert again.sense.code == (0x05, 0x24, 0x00) and again.sense.field == (True, 2, 7)


def test_zero_parameter_list_length_is_good_and_list_id_usage_11b_holds_nothing() -> None:
    dev, backend = make_disk()
    assert run(dev.execute, xcopy_cdb(0)).status == GOOD
    fill(backend, 0, 8, 0x42)
    assert send(dev, params([cscd(dev)], [segment(0, 0, 8, 0, 100)], usage=3)).status == GOOD
    assert backend.data[100 * BS : 108 * BS] == bytes([0x42]) * (8 * BS)
    assert run(dev.execute, rcr_cdb(0x00, 1), in_len=64).sense.asc == 0x24


def test_overlapping_copy_forward_reads_the_source_before_overwriting_it() -> None:
    dev, backend = make_disk()
    original = bytes(range(256)) * (BS * 4000 // 256)
    backend.data[: len(original)] = original
    xcopy.CHUNK, saved = 4 * BS, xcopy.CHUNK  # several chunks
    try:
        assert send(dev, params([cscd(dev)], [segment(0, 0, 3000, 0, 10)], usage=3)).status == GOOD
    finally:
        xcopy.CHUNK = saved
    assert backend.data[10 * BS : 3010 * BS] == original[: 3000 * BS]


def test_copy_between_two_luns_needs_the_scope_to_allow_it() -> None:
    a, a_data = make_disk(name="a")
    b, b_data = make_disk(name="b")
    scope = TwoDevices(a, b)
    a.copies.scope = scope
    fill(a_data, 5, 16, 0x55)
    plist = params([cscd(a), cscd(b)], [segment(0, 1, 16, 5, 40)], usage=3)
    assert send(a, plist).status == GOOD
    assert b_data.data[40 * BS : 56 * BS] == bytes([0x55]) * (16 * BS)
    scope.allowed = False
    fill(a_data, 5, 16, 0x66)
    refused = send(a, plist)
    assert refused.sense.code == (0x0A, 0x08, 0x04)  # COPY ABORTED, UNREACHABLE COPY TARGET
    assert b_data.data[40 * BS : 56 * BS] == bytes([0x55]) * (16 * BS)
    # Without a scope (no daemon) another LU is unknown: the same answer.
    b.copies.scope = xcopy.SelfScope(b)
    assert send(b, params([cscd(b), cscd(a)], [segment(1, 0, 1, 0, 0)])).sense.code == (
        0x0A, 0x08, 0x04)


def test_unknown_designator_is_unreachable_and_names_the_segment() -> None:
    dev, _ = make_disk()
    plist = params([cscd(dev), cscd(dev, naa=bytes.fromhex("6001405" + "0" * 25))],
                   [segment(0, 0, 1, 0, 1), segment(0, 1, 1, 0, 2)])
    reply = send(dev, plist)
    assert reply.sense.code == (0x0A, 0x08, 0x04)
    assert reply.result.sense[8:12] == (1).to_bytes(4, "big")  # COMMAND-SPECIFIC: segment 1
    assert reply.sense.field == (False, 16 + 64 + 28 + 6, None)  # its DESTINATION INDEX
    status = run(dev.execute, rcr_cdb(0x00, 1), in_len=64)
    assert status.data[4] == xcopy.STATUS_FAILED and status.data[5:7] == b"\x00\x01"


@pytest.mark.parametrize(("plist_cut", "code"), [
    (1, (0x05, 0x1A, 0x00)),  # truncated segment descriptor
    (29, (0x05, 0x1A, 0x00)),  # truncated target descriptor
])
def test_truncated_parameter_list_is_a_length_error(plist_cut: int, code: tuple[int, int, int]
                                                    ) -> None:
    dev, backend = make_disk()
    plist = params([cscd(dev)], [segment(0, 0, 1, 0, 1)])[:-plist_cut]
    assert send(dev, plist).sense.code == code
    assert not [c for c in backend.calls if c[0] == "write_bytes"]


def test_descriptor_limits_match_operating_parameters() -> None:
    dev, _ = make_disk()
    op = run(dev.execute, rcr_cdb(0x03), in_len=1024)
    assert op.status == GOOD
    data = op.data
    assert int.from_bytes(data[0:4], "big") == len(data) - 4
    max_cscd = int.from_bytes(data[8:10], "big")
    max_seg = int.from_bytes(data[10:12], "big")
    max_list = int.from_bytes(data[12:16], "big")
    assert (max_cscd, max_seg, max_list) == (8, 64, 8 * 32 + 64 * 28)
    assert int.from_bytes(data[16:20], "big") == 0xFFFF * BS
    assert data[43:] == bytes((2, 0x02, 0xE4))
    assert int.from_bytes(data[34:36], "big") == data[36] == 1  # concurrent copies
    too_many_targets = params([cscd(dev)] * (max_cscd + 1), [segment(0, 0, 1, 0, 1)])
    assert send(dev, too_many_targets).sense.code == (0x05, 0x26, 0x06)
    too_many_segments = params([cscd(dev)], [segment(0, 0, 1, 0, 1)] * (max_seg + 1))
    assert send(dev, too_many_segments).sense.code == (0x05, 0x26, 0x08)
    too_long = params([cscd(dev)] * (max_cscd + 1), [segment(0, 0, 1, 0, 1)] * (max_seg + 1))
    assert send(dev, too_long).sense.code == (0x05, 0x1A, 0x00)


def test_unsupported_descriptor_types_point_at_the_descriptor() -> None:
    dev, _ = make_disk()
    fc = send(dev, params([cscd(dev, kind=0xE0)], [segment(0, 0, 1, 0, 1)]))
    assert fc.sense.code == (0x05, 0x26, 0x07) and fc.sense.field == (False, 16, 7)
    stream = send(dev, params([cscd(dev)], [segment(0, 0, 1, 0, 1, kind=0x03)]))
    assert stream.sense.code == (0x05, 0x26, 0x09) and stream.sense.field == (False, 48, 7)
    inline = send(dev, params([cscd(dev)], [segment(0, 0, 1, 0, 1)], inline=4) + bytes(4))
    assert inline.sense.code == (0x05, 0x26, 0x00)
    reserved_usage = send(dev, params([cscd(dev)], [segment(0, 0, 1, 0, 1)], usage=1))
    assert reserved_usage.sense.code == (0x05, 0x26, 0x00)


def test_reserved_lu_id_type_is_ignored_as_spc4_says() -> None:
    dev, _ = make_disk()
    assert send(dev, params([cscd(dev, byte1=0x80)], [segment(0, 0, 8, 0, 64)])).status == GOOD


def test_wrong_disk_block_length_is_refused_before_copying() -> None:
    dev, _backend = make_disk()
    reply = send(dev, params([cscd(dev, block_length=4096)], [segment(0, 0, 1, 0, 1)]))
    assert reply.sense.code == (0x05, 0x26, 0x00) and reply.sense.field == (False, 16 + 29, 7)


def test_range_errors_are_copy_aborted_with_a_pointer_to_the_lba() -> None:
    dev, backend = make_disk()
    reply = send(dev, params([cscd(dev)], [segment(0, 0, 2048, 0, BLOCKS - 1)]))
    assert reply.sense.code == (0x0A, 0x00, 0x00)
    assert reply.sense.field == (False, 48 + 20, None)
    bad_index = send(dev, params([cscd(dev)], [segment(0, 1, 8, 0, 64)]))
    assert bad_index.sense.code == (0x0A, 0x08, 0x04)
    assert not [c for c in backend.calls if c[0] == "write_bytes"]


def test_write_protected_destination_and_backend_errors_abort_the_copy() -> None:
    dev, _backend = make_disk(read_only=True)
    reply = send(dev, params([cscd(dev)], [segment(0, 0, 8, 0, 64)]))
    assert reply.sense.code == (0x0A, 0x27, 0x00)
    dev2, backend2 = make_disk()
    backend2.fail("read_bytes", errno.EIO)
    assert send(dev2, params([cscd(dev2)], [segment(0, 0, 8, 0, 64)])).sense.code == (
        0x0A, 0x11, 0x00)


def test_duplicate_list_id_of_a_running_copy_is_operation_in_progress() -> None:
    dev, backend = make_disk()
    entered, release = threading.Event(), threading.Event()
    original = backend.read_bytes

    def slow_read(offset: int, length: int) -> bytes:
        entered.set()
        release.wait(5)
        return original(offset, length)

    backend.read_bytes = slow_read  # type: ignore[method-assign]
    plist = params([cscd(dev)], [segment(0, 0, 8, 0, 64)], list_id=7)
    first: list[h.Reply] = []
    worker = threading.Thread(target=lambda: first.append(send(dev, plist)))
    worker.start()
    assert entered.wait(5)
    in_progress = run(dev.execute, rcr_cdb(0x00, 7), in_len=64)
    assert in_progress.data[4] == xcopy.STATUS_IN_PROGRESS
    assert send(dev, plist).sense.code == (0x05, 0x00, 0x16)
    other = params([cscd(dev)], [segment(0, 0, 8, 0, 128)], list_id=8)
    assert send(dev, other).status == BUSY  # one copy at a time keeps a worker for I/O
    release.set()
    worker.join(5)
    assert first[0].status == GOOD


def test_abort_task_stops_a_copy_between_chunks() -> None:
    dev, backend = make_disk()
    original = backend.read_bytes
    reads: list[int] = []

    def read_then_abort(offset: int, length: int) -> bytes:
        reads.append(offset)
        dev.abort_commands((1,))  # the harness's commands carry cmd_id 1
        return original(offset, length)

    backend.read_bytes = read_then_abort  # type: ignore[method-assign]
    xcopy.CHUNK, saved = 8 * BS, xcopy.CHUNK
    try:
        reply = send(dev, params([cscd(dev)], [segment(0, 0, 64, 0, 512)], usage=3))
    finally:
        xcopy.CHUNK = saved
    assert reply.sense.key == 0x0B
    assert len(reads) == 1


def test_held_status_expires_and_a_lun_reset_drops_it() -> None:
    dev, _ = make_disk()
    now = [100.0]
    dev.copies.clock = lambda: now[0]
    plist = params([cscd(dev)], [segment(0, 0, 1, 0, 1)], list_id=3)
    assert send(dev, plist).status == GOOD
    now[0] += xcopy.HOLD_SECONDS + 1
    assert run(dev.execute, rcr_cdb(0x00, 3), in_len=64).sense.asc == 0x24
    assert send(dev, plist).status == GOOD
    dev.reset()
    assert run(dev.execute, rcr_cdb(0x00, 3), in_len=64).sense.asc == 0x24


def test_third_party_copy_vpd_page_lists_the_commands_and_limits() -> None:
    dev, _ = make_disk()
    assert run(dev.execute, h.inquiry(), in_len=96).data[5] & 0x08  # 3PC
    supported = run(dev.execute, h.inquiry(page=0x00), in_len=255).data
    assert 0x8F in supported[4:]
    page = run(dev.execute, h.inquiry(page=0x8F), in_len=1024).data
    assert page[1] == 0x8F and int.from_bytes(page[2:4], "big") == len(page) - 4
    descriptors: dict[int, bytes] = {}
    pos = 4
    while pos < len(page):
        kind, length = int.from_bytes(page[pos:pos + 2], "big"), int.from_bytes(
            page[pos + 2:pos + 4], "big")
        assert (length + 4) % 4 == 0
        descriptors[kind] = page[pos + 4 : pos + 4 + length]
        pos += 4 + length
    commands = descriptors[0x0001]
    assert commands[1 : 1 + commands[0]] == bytes((0x83, 1, 0x00, 0x84, 2, 0x00, 0x03))
    assert int.from_bytes(descriptors[0x0008][4:6], "big") == 8
    assert descriptors[0x0004][:3] == bytes((2, 0x02, 0xE4))


def test_rsoc_reports_the_copy_commands_and_refuses_other_service_actions() -> None:
    dev, _ = make_disk()
    one = run(dev.execute, h.rsoc(options=2, opcode=0x83, sa=0x00), in_len=64)
    assert one.status == GOOD and one.data[1] & 0x07 == 0x03  # SUPPORT: supported
    assert run(dev.execute, rcr_cdb(0x01), in_len=64).sense.field == (True, 1, 4)  # RECEIVE DATA
