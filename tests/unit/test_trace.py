"""SCST trace_level in the daemon: what each bit logs, and how masks reach devices."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcmu_scst.command import CHECK_CONDITION, Command, DataBuffer, Result, TmrNotice
from tcmu_scst.kernel import abi
from tcmu_scst.scsi.sense import SenseError
from tcmu_scst.service import control
from tcmu_scst.service.trace import (
    COMMON_TOKENS,
    ROOT,
    CommandTracer,
    TraceDecorations,
    TraceFlags,
    TraceStore,
    default_mask,
    describe_sense,
    effective_mask,
)

from .test_daemon import Rig, wait_for

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0])
SCSI, BUFF, MINOR, SPECIAL, DEBUG = (
    COMMON_TOKENS[t] for t in ("scsi", "buff", "minor", "special", "debug")
)


def trace_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tcmu_scst.trace"]


def command(cdb: bytes, data: bytes) -> Command:
    return Command(7, cdb, DataBuffer([memoryview(bytearray(data))]))


@pytest.fixture(autouse=True)
def capture(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO, logger="tcmu_scst.trace")
    yield


def test_scsi_traces_arrival_and_completion(caplog: pytest.LogCaptureFixture) -> None:
    tracer = CommandTracer("disk1", TraceFlags.from_mask(SCSI))
    cmd = command(READ10, bytes(512))
    tracer.received(cmd)
    tracer.completed(cmd, Result(data_in_len=512))
    assert trace_lines(caplog) == [
        f"disk1: cmd 7 READ(10) cdb {READ10.hex()} buffer 512",
        "disk1: cmd 7 READ(10) -> GOOD data-in 512",
    ]


def test_buff_dumps_data_out_and_only_the_data_in_produced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracer = CommandTracer("d", TraceFlags.from_mask(SCSI | BUFF))
    write = command(WRITE10, b"\x11\x22\x33\x44" * 128)
    tracer.received(write)
    read = command(READ10, b"\xaa\xbb" + b"\xee" * 510)  # 0xee: stale bytes of the buffer
    tracer.received(read)  # a READ's buffer is not dumped on arrival
    tracer.completed(read, Result(data_in_len=2))
    lines = trace_lines(caplog)
    assert lines[0].endswith("data-out " + " ".join(["11223344"] * 16))
    assert "data-out" not in lines[1] and "ee" not in lines[1].split("cdb")[0]
    assert lines[2] == "d: cmd 7 READ(10) -> GOOD data-in 2 aabb"
    assert "ee" not in lines[2]


def test_minor_traces_failures_only(caplog: pytest.LogCaptureFixture) -> None:
    tracer = CommandTracer("d", TraceFlags.from_mask(MINOR))
    cmd = command(READ10, bytes(512))
    tracer.received(cmd)
    tracer.completed(cmd, Result(data_in_len=512))
    sense = SenseError.lba_out_of_range().sense
    tracer.completed(cmd, Result(CHECK_CONDITION, sense))
    assert trace_lines(caplog) == [
        f"d: cmd 7 READ(10) -> CHECK CONDITION [ILLEGAL REQUEST 21/00] cdb {READ10.hex()}"
    ]


def test_special_traces_task_management(caplog: pytest.LogCaptureFixture) -> None:
    CommandTracer("d", TraceFlags.from_mask(SPECIAL)).tmr(
        TmrNotice(abi.TCMU_TMR_ABORT_TASK, (3, 4))
    )
    CommandTracer("d", TraceFlags.from_mask(0)).tmr(TmrNotice(abi.TCMU_TMR_LUN_RESET, ()))
    assert trace_lines(caplog) == ["d: task management ABORT_TASK: commands 3 4"]


def test_describe_sense_formats() -> None:
    assert describe_sense(bytes([0x72, 0x06, 0x29, 0x00]) + bytes(4)) == "UNIT ATTENTION 29/00"
    assert describe_sense(b"") == "no sense data"
    assert describe_sense(bytes([0x12, 0, 0, 0])).startswith("unparsed sense")


def test_effective_mask_is_core_or_handler_with_scst_defaults() -> None:
    assert effective_mask({}, "vdisk") == default_mask(ROOT) | default_mask("vdisk")
    assert not TraceFlags.from_mask(effective_mask({}, "vdisk")).scsi  # off by default
    levels = {ROOT: 0, "vdisk": SCSI}
    assert TraceFlags.from_mask(effective_mask(levels, "vdisk")).scsi
    assert not TraceFlags.from_mask(effective_mask(levels, "vcdrom")).scsi
    assert TraceFlags.from_mask(effective_mask({ROOT: SCSI, "vcdrom": 0}, "vcdrom")).scsi


def test_decorations_add_pid_function_and_line() -> None:
    deco = TraceDecorations()
    record = logging.LogRecord("x", logging.INFO, "f.py", 42, "hello %s", ("w",), None, "fn")
    deco.flags = TraceFlags(pid=True, function=True, line=True)
    assert deco.filter(record) and deco.filter(record)  # decorated once only
    assert record.getMessage() == f"[{record.process}/{record.threadName} fn:42] hello w"
    plain = logging.LogRecord("x", logging.INFO, "f.py", 42, "hello", None, None, "fn")
    deco.flags = TraceFlags()
    deco.filter(plain)
    assert plain.getMessage() == "hello"


def test_trace_store_rejects_a_damaged_file(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.json")
    assert store.get("vdisk") == default_mask("vdisk")
    store.set("vdisk", SCSI)
    assert store.load() == {"vdisk": SCSI}
    (tmp_path / "t.json").write_text("[1, 2")
    with pytest.raises(Exception, match="delete it to reset"):
        store.load()


# -- the daemon: masks from the file at start and from the shell while running ---------


def submit_read(rig: Rig, minor: int) -> int:
    emu = rig.emulators[minor]
    cid = emu.submit(READ10, data_in_len=512)
    wait_for(lambda: any(c.cmd_id == cid for c in emu.completions))
    return cid


def test_daemon_traces_what_the_file_and_the_shell_ask(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trace_file = tmp_path / "trace_level.json"
    TraceStore(trace_file).set("vdisk", SCSI)
    rig = Rig(tmp_path)
    rig.daemon.trace_file = trace_file
    rig.make_backstore(1, "disk1", "vdisk/x")
    rig.add_uio(0, "tcm-user/1/disk1/vdisk/x")
    rig.start()
    try:
        cid = submit_read(rig, 0)
        lines = trace_lines(caplog)
        assert f"disk1: cmd {cid} READ(10) -> GOOD data-in 7" in lines
        # The shell turns the handler's tracing off and the core's debug on.
        sock = tmp_path / "control.sock"
        control.ControlClient(sock).set_trace_level("vdisk", 0)
        control.ControlClient(sock).set_trace_level(ROOT, DEBUG)
        assert logging.getLogger("tcmu_scst").level == logging.DEBUG
        caplog.clear()
        submit_read(rig, 0)
        time.sleep(0.05)
        assert trace_lines(caplog) == []
        control.ControlClient(sock).set_trace_level(ROOT, 0)
        assert logging.getLogger("tcmu_scst").level == logging.NOTSET  # restored
    finally:
        rig.stop()


def test_daemon_starts_with_scst_defaults_when_the_file_is_damaged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trace_file = tmp_path / "trace_level.json"
    trace_file.write_text("{not json")
    rig = Rig(tmp_path)
    rig.daemon.trace_file = trace_file
    rig.add_uio(0, "tcm-user/1/disk1/vdisk/x")
    rig.make_backstore(1, "disk1", "vdisk/x")
    rig.start()
    try:
        assert "delete it to reset levels" in caplog.text
        assert rig.daemon.devices[(1, "disk1")].runner.tracer is not None  # minor, special
        submit_read(rig, 0)
        assert trace_lines(caplog) == []  # GOOD commands are not traced by default
    finally:
        rig.stop()
