"""The compiled path and the pure-Python path, each alone, on the real kernel.

A FILEIO vdisk on a tmpfs file, seen by sd through tcm_loop, served once with
the compiled path (tcmu_scst/kernel/_fastring.c) and once without: a file system
round trip and fio --verify pass on both, and the runner's counters show which path
answered (the compiled one most READ/WRITEs, the Python one none). The rest of the
suite runs with the compiled path wherever the package was built with it.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from tcmu_scst.handlers import _vdisk_sys as sysio
from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config
from tcmu_scst.testing.compiled import accelerator

from .tcmu_rig import ext4_round_trip, fio_verify, serve

MiB = 1 << 20
SIZE = 64 * MiB


@pytest.mark.parametrize("block_size", [512, 4096])
@pytest.mark.parametrize("path", ["compiled", "python"])
def test_filesystem_and_fio_verify_on_each_path(
    lio_stack: ExitStack, tmp_path: Path, path: str, block_size: int
) -> None:
    # On tmpfs (/run: the guest's /tmp is not a memory file system, and RWF_NOWAIT is
    # refused there, so both paths would hand every READ/WRITE to the workers).
    backing = Path(f"/run/compiled-{path}-{block_size}.img")
    assert sysio.mount_fs_type(str(backing.parent)) == "tmpfs"
    with open(backing, "wb") as f:
        f.truncate(SIZE)
    lio_stack.callback(lambda: backing.unlink(missing_ok=True))
    params = VdiskParams(name=f"fast{path[:3]}{block_size}", filename=str(backing),
                         blocksize=block_size)
    served = serve(lio_stack, to_dev_config(params), SIZE, block_size=block_size)
    assert served.lun is not None and served.lun.block
    runner = served.runner
    runner.accelerator = accelerator(tmp_path) if path == "compiled" else None
    # (The partition scan's READs, before this line, took the default path.)
    before, compiled_before = runner.stats.commands, runner.stats.compiled_commands
    ext4_round_trip(served.lun.block, tmp_path / "mnt")
    fio_verify(served.lun.block, (("4k", "16M"), (str(block_size), "2M")))
    answered = runner.stats.commands - before
    compiled = runner.stats.compiled_commands - compiled_before
    if path == "compiled":
        # fio's direct 4 KiB writes and verify reads alone are 8192 commands.
        assert compiled > 8000 and compiled > answered // 2, (compiled, answered)
    else:
        assert compiled == 0 and answered > 8000
