"""libiscsi SCSI compliance of OUR vdisk (TCMU user backstore, FILEIO on a sparse file)
over LIO iSCSI, against the expectations files next to this one: the plain FILEIO
mode, and a thin-provisioned removable one (UNMAP, WRITE SAME with UNMAP, GET LBA
STATUS, PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT, no-medium tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tcmu_scst.lab import compliance

pytestmark = pytest.mark.kernel

HERE = Path(__file__).parent


def _log_dir(tmp_path: Path) -> Path:
    """/results (host-visible) when the lab mounted it, else the test's tmp dir."""
    results = Path("/results")
    return results if os.path.ismount(results) and os.access(results, os.W_OK) else tmp_path


def _check(name: str, factory: compliance.BackstoreFactory, tmp_path: Path) -> None:
    path = HERE / f"{name}.txt"
    expected = compliance.parse_expectations(path.read_text(), str(path))
    log = _log_dir(tmp_path) / f"{name}.log"
    results = compliance.run_compliance(factory, log=log)
    assert len(results) > 200, f"only {len(results)} tests ran; see {log}"
    verdict = compliance.compare(results, expected)
    print(compliance.report(results, verdict))
    assert verdict.ok, compliance.report(results, verdict) + f"\nfull output: {log}"


def test_vdisk_compliance_matches_expectations(tmp_path: Path) -> None:
    _check("compliance-vdisk", compliance.vdisk_backstore(), tmp_path)


def test_thin_removable_vdisk_compliance_matches_expectations(tmp_path: Path) -> None:
    factory = compliance.vdisk_backstore(
        backing=Path("/run/compliance-thin.img"), thin_provisioned=True, removable=True
    )
    _check("compliance-vdisk-thin-removable", factory, tmp_path)
