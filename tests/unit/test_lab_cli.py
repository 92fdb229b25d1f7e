"""``tcmu-scst lab`` argument handling (the VM itself is replaced by a recorder)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from tcmu_scst import cli
from tcmu_scst.errors import LabError
from tcmu_scst.lab import demo, demo_host, runner
from tcmu_scst.lab.vm import PortForward


class Recorder:
    def __init__(self, status: int) -> None:
        self.status = status
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, command: str, **kwargs: Any) -> int:
        self.calls.append((command, kwargs))
        return self.status


def test_run_passes_command_options_and_exit_status(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(status=3)
    monkeypatch.setattr(runner, "run_command", recorder)
    status = cli.main(["lab", "--run", "exit 3", "--timeout", "60", "--memory", "2048",
                       "--forward", "8080:80", "--forward", "3261:3260"])
    assert status == 3
    command, kwargs = recorder.calls[0]
    assert command == "exit 3"
    assert kwargs["timeout"] == 60.0
    assert kwargs["memory_mb"] == 2048
    assert kwargs["forwards"] == [PortForward(8080, 80), PortForward(3261, 3260)]
    assert kwargs["results_dir"] == Path("results")


def test_run_has_a_default_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(status=0)
    monkeypatch.setattr(runner, "run_command", recorder)
    assert cli.main(["lab", "--run", "true"]) == 0
    assert recorder.calls[0][1]["timeout"] > 0


def test_bad_forward_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["lab", "--run", "true", "--forward", "nonsense"]) == 1
    assert "bad port forward 'nonsense'" in capsys.readouterr().err


def test_demo_forwards_the_iscsi_port_and_stops_gracefully(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder(status=0)
    monkeypatch.setattr(runner, "run_command", recorder)
    monkeypatch.setattr(demo_host, "check_port_free", lambda port, addr="127.0.0.1": None)
    assert cli.main(["lab", "--port", "13260"]) == 0
    command, kwargs = recorder.calls[0]
    assert command.endswith("python3 -m tcmu_scst.lab.demo --host-port 13260")
    assert kwargs["forwards"][0] == PortForward(13260, 3260)
    assert kwargs["graceful_stop"] == b"\n"
    assert kwargs["timeout"] is None


def test_busy_demo_port_is_reported_before_booting() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LabError, match=f"127.0.0.1:{port} is already in use"):
            demo_host.check_port_free(port)


def test_demo_connect_help_names_the_host_port() -> None:
    text = demo.connect_help(13260)
    assert "iscsi-ls iscsi://127.0.0.1:13260" in text
    assert f"iscsi-inq iscsi://127.0.0.1:13260/{demo.DEMO_IQN}/0" in text
    assert "iscsi-ls iscsi://127.0.0.1\n" in demo.connect_help(3260) + "\n"


def test_demo_config_is_a_valid_scst_conf(tmp_path: Path) -> None:
    """The demo's scst.conf parses, validates and maps to one vdisk LUN in demo mode."""
    from tcmu_scst.scst import conf
    from tcmu_scst.scst.mapping import map_config

    image = tmp_path / "disk0.img"
    image.write_bytes(bytes(4096))
    config = conf.parse(demo.demo_config_text(image), "demo.conf")
    [device] = config.devices
    assert (device.name, device.handler) == ("disk0", "vdisk_fileio")
    state = map_config(config)
    [backstore] = state.backstores
    assert backstore.dev_config.startswith("vdisk/")
    [target] = state.targets
    assert target.wwn == demo.DEMO_IQN
