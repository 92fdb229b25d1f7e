"""Fabric helpers (tcmu_scst.kernel.fabrics) on the fake configfs."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigError, ConfigfsError
from tcmu_scst.kernel.fabrics import (
    FcTpg,
    IscsiTpg,
    LoopbackTpg,
    list_tpgs,
    normalize_wwpn,
    parse_acl_info,
    parse_dynamic_sessions,
    portal_name,
    validate_initiator_name,
)
from tcmu_scst.kernel.lio import FileioBackstore, UserBackstore, UserBackstoreOptions
from tcmu_scst.kernel.scsi_nodes import ScsiNodes, ScsiNodeTimeout
from tcmu_scst.testing.fake_configfs import FakeConfigfs

IQN = "iqn.2003-01.org.example:t1"
INI = "iqn.1993-08.org.debian:01:host"


@pytest.fixture
def fake(tmp_path: Path) -> FakeConfigfs:
    return FakeConfigfs(tmp_path)


@pytest.fixture
def dev(fake: FakeConfigfs) -> UserBackstore:
    return UserBackstore.create(fake, "d1", UserBackstoreOptions("file//x", 1 << 20))


def test_loopback_nexus_before_luns_and_address(
    fake: FakeConfigfs, dev: UserBackstore, tmp_path: Path
) -> None:
    tpg = LoopbackTpg.create(fake)
    assert tpg.wwn.startswith("naa.5001405") and len(tpg.wwn) == 20
    nexus = tpg.nexus
    assert nexus is not None and nexus.startswith("naa.") and nexus != tpg.wwn
    tpg.add_lun(0, dev)
    assert fake.index_of("write", "/nexus") < fake.index_of("mkdir", "lun/lun_0")
    assert tpg.luns() == {0: dev.rel}
    host, channel, target = tpg.address()
    assert (channel, target) == (0, 1)
    assert tpg.hctl(0) == f"{host}:0:1:0"
    sysfs = tmp_path / "sys"
    assert tpg.block_device(0, sysfs) is None
    (sysfs / "class/scsi_device" / tpg.hctl(0) / "device/block/sdc").mkdir(parents=True)
    assert tpg.block_device(0, sysfs) == "/dev/sdc"
    assert dev.info().status == "ACTIVATED"
    with pytest.raises(ConfigfsError) as exc:
        dev.set_cmd_time_out(3)
    assert exc.value.errno == errno.EINVAL


def test_loopback_teardown_order(fake: FakeConfigfs, dev: UserBackstore) -> None:
    tpg = LoopbackTpg.create(fake)
    tpg.add_lun(0, dev)
    tpg.add_lun(3, UserBackstore.create(fake, "d2", UserBackstoreOptions("x/y", 0)))
    tpg.delete()
    assert not fake.exists(f"loopback/{tpg.wwn}")
    assert fake.index_of("unlink", "lun_3/") < fake.index_of("rmdir", "lun/lun_3")
    assert fake.index_of("write", "/nexus", "NULL") > fake.index_of("rmdir", "lun/lun_3")
    dev.delete()
    assert fake.listdir("core") == ["alua", "user_1"]


def test_iscsi_full_export(fake: FakeConfigfs, dev: UserBackstore) -> None:
    tpg = IscsiTpg.create(fake, IQN)
    tpg.set_attributes({"authentication": 0, "generate_node_acls": False})
    tpg.set_attrib("demo_mode_discovery", 0)
    assert tpg.add_portal("0.0.0.0") == "0.0.0.0:3260"
    assert tpg.add_portal("::1", 3261) == "[::1]:3261"
    tpg.add_lun(0, dev)
    acl = tpg.add_acl(INI)
    acl.map_lun(5, 0, write_protect=True)
    acl.set_tag("Group1")
    with pytest.raises(ConfigError, match="NULL"):
        acl.set_tag("NULLgroup")
    acl.set_chap("user", "secret12345", mutual_userid="tgt", mutual_password="secret67890")
    tpg.enable()
    assert tpg.enabled
    assert acl.mapped_luns()[5].tpg_lun == 0 and acl.mapped_luns()[5].write_protect
    assert acl.tag == "Group1"
    assert fake.read(f"{acl.rel}/auth/authenticate_target") == "1"
    assert acl.session() is None
    assert acl.num_cmds(5) == 0
    fake.kernel_set(f"{acl.rel}/lun_5/statistics/scsi_auth_intr/num_cmds", "17\n")
    assert acl.num_cmds(5) == 17
    # write_protect written after the link, enable last
    assert fake.index_of("symlink", "lun_5/") < fake.index_of("write", "write_protect")
    assert fake.log[-1].op == "write" and fake.log[-1].path.endswith("tpgt_1/enable")
    assert [t.rel for t in list_tpgs(fake, "iscsi")] == [tpg.rel]
    tpg.delete()
    assert not fake.exists(f"iscsi/{IQN}")
    assert fake.index_of("write", "tpgt_1/enable", "0") < fake.index_of("unlink", "lun_5/")


def test_iscsi_portal_conflict_across_tpgs(fake: FakeConfigfs) -> None:
    t1 = IscsiTpg.create(fake, IQN, 1)
    t2 = IscsiTpg.create(fake, IQN, 2)
    t1.add_portal("192.0.2.1")
    with pytest.raises(ConfigfsError) as exc:
        t2.add_portal("192.0.2.1")
    assert exc.value.errno == errno.EINVAL  # measured on 6.1
    other = IscsiTpg.create(fake, IQN + "x", 1)
    other.add_portal("192.0.2.1")  # a different IQN may share it
    t1.delete(remove_target=False)
    assert fake.exists(f"iscsi/{IQN}/tpgt_2")


def test_mapped_lun_failure_cleans_up(fake: FakeConfigfs, dev: UserBackstore) -> None:
    tpg = IscsiTpg.create(fake, IQN)
    acl = tpg.add_acl(INI)
    with pytest.raises(ConfigfsError):
        acl.map_lun(0, 7)  # no TPG LUN 7
    assert not fake.exists(f"{acl.rel}/lun_0")
    acl.unmap_lun(0)  # absent: nothing to do


def test_tpg_chap_and_dynamic_sessions(fake: FakeConfigfs) -> None:
    tpg = IscsiTpg.create(fake, IQN)
    tpg.set_chap("u", "p")
    assert fake.read(f"{tpg.rel}/auth/userid") == "u"
    tpg.set_chap(None, None)
    assert fake.read(f"{tpg.rel}/auth/userid") == "NULL"
    fake.kernel_set(f"{tpg.rel}/dynamic_sessions", "iqn.a\niqn.b\n\x00")
    assert tpg.dynamic_sessions() == ["iqn.a", "iqn.b"]
    with pytest.raises(ConfigError):
        tpg.set_chap("u", "p", userid_mutual="x")
    with pytest.raises(ConfigError):
        tpg.set_chap("has space", "p")


def test_fc_naming_and_login_only(fake: FakeConfigfs) -> None:
    tpg = FcTpg.create(fake, "qla2xxx", "naa.21000024FF314C48")
    assert tpg.rel == "qla2xxx/21:00:00:24:ff:31:4c:48/tpgt_1"
    tpg.set_login_only(False)
    assert tpg.attrib("demo_mode_login_only") == "0"
    acl = tpg.add_acl("0x2100000000000001")
    assert acl.name == "21:00:00:00:00:00:00:01"
    assert acl.tag is None
    with pytest.raises(ConfigError, match="iSCSI only"):
        acl.set_tag("g")
    fc = FcTpg.create(fake, "fc", "20:00:00:00:c9:00:00:01")
    assert fake.ops("modprobe")[-1].path == "tcm_fc"
    assert [t.rel for t in list_tpgs(fake, "fc")] == [fc.rel]
    tpg.delete()
    assert fake.listdir("qla2xxx") == ["version"]


def test_wwpn_and_names() -> None:
    assert normalize_wwpn("21:00:00:24:ff:31:4c:48") == "21:00:00:24:ff:31:4c:48"
    assert normalize_wwpn("210000E08B000001") == "21:00:00:e0:8b:00:00:01"
    for bad in ("21:00", "zz00000000000000", "21:000:00:24:ff:31:4c:4", "naa.2100"):
        with pytest.raises(ConfigError):
            normalize_wwpn(bad)
    assert validate_initiator_name("iscsi", "Any_Name.With:Caps") == "Any_Name.With:Caps"
    with pytest.raises(ConfigError):
        validate_initiator_name("iscsi", "x" * 224)
    with pytest.raises(ConfigError):
        validate_initiator_name("iscsi", "two words")
    assert portal_name("2001:db8::1", 3260) == "[2001:db8::1]:3260"
    with pytest.raises(ConfigError):
        portal_name("host.example", 3260)


INFO = """InitiatorName: iqn.1993-08.org.debian:01:host
InitiatorAlias: host
LIO Session ID: 3   ISID: 0x00 02 3d 00 00 01  TSIH: 7  SessionType: Normal
Session State: TARG_SESS_STATE_LOGGED_IN
---------------------[iSCSI Session Values]-----------------------
  CmdSN/WR  :  CmdSN/WC  :  ExpCmdSN  :  MaxCmdSN  :     ITT    :     TTT
 0x00000040   0x00000040   0x0000001a   0x00000059   0xffffffff   0xffffffff
----------------------[iSCSI Connections]-------------------------
CID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN
   Address 192.0.2.9 TCP  StatSN: 0x0000001b
"""


def test_parse_acl_info() -> None:
    assert parse_acl_info("No active iSCSI Session for Initiator Endpoint: x\n") is None
    sess = parse_acl_info(INFO)
    assert sess is not None
    assert (sess.initiator, sess.alias, sess.sid, sess.tsih) == (INI, "host", 3, 7)
    assert sess.isid == "00023d000001" and sess.session_type == "Normal"
    assert sess.state == "TARG_SESS_STATE_LOGGED_IN"
    assert len(sess.connections) == 1
    conn = sess.connections[0]
    assert (conn.cid, conn.address, conn.transport) == (0, "192.0.2.9", "TCP")
    with pytest.raises(ConfigfsError):
        parse_acl_info("InitiatorName: x\n")
    assert parse_dynamic_sessions("\x00") == []


def test_loopback_delete_tolerates_stuck_port_count(tmp_path: Path) -> None:
    fake = FakeConfigfs(tmp_path, loopback_scan_ok=False)
    dev = UserBackstore.create(fake, "d1", UserBackstoreOptions("file//x", 1 << 20))
    tpg = LoopbackTpg.create(fake)
    tpg.add_lun(0, dev)
    tpg.remove_lun(0)
    with pytest.raises(ConfigfsError) as exc:
        tpg.drop_nexus()
    assert exc.value.errno == errno.EPERM
    tpg.delete()  # rmdir of the TPG drops the nexus itself
    assert not fake.exists(tpg.rel)


def test_loopback_wait_for_lun_returns_the_nodes_the_scan_made(
    fake: FakeConfigfs, tmp_path: Path
) -> None:
    tpg = LoopbackTpg.create(fake)
    tpg.add_lun(0, FileioBackstore.create(fake, "f0", tmp_path / "f0.img", 1 << 20))
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    device = sysfs / "class/scsi_device" / tpg.hctl(0) / "device"
    with pytest.raises(ScsiNodeTimeout, match=f"SCSI device {tpg.hctl(0)} has no sg"):
        tpg.wait_for_lun(0, timeout=0.1, sysfs=sysfs, dev=dev)
    (device / "scsi_generic/sg0").mkdir(parents=True)
    (dev / "sg0").mkdir(parents=True)
    assert tpg.wait_for_lun(0, need_block=False, sysfs=sysfs, dev=dev) == ScsiNodes(
        tpg.hctl(0), None, "/dev/sg0"
    )


def test_iscsi_demo_mode_opens_the_tpg_to_every_initiator(fake: FakeConfigfs) -> None:
    tpg = IscsiTpg.create(fake, IQN)
    tpg.set_demo_mode()
    assert [tpg.attrib(k) for k in ("authentication", "generate_node_acls",
                                    "cache_dynamic_acls", "demo_mode_write_protect")] == [
        "0", "1", "1", "0"
    ]  # fmt: skip
    tpg.set_demo_mode(write_protect=True)
    assert tpg.attrib("demo_mode_write_protect") == "1"
