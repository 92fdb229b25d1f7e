"""The emulator and the engine against ring entries recorded from the real kernel.

tests/fixtures/ring/README.md says where each file comes from. The emulator must
produce the same bytes for the same commands (same ring size, so the same data-area
offset), and the engine must parse the real bytes to the right command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.command import Command, Result, TmrNotice
from tcmu_scst.kernel import abi
from tcmu_scst.kernel.ring import Ring
from tcmu_scst.testing.ring_emulator import RingEmulator

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ring"
RING_8M = (8 << 20) - 128  # the kernel default: data area at 0x800000

INQUIRY36 = bytes([0x12, 0, 0, 0, 36, 0])
INQUIRY_VPD0 = bytes([0x12, 1, 0, 0, 4, 0])
READ_LBA7 = bytes([0x28, 0, 0, 0, 0, 7, 0, 0, 8, 0])
READ_LBA9 = bytes([0x28, 0, 0, 0, 0, 9, 0, 0, 1, 0])
WRITE_16 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 16, 0])


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def entry_at(emu: RingEmulator, pos: int, length: int) -> bytes:
    return bytes(emu.mv[128 + pos : 128 + pos + length])


@pytest.fixture
def emu() -> RingEmulator:
    e = RingEmulator(cmdr_size=RING_8M, data_size=64 * 1024)
    assert e.data_off == 0x800000
    return e


def serve(emu: RingEmulator, ring: Ring) -> list[Command]:
    cmds = [i for i in ring.fetch() if isinstance(i, Command)]
    return cmds


def test_emulator_writes_the_kernels_bytes_for_the_scan_and_a_read(emu: RingEmulator) -> None:
    ring = Ring(emu.map, emu.notify)
    for cdb, data_in, name, pos in [
        (INQUIRY36, 36, "inquiry36-pos0.bin", 0),
        (INQUIRY_VPD0, 4, "inquiry-vpd0-alloc4-pos120.bin", 120),
        (READ_LBA7, 4096, "read10-lba7-8blocks-pos240.bin", 240),
    ]:
        emu.submit(cdb, data_in_len=data_in)
        want = fixture(name)
        assert entry_at(emu, pos, len(want)) == want, name
        [cmd] = serve(emu, ring)
        assert cmd.cmd_id == 1 and cmd.cdb == cdb
        ring.complete(cmd, Result(data_in_len=0))


def test_emulator_merges_blocks_like_the_kernel(emu: RingEmulator) -> None:
    ring = Ring(emu.map, emu.notify)
    for cdb, n in ((INQUIRY36, 36), (INQUIRY_VPD0, 4)):
        emu.submit(cdb, data_in_len=n)
        ring.complete(serve(emu, ring)[0], Result(data_in_len=0))
    emu.submit(WRITE_16, data_out=bytes(8192))
    want = fixture("write10-16blocks-pos240.bin")
    assert entry_at(emu, 240, len(want)) == want


def test_emulator_tmr_entry_matches(emu: RingEmulator) -> None:
    ring = Ring(emu.map, emu.notify)
    for cdb, n in ((INQUIRY36, 36), (INQUIRY_VPD0, 4)):
        emu.submit(cdb, data_in_len=n)
        ring.complete(serve(emu, ring)[0], Result(data_in_len=0))
    held = emu.submit(READ_LBA9, data_in_len=512)
    assert entry_at(emu, 240, 128) == fixture("read10-lba9-1block-pos240.bin")
    emu.submit_tmr(abi.TCMU_TMR_LUN_RESET, [held])
    assert entry_at(emu, 368, 40) == fixture("tmr-lun-reset-pos368.bin")


def test_engine_parses_real_entries() -> None:
    emu = RingEmulator(cmdr_size=RING_8M, data_size=64 * 1024)
    ring = Ring(emu.map, emu.notify)
    # Lay the real entries into the ring, then move the head past them.
    pos = 0
    for name in (
        "inquiry36-pos0.bin",
        "inquiry-vpd0-alloc4-pos120.bin",
        "read10-lba9-1block-pos240.bin",
        "tmr-lun-reset-pos368.bin",
    ):
        raw = fixture(name)
        emu.mv[128 + pos : 128 + pos + len(raw)] = raw
        pos += len(raw)
    abi.MB_CMD_HEAD.pack_into(emu.mv, abi.OFF_MB_CMD_HEAD, pos)
    items = ring.fetch()
    assert [type(i).__name__ for i in items] == ["Command", "Command", "Command", "TmrNotice"]
    inq, vpd, read, tmr = items
    assert isinstance(inq, Command) and inq.cdb == INQUIRY36 and inq.data.length == 36
    assert isinstance(vpd, Command) and vpd.cdb == INQUIRY_VPD0 and vpd.data.length == 4
    assert isinstance(read, Command) and read.cdb == READ_LBA9 and read.data.length == 512
    assert isinstance(tmr, TmrNotice)
    assert (tmr.tmr_type, tmr.cmd_ids) == (abi.TCMU_TMR_LUN_RESET, (1,))
