"""libiscsi SCSI compliance of LIO's in-kernel fileio, against its expectations file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.lab import compliance
from tests.kernel.tcmu_rig import check_compliance

pytestmark = pytest.mark.kernel

EXPECTATIONS = Path(__file__).with_name("compliance-fileio.txt")


def test_fileio_compliance_matches_expectations(tmp_path: Path) -> None:
    check_compliance(EXPECTATIONS, compliance.fileio_backstore(), tmp_path)
