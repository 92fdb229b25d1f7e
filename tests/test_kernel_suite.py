"""The kernel test suite, run from the host: boot the lab VM once, run tests/kernel.

Plain ``python3 -m pytest`` on the host runs the unit tests, deselects tests/kernel
(see tests/kernel/conftest.py) and runs this one test, which executes
``python3 -m pytest -m kernel tests/kernel -v`` inside the guest and fails if that run
fails. Set TCMU_SCST_SKIP_VM=1 for quick local unit runs: this test is then not even
collected (CI must not set it). Inside the guest it is never collected either.
TCMU_SCST_KERNEL_SUITE_ARGS (default ``tests/kernel``) picks what the inner pytest runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# TCMU_SCST_KERNEL_SUITE_ARGS narrows the inner run for local work (e.g. one file);
# CI leaves it unset: all of tests/kernel.
INNER_ARGS = os.environ.get("TCMU_SCST_KERNEL_SUITE_ARGS", "tests/kernel")
INNER_COMMAND = f"python3 -m pytest -m kernel {INNER_ARGS} -v -p no:cacheprovider"
# CI budget: the whole run (unit + kernel + compliance) must stay under 45 minutes.
TIMEOUT = float(os.environ.get("TCMU_SCST_KERNEL_SUITE_TIMEOUT", "1800"))
PYTEST_NO_TESTS = 5

_SKIP_VM = os.environ.get("TCMU_SCST_SKIP_VM") == "1"
_IN_LAB = os.environ.get("TCMU_SCST_IN_LAB") == "1"

if not (_SKIP_VM or _IN_LAB):

    def test_kernel_suite_in_lab_vm(pytestconfig: pytest.Config) -> None:
        from tcmu_scst.lab import runner

        capture = pytestconfig.pluginmanager.getplugin("capturemanager")
        assert capture is not None
        # Stream the guest's pytest output live instead of capturing it.
        with capture.global_and_fixture_disabled():
            print(f"\n--- lab VM: {INNER_COMMAND} ---", flush=True)
            status = runner.run_command(
                INNER_COMMAND, cwd=str(REPO), timeout=TIMEOUT, results_dir=REPO / "results"
            )
            print(f"--- lab VM: exit status {status} ---", flush=True)
        assert status != PYTEST_NO_TESTS, "the guest collected no kernel tests (pytest exit 5)"
        assert status == 0, f"kernel tests failed in the lab VM (pytest exit {status})"
