"""libiscsi SCSI compliance of OUR vdisk (TCMU user backstore, FILEIO on a sparse file)
over LIO iSCSI, against tests/kernel/compliance-vdisk.txt."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tcmu_scst.lab import compliance

pytestmark = pytest.mark.kernel

EXPECTATIONS = Path(__file__).with_name("compliance-vdisk.txt")


def _log_dir(tmp_path: Path) -> Path:
    """/results (host-visible) when the lab mounted it, else the test's tmp dir."""
    results = Path("/results")
    return results if os.path.ismount(results) and os.access(results, os.W_OK) else tmp_path


def test_vdisk_compliance_matches_expectations(tmp_path: Path) -> None:
    expected = compliance.parse_expectations(EXPECTATIONS.read_text(), str(EXPECTATIONS))
    log = _log_dir(tmp_path) / "compliance-vdisk.log"
    results = compliance.run_compliance(compliance.vdisk_backstore(), log=log)
    assert len(results) > 200, f"only {len(results)} tests ran; see {log}"
    verdict = compliance.compare(results, expected)
    print(compliance.report(results, verdict))
    assert verdict.ok, compliance.report(results, verdict) + f"\nfull output: {log}"
