"""ALUA of OUR vdisk behind two loopback targets, on LIO's own target port groups:

* the kernel keeps the groups (``alua/<group>``, a LUN's ``alua_tg_pt_gp``) and enforces
  their states before a command reaches the ring: a READ on the standby path is NOT
  READY / LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE (04/0B);
* the handler answers REPORT TARGET PORT GROUPS from those groups (``sg_rtpg`` shows
  both, with their ports) and SET TARGET PORT GROUPS by moving them (``sg_stpg``), after
  which the other path is the one that reads.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from tcmu_scst.handlers import vdisk_params
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import LoopbackTpg

from .tcmu_rig import serve

MiB = 1 << 20


def _sg(tpg: LoopbackTpg, lun: int) -> str:
    """/dev/sgN of a loopback LUN once the midlayer scanned it."""
    node = tpg.wait_for_lun(lun, need_block=False).sg
    assert node is not None, f"no sg node for {tpg.hctl(lun)}"
    return node


def _remover(cfs: Configfs, rel: str) -> Callable[[], None]:
    return lambda: cfs.rmdir(rel)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run an sg3-utils command; a pending unit attention (ASYMMETRIC ACCESS STATE
    CHANGED after a transition, or the power-on one) fails one try: retry."""
    for _ in range(4):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if "unit attention" not in (done.stdout + done.stderr).lower():
            break
    return done


def _read(sg: str) -> subprocess.CompletedProcess[str]:
    return _run("sg_raw", "-v", "-r", "512", sg, "28", "00", "00", "00", "00", "00", "00",
                "00", "01", "00")


def test_standby_path_is_not_ready_and_groups_are_reported_and_set(
    lio_stack: ExitStack,
) -> None:
    backing = Path("/run/alua-disk.img")
    with open(backing, "wb") as handle:
        handle.truncate(16 * MiB)
    lio_stack.callback(lambda: backing.unlink(missing_ok=True))
    dev_config = vdisk_params.to_dev_config(
        vdisk_params.VdiskParams(name="aluadisk", filename=str(backing)))
    served = serve(lio_stack, dev_config, 16 * MiB, export=False)
    cfs = Configfs()
    dev = served.backstore.rel
    assert cfs.read(f"{dev}/attrib/alua_support").strip() == "1"
    paths = []
    for name, gid, state in (("west", 10, 0), ("east", 20, 2)):
        group = f"{dev}/alua/{name}"
        cfs.mkdir(group)
        lio_stack.callback(_remover(cfs, group))
        cfs.write(f"{group}/tg_pt_gp_id", str(gid))
        cfs.write(f"{group}/alua_access_type", "3")  # implicit and explicit
        tpg = LoopbackTpg.create(cfs)
        lio_stack.callback(tpg.delete)
        tpg.add_lun(0, served.backstore)
        cfs.write(f"{tpg.rel}/lun/lun_0/alua_tg_pt_gp", name)
        cfs.write(f"{group}/alua_access_state", str(state))
        paths.append(_sg(tpg, 0))
    west, east = paths

    report = _run("sg_rtpg", "-d", west)
    assert report.returncode == 0, report.stderr
    text = report.stdout
    assert "target port group id : 0xa" in text.lower() or "id: 0xa" in text.lower(), text
    assert "active/optimized" in text.lower() and "standby" in text.lower(), text

    assert _read(west).returncode == 0
    standby = _read(east)
    assert standby.returncode != 0
    assert "not ready" in (standby.stdout + standby.stderr).lower()
    assert "standby" in (standby.stdout + standby.stderr).lower()

    swap = _run("sg_stpg", "--tp=20", "--optimized", west)
    assert swap.returncode == 0, swap.stdout + swap.stderr
    assert cfs.read(f"{dev}/alua/east/alua_access_state").strip() == "0"
    swap = _run("sg_stpg", "--tp=10", "--standby", east)
    assert swap.returncode == 0, swap.stdout + swap.stderr
    assert cfs.read(f"{dev}/alua/west/alua_access_state").strip() == "2"
    assert _read(east).returncode == 0
    assert _read(west).returncode != 0
