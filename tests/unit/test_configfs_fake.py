"""Kernel rules emulated by FakeConfigfs, exercised through the primitive Configfs API."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigfsError
from tcmu_scst.testing.fake_configfs import FakeConfigfs

DEV = "core/user_0/disk1"
LOOP_TPG = "loopback/naa.5001405000000001/tpgt_1"
IQN = "iqn.2003-01.org.example:t1"
ISCSI_TPG = f"iscsi/{IQN}/tpgt_1"


@pytest.fixture
def fake(tmp_path: Path) -> FakeConfigfs:
    return FakeConfigfs(tmp_path)


def _errno(call: object, *args: str) -> int:
    assert callable(call)
    with pytest.raises(ConfigfsError) as exc:
        call(*args)
    return exc.value.errno


def _enabled_device(fake: FakeConfigfs, rel: str = DEV) -> None:
    hba = rel.rsplit("/", 1)[0]
    if not fake.exists(hba):
        fake.mkdir(hba)
    fake.mkdir(rel)
    fake.write(f"{rel}/control", "dev_config=file//tmp/x,dev_size=1048576")
    fake.write(f"{rel}/enable", "1")


def test_device_default_groups_and_attributes(fake: FakeConfigfs) -> None:
    fake.mkdir("core/user_0")
    fake.mkdir(DEV)
    names = set(fake.listdir(DEV))
    assert {"control", "enable", "info", "attrib", "action", "wwn", "pr", "alua"} <= names
    assert "statistics" in names
    attrib = set(fake.listdir(f"{DEV}/attrib"))
    assert {"cmd_time_out", "qfull_time_out", "dev_config", "dev_size", "max_data_area_mb"} <= (
        attrib
    )
    assert {"emulate_write_cache", "tmr_notification", "nl_reply_supported"} <= attrib
    assert set(fake.listdir(f"{DEV}/action")) == {"block_dev", "reset_ring", "free_kept_buf"}
    assert fake.read(f"{DEV}/attrib/max_data_area_mb") == "1024"
    assert fake.read(f"{DEV}/enable") == "0"


def test_control_parsing_updates_attrib_and_info(fake: FakeConfigfs) -> None:
    fake.mkdir("core/user_0")
    fake.mkdir(DEV)
    fake.write(f"{DEV}/control", "dev_config=file//a,dev_size=4096,max_data_area_mb=64")
    fake.write(f"{DEV}/control", "hw_block_size=4096\nbogus=1")
    assert fake.read(f"{DEV}/attrib/dev_config") == "file//a"
    assert fake.read(f"{DEV}/attrib/hw_block_size") == "4096"
    info = fake.read(f"{DEV}/info")
    assert "Config: file//a Size: 4096 MaxDataAreaMB: 64" in info
    assert "SectorSize: 4096" in info


def test_comma_in_dev_config_truncates_it(fake: FakeConfigfs) -> None:
    fake.mkdir("core/user_0")
    fake.mkdir(DEV)
    fake.write(f"{DEV}/control", "dev_config=file//a,b")
    assert fake.read(f"{DEV}/attrib/dev_config") == "file//a"


def test_enable_registers_uio_and_refuses_ring_keys_after(fake: FakeConfigfs) -> None:
    _enabled_device(fake)
    assert fake.read(f"{DEV}/enable") == "1"
    assert list(fake.uio_names.values()) == ["tcm-user/0/disk1/file//tmp/x"]
    assert _errno(fake.write, f"{DEV}/control", "max_data_area_mb=8") == errno.EINVAL
    assert _errno(fake.write, f"{DEV}/enable", "1") == errno.EEXIST


def test_read_only_and_write_only_files(fake: FakeConfigfs) -> None:
    fake.mkdir("core/user_0")
    fake.mkdir(DEV)
    assert _errno(fake.write, f"{DEV}/info", "x") == errno.EACCES
    assert _errno(fake.read, f"{DEV}/control") == errno.EACCES


def test_default_groups_cannot_be_removed_or_created(fake: FakeConfigfs) -> None:
    fake.mkdir("core/user_0")
    fake.mkdir(DEV)
    assert _errno(fake.rmdir, f"{DEV}/attrib") == errno.EPERM
    assert _errno(fake.mkdir, f"{DEV}/attrib/extra") == errno.EPERM


def test_rmdir_refuses_user_children(fake: FakeConfigfs) -> None:
    fake.mkdir("core/user_0")
    fake.mkdir(DEV)
    assert _errno(fake.rmdir, "core/user_0") == errno.ENOTEMPTY
    fake.rmdir(DEV)
    fake.rmdir("core/user_0")
    assert fake.listdir("core") == ["alua"]


def test_lun_link_rules(fake: FakeConfigfs) -> None:
    fake.mkdir("core/user_0")
    fake.mkdir(DEV)
    fake.mkdir("loopback")
    fake.mkdir("loopback/naa.5001405000000001")
    fake.mkdir(LOOP_TPG)
    fake.mkdir(f"{LOOP_TPG}/lun/lun_0")
    assert _errno(fake.symlink, DEV, f"{LOOP_TPG}/lun/lun_0/a") == errno.ENODEV
    fake.write(f"{DEV}/enable", "1")
    fake.symlink(DEV, f"{LOOP_TPG}/lun/lun_0/a")
    assert _errno(fake.symlink, DEV, f"{LOOP_TPG}/lun/lun_0/b") == errno.EEXIST
    assert _errno(fake.symlink, "core/user_0", f"{LOOP_TPG}/lun/lun_0/c") == errno.EFAULT
    assert "Status: ACTIVATED" in fake.read(f"{DEV}/info")
    assert _errno(fake.write, f"{DEV}/attrib/cmd_time_out", "10") == errno.EINVAL
    assert _errno(fake.rmdir, f"{LOOP_TPG}/lun/lun_0") == errno.ENOTEMPTY
    assert _errno(fake.rmdir, DEV) == errno.EBUSY


def test_loopback_nexus_rules(fake: FakeConfigfs) -> None:
    _enabled_device(fake)
    fake.mkdir("loopback")
    fake.mkdir("loopback/naa.5001405000000001")
    fake.mkdir(LOOP_TPG)
    assert "enable" not in fake.listdir(LOOP_TPG)
    assert _errno(fake.read, f"{LOOP_TPG}/nexus") == errno.ENODEV
    assert _errno(fake.write, f"{LOOP_TPG}/nexus", "iqn.x") == errno.EINVAL
    fake.write(f"{LOOP_TPG}/nexus", "naa.5001405000000002")
    assert fake.read(f"{LOOP_TPG}/nexus") == "naa.5001405000000002"
    assert fake.read(f"{LOOP_TPG}/address").endswith(":0:1")
    fake.mkdir(f"{LOOP_TPG}/lun/lun_0")
    fake.symlink(DEV, f"{LOOP_TPG}/lun/lun_0/a")
    assert _errno(fake.write, f"{LOOP_TPG}/nexus", "NULL") == errno.EPERM
    fake.unlink(f"{LOOP_TPG}/lun/lun_0/a")
    fake.write(f"{LOOP_TPG}/nexus", "NULL")
    assert fake.index_of("write", "nexus") < fake.index_of("mkdir", "lun/lun_0")


def test_loopback_tpg_numbering(fake: FakeConfigfs) -> None:
    fake.mkdir("loopback")
    assert _errno(fake.mkdir, "loopback/wwn-without-prefix") == errno.EINVAL
    fake.mkdir("loopback/naa.5001405000000001")
    assert _errno(fake.mkdir, "loopback/naa.5001405000000001/tpgt_32") == errno.EINVAL
    assert _errno(fake.mkdir, "loopback/naa.5001405000000001/tpg1") == errno.EINVAL
    fake.mkdir("loopback/naa.5001405000000001/tpgt_31")


def test_iscsi_portals_acls_and_mapped_luns(fake: FakeConfigfs) -> None:
    _enabled_device(fake)
    fake.mkdir("iscsi")
    fake.mkdir(f"iscsi/{IQN}")
    fake.mkdir(ISCSI_TPG)
    fake.mkdir(f"iscsi/{IQN}/tpgt_2")
    assert fake.read(f"{ISCSI_TPG}/attrib/generate_node_acls") == "0"
    fake.mkdir(f"{ISCSI_TPG}/np/0.0.0.0:3260")
    assert _errno(fake.mkdir, f"iscsi/{IQN}/tpgt_2/np/0.0.0.0:3260") == errno.EINVAL
    fake.mkdir(f"iscsi/{IQN}/tpgt_2/np/[::1]:3260")
    assert _errno(fake.mkdir, f"{ISCSI_TPG}/np/nonsense") == errno.EINVAL
    fake.mkdir(f"{ISCSI_TPG}/lun/lun_0")
    fake.symlink(DEV, f"{ISCSI_TPG}/lun/lun_0/a")
    acl = f"{ISCSI_TPG}/acls/iqn.1993-08.org.debian:01:host"
    fake.mkdir(acl)
    assert {"info", "cmdsn_depth", "tag", "attrib", "auth", "param"} <= set(fake.listdir(acl))
    fake.mkdir(f"{acl}/lun_5")
    # a mapped LUN must point into lun/ of the same TPG
    fake.mkdir(f"iscsi/{IQN}/tpgt_2/lun/lun_0")
    other = f"iscsi/{IQN}/tpgt_2/lun/lun_0"
    assert _errno(fake.symlink, other, f"{acl}/lun_5/m") == errno.EINVAL
    fake.symlink(f"{ISCSI_TPG}/lun/lun_0", f"{acl}/lun_5/m")
    fake.write(f"{acl}/lun_5/write_protect", "1")
    assert fake.read(f"{acl}/lun_5/write_protect") == "1"
    assert fake.read(f"{acl}/lun_5/statistics/scsi_auth_intr/num_cmds") == "0"
    fake.write(f"{acl}/tag", "group1")
    assert fake.read(f"{acl}/tag") == "group1"
    assert _errno(fake.rmdir, acl) == errno.ENOTEMPTY
    assert _errno(fake.symlink, DEV, f"{acl}/lun_5/n") == errno.EFAULT
    fake.unlink(f"{ISCSI_TPG}/lun/lun_0/a")  # allowed on 6.1 even while mapped


def test_portal_freed_on_rmdir(fake: FakeConfigfs) -> None:
    fake.mkdir("iscsi")
    fake.mkdir(f"iscsi/{IQN}")
    fake.mkdir(ISCSI_TPG)
    fake.mkdir(f"iscsi/{IQN}/tpgt_2")
    fake.mkdir(f"{ISCSI_TPG}/np/10.0.0.1:3260")
    fake.rmdir(f"{ISCSI_TPG}/np/10.0.0.1:3260")
    fake.mkdir(f"iscsi/{IQN}/tpgt_2/np/10.0.0.1:3260")


def test_fc_fabrics_need_their_module(fake: FakeConfigfs) -> None:
    assert _errno(fake.mkdir, "qla2xxx") == errno.EINVAL
    fake.ensure_fabric("qla2xxx")
    assert fake.ops("modprobe") and fake.ops("modprobe")[0].path == "tcm_qla2xxx"
    wwpn = "21:00:00:24:ff:31:4c:48"
    assert _errno(fake.mkdir, "qla2xxx/naa.21000024ff314c48") == errno.EINVAL
    fake.mkdir(f"qla2xxx/{wwpn}")
    assert _errno(fake.mkdir, f"qla2xxx/{wwpn}/tpgt_2") == errno.EINVAL
    fake.mkdir(f"qla2xxx/{wwpn}/tpgt_1")
    assert fake.read(f"qla2xxx/{wwpn}/tpgt_1/attrib/demo_mode_login_only") == "1"
    assert _errno(fake.mkdir, f"qla2xxx/{wwpn}/tpgt_1/acls/not-a-wwpn") == errno.EINVAL
    fake.mkdir(f"qla2xxx/{wwpn}/tpgt_1/acls/21:00:00:24:ff:00:00:01")
    assert "tag" not in fake.listdir(f"qla2xxx/{wwpn}/tpgt_1/acls/21:00:00:24:ff:00:00:01")
    assert _errno(fake.mkdir, f"qla2xxx/{wwpn}/tpgt_1/np/0.0.0.0:3260") == errno.ENOSYS


def test_reconfig_without_listener_fails_esrch(tmp_path: Path) -> None:
    fake = FakeConfigfs(tmp_path, netlink_listener=False)
    _enabled_device(fake)
    assert _errno(fake.write, f"{DEV}/attrib/dev_size", "8192") == errno.ESRCH
    fake.netlink_listener = True
    fake.write(f"{DEV}/attrib/dev_size", "8192")
    assert "Size: 8192" in fake.read(f"{DEV}/info")
    assert ("RECONFIG:dev_size", DEV) in fake.netlink_events


def test_action_files(fake: FakeConfigfs) -> None:
    _enabled_device(fake)
    fake.write(f"{DEV}/action/block_dev", "1")
    assert fake.read(f"{DEV}/action/block_dev") == "blocked"
    assert _errno(fake.write, f"{DEV}/action/reset_ring", "3") == errno.EINVAL
    fake.write(f"{DEV}/action/reset_ring", "1")
    fake.write(f"{DEV}/action/block_dev", "0")
    assert fake.read(f"{DEV}/action/block_dev") == "unblocked"


def test_vpd_unit_serial_reads_back_with_prefix(fake: FakeConfigfs) -> None:
    fake.mkdir("core/user_0")
    fake.mkdir(DEV)
    fake.write(f"{DEV}/wwn/vpd_unit_serial", "abc123")
    assert fake.read(f"{DEV}/wwn/vpd_unit_serial") == "T10 VPD Unit Serial Number: abc123"


def test_alua_group_rules_of_target_core_alua(fake: FakeConfigfs) -> None:
    fake.mkdir("core/user_0")
    fake.mkdir(DEV)
    group = f"{DEV}/alua/west"
    fake.mkdir(group)
    assert fake.read(f"{group}/tg_pt_gp_id") == ""  # no valid id yet
    assert _errno(fake.write, f"{group}/alua_access_state", "2") == errno.EINVAL
    assert _errno(fake.write, f"{group}/tg_pt_gp_id", "65536") == errno.EINVAL
    fake.write(f"{group}/tg_pt_gp_id", "7")
    assert _errno(fake.write, f"{group}/tg_pt_gp_id", "8") == errno.EINVAL  # once only
    fake.mkdir(f"{DEV}/alua/east")
    assert _errno(fake.write, f"{DEV}/alua/east/tg_pt_gp_id", "7") == errno.EINVAL
    assert _errno(fake.write, f"{group}/alua_access_state", "2") == errno.ENODEV  # disabled
    fake.write(f"{DEV}/enable", "1")
    assert _errno(fake.write, f"{group}/alua_access_state", "4") == errno.EINVAL  # LBD
    fake.write(f"{group}/alua_access_state", "2")
    assert fake.read(f"{group}/alua_access_state") == "2"
    fake.write(f"{group}/alua_access_type", "2")  # explicit only: no configfs transition
    assert fake.read(f"{group}/alua_access_type") == "Explicit"
    assert _errno(fake.write, f"{group}/alua_access_state", "0") == errno.EINVAL
    assert _errno(fake.rmdir, f"{DEV}/alua/default_tg_pt_gp") == errno.EPERM
    assert _errno(fake.rmdir, DEV) == errno.ENOTEMPTY  # it holds groups of its own


def test_lun_membership_follows_the_kernel(fake: FakeConfigfs) -> None:
    _enabled_device(fake)
    fake.mkdir(f"{DEV}/alua/west")
    fake.mkdir(f"{DEV}/alua/nameless")  # never given an id
    fake.write(f"{DEV}/alua/west/tg_pt_gp_id", "3")
    fake.mkdir("loopback")
    fake.mkdir("loopback/naa.5001405000000001")
    fake.mkdir(LOOP_TPG)
    lun = f"{LOOP_TPG}/lun/lun_0"
    fake.mkdir(lun)
    assert fake.read(f"{lun}/alua_tg_pt_gp") == ""
    fake.symlink(DEV, f"{lun}/a")
    assert fake.read(f"{lun}/alua_tg_pt_gp").startswith("TG Port Alias: default_tg_pt_gp\n")
    assert _errno(fake.write, f"{lun}/alua_tg_pt_gp", "nowhere") == errno.ENODEV
    assert _errno(fake.write, f"{lun}/alua_tg_pt_gp", "nameless") == errno.ENODEV
    fake.write(f"{lun}/alua_tg_pt_gp", "west")
    shown = fake.read(f"{lun}/alua_tg_pt_gp")
    assert shown.startswith("TG Port Alias: west\nTG Port Group ID: 3\n")
    assert fake.read(f"{DEV}/alua/west/members") == "loopback/naa.5001405000000001/tpgt_1/lun_0"
    fake.rmdir(f"{DEV}/alua/west")  # its LUNs go back to the default group
    assert fake.read(f"{lun}/alua_tg_pt_gp").startswith("TG Port Alias: default_tg_pt_gp\n")
    fake.mkdir(f"{DEV}/alua/west")
    fake.write(f"{DEV}/alua/west/tg_pt_gp_id", "0")  # 0: the kernel picks a free id
    assert fake.read(f"{DEV}/alua/west/tg_pt_gp_id") == "1"
    fake.write(f"{lun}/alua_tg_pt_gp", "west")
    fake.write(f"{lun}/alua_tg_pt_gp", "NULL")
    assert fake.read(f"{lun}/alua_tg_pt_gp").startswith("TG Port Alias: default_tg_pt_gp\n")
