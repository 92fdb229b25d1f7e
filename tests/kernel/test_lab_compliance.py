"""libiscsi SCSI compliance of LIO's in-kernel fileio, against its expectations file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tcmu_scst.lab import compliance

pytestmark = pytest.mark.kernel

EXPECTATIONS = Path(__file__).with_name("compliance-fileio.txt")
RESULTS = Path("/results")


def _publish(log: Path) -> Path:
    """Copy the log to /results (host-visible) when the lab mounted it.

    The run itself logs to a guest-local file: several VMs may share ./results, and
    the parser must never read another run's output.
    """
    if not (os.path.ismount(RESULTS) and os.access(RESULTS, os.W_OK)):
        return log
    target = RESULTS / log.name
    partial = RESULTS / f".{log.name}.{os.getpid()}"
    shutil.copyfile(log, partial)
    partial.replace(target)
    return target


def test_fileio_compliance_matches_expectations(tmp_path: Path) -> None:
    expected = compliance.parse_expectations(EXPECTATIONS.read_text(), str(EXPECTATIONS))
    log = tmp_path / "compliance-fileio.log"
    try:
        results = compliance.run_compliance(compliance.fileio_backstore(), log=log)
    finally:
        if log.exists():
            log = _publish(log)
    assert len(results) > 200, f"only {len(results)} tests ran; see {log}"
    verdict = compliance.compare(results, expected)
    print(compliance.report(results, verdict))
    assert verdict.ok, compliance.report(results, verdict) + f"\nfull output: {log}"
