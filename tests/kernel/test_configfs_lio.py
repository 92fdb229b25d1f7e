"""The configfs layer and its helpers against the real kernel (lab guest only).

Every device here uses ``nl_reply_supported=-1`` so no write waits for a netlink reply
(nobody answers in these tests). A device is exported on tcm_loop only with a short
``cmd_time_out``: the LUN link makes the SCSI midlayer send INQUIRY to the ring, which no
handler serves, so the scan ends when the kernel times the command out.
"""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tcmu_scst.errors import ConfigfsError
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import IscsiTpg, LoopbackTpg
from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions, hba_indexes
from tcmu_scst.testing.fake_configfs import FakeConfigfs
from tests.kernel.tcmu_rig import uio_names

IQN = "iqn.2003-01.org.tcmu-scst:kt-configfs"
INI = "iqn.1993-08.org.debian:01:kt-initiator"


@pytest.fixture
def cfs(configfs: Configfs) -> Configfs:
    return configfs


def purge(cfs: Configfs, rel: str) -> None:
    """Best-effort removal of ``rel`` and everything a user made below it."""
    if not cfs.exists(rel):
        return
    if cfs.is_link(rel):
        cfs.unlink(rel)
        return
    if rel.startswith("loopback/") and rel.rsplit("/", 1)[-1].startswith("tpgt_"):
        for name in cfs.listdir(f"{rel}/lun"):
            purge(cfs, f"{rel}/lun/{name}")
        with contextlib.suppress(ConfigfsError):
            cfs.write(f"{rel}/nexus", "NULL")
    for name in cfs.listdir(rel):
        child = f"{rel}/{name}"
        if cfs.is_link(child) or cfs.is_dir(child):
            purge(cfs, child)
    with contextlib.suppress(ConfigfsError):
        cfs.rmdir(rel)


def test_user_backstore_export_and_teardown(cfs: Configfs) -> None:
    opts = UserBackstoreOptions(
        dev_config="kt/some config",
        dev_size=64 << 20,
        nl_reply_supported=-1,
        serial="ktserial01",
        cmd_time_out=1,
        qfull_time_out=5,
    )
    dev = UserBackstore.create(cfs, "kt_cfs", opts)
    uio_name = dev.uio_name
    loop: LoopbackTpg | None = None
    iscsi: IscsiTpg | None = None
    try:
        assert dev.enabled
        assert f"tcm-user/{dev.hba_index}/kt_cfs/kt/some config" in uio_names()
        assert dev.uio_name in uio_names()
        info = dev.info()
        print("info:", cfs.read(f"{dev.rel}/info"))
        assert info.config == "kt/some config" and info.size == 64 << 20
        assert info.max_data_area_mb == 64
        assert dev.attrib("hw_max_sectors") == "2048"
        assert dev.attrib("hw_block_size") == "512"
        assert dev.attrib("max_data_area_mb") == "64"
        assert dev.attrib("nl_reply_supported") == "-1"
        assert dev.attrib("cmd_time_out") == "1"
        assert dev.attrib("qfull_time_out") == "5"
        assert dev.serial() == "ktserial01"
        assert not dev.blocked

        loop = LoopbackTpg.create(cfs)
        loop.add_lun(0, dev)
        _host, channel, target = loop.address()
        assert (channel, target) == (0, 1)
        assert loop.nexus is not None and loop.nexus.startswith("naa.")
        assert loop.luns() == {0: dev.rel}
        assert dev.info().status == "ACTIVATED"
        print("info after export:", cfs.read(f"{dev.rel}/info"))
        with pytest.raises(ConfigfsError) as exc:
            dev.set_cmd_time_out(3)
        assert exc.value.errno == errno.EINVAL

        iscsi = IscsiTpg.create(cfs, IQN)
        iscsi.set_attributes(
            {"authentication": 0, "generate_node_acls": 0, "demo_mode_discovery": 0}
        )
        iscsi.add_portal("127.0.0.1", 3262)
        iscsi.add_portal("::1", 3262)
        iscsi.add_lun(0, dev)
        acl = iscsi.add_acl(INI)
        acl.map_lun(3, 0, write_protect=True)
        acl.set_tag("Group One")
        acl.set_chap("kt-user", "kt-secret-123")
        iscsi.enable()
        assert iscsi.enabled
        assert sorted(iscsi.portals()) == ["127.0.0.1:3262", "[::1]:3262"]
        mapped = acl.mapped_luns()
        assert mapped[3].tpg_lun == 0 and mapped[3].write_protect
        assert acl.tag == "Group One"
        assert cfs.read(f"{acl.rel}/auth/userid") == "kt-user"
        assert acl.session() is None
        assert acl.num_cmds(3) == 0
        assert iscsi.dynamic_sessions() == []
        assert iscsi.attrib("generate_node_acls") == "0"
        print("acl info:", cfs.read(f"{acl.rel}/info"))
        print("cmdsn_depth:", cfs.read(f"{acl.rel}/cmdsn_depth"))
    finally:
        if iscsi is not None:
            iscsi.delete()
        if loop is not None:
            loop.delete()
        dev.delete()
    assert not cfs.exists(f"iscsi/{IQN}")
    assert not cfs.exists(dev.hba)
    assert uio_name not in uio_names()


def _probe(cfs: Configfs, record: Callable[..., None]) -> None:
    index = max(hba_indexes(cfs) | {99}) + 1
    dev = f"core/user_{index}/probe"
    cfs.mkdir(f"core/user_{index}")
    cfs.mkdir(dev)
    cfs.write(f"{dev}/control", "dev_config=probe/x,b,dev_size=1048576,nl_reply_supported=-1")
    record("comma_truncates_dev_config", cfs.read, f"{dev}/attrib/dev_config")
    cfs.write(f"{dev}/attrib/cmd_time_out", "1")
    cfs.ensure_fabric("loopback")
    loop = "loopback/naa.5001405000000abc/tpgt_1"
    cfs.mkdir("loopback/naa.5001405000000abc")
    record("loopback_tpgt_32", cfs.mkdir, "loopback/naa.5001405000000abc/tpgt_32")
    cfs.mkdir(loop)
    record("loopback_nexus_read_without_one", cfs.read, f"{loop}/nexus")
    record("loopback_nexus_wrong_prefix", cfs.write, f"{loop}/nexus", "iqn.1.x")
    cfs.write(f"{loop}/nexus", "naa.5001405000000abd")
    record("loopback_second_nexus", cfs.write, f"{loop}/nexus", "naa.5001405000000abe")
    cfs.mkdir(f"{loop}/lun/lun_0")
    record("link_disabled_device", cfs.symlink, dev, f"{loop}/lun/lun_0/a")
    cfs.write(f"{dev}/enable", "1")
    record("enable_twice", cfs.write, f"{dev}/enable", "1")
    record("ring_key_after_enable", cfs.write, f"{dev}/control", "max_data_area_mb=8")
    record("write_read_only_info", cfs.write, f"{dev}/info", "x")
    record("rmdir_default_group", cfs.rmdir, f"{dev}/attrib")
    record("mkdir_in_default_group", cfs.mkdir, f"{dev}/attrib/x")
    record("link_hba_not_device", cfs.symlink, f"core/user_{index}", f"{loop}/lun/lun_0/h")
    cfs.symlink(dev, f"{loop}/lun/lun_0/a")
    record("second_device_same_lun", cfs.symlink, dev, f"{loop}/lun/lun_0/b")
    record("cmd_time_out_exported", cfs.write, f"{dev}/attrib/cmd_time_out", "5")
    record("nexus_drop_with_luns", cfs.write, f"{loop}/nexus", "NULL")
    record("rmdir_lun_with_link", cfs.rmdir, f"{loop}/lun/lun_0")
    record("rmdir_hba_with_device", cfs.rmdir, f"core/user_{index}")
    cfs.ensure_fabric("iscsi")
    iqn = "iscsi/iqn.2003-01.org.tcmu-scst:kt-probe"
    cfs.mkdir(iqn)
    cfs.mkdir(f"{iqn}/tpgt_1")
    cfs.mkdir(f"{iqn}/tpgt_2")
    cfs.mkdir(f"{iqn}/tpgt_1/np/127.0.0.1:3263")
    record("portal_conflict_same_iqn", cfs.mkdir, f"{iqn}/tpgt_2/np/127.0.0.1:3263")
    for tpg in ("tpgt_1", "tpgt_2"):
        cfs.mkdir(f"{iqn}/{tpg}/lun/lun_0")
        cfs.symlink(dev, f"{iqn}/{tpg}/lun/lun_0/d")
    acl = f"{iqn}/tpgt_1/acls/kt.probe.initiator"
    cfs.mkdir(acl)
    cfs.mkdir(f"{acl}/lun_1")
    record("mapped_lun_other_tpg", cfs.symlink, f"{iqn}/tpgt_2/lun/lun_0", f"{acl}/lun_1/x")
    record("mapped_lun_to_device", cfs.symlink, dev, f"{acl}/lun_1/y")
    cfs.mkdir(f"{acl}/lun_2")
    cfs.symlink(f"{iqn}/tpgt_1/lun/lun_0", f"{acl}/lun_2/m")
    record("wp_initial", cfs.read, f"{acl}/lun_2/write_protect")
    record("tag_64_bytes", cfs.write, f"{acl}/tag", "t" * 64)
    record(
        "acl_has_tag_info_cmdsn",
        lambda: sorted(n for n in cfs.listdir(acl) if n in ("tag", "info", "cmdsn_depth")),
        None,
    )
    record("rmdir_acl_with_mapped_lun", cfs.rmdir, acl)
    record("cmdsn_depth_0", cfs.write, f"{acl}/cmdsn_depth", "0")
    record("cmdsn_depth_513", cfs.write, f"{acl}/cmdsn_depth", "513")
    cfs.write(f"{acl}/tag", "grp")
    record("tag_read", cfs.read, f"{acl}/tag")
    cfs.write(f"{acl}/tag", "NULL")
    record("tag_after_null", cfs.read, f"{acl}/tag")
    cfs.write(f"{acl}/auth/userid", "NULL")
    record("auth_userid_after_null", cfs.read, f"{acl}/auth/userid")
    cfs.write(f"{acl}/lun_2/write_protect", "1")
    record("wp_after_write", cfs.read, f"{acl}/lun_2/write_protect")
    record("unknown_control_key", cfs.write, f"{dev}/control", "bogus_key=1")
    record("reconfig_dev_size_no_listener", cfs.write, f"{dev}/attrib/dev_size", "2097152")
    record("reconfig_dev_config_no_listener", cfs.write, f"{dev}/attrib/dev_config", "probe/y")
    record("dev_size_after_failed_reconfig", cfs.read, f"{dev}/attrib/dev_size")
    record("vpd_unit_serial_unset", cfs.read, f"{dev}/wwn/vpd_unit_serial")
    record("vpd_unit_serial_exported", cfs.write, f"{dev}/wwn/vpd_unit_serial", "probe123")
    cfs.write(f"{dev}/action/block_dev", "1")
    record("block_dev_read_blocked", cfs.read, f"{dev}/action/block_dev")
    record("reset_ring_3", cfs.write, f"{dev}/action/reset_ring", "3")
    cfs.write(f"{dev}/action/block_dev", "0")
    record("block_dev_read_unblocked", cfs.read, f"{dev}/action/block_dev")
    record("loopback_nexus_read", cfs.read, f"{loop}/nexus")
    record("loopback_address", lambda: re.sub(r"^\d+", "H", cfs.read(f"{loop}/address")), None)
    cfs.write(f"{iqn}/tpgt_1/enable", "1")
    record("iscsi_tpg_enable_read", cfs.read, f"{iqn}/tpgt_1/enable")
    record("iscsi_tpg_enable_2", cfs.write, f"{iqn}/tpgt_1/enable", "2")
    cfs.write(f"{iqn}/tpgt_1/enable", "0")
    record("mkdir_portal_on_loopback", cfs.mkdir, f"{loop}/np/127.0.0.1:3264")
    record("mkdir_unloaded_fabric", cfs.mkdir, "qla2xxx")
    # The two the fake guesses at (EBUSY): last, since success changes the tree.
    record("unlink_tpg_lun_still_mapped", cfs.unlink, f"{iqn}/tpgt_1/lun/lun_0/d")
    cfs.unlink(f"{loop}/lun/lun_0/a")
    cfs.rmdir(f"{loop}/lun/lun_0")
    record("nexus_drop_after_failed_scan", cfs.write, f"{loop}/nexus", "NULL")
    record("rmdir_exported_device", cfs.rmdir, dev)


def _run_probe(cfs: Configfs) -> dict[str, object]:
    results: dict[str, object] = {}

    def record(key: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            value = fn(*[a for a in args if a is not None])
            results[key] = value if isinstance(value, (str, list)) else 0
        except ConfigfsError as err:
            results[key] = errno.errorcode.get(err.errno, err.errno)

    try:
        _probe(cfs, record)
    finally:
        for rel in (
            "iscsi/iqn.2003-01.org.tcmu-scst:kt-probe",
            "loopback/naa.5001405000000abc",
            "qla2xxx",
        ):
            purge(cfs, rel)
        for name in cfs.listdir("core"):
            if cfs.exists(f"core/{name}/probe"):
                purge(cfs, f"core/{name}")
    return results


@pytest.fixture
def fake_results(tmp_path: Path) -> Iterator[dict[str, object]]:
    # Nobody listens to TCM-USER in these tests, like the kernel run.
    # and no handler serves the ring, so tcm_loop's SCSI scans fail.
    yield _run_probe(FakeConfigfs(tmp_path, netlink_listener=False, loopback_scan_ok=False))


def test_fake_configfs_matches_kernel_rules(cfs: Configfs, fake_results: dict[str, object]) -> None:
    real = _run_probe(cfs)
    for key in real:
        print(f"{key:32} kernel={real[key]!s:12} fake={fake_results.get(key)!s}")
    assert not cfs.exists("iscsi/iqn.2003-01.org.tcmu-scst:kt-probe")
    assert real == fake_results
