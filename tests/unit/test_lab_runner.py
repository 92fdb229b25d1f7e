"""The job script the guest runs: environment, directory, quoting, exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tcmu_scst.lab import runner


def run_job(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    job = tmp_path / "job.sh"
    job.write_text(script)
    # The guest's init starts the job with almost no environment; so does this test, so
    # that the developer's own variables (TCMU_SCST_SKIP_VM, ...) cannot leak in.
    env = {"PATH": "/usr/bin:/bin"}
    return subprocess.run(
        ["/bin/sh", str(job)], capture_output=True, text=True, check=False, env=env
    )


def test_job_runs_in_the_directory_and_returns_the_status(tmp_path: Path) -> None:
    script = runner.job_script("pwd; exit 3", str(tmp_path), {"PATH": "/usr/bin:/bin"})
    proc = run_job(script, tmp_path)
    assert proc.returncode == 3
    assert proc.stdout.strip() == str(tmp_path)


def test_job_quotes_awkward_commands(tmp_path: Path) -> None:
    command = """printf '%s|' "it's" $TCMU_SCST_IN_LAB; echo"""
    proc = run_job(runner.job_script(command, str(tmp_path), {}), tmp_path)
    assert proc.stdout == "it's|1|\n"


def test_job_environment(tmp_path: Path) -> None:
    host_env = {
        "PATH": "/opt/tools/bin:/usr/bin",
        "PYTHONPATH": "/extra",
        "CI": "true",
        "TCMU_SCST_FOO": "bar",
        "TCMU_SCST_SKIP_VM": "1",
        "SECRET_TOKEN": "x",
    }
    script = runner.job_script("env", str(tmp_path), host_env)
    env = dict(
        line.split("=", 1) for line in run_job(script, tmp_path).stdout.splitlines() if "=" in line
    )
    path = env["PATH"].split(":")
    assert path[0] == str(Path(sys.executable).parent)
    assert "/opt/tools/bin" in path and "/usr/sbin" in path
    assert env["PYTHONPATH"] == f"{runner.project_source_dir()}:/extra"
    assert env["CI"] == "true" and env["TCMU_SCST_FOO"] == "bar"
    assert "TCMU_SCST_SKIP_VM" not in env and "SECRET_TOKEN" not in env
    assert env["HOME"] == "/root" and env[runner.IN_LAB_ENV] == "1"


def test_project_source_dir_is_the_working_tree() -> None:
    assert (runner.project_source_dir() / "tcmu_scst" / "lab" / "runner.py").is_file()


def test_missing_directory_is_reported(tmp_path: Path) -> None:
    proc = run_job(runner.job_script("true", str(tmp_path / "gone"), {}), tmp_path)
    assert proc.returncode == 125
    assert "cannot cd" in proc.stdout


@pytest.mark.parametrize("status", [0, 1, 5, 255])
def test_exit_statuses_pass_through(tmp_path: Path, status: int) -> None:
    assert run_job(runner.job_script(f"exit {status}", "/", {}), tmp_path).returncode == status
