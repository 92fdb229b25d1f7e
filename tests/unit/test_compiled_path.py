"""The compiled path (tcmu_scst/kernel/_fastring.c) against the pure-Python one.

Every test runs a real VdiskHandler on a real file behind a DeviceRunner, with the
ring emulator playing the kernel (it checks every response slot, READ_LEN and the
data area's canaries). The differential tests serve the same command sequences with
and without the compiled path and require identical answers, bytes and files.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcmu_scst.command import CHECK_CONDITION, GOOD
from tcmu_scst.handlers.vdisk import VdiskHandler, VdiskParams
from tcmu_scst.kernel import fastpath
from tcmu_scst.service import device
from tcmu_scst.service.device import DeviceRunner
from tcmu_scst.testing.compiled import accelerator as build_accelerator
from tcmu_scst.testing.emulator_port import EmulatorPort
from tcmu_scst.testing.ring_emulator import Completion, RingEmulator

MiB = 1 << 20
BLOCKS = 2048  # 1 MiB of 512-byte blocks
TUR = bytes(6)
INQUIRY = bytes([0x12, 0, 0, 0, 36, 0])


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return build_accelerator(tmp_path_factory.mktemp("compiled"))


def rw(op: int, lba: int, blocks: int, byte1: int = 0) -> bytes:
    if op in (0x28, 0x2A):
        return struct.pack(">BBIBHB", op, byte1, lba & 0xFFFFFFFF, 0, blocks & 0xFFFF, 0)
    return struct.pack(">BBQIBB", op, byte1, lba, blocks, 0, 0)


class Rig:
    """A vdisk on its own copy of a file, served by a runner (compiled path or not)."""

    def __init__(self, path: Path, params: VdiskParams, module: ModuleType | None) -> None:
        self.path = path
        self.emu = RingEmulator(cmdr_size=8192, data_size=256 * 1024)
        self.port = EmulatorPort(self.emu)
        self.handler = VdiskHandler(params)
        self.runner = DeviceRunner(self.port, self.handler, threads=2)
        self.runner.accelerator = module
        self.runner.start_workers()

    def serve(self, batch: list[tuple[bytes, bytes, int]]) -> list[Completion]:
        """Submit ``(cdb, data_out, data_in_len)`` commands at once, drain once, wait
        for every answer; the answers in submission order."""
        ids = [self.emu.submit(cdb, out, n) for cdb, out, n in batch]
        self.runner.drain()
        deadline = time.monotonic() + 10
        while self.emu.pending and time.monotonic() < deadline:
            self.emu.handle_completions()
            time.sleep(0.001)
        assert not self.emu.pending, "commands never answered"
        assert not self.emu.problems, self.emu.problems
        by_id = {c.cmd_id: c for c in self.emu.completions[-len(ids):]}
        return [by_id[i] for i in ids]

    def close(self) -> None:
        self.runner.finish()
        self.runner.close()
        self.handler.close()
        self.port.close()


@pytest.fixture
def where(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory on tmpfs (a memory file system: writes never wait, as on the lab's
    benches), unless the test asks for ``"tmp"``: its own directory, where RWF_NOWAIT
    writes may be refused (EAGAIN) and both paths fall back to the workers."""
    shm = Path("/dev/shm")
    if getattr(request, "param", "tmpfs") == "tmp" or not shm.is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="tcmu-scst-compiled-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def disk(where: Path) -> Path:
    path = where / "disk.img"
    path.write_bytes(random.Random(7).randbytes(MiB))
    return path


@contextmanager
def pair(
    directory: Path, disk: Path, module: ModuleType, **mode: bool
) -> Iterator[tuple[Rig, Rig]]:
    """The same file twice: one rig with the compiled path, one without."""
    rigs = []
    for name, accel in (("compiled", module), ("python", None)):
        path = directory / f"{name}.img"
        shutil.copyfile(disk, path)
        # One name: INQUIRY's identifiers derive from it and must be alike.
        rigs.append(Rig(path, VdiskParams(name="disk", filename=str(path), **mode), accel))
    try:
        yield rigs[0], rigs[1]
    finally:
        for rig in rigs:
            rig.close()


def random_batch(rng: random.Random) -> list[tuple[bytes, bytes, int]]:
    """Commands on disjoint extents (so workers' timing cannot change the bytes)."""
    batch: list[tuple[bytes, bytes, int]] = []
    starts = rng.sample(range(0, BLOCKS, 64), 6)
    for start in starts:
        kind = rng.random()
        if kind < 0.1:
            batch.append((rng.choice([TUR, INQUIRY]), b"", 36 if kind < 0.05 else 0))
            continue
        op = rng.choice([0x28, 0x2A, 0x88, 0x8A])
        blocks = rng.choice([1, 2, 8, 16, 63])
        lba = start
        byte1 = 0
        roll = rng.random()
        if roll < 0.08:
            lba = BLOCKS - blocks // 2  # runs off the end: LBA OUT OF RANGE
        elif roll < 0.14:
            blocks = 0
        elif roll < 0.30:
            byte1 = 0x08  # FUA
        elif roll < 0.36:
            byte1 = 0xE0  # RDPROTECT/WRPROTECT: refused without protection information
        want = max(blocks, 1) * 512
        if op & 2:
            short = rng.random() < 0.06  # a Data-Out buffer shorter than the transfer
            data = rng.randbytes(want - 512 if short and want > 512 else want)
            batch.append((rw(op, lba, blocks, byte1), data, 0))
        else:
            extra = rng.choice([0, 0, 512])  # the initiator expects more than it reads
            batch.append((rw(op, lba, blocks, byte1), b"", want + extra))
    return batch


def answer(c: Completion) -> tuple[object, ...]:
    return (c.cdb, c.status, c.sense, c.data_in, c.read_len, c.uflags)


MODES = {
    "write-back": {},
    "write-through": {"write_through": True},
    "nv-cache": {"nv_cache": True},
    "read-only": {"read_only": True},
}


@pytest.mark.parametrize("where", ["tmpfs", "tmp"], indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_compiled_and_python_paths_answer_alike(
    disk: Path, compiled: ModuleType, mode: str
) -> None:
    with pair(disk.parent, disk, compiled, **MODES[mode]) as (fast, slow):
        rng = random.Random(f"differential-{mode}")
        for _ in range(60):  # enough to wrap the 8 KiB ring many times (PAD entries)
            batch = random_batch(rng)
            got, want = fast.serve(batch), slow.serve(batch)
            assert [answer(c) for c in got] == [answer(c) for c in want]
        assert fast.path.read_bytes() == slow.path.read_bytes()
        assert slow.runner.stats.compiled_commands == 0
        # The compiled path took part (and, read-only, served reads only).
        assert fast.runner.stats.compiled_commands >= 20
        assert fast.runner.stats.commands == slow.runner.stats.commands
        assert fast.runner.stats.size_histogram == slow.runner.stats.size_histogram


def test_plain_reads_and_writes_are_answered_in_c_with_read_len(
    disk: Path, compiled: ModuleType
) -> None:
    with pair(disk.parent, disk, compiled) as (fast, _slow):
        base = fast.runner.stats.compiled_commands
        data = os.urandom(4096)
        [w, r] = fast.serve([(rw(0x2A, 8, 8), data, 0), (rw(0x28, 8, 8), b"", 8192)])
        assert fast.runner.stats.compiled_commands == base + 2
        assert (w.status, r.status) == (GOOD, GOOD)
        assert r.read_len == 4096 and r.data_in == data  # not a byte past what was read
        assert fast.path.read_bytes()[8 * 512 : 16 * 512] == data


def test_a_write_due_durable_goes_to_python_and_is_synced_first(
    disk: Path, compiled: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pair(disk.parent, disk, compiled) as (fast, _slow):
        flags: list[int] = []
        real = os.pwritev

        def pwritev(fd: int, views: object, offset: int, f: int = 0) -> int:
            flags.append(f)
            return int(real(fd, views, offset, f))  # type: ignore[arg-type]

        monkeypatch.setattr(os, "pwritev", pwritev)
        [plain] = fast.serve([(rw(0x2A, 0, 1), bytes(512), 0)])
        assert plain.status == GOOD and not flags  # written by C, no sync due
        assert fast.runner.stats.compiled_commands == 1
        [fua] = fast.serve([(rw(0x2A, 0, 1, 0x08), bytes(512), 0)])  # FUA, write-back
        assert fua.status == GOOD
        assert flags and flags[-1] & os.RWF_DSYNC  # durable before GOOD, by Python
        assert fast.runner.stats.compiled_commands == 1


def test_a_pending_unit_attention_keeps_the_compiled_path_out(
    disk: Path, compiled: ModuleType
) -> None:
    with pair(disk.parent, disk, compiled) as (fast, _slow):
        fast.handler.device.notify_resized()  # CAPACITY DATA HAS CHANGED
        [first] = fast.serve([(rw(0x28, 0, 1), b"", 512)])
        assert first.status == CHECK_CONDITION and first.sense[2] & 0xF == 0x6
        assert fast.runner.stats.compiled_commands == 0
        [again] = fast.serve([(rw(0x28, 0, 1), b"", 512)])
        assert again.status == GOOD and fast.runner.stats.compiled_commands == 1


def test_it_stops_at_the_first_other_command_and_python_takes_the_rest(
    disk: Path, compiled: ModuleType
) -> None:
    with pair(disk.parent, disk, compiled) as (fast, _slow):
        base = fast.runner.stats.compiled_commands
        answers = fast.serve([
            (rw(0x28, 0, 1), b"", 512), (INQUIRY, b"", 36), (rw(0x28, 1, 1), b"", 512),
        ])
        assert [a.status for a in answers] == [GOOD] * 3
        assert len(answers[1].data_in) == 36
        assert fast.runner.stats.compiled_commands == base + 1  # the later READ: Python's


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fastpath.ENV_SWITCH, "0")
    assert fastpath._load() is None


def test_arguments_that_do_not_describe_a_ring_are_refused(compiled: ModuleType) -> None:
    ring = bytearray(4096)
    histogram = bytearray(8 * fastpath.HISTOGRAM_LEN)
    with pytest.raises(ValueError, match="do not describe a ring"):
        compiled.serve_plain(ring, 128, 8192, 0, 8, -1, 512, 1, 1, True, True, 0, 1,
                             bytes(10), bytes(16), histogram)  # ring larger than the map
    with pytest.raises(ValueError, match="do not describe a ring"):
        compiled.serve_plain(ring, 128, 1024, 0, 8, -1, 512, 1, 1, True, True, 0, 1,
                             bytes(9), bytes(16), histogram)


@settings(max_examples=300, deadline=None)
@given(content=st.binary(min_size=1024, max_size=1024), head=st.integers(0, 127),
       pos=st.integers(0, 127))
def test_garbage_in_the_ring_is_never_served_nor_read_out_of_bounds(
    compiled: ModuleType, content: bytes, head: int, pos: int
) -> None:
    # A mapping of mailbox + 1 KiB ring + 4 KiB data area; no file to read (fd -1):
    # whatever the entries claim, nothing may be answered, nothing written, and the
    # module must stay inside the mapping (a stray read would crash the test run).
    ring = bytearray(128) + bytearray(content) + bytearray(4096)
    before = bytes(ring)
    histogram = bytearray(8 * fastpath.HISTOGRAM_LEN)
    stop, served, moved = compiled.serve_plain(
        ring, 128, 1024, pos * 8, head * 8, -1, 512, 1 << 20, 2048, True, True, 0, 1 << 20,
        bytes(10), bytes(16), histogram,
    )
    assert served == 0 and moved == 0 and ring == before
    assert 0 <= stop < 1024 and stop % 8 == 0


@pytest.mark.parametrize(("threshold", "notifies"), [(1 << 30, 1), (4096, 2)])
def test_large_rounds_are_answered_before_the_python_batch(
    disk: Path, compiled: ModuleType, monkeypatch: pytest.MonkeyPatch,
    threshold: int, notifies: int,
) -> None:
    # A round of the compiled path that moved FLUSH_AFTER_BYTES or more is notified at
    # once; a smaller one shares the wake-up's single notify with the Python batch.
    monkeypatch.setattr(device, "FLUSH_AFTER_BYTES", threshold)
    with pair(disk.parent, disk, compiled) as (fast, _slow):
        before = fast.emu.notifications
        answers = fast.serve([(rw(0x2A, 0, 8), bytes(4096), 0), (INQUIRY, b"", 36)])
        assert [a.status for a in answers] == [GOOD, GOOD]
        assert fast.runner.stats.compiled_commands == 1
        assert fast.emu.notifications - before == notifies
