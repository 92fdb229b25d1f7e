"""LOG SENSE of a vdisk as sg3_utils' sg_logs reads it through tcm_loop (the kernel's
sg over LIO, answered by our handler)."""

from __future__ import annotations

import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config

from .tcmu_rig import serve

pytestmark = pytest.mark.kernel

MiB = 1 << 20


def sg_logs(*args: str) -> str:
    done = subprocess.run(["sg_logs", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_sg_logs_lists_and_decodes_the_pages(lio_stack: ExitStack, tmp_path: Path) -> None:
    image = tmp_path / "logs.img"
    with open(image, "wb") as f:
        f.truncate(16 * MiB)
    served = serve(lio_stack, to_dev_config(VdiskParams("logs1", str(image))), 16 * MiB)
    assert served.lun is not None and served.lun.sg is not None
    node = served.lun.sg
    listing = sg_logs(node)  # page 00h
    assert "0x00" in listing and "0x2f" in listing.lower(), listing
    assert "Informational exceptions" in listing, listing
    ie = sg_logs("--page=0x2f", node)
    assert "IE asc = 0x0, ascq = 0x0" in ie, ie
    # A page we do not keep: sg_logs reports the ILLEGAL REQUEST and fails.
    refused = subprocess.run(["sg_logs", "--page=0xd", node], capture_output=True, text=True,
                             timeout=30)  # fmt: skip
    assert refused.returncode != 0
    assert "illegal request" in (refused.stdout + refused.stderr).lower()
