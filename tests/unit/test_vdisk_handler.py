"""VdiskHandler end to end: SCSI CDBs in Command objects through SbcDevice to real files."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tcmu_scst.command import CHECK_CONDITION, GOOD, Command, DataBuffer, Result, TmrNotice
from tcmu_scst.errors import HandlerError
from tcmu_scst.handlers.vdisk import VdiskHandler, VdiskParams, to_dev_config
from tcmu_scst.handlers.vdisk_params import parse_dev_config
from tcmu_scst.kernel import abi

MiB = 1 << 20
DATA_PROTECT = 0x7
UNIT_ATTENTION = 0x6


def make_file(tmp_path: Path, size: int = MiB) -> str:
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def command(cdb: bytes, data: bytes | int = 0) -> Command:
    """A command whose buffer holds ``data`` (Data-Out) or ``data`` zero bytes (Data-In)."""
    buf = bytearray(data)
    return Command(1, cdb, DataBuffer([memoryview(buf)] if buf else []))


def run(handler: VdiskHandler, cmd: Command) -> Result:
    result = handler.handle(cmd)
    assert result is not None
    return result


def sense_key(result: Result) -> tuple[int, int, int]:
    s = result.sense
    if s[0] & 0x7F in (0x72, 0x73):
        return s[1] & 0xF, s[2], s[3]
    return s[2] & 0xF, s[12], s[13]


def settle(handler: VdiskHandler) -> None:
    """Consume pending unit attentions (power on, capacity changed) with TEST UNIT READY."""
    for _ in range(8):
        result = run(handler, command(bytes(6)))
        if result.status == GOOD:
            return
        assert sense_key(result)[0] == UNIT_ATTENTION
    raise AssertionError("TEST UNIT READY never became GOOD")


def read10(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x28, flags, lba, 0, blocks, 0)


def write10(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, flags, lba, 0, blocks, 0)


def read_capacity16() -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0)


def opened(params: VdiskParams) -> VdiskHandler:
    handler = VdiskHandler(params)
    settle(handler)
    return handler


def spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    real: Callable[..., Any] = getattr(os, name)

    def wrapper(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(os, name, wrapper)
    return calls


def test_write_then_read_through_cdbs(tmp_path: Path) -> None:
    path = make_file(tmp_path)
    h = opened(VdiskParams(name="disk1", filename=path))
    data = os.urandom(4 * 512)
    assert run(h, command(write10(8, 4), data)).status == GOOD
    rd = command(read10(8, 4), 4 * 512)
    result = run(h, rd)
    assert result.status == GOOD and rd.data.read() == data
    h.close()
    with open(path, "rb") as f:
        f.seek(8 * 512)
        assert f.read(4 * 512) == data


def test_read_capacity_and_identity(tmp_path: Path) -> None:
    h = opened(VdiskParams(name="disk1", filename=make_file(tmp_path, 8 * MiB), blocksize=4096))
    rc = command(read_capacity16(), 32)
    assert run(h, rc).status == GOOD
    last_lba, block_size = struct.unpack(">QI", rc.data.read(0, 12))
    assert (last_lba, block_size) == (8 * MiB // 4096 - 1, 4096)
    inq = command(bytes([0x12, 0, 0, 0, 96, 0]), 96)
    assert run(h, inq).status == GOOD
    assert inq.data.read(8, 8) == b"SCST_FIO"
    assert inq.data.read(16, 16).rstrip() == b"disk1"
    vpd80 = command(bytes([0x12, 1, 0x80, 0, 64, 0]), 64)
    assert run(h, vpd80).status == GOOD
    length = vpd80.data.read(3, 1)[0]
    assert vpd80.data.read(4, length).rstrip(b" \0").decode() == h.params.effective_usn
    h.close()


def test_inline_is_for_commands_without_io(tmp_path: Path) -> None:
    h = opened(VdiskParams(name="d", filename=make_file(tmp_path)))
    assert h.is_inline(command(bytes([0x12, 0, 0, 0, 36, 0]), 36))
    assert not h.is_inline(command(read10(0, 1), 512))
    assert not h.is_inline(command(write10(0, 1), bytes(512)))
    h.close()


def test_nullio_reads_zeros_into_a_dirty_buffer() -> None:
    h = opened(VdiskParams(name="n", nullio=True, size=64 * MiB))
    assert run(h, command(write10(0, 2), b"\xab" * 1024)).status == GOOD
    rd = Command(2, read10(0, 2), DataBuffer([memoryview(bytearray(b"\xff" * 1024))]))
    result = run(h, rd)
    assert result.status == GOOD and rd.data.read() == bytes(1024)
    assert h.size == 64 * MiB
    h.close()


def test_read_only_refuses_writes_with_data_protect(tmp_path: Path) -> None:
    h = opened(VdiskParams(name="ro", filename=make_file(tmp_path), read_only=True))
    result = run(h, command(write10(0, 1), bytes(512)))
    assert result.status == CHECK_CONDITION
    assert sense_key(result)[:2] == (DATA_PROTECT, 0x27)
    h.close()


def test_unmap_punches_a_hole_on_a_thin_device(tmp_path: Path) -> None:
    path = make_file(tmp_path, 4 * MiB)
    h = opened(VdiskParams(name="tp", filename=path, thin_provisioned=True))
    blocks = 2 * MiB // 512
    assert run(h, command(write10(0, 2048), os.urandom(MiB))).status == GOOD
    assert run(h, command(write10(2048, 2048), os.urandom(MiB))).status == GOOD
    run(h, command(bytes([0x35]) + bytes(9)))  # SYNCHRONIZE CACHE(10)
    before = os.stat(path).st_blocks
    descriptor = struct.pack(">QI4x", 0, blocks)
    plist = struct.pack(">HH4x", 6 + len(descriptor), len(descriptor)) + descriptor
    unmap = struct.pack(">BB4xBHB", 0x42, 0, 0, len(plist), 0)
    assert run(h, command(unmap, plist)).status == GOOD
    assert os.stat(path).st_blocks < before
    rd = command(read10(0, 8), b"\xcc" * 4096)
    assert run(h, rd).status == GOOD and rd.data.read() == bytes(4096)
    h.close()


def test_synchronize_cache_syncs_unless_nv_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_cache = bytes([0x35]) + bytes(9)
    h = opened(VdiskParams(name="wb", filename=make_file(tmp_path)))
    syncs = spy(monkeypatch, "fdatasync")
    assert run(h, command(sync_cache)).status == GOOD
    assert len(syncs) == 1
    h.close()
    nv = opened(VdiskParams(name="nv", filename=str(tmp_path / "disk.img"), nv_cache=True))
    assert run(nv, command(sync_cache)).status == GOOD
    assert len(syncs) == 1
    nv.close()


def test_fua_write_is_durable_before_good(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = opened(VdiskParams(name="fua", filename=make_file(tmp_path)))
    calls = spy(monkeypatch, "pwritev")
    assert run(h, command(write10(0, 1, flags=0x08), bytes(512))).status == GOOD  # FUA bit
    assert calls and all(call[3] & os.RWF_DSYNC for call in calls)
    h.close()


def test_resync_size_after_growing_the_file(tmp_path: Path) -> None:
    path = make_file(tmp_path, MiB)
    h = opened(VdiskParams(name="grow", filename=path))
    os.truncate(path, 3 * MiB)
    assert h.resync_size() == 3 * MiB
    settle(h)  # CAPACITY DATA HAS CHANGED, if the emulation reports it
    rc = command(read_capacity16(), 32)
    assert run(h, rc).status == GOOD
    assert struct.unpack(">Q", rc.data.read(0, 8))[0] == 3 * MiB // 512 - 1
    h.close()


def test_from_dev_config_and_proc_read_line(tmp_path: Path) -> None:
    params = VdiskParams(name="dc", filename=make_file(tmp_path, 2 * MiB), write_through=True)
    h = VdiskHandler.from_dev_config(to_dev_config(params))
    assert h.params == params
    assert h.mode_names() == "FILEIO WRITE_THROUGH"
    assert h.proc_read_line().split() == ["dc", "2", "512", "WT", params.filename]
    h.close()
    h.close()  # idempotent


def test_open_failure_leaves_no_descriptor_behind(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(HandlerError, match=r"backing file .* does not exist"):
        VdiskHandler(VdiskParams(name="x", filename=str(tmp_path / "missing")))
    with pytest.raises(HandlerError, match="smaller than one 512-byte block"):
        VdiskHandler(VdiskParams(name="x", filename=make_file(tmp_path, 100)))
    assert len(os.listdir("/proc/self/fd")) == before


def ring_buffer(data: bytes | int, split: int) -> DataBuffer:
    """Two page-aligned iovecs like the ring's data area, cut at ``split`` bytes."""
    raw = bytes(data) if isinstance(data, int) else data
    first = memoryview(mmap.mmap(-1, max(split, 1)))[:split]
    second = memoryview(mmap.mmap(-1, max(len(raw) - split, 1)))[: len(raw) - split]
    first[:] = raw[:split]
    second[:] = raw[split:]
    return DataBuffer([first, second])


MODES: dict[str, tuple[str, ...]] = {
    "fileio": (),
    "o_direct": ("o_direct",),
    "write_through": ("write_through",),
    "nv_cache": ("nv_cache",),
    "o_direct_wt": ("o_direct", "write_through"),
}


@pytest.mark.parametrize("block_size", [512, 1024, 2048, 4096])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_and_block_size_stores_the_data(
    tmp_path: Path, mode: str, block_size: int
) -> None:
    path = make_file(tmp_path, MiB)
    params = VdiskParams(name="m", filename=path, blocksize=block_size)
    for flag in MODES[mode]:
        setattr(params, flag, True)
    h = opened(params)
    data = os.urandom(3 * block_size)
    for split in (block_size, 4096, 100):  # aligned, page-sized, odd iovec boundaries
        if split >= len(data):
            continue
        wr = Command(1, write10(5, 3), ring_buffer(data, split))
        assert run(h, wr).status == GOOD
        rd = Command(2, read10(5, 3), ring_buffer(len(data), split))
        result = run(h, rd)
        assert result.status == GOOD and rd.data.read() == data
        data = os.urandom(3 * block_size)
    h.close()
    with open(path, "rb") as f:
        f.seek(5 * block_size)
        stored = f.read(3 * block_size)
    rd_again = opened(VdiskParams(name="m", filename=path, blocksize=block_size))
    check = command(read10(5, 3), 3 * block_size)
    assert run(rd_again, check).status == GOOD and check.data.read() == stored
    rd_again.close()


def test_write_same_unmap_and_get_lba_status_on_a_thin_device(tmp_path: Path) -> None:
    path = make_file(tmp_path, 4 * MiB)
    h = opened(VdiskParams(name="tp", filename=path, thin_provisioned=True))
    assert run(h, command(write10(0, 2048), os.urandom(MiB))).status == GOOD
    # WRITE SAME(16), UNMAP bit, 1024 blocks of zeros from LBA 1024.
    ws = struct.pack(">BBQIBB", 0x93, 0x08, 1024, 1024, 0, 0)
    assert run(h, command(ws, bytes(512))).status == GOOD
    rd = command(read10(1024, 16), b"\x99" * 8192)
    assert run(h, rd).status == GOOD and rd.data.read() == bytes(8192)
    # GET LBA STATUS from LBA 1024: the first descriptor is deallocated (status 1).
    gls = struct.pack(">BBQIBB", 0x9E, 0x12, 1024, 64, 0, 0)
    status = command(gls, 64)
    assert run(h, status).status == GOOD
    lba, blocks, provisioning = struct.unpack(">QIB", status.data.read(8, 13))
    assert lba == 1024 and blocks >= 1024 and provisioning & 0xF == 1
    h.close()


def test_nullio_default_size_exceeds_read_capacity_10() -> None:
    h = opened(VdiskParams(name="big", nullio=True))
    rc10 = command(bytes([0x25]) + bytes(9), 8)
    assert run(h, rc10).status == GOOD
    assert struct.unpack(">II", rc10.data.read()) == (0xFFFFFFFF, 512)
    rc16 = command(read_capacity16(), 32)
    assert run(h, rc16).status == GOOD
    assert struct.unpack(">Q", rc16.data.read(0, 8))[0] == 5 * 2**40 // 2 // 512 - 1
    h.close()


def test_the_daemon_registry_opens_vdisk_devices(tmp_path: Path) -> None:
    from tcmu_scst.service.registry import open_handler

    params = VdiskParams(name="reg", filename=make_file(tmp_path), thin_provisioned=True)
    handler = open_handler(to_dev_config(params))
    assert isinstance(handler, VdiskHandler) and handler.params == params
    handler.close()


@pytest.mark.parametrize("tmr", [abi.TCMU_TMR_LUN_RESET, abi.TCMU_TMR_TARGET_WARM_RESET])
def test_a_reset_notification_clears_prevent_medium_removal(tmp_path: Path, tmr: int) -> None:
    h = opened(VdiskParams(name="rm1", filename=make_file(tmp_path), removable=True))
    prevent = bytes((0x1E, 0, 0, 0, 1, 0))
    eject = bytes((0x1B, 0, 0, 0, 0x02, 0))
    assert run(h, command(prevent)).status == GOOD
    assert sense_key(run(h, command(eject)))[1:] == (0x53, 0x02)
    h.on_tmr(TmrNotice(abi.TCMU_TMR_ABORT_TASK, (3,)))  # an abort is no reset
    assert sense_key(run(h, command(eject)))[1:] == (0x53, 0x02)
    h.on_tmr(TmrNotice(tmr, ()))
    assert run(h, command(eject)).status == GOOD
    h.close()


@pytest.mark.parametrize(
    ("spins", "physical", "asked_rotational", "rotational", "lbppbe"),
    [
        (False, 4096, True, False, 3),  # an SSD with 4 KiB sectors behind 512-byte blocks
        (True, 512, True, True, 0),  # a plain disk
        (True, 4096, False, False, 3),  # the user's non-rotational stays
        (True, 1024, True, True, 1),
    ],
)
def test_block_device_geometry_follows_the_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spins: bool, physical: int,
    asked_rotational: bool, rotational: bool, lbppbe: int,
) -> None:
    from tcmu_scst.handlers import _vdisk_sys as sysio
    from tcmu_scst.handlers._vdisk_file import FileBackend, FileMode
    from tcmu_scst.handlers.vdisk import block_device_config

    backend = FileBackend(make_file(tmp_path), 512, FileMode())
    backend.is_block_device = True  # stands in for /dev/sdX: only the ioctls are faked
    monkeypatch.setattr(sysio, "block_device_rotational", lambda fd: spins)
    monkeypatch.setattr(sysio, "block_device_physical_block_size", lambda fd: physical)
    params = VdiskParams(name="geo", filename="/dev/sdx", rotational=asked_rotational)
    config = block_device_config(params, backend)
    assert (config.rotational, config.lbppbe) == (rotational, lbppbe)
    backend.close()


def test_block_device_geometry_unreadable_keeps_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tcmu_scst.handlers import _vdisk_sys as sysio
    from tcmu_scst.handlers._vdisk_file import FileBackend, FileMode
    from tcmu_scst.handlers.vdisk import block_device_config

    backend = FileBackend(make_file(tmp_path), 512, FileMode())
    backend.is_block_device = True

    def refuse(fd: int) -> bool:
        raise OSError(25, "Inappropriate ioctl for device")

    monkeypatch.setattr(sysio, "block_device_rotational", refuse)
    config = block_device_config(VdiskParams(name="geo", filename="/dev/sdx"), backend)
    assert (config.rotational, config.lbppbe) == (True, 0)
    assert "cannot read /dev/sdx's geometry" in caplog.text
    (tmp_path / "x").mkdir()
    regular = FileBackend(make_file(tmp_path / "x"), 512, FileMode())  # a file: no ioctls
    assert block_device_config(VdiskParams(name="f", filename="f"), regular).lbppbe == 0
    regular.close()
    backend.close()


def test_a_dummy_nullio_device_says_no_device_in_inquiry() -> None:
    """SCST's vdisk_nullio ``dummy 1``: PERIPHERAL QUALIFIER 001b, type 1Fh (also in the
    VPD pages), so an initiator skips the LUN; without it, a connected disk."""
    params = parse_dev_config(to_dev_config(VdiskParams(name="ph", nullio=True, dummy=True)))
    assert params.dummy
    for dummy, first in ((True, 0x3F), (False, 0x00)):
        h = opened(VdiskParams(name="ph", nullio=True, dummy=dummy))
        inq = command(bytes([0x12, 0, 0, 0, 36, 0]), 36)
        assert run(h, inq).status == GOOD and inq.data.read(0, 1)[0] == first
        vpd80 = command(bytes([0x12, 1, 0x80, 0, 64, 0]), 64)
        assert run(h, vpd80).status == GOOD and vpd80.data.read(0, 1)[0] == first
        h.close()


def test_dummy_is_for_nullio_only(tmp_path: Path) -> None:
    with pytest.raises(HandlerError, match="dummy applies to NULLIO only"):
        VdiskParams(name="d", filename=make_file(tmp_path), dummy=True).validate()
