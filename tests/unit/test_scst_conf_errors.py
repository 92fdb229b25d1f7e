"""``config check``: every error of a file in one run, and work linear in the file's size."""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tcmu_scst.scst import commands
from tcmu_scst.testing.fake_configfs import FakeConfigfs
from tests.unit.test_scst_cli import fake, run

__all__ = ["fake"]  # the fixture, used by name


def check(tmp_path: Path, path: Path) -> int:
    return run(tmp_path, "check", str(path))


def test_every_error_of_the_file_one_line_each(
    fake: FakeConfigfs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "short.img").write_bytes(b"\0" * 1000)
    path = tmp_path / "scst.conf"
    path.write_text(
        "HANDLER vdisk_fileio {\n"  # 1
        " DEVICE gone {\n"  # 2
        f"  filename {tmp_path}/missing.img\n"  # 3
        " }\n"  # 4
        " DEVICE short {\n"  # 5
        f"  filename {tmp_path}/short.img\n"  # 6
        " }\n"  # 7
        " DEVICE twice {\n"  # 8
        "  filename /x\n"  # 9
        "  filename /y\n"  # 10
        " }\n"  # 11
        "}\n"  # 12
        "bogus 1\n"  # 13
        "TARGET_DRIVER iscsi {\n"  # 14
        " TARGET iqn.2024-01.org.test:t {\n"  # 15
        '  IncomingUser "joe\n'  # 16
        "  LUN x gone\n"  # 17
        "  LUN 1 nosuch\n"  # 18
        "  GROUP g {\n"  # 19
        "   hidden 1\n"  # 20
        "  }\n"  # 21
        " }\n"  # 22
        "}\n"  # 23
        "}\n"  # 24
    )
    assert check(tmp_path, path) == 1
    captured = capsys.readouterr()
    prefix = "tcmu-scst config: error: "
    lines = captured.err.splitlines()
    assert all(line.startswith(prefix) for line in lines)
    assert [line.removeprefix(prefix) for line in lines] == [
        f"{path}:2: device gone: backing file {tmp_path}/missing.img does not exist; create "
        f"it (e.g. truncate -s 1G {tmp_path}/missing.img) or fix the path",
        f"{path}:5: device short: backing file {tmp_path}/short.img holds 1000 bytes, not a "
        "whole number of 512-byte blocks; resize it to a multiple of 512",
        f"{path}:8: device twice: backing file /x does not exist; create it (e.g. truncate "
        "-s 1G /x) or fix the path",
        f"{path}:10: attribute filename of twice is set twice",
        f"{path}:13: unknown keyword 'bogus' at top level; expected HANDLER, TARGET_DRIVER, "
        "GROUP, DEVICE_GROUP, setup_id, threads",
        f"{path}:15: target iqn.2024-01.org.test:t has no LUN 0: there must be LUN 0 in each "
        "security group; renumber its LUNs to start at 0",
        f"{path}:16: unterminated double quote; close it with '\"'",
        f"{path}:17: LUN number 'x' is not a decimal number",
        f"{path}:18: LUN 1 in target iqn.2024-01.org.test:t names unknown device 'nosuch'; "
        "define it in a HANDLER section first",
        f"{path}:20: unknown keyword 'hidden' at GROUP g; expected LUN, INITIATOR, IncomingUser",
        f"{path}:24: '}}' closes no section; remove it",
    ]
    assert "Traceback" not in captured.err + captured.out
    assert captured.out == ""
    assert fake.log == []  # nothing applied, nothing even looked at


def test_an_unclosed_section_is_reported_with_the_errors_inside_it(tmp_path: Path) -> None:
    path = tmp_path / "u.conf"
    path.write_text("TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.org.test:t {\n  LUN 0 d\n")
    with pytest.raises(commands.ConfigError) as info:
        commands.load(path)
    assert str(info.value).splitlines() == [
        f"{path}:1: section TARGET_DRIVER iscsi is never closed; add '}}'",
        f"{path}:2: section TARGET iqn.2024-01.org.test:t is never closed; add '}}'",
        f"{path}:3: LUN 0 in target iqn.2024-01.org.test:t names unknown device 'd'; "
        "define it in a HANDLER section first",
    ]


def big_config(luns: int) -> str:
    """Many devices and LUNs (the shape that grew quadratically), a few initiators."""
    lines = ["HANDLER vdisk_nullio {", *(f" DEVICE d{i}" for i in range(luns)), "}"]
    lines += ["TARGET_DRIVER iscsi {", " TARGET iqn.2024-01.org.test:big {"]
    lines += [f"  LUN {i} d{i}" for i in range(luns)]
    lines += ["  GROUP g {", *(f"   LUN {i} d{luns - 1 - i}" for i in range(luns))]
    lines += [f"   INITIATOR iqn.2024-01.org.test:i{i}" for i in range(3)]
    lines += ["  }", " }", "}", "GROUP Default {", "  LUN 0 d0", "}"]
    return "\n".join(lines) + "\n"


def python_lines_run(path: Path) -> int:
    """Python lines executed by ``config check``'s parse, validation and mapping."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        count += 1
        return tracer

    sys.settrace(tracer)
    try:
        commands.check_system(commands.load(path))
    finally:
        sys.settrace(None)
    return count


def test_check_work_grows_linearly_with_the_file(tmp_path: Path) -> None:
    # Counting executed lines, not seconds: deterministic, and a quadratic step (a list
    # scan per LUN) makes four times the file cost about sixteen times the work.
    small, large = tmp_path / "small.conf", tmp_path / "large.conf"
    small.write_text(big_config(150))
    large.write_text(big_config(600))
    ratio = python_lines_run(large) / python_lines_run(small)
    assert 3.5 < ratio < 4.6, ratio


def test_a_0_9_6_file_also_reports_every_error(tmp_path: Path) -> None:
    path = tmp_path / "old.conf"
    path.write_text(
        "[HANDLER vdisk]\n"  # 1
        "DEVICE d0,,BOGUS\n"  # 2
        "[HANDLER magic]\n"  # 3
        "DEVICE x\n"  # 4: skipped with its refused section
        "[GROUP g]\n"  # 5
        "USER bad name\n"  # 6
        "[ASSIGNMENT nosuch]\n"  # 7
        "DEVICE d0,0\n"  # 8
    )
    with pytest.raises(commands.ConfigError) as info:
        commands.load(path)
    assert str(info.value).splitlines() == [
        f"{path}:2: unknown vdisk option 'BOGUS'; use WRITE_THROUGH, READ_ONLY, O_DIRECT, "
        "NV_CACHE, REMOVABLE, BLOCKIO, BIO, NULLIO",
        f"{path}:3: unknown handler 'magic'; use vdisk, vcdrom or dev_*",
        f"{path}:6: initiator name 'bad name' contains '/' or white space, which LIO cannot "
        "store (in group g)",
        f"{path}:8: [ASSIGNMENT nosuch] names unknown group 'nosuch'; declare it with "
        "[GROUP nosuch]",
    ]
