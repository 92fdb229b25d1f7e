"""Session listing on the real kernel: explicit-ACL ``info``, ``dynamic_sessions``,
per-mapped-LUN ``num_cmds`` (lab guest only).

Two libiscsi ``iscsi-perf`` initiators read from an in-kernel fileio LUN for a few
seconds: one has an explicit ACL, the other logs in through demo mode. The raw texts are
saved under ``$TCMU_SCST_RESULTS`` or ``/results/configfs`` for the unit-test fixtures.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import IscsiTpg
from tcmu_scst.kernel.lio import FileioBackstore
from tests.kernel.tcmu_rig import iscsi_perf

IQN = "iqn.2003-01.org.tcmu-scst:kt-sessions"
INI_ACL = "iqn.2024-01.org.tcmu-scst:explicit"
INI_DEMO = "iqn.2024-01.org.tcmu-scst:demo"
PORT = 3265


def _save(name: str, data: bytes) -> None:
    out = Path(os.environ.get("TCMU_SCST_RESULTS", "/results")) / "configfs"
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    except OSError:
        pass


def _perf(initiator: str) -> subprocess.Popen[bytes]:
    return iscsi_perf(initiator, f"iscsi://127.0.0.1:{PORT}/{IQN}/0", "-t", "6", "-m", "4")


def test_sessions_are_listed(fileio_backstore: Callable[..., FileioBackstore]) -> None:
    cfs = Configfs()
    dev = fileio_backstore(size=16 << 20)
    tpg = IscsiTpg.create(cfs, IQN)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        tpg.set_attributes(
            {
                "authentication": 0,
                "generate_node_acls": 1,
                "cache_dynamic_acls": 0,
                "demo_mode_write_protect": 0,
            }
        )
        tpg.add_portal("127.0.0.1", PORT)
        tpg.add_lun(0, dev)
        acl = tpg.add_acl(INI_ACL)
        acl.map_lun(0, 0)
        tpg.enable()
        procs = [_perf(INI_ACL), _perf(INI_DEMO)]
        session = None
        dynamic: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (session is None or not dynamic):
            time.sleep(0.3)
            session = acl.session()
            dynamic = tpg.dynamic_sessions()
        info_text = cfs.path(f"{acl.rel}/info").read_bytes()
        dyn_raw = cfs.path(f"{tpg.rel}/dynamic_sessions").read_bytes()
        _save("acl_info_session.txt", info_text)
        _save("dynamic_sessions.bin", dyn_raw)
        print(info_text.decode(), repr(dyn_raw), sep="\n")
        assert session is not None, info_text
        assert session.initiator == INI_ACL
        assert session.session_type == "Normal"
        assert len(session.isid) == 12
        assert session.connections and session.connections[0].address.startswith("127.0.0.1")
        assert dynamic == [INI_DEMO]
        time.sleep(1)
        assert acl.num_cmds(0) > 0
    finally:
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        tpg.delete()
    assert not cfs.exists(f"iscsi/{IQN}")
