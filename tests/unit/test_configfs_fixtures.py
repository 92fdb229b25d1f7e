"""Parse configfs texts recorded from a real 6.1 kernel (tests/fixtures/configfs)."""

from __future__ import annotations

from pathlib import Path

from tcmu_scst.kernel.fabrics import IscsiTpg, parse_acl_info, parse_dynamic_sessions
from tcmu_scst.testing.fake_configfs import FakeConfigfs

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "configfs"


def test_acl_info_with_a_session() -> None:
    session = parse_acl_info((FIXTURES / "acl_info_session.txt").read_text())
    assert session is not None
    assert session.initiator == "iqn.2024-01.org.tcmu-scst:explicit"
    assert session.alias == ""
    assert (session.sid, session.tsih, session.isid) == (1, 1, "804d5ac10000")
    assert session.session_type == "Normal"
    assert session.state == "TARG_SESS_STATE_LOGGED_IN"
    assert [(c.cid, c.state, c.address, c.transport) for c in session.connections] == [
        (0, "TARG_CONN_STATE_LOGGED_IN", "127.0.0.1", "TCP")
    ]


def test_dynamic_sessions_with_trailing_nul() -> None:
    raw = (FIXTURES / "dynamic_sessions.bin").read_bytes()
    assert raw.endswith(b"\n\x00")
    assert parse_dynamic_sessions(raw.decode()) == ["iqn.2024-01.org.tcmu-scst:demo"]


def test_recorded_texts_through_the_fake(tmp_path: Path) -> None:
    fake = FakeConfigfs(tmp_path)
    tpg = IscsiTpg.create(fake, "iqn.2003-01.org.tcmu-scst:kt-sessions")
    acl = tpg.add_acl("iqn.2024-01.org.tcmu-scst:explicit")
    assert acl.session() is None
    fake.kernel_set(f"{acl.rel}/info", (FIXTURES / "acl_info_session.txt").read_text())
    fake.kernel_set(f"{tpg.rel}/dynamic_sessions", (FIXTURES / "dynamic_sessions.bin").read_text())
    session = acl.session()
    assert session is not None and session.connections[0].address == "127.0.0.1"
    assert tpg.dynamic_sessions() == ["iqn.2024-01.org.tcmu-scst:demo"]
