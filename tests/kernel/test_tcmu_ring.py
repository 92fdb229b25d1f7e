"""The ring engine against the real kernel: tcmu-abi.md §1-2 rules, checked live.

A user backstore is created through configfs (nobody answers netlink:
``nl_reply_supported=-1``), attached through UIO with our Ring, and exported through
tcm_loop. The test's handler answers INQUIRY as a *processor* (type 3), so no upper
SCSI driver probes it and every other command comes from ``sg_raw``: the tests
choose each CDB, hold commands, complete them out of order, and look at the raw
entries the kernel wrote. With TCMU_SCST_RECORD=<dir> the raw entries are saved as
fixtures for the unit tests (tests/fixtures/ring/).
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tcmu_scst.command import CHECK_CONDITION, Command, Result, TmrNotice
from tcmu_scst.kernel import abi, uio
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions
from tcmu_scst.kernel.ring import Ring
from tests.kernel.tcmu_rig import export_loop, sg_raw

INVALID_FIELD = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0])
RECORD = os.environ.get("TCMU_SCST_RECORD")


@dataclass
class Raw:
    """One entry as the kernel wrote it, before we touched it."""

    pos: int
    data: bytes


@dataclass
class RawRig:
    """A TCMU device served by a hand-driven Ring on a thread of its own."""

    backstore: UserBackstore
    port: uio.UioDevice
    ring: Ring
    sg: str = ""
    raw: list[Raw] = field(default_factory=list)
    seen: list[Command] = field(default_factory=list)
    tmrs: list[TmrNotice] = field(default_factory=list)
    held: list[Command] = field(default_factory=list)
    hold: Callable[[Command], bool] = lambda cmd: False
    answer: Callable[[Command], Result | None] = lambda cmd: None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def snapshot(self, pos: int, end: int) -> None:
        """Record the entries in ring positions [pos, end): the ones ``fetch`` just took.

        Taken after ``fetch`` (which writes nothing into entries it knows) and before
        any completion (which does), so the bytes are the kernel's. Reading the head
        separately before ``fetch`` lost entries the kernel added in between.
        """
        mv = memoryview(self.port.map)
        while pos != end:
            off = 128 + pos
            length = int.from_bytes(mv[off : off + 4], "little") & ~7
            self.raw.append(Raw(pos, bytes(mv[off : off + length])))
            pos = (pos + length) % self.ring.cmdr_size

    def loop(self) -> None:
        poller = select.poll()
        poller.register(self.port.fileno(), select.POLLIN)
        while not self.stop.is_set():
            self.port.read_event()
            start = self.ring._read_pos
            items = self.ring.fetch()
            self.snapshot(start, self.ring._read_pos)
            for item in items:
                if isinstance(item, TmrNotice):
                    self.tmrs.append(item)
                    continue
                self.seen.append(item)
                if self.hold(item):
                    self.held.append(item)
                    continue
                self.ring.complete(item, self.respond(item), notify=False)
            self.ring.flush()
            poller.poll(50)

    def respond(self, cmd: Command) -> Result:
        custom = self.answer(cmd)
        if custom is not None:
            return custom
        op = cmd.cdb[0]
        if op == 0x12:  # INQUIRY
            if cmd.cdb[1] & 1:
                return Result(CHECK_CONDITION, INVALID_FIELD)
            # peripheral type 3 (processor), SPC-3, 36 bytes
            data = bytes([0x03, 0, 0x05, 0x02, 31, 0, 0, 0x02]) + b"TCMUSCST"
            data += b"RING TEST".ljust(16) + b"0001"
            n = cmd.data.write(data[: int.from_bytes(cmd.cdb[3:5], "big")])
            return Result(data_in_len=n)
        if op == 0x28:  # READ(10): a pattern of the LBA
            lba = int.from_bytes(cmd.cdb[2:6], "big")
            n = cmd.data.write(bytes([lba & 0xFF]) * cmd.data.length)
            return Result(data_in_len=n)
        if op in (0x00, 0x2A):  # TEST UNIT READY, WRITE(10)
            return Result()
        return Result(CHECK_CONDITION, bytes([0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0]))

    def complete_held(self, result: Result | None = None) -> None:
        while self.held:
            cmd = self.held.pop()  # newest first: out of order
            self.ring.complete(cmd, result or self.respond(cmd))


@pytest.fixture
def raw_rig(
    lio_stack: ExitStack, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RawRig]]:
    rigs: list[RawRig] = []
    counter = iter(range(100))

    def make(*, tmr: bool = False, cmd_time_out: int = 30, ring_mb: int | None = None) -> RawRig:
        cfs = Configfs()
        name = f"ringtest{next(counter)}"
        options = UserBackstoreOptions(
            dev_config="ringtest/raw", dev_size=1 << 20, nl_reply_supported=-1,
            max_data_area_mb=4, cmd_ring_size_mb=ring_mb,
        )
        bs = UserBackstore.create(cfs, name, options)
        lio_stack.callback(bs.delete)
        bs.set_cmd_time_out(cmd_time_out)
        if tmr:
            bs.set_attrib("tmr_notification", 1)
        info = uio.find_device(bs.hba_index, name)
        port = uio.UioDevice(info)
        rig = RawRig(bs, port, Ring(port.map, port.notify))
        rig.thread = threading.Thread(target=rig.loop, daemon=True)
        rig.thread.start()

        def teardown() -> None:
            rig.stop.set()
            assert rig.thread is not None
            rig.thread.join(5)
            port.close()

        lio_stack.callback(teardown)
        lun = export_loop(lio_stack, bs, need_block=False)
        assert lun.sg, "no /dev/sg node for the exported processor device"
        rig.sg = lun.sg
        rigs.append(rig)
        return rig

    yield make
    if RECORD:
        out = Path(RECORD)
        out.mkdir(parents=True, exist_ok=True)
        for i, rig in enumerate(rigs):
            for j, raw in enumerate(rig.raw[:40]):
                name = f"{request.node.name}-rig{i}-entry{j:03d}-pos{raw.pos}.bin"
                (out / name).write_bytes(raw.data)


def entry_fields(raw: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(op, length, cmd_id, iov_cnt, bidi_cnt, dif_cnt, cdb_off) of a raw CMD entry."""
    lo, cmd_id, _kf, _uf = abi.HDR.unpack_from(raw, 0)
    iov_cnt, bidi, dif, cdb_off = abi.REQ.unpack_from(raw, 8)
    return lo & 7, lo & ~7, cmd_id, iov_cnt, bidi, dif, cdb_off


def test_mailbox_matches_the_abi(raw_rig: Callable[..., RawRig]) -> None:
    rig = raw_rig()
    mv = memoryview(rig.port.map)
    version, flags, cmdr_off, cmdr_size, _head = abi.MB_HEAD_FIELDS.unpack_from(mv, 0)
    assert version == 2
    assert flags == 0xF  # OOOC | READ_LEN | TMR | KEEP_BUF on 6.1 (tcmu-abi §2.1)
    assert cmdr_off == 128
    assert cmdr_size == (8 << 20) - 128  # default cmd_ring_size_mb = 8
    assert rig.port.info.map_size == (8 << 20) + (4 << 20)  # ring + max_data_area_mb=4
    assert rig.ring.data_off % 4096 == 0
    # the kernel's scan already went through the ring: INQUIRY first
    assert rig.seen and rig.seen[0].cdb[0] == 0x12


def test_read_entry_layout_and_data(raw_rig: Callable[..., RawRig], tmp_path: Path) -> None:
    rig = raw_rig()
    before = len(rig.raw)
    out = tmp_path / "read.bin"
    res = sg_raw(rig.sg, bytes([0x28, 0, 0, 0, 0, 7, 0, 0, 8, 0]), read=4096, out=out)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == bytes([7]) * 4096
    [raw] = [r for r in rig.raw[before:] if r.data[0] & 7 == abi.TCMU_OP_CMD]
    op, length, cmd_id, iov_cnt, bidi, dif, cdb_off = entry_fields(raw.data)
    assert op == abi.TCMU_OP_CMD and 1 <= cmd_id <= 0xFFFF
    assert raw.data[6] == 0  # kflags
    assert raw.data[20:24] == bytes(4)  # the hole before cdb_off
    assert (iov_cnt, bidi, dif) == (1, 0, 0)
    assert length == 112 + 16  # base entry + 10-byte CDB rounded to 16
    assert cdb_off == 128 + raw.pos + 112  # the CDB follows the base part
    assert raw.data[112:122] == bytes([0x28, 0, 0, 0, 0, 7, 0, 0, 8, 0])
    base, ilen = abi.IOVEC.unpack_from(raw.data, 48)
    assert ilen == 4096
    assert base >= rig.ring.data_off and (base - rig.ring.data_off) % 4096 == 0


def test_write_data_is_in_place(raw_rig: Callable[..., RawRig]) -> None:
    rig = raw_rig()
    got: list[bytes] = []

    def capture(cmd: Command) -> Result | None:
        if cmd.cdb[0] == 0x2A:
            got.append(cmd.data.read())
        return None

    rig.answer = capture
    payload = os.urandom(8192)
    res = sg_raw(rig.sg, bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 16, 0]), write=payload)
    assert res.returncode == 0, res.stderr
    assert got == [payload]


def test_read_len_keeps_stale_bytes_away(raw_rig: Callable[..., RawRig], tmp_path: Path) -> None:
    rig = raw_rig()
    # Fill data blocks with 0xAA through a full READ first...
    assert sg_raw(rig.sg, bytes([0x28, 0, 0, 0, 0, 0xAA, 0, 0, 8, 0]), read=4096).returncode == 0
    out = tmp_path / "inq.bin"
    # ...then a 255-byte INQUIRY on the same (reused) block, answered with 36 bytes.
    res = sg_raw(rig.sg, bytes([0x12, 0, 0, 0, 255, 0]), read=255, out=out)
    assert res.returncode == 0, res.stderr
    data = out.read_bytes()
    assert len(data) == 36  # residual 219: only read_len bytes travelled
    assert data[8:16] == b"TCMUSCST"


def test_without_read_len_the_kernel_copies_the_whole_buffer(
    raw_rig: Callable[..., RawRig], tmp_path: Path
) -> None:
    """tcmu-abi §2.5 rule 7, shown live: why the engine always sets READ_LEN."""
    rig = raw_rig()
    assert sg_raw(rig.sg, bytes([0x28, 0, 0, 0, 0, 0xAA, 0, 0, 8, 0]), read=4096).returncode == 0

    def no_read_len(cmd: Command) -> Result | None:
        if cmd.cdb[0] == 0x12 and cmd.cdb[4] == 200:
            cmd.data.write(b"Q" * 10)
            return Result(0, b"", None)  # a handler that forgets data_in_len
        return None

    rig.answer = no_read_len
    out = tmp_path / "inq.bin"
    assert sg_raw(rig.sg, bytes([0x12, 0, 0, 0, 200, 0]), read=200, out=out).returncode == 0
    data = out.read_bytes()
    assert len(data) == 200
    assert data[:10] == b"Q" * 10
    assert data[10:] == bytes([0xAA]) * 190  # stale bytes of the earlier READ


def test_out_of_order_completion(raw_rig: Callable[..., RawRig], tmp_path: Path) -> None:
    rig = raw_rig()
    rig.hold = lambda cmd: cmd.cdb[0] == 0x28
    results: list[subprocess.CompletedProcess[str]] = []
    threads = [
        threading.Thread(
            target=lambda lba=lba: results.append(
                sg_raw(rig.sg, bytes([0x28, 0, 0, 0, 0, lba, 0, 0, 1, 0]), read=512,
                       out=tmp_path / f"r{lba}.bin")
            )
        )
        for lba in (1, 2, 3)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(rig.held) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(rig.held) == 3
    rig.complete_held()  # newest first
    for t in threads:
        t.join(30)
    assert [r.returncode for r in results] == [0, 0, 0]
    for lba in (1, 2, 3):
        assert (tmp_path / f"r{lba}.bin").read_bytes() == bytes([lba]) * 512


def test_check_condition_sense_reaches_the_initiator(raw_rig: Callable[..., RawRig]) -> None:
    rig = raw_rig()
    res = sg_raw(rig.sg, bytes([0xC5]) + bytes(9))  # vendor-specific: refused by the handler
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert "Illegal Request" in text or "ILLEGAL REQUEST" in text.upper()
    assert "operation code" in text.lower()  # 20/00 INVALID COMMAND OPERATION CODE


def test_unknown_cmd_id_breaks_the_ring_and_reset_ring_recovers(
    raw_rig: Callable[..., RawRig],
) -> None:
    rig = raw_rig(cmd_time_out=3)
    rig.hold = lambda cmd: cmd.cdb[0] == 0x00
    tur = threading.Thread(target=lambda: sg_raw(rig.sg, bytes(6), timeout=10))
    tur.start()
    deadline = time.monotonic() + 10
    while not rig.held and time.monotonic() < deadline:
        time.sleep(0.02)
    [cmd] = rig.held
    rig.held.clear()
    # Complete an id the kernel never issued: bypass the engine's guard on purpose.
    bogus = Command(0xFFF0 if cmd.cmd_id != 0xFFF0 else 0xFFF1, b"\x00")
    bogus.generation = rig.ring.generation
    rig.ring._inflight[bogus.cmd_id] = bogus
    rig.ring.complete(bogus, Result())
    tur.join(30)
    # New commands now fail: the ring is broken (tcmu-abi §2.5 rule 5).
    rig.hold = lambda cmd: False
    res = sg_raw(rig.sg, bytes(6), timeout=10)
    assert res.returncode != 0
    # Recovery: block, reset_ring (fails what is in the ring), reset our side, unblock.
    rig.backstore.block()
    rig.backstore.reset_ring(2)
    rig.ring.reset()
    rig.backstore.unblock()
    res = sg_raw(rig.sg, bytes(6), timeout=10)
    assert res.returncode == 0, res.stdout + res.stderr
    assert rig.ring.head == rig.ring.tail


def test_lun_reset_sends_a_tmr_entry(raw_rig: Callable[..., RawRig]) -> None:
    rig = raw_rig(tmr=True)
    rig.hold = lambda cmd: cmd.cdb[0] == 0x28
    reader = threading.Thread(
        target=lambda: sg_raw(rig.sg, bytes([0x28, 0, 0, 0, 0, 9, 0, 0, 1, 0]), read=512)
    )
    reader.start()
    deadline = time.monotonic() + 10
    while not rig.held and time.monotonic() < deadline:
        time.sleep(0.02)
    [held] = rig.held
    reset = subprocess.Popen(["sg_reset", "-d", rig.sg])
    deadline = time.monotonic() + 20
    while not rig.tmrs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rig.tmrs, "no TMR entry arrived"
    assert rig.tmrs[0].tmr_type == abi.TCMU_TMR_LUN_RESET
    assert held.cmd_id in rig.tmrs[0].cmd_ids
    rig.complete_held()  # aborted commands are still completed normally
    assert reset.wait(30) == 0
    reader.join(30)
    tmr_raw = [r for r in rig.raw if r.data[0] & 7 == abi.TCMU_OP_TMR]
    assert tmr_raw and int.from_bytes(tmr_raw[0].data[4:6], "little") == 0  # cmd_id 0


def test_wrap_with_pad_on_a_small_ring(raw_rig: Callable[..., RawRig]) -> None:
    rig = raw_rig(ring_mb=1)
    assert rig.ring.cmdr_size == (1 << 20) - 128
    # 128-byte READ entries: about 8192 per lap; sg_dd issues them one after another.
    res = subprocess.run(
        ["sg_dd", f"if={rig.sg}", "of=/dev/null", "bs=512", "bpt=1", "count=9000"],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr
    pads = [r for r in rig.raw if r.data[0] & 7 == abi.TCMU_OP_PAD]
    assert pads, "no PAD entry: the ring never wrapped"
    pad = pads[0]
    assert pad.pos + len(pad.data) == rig.ring.cmdr_size  # PAD covers up to the end
    assert int.from_bytes(pad.data[4:6], "little") == 0
    assert rig.ring.head == rig.ring.tail
