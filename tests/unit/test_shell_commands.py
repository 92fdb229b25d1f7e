"""The admin shell driven through run_cmdline on the fake configfs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from configshell_fb import ExecutionError

from tcmu_scst.kernel.lio import UserBackstore
from tcmu_scst.scst import conf
from tcmu_scst.scst.mapping import derived_naa
from tcmu_scst.shell.app import ScstShell, build_shell
from tcmu_scst.shell.context import ShellContext
from tcmu_scst.testing.fake_configfs import FakeConfigfs

IQN = "iqn.2024-01.org.test:t1"
INI = "iqn.1994-05.com.redhat:client"
TPG = f"iscsi/{IQN}/tpgt_1"


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        (tmp / "cfs").mkdir()
        self.cfs = FakeConfigfs(tmp / "cfs")
        self.warnings: list[str] = []
        self.disk1 = tmp / "disk1.img"
        self.disk1.write_bytes(b"\0" * (3 << 20))
        self.iso = tmp / "cd.iso"
        self.iso.write_bytes(b"\0" * (1 << 20))
        self.shell = self.new_shell()

    def new_shell(self) -> ScstShell:
        ctx = ShellContext(
            self.cfs,
            state_dir=self.tmp / "state",
            control_socket=self.tmp / "no-daemon.sock",
            sysfs=self.tmp / "sys",
            warn=self.warnings.append,
        )
        ctx.open()
        return build_shell(ctx, capture=True)

    @property
    def ctx(self) -> ShellContext:
        ctx: ShellContext = self.shell.ctx
        return ctx

    def run(self, line: str) -> str:
        out = io.StringIO()
        self.shell.con._stdout = out
        self.shell.run_cmdline(line)
        return out.getvalue()

    def fails(self, line: str, match: str) -> None:
        before = self.running_text()
        with pytest.raises(ExecutionError, match=match):
            self.run(line)
        assert self.running_text() == before  # nothing stored

    def running_text(self) -> str:
        path = self.tmp / "state" / "running.conf"
        return path.read_text() if path.exists() else ""

    def readme_setup(self) -> None:
        """The SCST 0.9.6 README's own examples, plus an iSCSI target."""
        self.run(f"/vdisk open disk1 {self.disk1}")
        self.run("/vdisk open disk2 NULLIO")
        self.run("/groups/Default/devices add disk1 0")
        self.run("/groups/Default/devices add disk2 1")
        self.run("add_group g1")
        self.run(f"/groups/g1/names add {INI}")


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_readme_examples_build_lio_and_the_running_model(rig: Rig) -> None:
    rig.readme_setup()
    rig.run(f"/targets/iscsi create {IQN}")
    rig.run(f"/targets/iscsi/{IQN} enable")
    cfs = rig.cfs
    # Default covers every device with its own numbers: demo mode, TPG LUNs = Default's.
    assert cfs.read(f"{TPG}/attrib/generate_node_acls") == "1"
    assert sorted(cfs.listdir(f"{TPG}/lun")) == ["lun_0", "lun_1"]
    assert cfs.read(f"{TPG}/enable") == "1"
    assert cfs.exists(f"{TPG}/acls/{INI}")  # the named member of g1, no LUNs
    assert cfs.listdir(f"{TPG}/acls/{INI}") == [
        n for n in cfs.listdir(f"{TPG}/acls/{INI}") if not n.startswith("lun_")
    ]
    model = conf.parse(rig.running_text())
    assert [d.name for d in model.devices] == ["disk1", "disk2"]
    default = model.group("Default")
    assert default is not None and [(x.number, x.device) for x in default.luns] == [
        (0, "disk1"),
        (1, "disk2"),
    ]
    g1 = model.group("g1")
    assert g1 is not None and g1.initiators == [INI]
    assert any("daemon is not running" in w for w in rig.warnings)


def test_global_group_reaches_every_target(rig: Rig) -> None:
    rig.readme_setup()
    rig.run("/groups/g1/devices add disk2 0 READ_ONLY")
    rig.run(f"/targets/iscsi create {IQN}")
    rig.run("/targets/iscsi create iqn.2024-01.org.test:t2")
    for iqn in (IQN, "iqn.2024-01.org.test:t2"):
        acl = f"iscsi/{iqn}/tpgt_1/acls/{INI}"
        assert rig.cfs.read(f"{acl}/lun_0/write_protect") == "1"


def test_reads_use_scst_columns(rig: Rig) -> None:
    rig.readme_setup()
    rig.run("/groups/g1/devices add disk1 0 READ_ONLY")
    lines = rig.run("show").splitlines()
    column = "Device (host:ch:id:lun or name)"
    assert lines[0] == f"{column:<60}Device handler"
    assert lines[1] == f"{'disk1':<60}vdisk_fileio"
    assert lines[2] == f"{'disk2':<60}vdisk_nullio"
    devices = rig.run("/groups/g1/devices show").splitlines()
    assert devices[0] == f"{column:<60}Virtual lun  Options"
    assert devices[1] == f"{'disk1':<60}{0:>4}{'RO':>12}"
    assert rig.run("/groups/g1/names show").strip() == INI
    vdisk = rig.run("/vdisk show").splitlines()
    assert vdisk[0].split() == ["Name", "Size(MB)", "Block", "size", "Options", "File", "name"]
    assert vdisk[1].split() == ["disk1", "3", "512", str(rig.disk1)]
    assert vdisk[2].split()[:4] == ["disk2", "2621440", "512", "NIO"]
    assert rig.run("/vdisk/type show").strip() == "0 - Direct-access device (e.g., magnetic disk)"
    assert rig.run("/vcdrom/type show").strip() == "5 - CD-ROM device"
    assert "open|close NAME" in rig.run("/vdisk/help show")
    assert "tcmu-scst" in rig.run("/version show")


def test_devices_groups_luns_and_names_are_nodes_to_ls_and_cd_into(rig: Rig) -> None:
    rig.readme_setup()
    rig.run(f"/vcdrom open cd1 {rig.iso}")
    rig.run("/groups/g1/devices add disk2 0 READ_ONLY")
    (rig.tmp / "sys/class/scsi_device/1:0:1:0").mkdir(parents=True)
    rig.run("assign 1:0:1:0 dev_disk")
    vdisk = rig.run("ls /vdisk")
    assert "disk1" in vdisk and str(rig.disk1) in vdisk and "disk2" in vdisk
    assert "cd1" not in vdisk and "cd1" in rig.run("ls /vcdrom")
    assert "1:0:1:0" in rig.run("ls /dev_disk")
    rig.run("cd /vdisk/disk2")
    assert rig.run("pwd").strip() == "/vdisk/disk2"
    row = rig.run("show").splitlines()  # the handler's columns, this device's row
    assert row[0] == rig.run("/vdisk show").splitlines()[0]
    assert [line.split()[0] for line in row[1:]] == ["disk2"]
    assert rig.run("/vcdrom/cd1 show").splitlines()[1].split()[0] == "cd1"
    groups = rig.run("ls /groups")
    assert "Default" in groups and "g1" in groups and INI in groups
    lun = rig.run("ls /groups/g1/devices")
    assert "disk2" in lun and "LUN 0 RO" in lun
    rig.run("cd /groups/Default/devices/disk1")
    assert rig.run("show").splitlines()[1] == f"{'disk1':<60}{0:>4}{'':>12}"
    rig.run(f"cd /groups/g1/names/{INI}")
    assert rig.run("show").strip() == INI
    # Nodes follow the model: closed and removed things go, and help/type stay.
    rig.run("cd /")
    rig.run("/vdisk close disk2")
    rig.run(f"/groups/g1/names del {INI}")
    assert "disk2" not in rig.run("ls /vdisk") and "trace_level" in rig.run("ls /vdisk")
    assert INI not in rig.run("ls /groups/g1")


def test_group_edits_del_and_clear(rig: Rig) -> None:
    rig.readme_setup()
    rig.run("/groups/g1/devices add disk1 0")
    rig.run("/groups/g1/names add iqn.2000-01.com.example:b")
    rig.run("/groups/g1/names del iqn.2000-01.com.example:b")
    assert rig.ctx.config.group("g1").initiators == [INI]
    rig.run("/groups/g1/names clear")
    rig.run("/groups/g1/devices del disk1")
    assert rig.ctx.config.group("g1").luns == []
    rig.run("/groups/Default/devices del disk2 1")  # 0.9.6 help form with the LUN
    rig.run("/groups/Default/devices clear")
    assert rig.ctx.config.group("Default").luns == []
    rig.run("del_group g1")
    assert rig.ctx.config.group("g1") is None
    assert "g1" not in [c.name for c in rig.shell.root.groups.children]


def test_refusals_leave_everything_unchanged(rig: Rig) -> None:
    rig.readme_setup()
    rig.fails("add_group Default", "predefined")
    rig.fails("del_group Default", "cannot be deleted")
    rig.fails("add_group g1", "already exists")
    rig.fails("del_group nosuch", "does not exist")
    rig.fails("/groups/Default/devices add nosuch 2", "no device nosuch")
    rig.fails("/groups/Default/devices add disk1 5", "already LUN 0")
    rig.fails("/groups/g1/devices add disk1 1", "no LUN 0")
    rig.fails("/groups/g1/devices add disk1 0 RO", "READ_ONLY")
    rig.fails("/groups/g1/devices add disk1 x", "not a number")
    rig.fails("/groups/g1/devices add disk1 0 READ_ONLY extra", "usage: add device lun")
    rig.fails("add_group a|b", "cannot parse")
    rig.fails('add_group "a b"', "cannot parse")
    rig.fails("/groups/g1/names add bad/name", "'/'")
    rig.fails(f"/groups/g1/names add {INI}", "already in group")
    rig.fails("/groups/Default/names add iqn.2024-01.x", "Default takes every initiator")
    rig.fails("/vdisk open disk3 /nonexistent/file", "does not exist")
    rig.fails(f"/vdisk open disk1 {rig.disk1}", "already exists")
    rig.fails(f"/vdisk open disk4 {rig.disk1} 1000", "block size")
    rig.fails(f"/vdisk open disk4 {rig.disk1} BOGUS", "unknown flag")
    rig.fails("/vdisk close nosuch", "no device nosuch")


def test_failed_apply_rolls_back(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.readme_setup()
    ops_before = len(rig.cfs.log)
    model_before = rig.running_text()
    from tcmu_scst.errors import ConfigfsError

    real_mkdir = rig.cfs._do_mkdir

    def failing_mkdir(path: Path) -> None:
        if "np" in path.parts:
            raise OSError(98, "Address already in use")
        real_mkdir(path)

    monkeypatch.setattr(rig.cfs, "_do_mkdir", failing_mkdir)
    with pytest.raises(ExecutionError, match="undone"):
        rig.run(f"/targets/iscsi create {IQN}")
    assert not rig.cfs.exists(f"iscsi/{IQN}")
    assert rig.running_text() == model_before
    assert rig.ctx.config.target("iscsi", IQN) is None
    assert len(rig.cfs.log) > ops_before
    assert issubclass(ConfigfsError, Exception)


def test_vdisk_close_takes_its_luns_and_resync_size(rig: Rig) -> None:
    rig.readme_setup()
    rig.disk1.write_bytes(b"\0" * (5 << 20))
    rig.run("/vdisk resync_size disk1")
    backstore = [d for d in rig.cfs.listdir("core") if d.startswith("user_")]
    sizes = [rig.cfs.read(f"core/{hba}/disk1/attrib/dev_size") for hba in backstore
             if rig.cfs.exists(f"core/{hba}/disk1")]  # fmt: skip
    assert sizes == [str(5 << 20)]
    rig.fails("/vdisk close disk1", "no LUN 0")  # disk2 would be left without LUN 0
    rig.run("/groups/Default/devices del disk2")
    rig.run("/vdisk close disk1")
    assert rig.ctx.config.device("disk1") is None
    assert rig.ctx.config.group("Default").luns == []


def test_vcdrom_open_change_close(rig: Rig) -> None:
    rig.run(f"/vcdrom open cd1 {rig.iso}")
    rig.run("/vcdrom open cd2")
    table = rig.run("/vcdrom show").splitlines()
    assert table[1].split() == ["cd1", "1", str(rig.iso)]
    assert table[2].split() == ["cd2", "0", "none"]  # an empty drive
    other = rig.tmp / "other.iso"
    other.write_bytes(b"\0" * (2 << 20))
    hba = next(h for h in rig.cfs.listdir("core") if rig.cfs.exists(f"core/{h}/cd1"))
    rig.run(f"/vcdrom change cd1 {other}")
    assert str(other) in rig.cfs.read(f"core/{hba}/cd1/attrib/dev_config")
    assert rig.cfs.exists(f"core/{hba}/cd1")  # swapped in place, not re-created
    assert str(other) in rig.running_text()
    assert rig.new_shell().ctx.load_note is None  # model and live agree
    rig.run("/vcdrom change cd1")  # eject
    assert str(other) not in rig.cfs.read(f"core/{hba}/cd1/attrib/dev_config")
    rig.run("/vcdrom close cd2")
    assert rig.ctx.config.device("cd2") is None
    rig.fails("/vcdrom change nosuch", "no virtual CD-ROM")
    rig.fails("/vcdrom open cd3 relative.iso", "vcdrom")


def test_assign_passthrough(rig: Rig) -> None:
    (rig.tmp / "sys/class/scsi_device/1:0:1:0").mkdir(parents=True)
    rig.fails("assign 2:0:0:0 dev_disk", "no local SCSI device")
    rig.fails("assign 1:0:1:0 vdisk_fileio", "cannot be assigned")
    rig.run("assign 1:0:1:0 dev_disk")
    assert rig.ctx.config.device("1:0:1:0").handler == "dev_disk"
    assert "1:0:1:0" in rig.run("/dev_disk show")


def test_targets_portals_chap_enable(rig: Rig) -> None:
    rig.readme_setup()
    rig.run(f"/targets/iscsi create {IQN}")
    assert rig.cfs.read(f"{TPG}/enable") == "0"  # disabled until asked
    node = f"/targets/iscsi/{IQN}"
    rig.run(f"{node} add_portal 127.0.0.1:3261")
    assert rig.cfs.exists(f"{TPG}/np/127.0.0.1:3261")
    rig.fails(f"{node} set_chap joe short", "is 5 bytes; use 12 to 16")
    rig.run(f"{node} set_chap joe secret123456")
    assert rig.cfs.read(f"{TPG}/auth/userid") == "joe"
    rig.run(f"{node} enable")
    assert "enabled" in rig.run(f"{node} show")
    rig.run(f"{node} clear_chap")
    rig.run(f"{node} del_portal 127.0.0.1:3261")
    rig.run(f"{node} disable")
    assert rig.cfs.read(f"{TPG}/enable") == "0"
    rig.run("/targets/loopback create local1")
    rig.fails("/targets/loopback/local1 add_portal 1.2.3.4", "only on iSCSI")
    rig.fails("/targets/qla2xxx create not-a-wwpn", "WWPN")
    rig.run(f"/targets/iscsi delete {IQN}")
    assert not rig.cfs.exists(f"iscsi/{IQN}")


def test_trace_level_forms(rig: Rig) -> None:
    assert "mgmt" in rig.run("/trace_level show")
    rig.run("/trace_level none")
    assert rig.run("/trace_level show").strip() == "none"
    rig.run("/trace_level add scsi")
    rig.run("/trace_level add retry")  # root-only token
    assert rig.run("/trace_level show").strip() == "scsi | retry"
    rig.run("/trace_level del scsi")
    rig.run("/trace_level value 0x3")
    assert rig.run("/trace_level show").strip() == "out_of_mem | minor"
    rig.run("/vdisk/trace_level set debug")
    assert rig.run("/vdisk/trace_level show").strip() == "debug"
    rig.fails("/vdisk/trace_level add retry", "unknown trace token")
    rig.run("/vdisk/trace_level all")
    assert "retry" not in rig.run("/vdisk/trace_level show")
    rig.run("/vdisk/trace_level value 010")  # 0OCT: 8
    assert rig.run("/vdisk/trace_level show").strip() == "mem"


def test_threads_without_daemon(rig: Rig) -> None:
    out = rig.run("/threads set 0x4")
    assert "daemon not running" in out
    assert rig.ctx.config.threads == 4
    assert rig.run("/threads show").startswith("4 ")
    rig.fails("/threads set 0", "out of range")


def test_save_and_restore(rig: Rig) -> None:
    rig.readme_setup()
    rig.run(f"/targets/iscsi create {IQN}")
    saved = rig.tmp / "saved.conf"
    rig.run(f"saveconfig {saved}")
    assert "GROUP g1" in saved.read_text()
    rig.run("/groups/Default/devices clear")
    rig.run("del_group g1")
    rig.run(f"restoreconfig {saved}")
    assert rig.ctx.config.group("g1") is not None
    assert sorted(rig.cfs.listdir(f"{TPG}/lun")) == ["lun_0", "lun_1"]
    rig.fails(f"restoreconfig {rig.tmp}/missing.conf", "not found")


def test_running_model_survives_and_is_rebuilt_when_stale(rig: Rig) -> None:
    rig.readme_setup()
    rig.run("add_group g2")  # a global group with no target leaves no trace in LIO
    again = rig.new_shell()
    assert again.ctx.load_note is None
    assert again.ctx.config.group("g2") is not None
    # Someone removes a LUN behind our back: the model no longer matches LIO.
    rig.run(f"/targets/iscsi create {IQN}")
    alias = rig.cfs.listdir(f"{TPG}/lun/lun_1")
    link = next(n for n in alias if rig.cfs.is_link(f"{TPG}/lun/lun_1/{n}"))
    rig.cfs.unlink(f"{TPG}/lun/lun_1/{link}")
    rig.cfs.rmdir(f"{TPG}/lun/lun_1")
    rebuilt = rig.new_shell()
    assert rebuilt.ctx.load_note is not None and "rebuilt" in rebuilt.ctx.load_note


def test_completion(rig: Rig) -> None:
    rig.readme_setup()
    devices = rig.shell.root.get_node("/groups/Default/devices")
    assert devices.ui_complete_add({}, "di", "device") == ["disk1", "disk2"]
    assert devices.ui_complete_add({}, "disk1", "device") == ["disk1 "]
    assert devices.ui_complete_add({}, "R", "read_only") == ["READ_ONLY "]
    vdisk = rig.shell.root.get_node("/vdisk")
    assert vdisk.ui_complete_open({}, "NV", "*") == ["NV_CACHE "]
    assert vdisk.ui_complete_open({}, str(rig.tmp / "disk"), "path") == [f"{rig.disk1} "]
    assert vdisk.ui_complete_close({}, "", "name") == ["disk1", "disk2"]
    root = rig.shell.root
    assert root.ui_complete_del_group({}, "g", "group") == ["g1 "]
    assert root.ui_complete_assign({}, "dev_di", "handler") == ["dev_disk", "dev_disk_perf"]
    names = rig.shell.root.get_node("/groups/g1/names")
    assert names.ui_complete_del({}, "", "name") == [f"{INI} "]
    assert "scsi_serializing " in rig.shell.root.get_node("/trace_level").ui_complete_add(
        {}, "scsi_s", "token"
    )


def test_two_shells_do_not_lose_each_others_changes(rig: Rig) -> None:
    rig.run("/vdisk open disk2 NULLIO")
    other = rig.new_shell()
    rig.run("add_group g1")
    other.run_cmdline("add_group g2")  # opened before g1 existed
    assert any("changed by another tcmu-scst shell" in w for w in rig.warnings)
    names = [g.name for g in conf.parse(rig.running_text()).groups]
    assert names == ["g1", "g2"]


def test_a_shell_opened_before_any_model_follows_a_config_apply(rig: Rig) -> None:
    # Opened with no running.conf yet; config apply then stores one: the shell's next
    # change must start from it, not from its empty model (which would undo the apply).
    from tcmu_scst.scst import commands

    path = rig.tmp / "scst.conf"
    path.write_text(f"HANDLER vdisk_fileio {{\n DEVICE d0 {{\n  filename {rig.disk1}\n }}\n}}\n")
    state = rig.tmp / "state" / "lio-state.json"
    assert commands.apply(path, "auto", rig.cfs, state, out=io.StringIO()) == 0
    rig.run("add_group g1")
    model = conf.parse(rig.running_text())
    assert [d.name for d in model.devices] == ["d0"] and model.group("g1") is not None
    assert any("or a config apply; reloaded" in w for w in rig.warnings)


def test_alua_device_groups_are_made_changed_and_saved(rig: Rig) -> None:
    rig.readme_setup()
    rig.run("/targets/loopback create west")
    rig.run("/targets/loopback create east")
    rig.run("/device_groups add dg")
    rig.run("/device_groups/dg/devices add disk1")
    rig.run("/device_groups/dg/target_groups add tw 1")
    rig.run("/device_groups/dg/target_groups add te 2")
    tgs = "/device_groups/dg/target_groups"
    rig.run(f"{tgs}/tw add west")
    rig.run(f"{tgs}/tw preferred 1")
    rig.run(f"{tgs}/te add east")
    rig.run(f"{tgs}/te state standby")
    dev = next(d.rel for d in UserBackstore.all(rig.cfs) if d.name == "disk1")
    assert rig.cfs.read(f"{dev}/alua/te/alua_access_state") == "2"
    assert rig.cfs.read(f"{dev}/alua/tw/preferred") == "1"
    east = derived_naa("loopback", "east", "Default")
    shown = rig.cfs.read(f"loopback/{east}/tpgt_1/lun/lun_0/alua_tg_pt_gp")
    assert shown.startswith("TG Port Alias: te\n")
    assert "state standby" in rig.run(f"{tgs}/te show")
    assert "DEVICE disk1" in rig.run("/device_groups/dg show")
    rig.fails(f"{tgs}/te state sleepy", "not one of")
    rig.fails(f"{tgs} add tx 1", "group_id 1 is used")
    rig.fails(f"{tgs}/te add nowhere", "no TARGET_DRIVER defines")
    rig.fails("/device_groups/dg/devices add nodisk", "no device nodisk")
    saved = rig.tmp / "saved.conf"
    rig.run(f"saveconfig {saved}")
    assert conf.load(saved).device_groups == rig.ctx.config.device_groups
    rig.run(f"{tgs}/te state active")
    assert rig.cfs.read(f"{dev}/alua/te/alua_access_state") == "0"
    rig.run("/device_groups del dg")
    assert rig.cfs.listdir(f"{dev}/alua") == ["default_tg_pt_gp"]
    rig.run(f"restoreconfig {saved}")
    assert rig.cfs.read(f"{dev}/alua/te/alua_access_state") == "2"
