"""Core backstore helpers (tcmu_scst.kernel.lio) on the fake configfs."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigError, ConfigfsError
from tcmu_scst.kernel.lio import (
    FileioBackstore,
    UserBackstore,
    UserBackstoreOptions,
    hba_indexes,
    parse_fileio_info,
    parse_user_info,
    validate_object_name,
)
from tcmu_scst.testing.fake_configfs import FakeConfigfs

OPTS = UserBackstoreOptions(dev_config="file//var/lib/d1.img", dev_size=1 << 30, serial="d1")


@pytest.fixture
def fake(tmp_path: Path) -> FakeConfigfs:
    return FakeConfigfs(tmp_path)


def test_create_order_and_defaults(fake: FakeConfigfs) -> None:
    dev = UserBackstore.create(fake, "d1", OPTS)
    assert dev.rel == "core/user_0/d1"
    controls = [o.value for o in fake.ops("write") if o.path.endswith("/control")]
    assert controls == [
        "dev_config=file//var/lib/d1.img",
        f"dev_size={1 << 30}",
        "hw_block_size=512",
        "hw_max_sectors=2048",
        "max_data_area_mb=64",
    ]
    # serial before enable, enable after every control write
    serial_at = fake.index_of("write", "wwn/vpd_unit_serial")
    enable_at = fake.index_of("write", "d1/enable")
    last_control = max(i for i, o in enumerate(fake.log) if o.path.endswith("/control"))
    assert last_control < serial_at < enable_at
    assert dev.enabled and fake.is_enabled(dev.rel)
    assert dev.serial() == "d1"
    info = dev.info()
    assert (info.config, info.size, info.max_data_area_mb) == (OPTS.dev_config, 1 << 30, 64)
    assert info.hw_max_sectors == 2048
    assert dev.uio_name == "tcm-user/0/d1/file//var/lib/d1.img"
    assert fake.uio_names[0] == dev.uio_name


def test_hw_max_sectors_follows_block_size(fake: FakeConfigfs) -> None:
    opts = UserBackstoreOptions(dev_config="rbd/x", dev_size=4096, hw_block_size=4096)
    assert "hw_max_sectors=256" in opts.control_tokens()


def test_nl_reply_and_timeouts(fake: FakeConfigfs) -> None:
    opts = UserBackstoreOptions(
        dev_config="a/b", dev_size=0, nl_reply_supported=-1, cmd_time_out=5, qfull_time_out=2
    )
    dev = UserBackstore.create(fake, "d2", opts)
    assert dev.attrib("nl_reply_supported") == "-1"
    assert dev.attrib("cmd_time_out") == "5"
    assert dev.attrib("qfull_time_out") == "2"
    assert fake.index_of("write", "d2/enable") < fake.index_of("write", "attrib/cmd_time_out")


def test_hba_index_is_lowest_unused_across_plugins(fake: FakeConfigfs) -> None:
    fake.mkdir("core/fileio_0")
    fake.mkdir("core/iblock_2")
    a = UserBackstore.create(fake, "a", UserBackstoreOptions("x/y", 0))
    b = UserBackstore.create(fake, "b", UserBackstoreOptions("x/y", 0))
    assert (a.hba_index, b.hba_index) == (1, 3)
    a.delete()
    assert hba_indexes(fake) == {0, 2, 3}
    c = UserBackstore.create(fake, "c", UserBackstoreOptions("x/y", 0))
    assert c.hba_index == 1


def test_find_all_and_delete(fake: FakeConfigfs) -> None:
    UserBackstore.create(fake, "a", UserBackstoreOptions("x/y", 0))
    b = UserBackstore.create(fake, "b", UserBackstoreOptions("x/y", 0))
    assert [d.name for d in UserBackstore.all(fake)] == ["a", "b"]
    found = UserBackstore.find(fake, "b")
    assert found is not None and found.rel == b.rel
    assert UserBackstore.find(fake, "zz") is None
    b.delete()
    assert not fake.exists(b.rel) and not fake.exists(b.hba)
    with pytest.raises(ConfigError, match="already exists"):
        UserBackstore.create(fake, "a", UserBackstoreOptions("x/y", 0))


def test_failed_create_leaves_nothing(tmp_path: Path) -> None:
    fake = FakeConfigfs(tmp_path)
    opts = UserBackstoreOptions("x/y", 0, cmd_time_out=1)
    # make cmd_time_out fail by making the file read-only in the fake
    original = fake._store_device_attrib

    def refuse(dev_rel: str, leaf: str, value: str) -> None:
        if leaf == "cmd_time_out":
            raise OSError(errno.EINVAL, "refused")
        original(dev_rel, leaf, value)

    fake._store_device_attrib = refuse  # type: ignore[method-assign]
    with pytest.raises(ConfigfsError) as exc:
        UserBackstore.create(fake, "a", opts)
    assert exc.value.errno == errno.EINVAL
    assert fake.listdir("core") == ["alua"]


def test_dev_config_validation() -> None:
    with pytest.raises(ConfigError, match="','"):
        UserBackstoreOptions("file//a,b", 0).control_tokens()
    with pytest.raises(ConfigError, match="subtype"):
        UserBackstoreOptions("noslash", 0).control_tokens()
    with pytest.raises(ConfigError, match="longer"):
        UserBackstoreOptions("f/" + "x" * 300, 0).control_tokens()


def test_names_validate_only_what_configfs_needs() -> None:
    assert validate_object_name("Disk_1:weird.Name", "backstore") == "Disk_1:weird.Name"
    for bad in ("", "a/b", "a b", "a\nb", "x" * 256, ".."):
        with pytest.raises(ConfigError):
            validate_object_name(bad, "backstore")


def test_actions_and_reconfig(fake: FakeConfigfs) -> None:
    dev = UserBackstore.create(fake, "a", UserBackstoreOptions("x/y", 4096))
    dev.block()
    assert dev.blocked
    dev.reset_ring(2)
    dev.unblock()
    assert not dev.blocked
    with pytest.raises(ConfigError):
        dev.reset_ring(3)
    dev.set_dev_size(8192)
    dev.set_write_cache(True)
    dev.set_dev_config("x/z")
    assert dev.info().size == 8192
    assert dev.attrib("emulate_write_cache") == "1"
    assert dev.uio_name == "tcm-user/0/a/x/z"
    assert [e for e, _ in fake.netlink_events if e.startswith("RECONFIG")] == [
        "RECONFIG:dev_size",
        "RECONFIG:emulate_write_cache",
        "RECONFIG:dev_config",
    ]


def test_parse_real_info_formats() -> None:
    text = (
        "Status: DEACTIVATED  Max Queue Depth: 0  SectorSize: 512  HwMaxSectors: 128\n"
        "        Config: NULL Size: 0 MaxDataAreaMB: 1024 DataPagesPerBlk: 1 "
        "CmdRingSizeMB: 8\n"
    )
    info = parse_user_info(text)
    assert info.config is None and info.size == 0 and info.cmd_ring_size_mb == 8
    assert info.status == "DEACTIVATED" and info.max_queue_depth == 0
    old = "Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 128\n"
    old += "        Config: file/a b Size: 42 MaxDataAreaMB: 64\n"
    info = parse_user_info(old)
    assert info.config == "file/a b" and info.size == 42 and info.data_pages_per_blk is None
    with pytest.raises(ConfigfsError):
        parse_user_info("garbage")


# ---- fileio (the lab's in-kernel reference backstore) --------------------------------


def test_fileio_create_writes_one_key_per_control_write_then_enables(
    fake: FakeConfigfs, tmp_path: Path
) -> None:
    image = tmp_path / "f0.img"
    dev = FileioBackstore.create(fake, "f0", image, 16 << 20, buffered=True)
    assert dev.rel == "core/fileio_0/f0" and dev.enabled
    controls = [o.value for o in fake.ops("write") if o.path.endswith("/control")]
    assert controls == [f"fd_dev_name={image}", f"fd_dev_size={16 << 20}", "fd_buffered_io=1"]
    assert fake.index_of("write", "f0/enable") > fake.index_of("write", "f0/control")
    assert image.exists()  # the kernel opens it O_CREAT
    assert dev.info().path == str(image) and dev.info().size == 16 << 20
    assert "Buffered-WCE" in fake.read(f"{dev.rel}/info")


def test_fileio_and_user_share_the_hba_index_space(fake: FakeConfigfs, tmp_path: Path) -> None:
    user = UserBackstore.create(fake, "u", UserBackstoreOptions("x/y", 0))
    fileio = FileioBackstore.create(fake, "f", tmp_path / "f.img", 1 << 20)
    assert (user.hba, fileio.hba) == ("core/user_0", "core/fileio_1")
    assert [d.name for d in FileioBackstore.all(fake)] == ["f"]
    assert FileioBackstore.find(fake, "u") is None and UserBackstore.find(fake, "f") is None
    fileio.delete()
    assert not fake.exists("core/fileio_1")
    with pytest.raises(ConfigError, match="a user backstore named 'u' already exists"):
        UserBackstore.create(fake, "u", UserBackstoreOptions("x/y", 0))


@pytest.mark.parametrize(
    ("path", "size", "match"),
    [
        ("relative.img", 1 << 20, "absolute path"),
        ("/tmp/a,b.img", 1 << 20, "','"),
        ("/tmp/a.img", 0, "size must be > 0"),
    ],
)
def test_fileio_refuses_what_the_kernel_would_misparse(
    fake: FakeConfigfs, path: str, size: int, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        FileioBackstore.create(fake, "f", Path(path), size)
    assert fake.ops("mkdir") == []


def test_fileio_refused_enable_leaves_nothing(fake: FakeConfigfs, tmp_path: Path) -> None:
    with pytest.raises(ConfigfsError) as exc:
        FileioBackstore.create(fake, "f", tmp_path / "no-such-dir" / "f.img", 1 << 20)
    assert exc.value.errno == errno.ENOENT and "f/enable" in str(exc.value)
    assert fake.listdir("core") == ["alua"]


def test_parse_fileio_info() -> None:
    text = (
        "Status: DEACTIVATED  Max Queue Depth: 0  SectorSize: 512  HwMaxSectors: 16384\n"
        "        TCM FILEIO ID: 0        File: /run/c0.img  Size: 268435456  Mode: O_DSYNC"
        " Async: 0\n"
    )
    info = parse_fileio_info(text)
    assert (info.path, info.size) == ("/run/c0.img", 268435456)
    with pytest.raises(ConfigfsError, match="is this a fileio backstore"):
        parse_fileio_info("Status: ACTIVATED Config: x Size: 5")


def test_cmd_ring_size_goes_into_control_before_enable(fake: FakeConfigfs) -> None:
    dev = UserBackstore.create(fake, "r", UserBackstoreOptions("x/y", 0, cmd_ring_size_mb=1))
    assert fake.index_of("write", "r/control", "cmd_ring_size_mb=1") < fake.index_of(
        "write", "r/enable"
    )
    assert dev.info().cmd_ring_size_mb == 1
    with pytest.raises(ConfigError, match="cmd_ring_size_mb must be > 0"):
        UserBackstore.create(fake, "s", UserBackstoreOptions("x/y", 0, cmd_ring_size_mb=0))
