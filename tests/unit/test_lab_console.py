"""Console filtering and exit-status extraction of the lab guest."""

from __future__ import annotations

from tcmu_scst.lab.console import EXIT_PREFIX, START_MARKER, ConsoleFilter, parse_exit_status


def exit_line(status: int) -> str:
    return f"{EXIT_PREFIX}{status}>>>"


def test_parse_exit_status_finds_the_last_marker() -> None:
    assert parse_exit_status("noise\n" + exit_line(3) + "\r\n") == 3
    assert parse_exit_status(exit_line(1) + exit_line(0)) == 0
    assert parse_exit_status("<<<tcmu-scst-lab:exit=>>>") is None
    assert parse_exit_status("nothing") is None


def test_boot_noise_is_hidden_and_command_output_shown() -> None:
    console = ConsoleFilter()
    shown = console.feed(b"SeaBIOS (version 1.16)\r\n[    0.0] Linux version 6.1\r\n")
    assert shown == ""
    shown = console.feed(f"{START_MARKER}\r\nhello\r\nworld\r\n".encode())
    assert shown == "hello\nworld\n"
    shown = console.feed(f"{exit_line(3)}\r\n[ 9.9] reboot: Power down\r\n".encode())
    assert shown == ""
    assert console.exit_status == 3
    assert "[    0.0] Linux version 6.1" in console.boot_log


def test_markers_split_across_reads_are_still_found() -> None:
    console = ConsoleFilter()
    data = f"boot\r\n{START_MARKER}\r\nout\r\n{exit_line(42)}\r\n".encode()
    shown = "".join(console.feed(data[i : i + 3]) for i in range(0, len(data), 3))
    shown += console.flush()
    assert shown == "out\n"
    assert console.exit_status == 42


def test_output_without_final_newline_keeps_its_text() -> None:
    console = ConsoleFilter()
    console.feed(f"{START_MARKER}\n".encode())
    shown = console.feed(b"no newline") + console.feed(f"{exit_line(0)}\n".encode())
    assert shown == "no newline\n"
    assert console.exit_status == 0


def test_partial_lines_stream_before_their_newline() -> None:
    console = ConsoleFilter()
    console.feed(f"{START_MARKER}\n".encode())
    assert console.feed(b"progress ...") == "progress ..."
    assert console.feed(b" done\n") == " done\n"


def test_init_failures_are_shown_and_reported_before_start() -> None:
    console = ConsoleFilter()
    shown = console.feed(
        f"tcmu-scst-lab: cannot mount the host root over 9p\r\n{exit_line(125)}\r\n".encode()
    )
    assert "cannot mount the host root" in shown
    assert console.exit_status == 125
    assert not console.started


def test_verbose_shows_boot_log_and_invalid_utf8_is_replaced() -> None:
    console = ConsoleFilter(verbose=True)
    assert console.feed(b"[ 0.1] boot \xff line\n") == "[ 0.1] boot \ufffd line\n"


def test_crlf_split_across_reads_keeps_the_newline() -> None:
    console = ConsoleFilter()
    console.feed(f"{START_MARKER}\r\n".encode())
    shown = console.feed(b"version 5.0\r") + console.feed(f"\n{exit_line(0)}\r\n".encode())
    assert shown == "version 5.0\n"
