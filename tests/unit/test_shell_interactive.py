"""An interactive shell session in tmux: prompt, tab completion, errors, exit."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tcmu_scst.scst import conf

SESSION = f"tcmu-scst-shell-test-{os.getpid()}"


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], check=True, capture_output=True, text=True, timeout=10
    ).stdout


def shell_command(tmp_path: Path) -> str:
    """The shell on a fake configfs under ``tmp_path``, history kept there too."""
    (tmp_path / "cfs").mkdir(exist_ok=True)
    repo = Path(__file__).resolve().parents[2]
    return " ".join(
        [
            "env", "TCMU_SCST_FAKE_CONFIGFS=1", f"PYTHONPATH={shlex.quote(str(repo))}",
            f"TCMU_SCST_HISTORY_DIR={shlex.quote(str(tmp_path / 'hist'))}",
            shlex.quote(sys.executable), "-m", "tcmu_scst.cli", "shell",
            "--configfs-root", shlex.quote(str(tmp_path / "cfs")),
            "--state-dir", shlex.quote(str(tmp_path / "state")),
            "--control-socket", shlex.quote(str(tmp_path / "none.sock")),
        ]
    )  # fmt: skip


def wait_on_screen(session: str, text: str) -> str:
    deadline = time.monotonic() + 30
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared; screen:\n{screen}")


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    assert shutil.which("tmux"), "tmux is needed for the interactive shell test"
    command = f"{shell_command(tmp_path)}; echo SHELL-EXITED-$?; sleep 30"
    tmux("new-session", "-d", "-s", SESSION, "-x", "200", "-y", "60", command)
    try:
        yield lambda text: wait_on_screen(SESSION, text)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True, timeout=10)


def keys(*items: str) -> None:
    tmux("send-keys", "-t", SESSION, *items)


def test_interactive_session_with_completion(pane: Callable[[str], str], tmp_path: Path) -> None:
    pane("/>")
    keys("/vdisk open disk1 NULLIO", "Enter")
    pane("daemon is not running")
    # Tab completes the command, the device name and the option.
    keys("cd /groups/Default/devices", "Enter")
    pane("devices>")
    keys("ad", "Tab")
    pane("devices> add")  # capture-pane drops trailing blanks: the final model proves them
    keys("dis", "Tab")
    pane("add disk1")
    keys("0 R", "Tab")
    pane("add disk1 0 READ_ONLY")
    keys("Enter")
    keys("show", "Enter")
    screen = pane("RO")
    assert f"{'disk1':<60}{0:>4}{'RO':>12}" in screen
    # An error is printed and the session goes on.
    keys("/ add_group a|b", "Enter")
    pane("cannot parse")
    keys("/ add_group g1", "Enter")
    keys("ls /groups", "Enter")
    pane("g1")
    keys("exit", "Enter")
    pane("SHELL-EXITED-0")
    config = conf.parse((tmp_path / "state" / "running.conf").read_text())
    default = config.group("Default")
    assert default is not None and [(x.device, x.read_only) for x in default.luns] == [
        ("disk1", True)
    ]
    assert config.group("g1") is not None


def test_history_is_kept_between_interactive_sessions(tmp_path: Path) -> None:
    assert shutil.which("tmux"), "tmux is needed for the interactive shell test"
    shell = shell_command(tmp_path)
    session = f"{SESSION}-history"
    command = f"{shell}; clear; echo SECOND-SESSION; {shell}; sleep 30"
    tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "60", command)
    try:
        wait_on_screen(session, "/>")
        tmux("send-keys", "-t", session, "cd /groups/Default", "Enter")
        wait_on_screen(session, "Default>")
        tmux("send-keys", "-t", session, "exit", "Enter")
        wait_on_screen(session, "SECOND-SESSION")
        wait_on_screen(session, "/>")  # a new session starts at /, whatever the last one did
        tmux("send-keys", "-t", session, "Up", "Up")
        screen = wait_on_screen(session, "/> cd /groups/Default")
        assert "Default>" not in screen  # recalled, not run
        assert (tmp_path / "hist" / "history.txt").read_text().splitlines()[-2:] == [
            "cd /groups/Default", "exit"
        ]
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=10)
