"""libiscsi SCSI compliance of OUR vdisk (TCMU user backstore, FILEIO on a sparse file)
over LIO iSCSI, against the expectations files next to this one: the plain FILEIO
mode, and a thin-provisioned removable one (UNMAP, WRITE SAME with UNMAP, GET LBA
STATUS, PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT, no-medium tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.lab import compliance
from tests.kernel.tcmu_rig import check_compliance

pytestmark = pytest.mark.kernel

HERE = Path(__file__).parent


def test_vdisk_compliance_matches_expectations(tmp_path: Path) -> None:
    check_compliance(HERE / "compliance-vdisk.txt", compliance.vdisk_backstore(), tmp_path)


def test_thin_removable_vdisk_compliance_matches_expectations(tmp_path: Path) -> None:
    factory = compliance.vdisk_backstore(
        backing=Path("/run/compliance-thin.img"), thin_provisioned=True, removable=True
    )
    check_compliance(HERE / "compliance-vdisk-thin-removable.txt", factory, tmp_path)
