"""Identity rules for pass-through devices: parsing, checks, resolution against sysfs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigError
from tcmu_scst.scst import commands, hotplug_rules
from tcmu_scst.scst.hotplug_rules import Identity, parse, resolve, sysfs_lookup

IQN = "iqn.2024-01.org.test:hp"


def add_scsi(
    sysfs: Path,
    hctl: str,
    *,
    vendor: str = "Linux",
    model: str = "scsi_debug",
    serial: str = "",
    wwid: str = "",
    dev_type: int = 0,
) -> None:
    """A /sys/class/scsi_device/H:C:I:L/device entry like the kernel's."""
    device = sysfs / "class/scsi_device" / hctl / "device"
    device.mkdir(parents=True)
    (device / "type").write_text(f"{dev_type}\n")
    (device / "vendor").write_text(f"{vendor:<8}\n")
    (device / "model").write_text(f"{model:<16}\n")
    (device / "rev").write_text("0191\n")
    if serial:
        page = bytes([0, 0x80, 0, len(serial)]) + serial.encode()
        (device / "vpd_pg80").write_bytes(page)
    if wwid:
        (device / "wwid").write_text(wwid + "\n")


def conf_text(devices: str, luns: str) -> str:
    return textwrap.dedent(
        f"""\
        HANDLER vdisk_nullio {{
            DEVICE null0
        }}
        HANDLER dev_disk {{
        {devices}
        }}
        TARGET_DRIVER iscsi {{
            TARGET {IQN} {{
        {luns}
            }}
        }}
        """
    )


BACKUP = """\
    DEVICE backup0 {
        serial SER-A
        timeout 30
    }"""


def test_a_label_with_an_identity_becomes_the_address_it_matches(tmp_path: Path) -> None:
    add_scsi(tmp_path, "2:0:0:0", serial="SER-A")
    add_scsi(tmp_path, "3:0:0:0", serial="SER-B")
    config = parse(conf_text(BACKUP, "LUN 0 null0\nLUN 1 backup0"), "h.conf")
    res = resolve(config, *sysfs_lookup(tmp_path))
    dev = res.config.device("2:0:0:0")
    assert dev is not None and dev.handler == "dev_disk"
    assert dev.params == {"timeout": "30"}  # identity keys are not handler attributes
    assert [(lun.number, lun.device) for lun in res.config.targets[0].luns] == [
        (0, "null0"),
        (1, "2:0:0:0"),
    ]
    assert res.present == {"backup0": "2:0:0:0"}
    assert res.passthrough_addresses == frozenset({"2:0:0:0"})
    # The parsed config itself is untouched (the daemon resolves it again later).
    assert config.device("backup0") is not None


def test_an_absent_device_and_its_luns_are_left_out(tmp_path: Path) -> None:
    add_scsi(tmp_path, "3:0:0:0", serial="SER-B")
    text = conf_text(BACKUP + "\n    DEVICE 5:0:0:0", "LUN 0 null0\nLUN 1 backup0\nLUN 2 5:0:0:0")
    res = resolve(parse(text), *sysfs_lookup(tmp_path))
    assert [d.name for d in res.config.devices] == ["null0"]
    assert [lun.device for lun in res.config.targets[0].luns] == ["null0"]
    assert res.absent == ["backup0", "5:0:0:0"]
    assert res.passthrough_addresses == frozenset()


def test_an_address_is_kept_while_present(tmp_path: Path) -> None:
    add_scsi(tmp_path, "5:0:0:0")
    res = resolve(parse(conf_text("    DEVICE 5:0:0:0", "LUN 0 5:0:0:0")), *sysfs_lookup(tmp_path))
    assert [d.name for d in res.config.devices] == ["null0", "5:0:0:0"]
    assert res.present == {"5:0:0:0": "5:0:0:0"}


def test_a_label_matching_two_devices_is_left_out_with_a_warning(tmp_path: Path) -> None:
    add_scsi(tmp_path, "2:0:0:0", serial="X1")
    add_scsi(tmp_path, "3:0:0:0", serial="X2")
    rule = "    DEVICE any {\n        vendor Linux\n        model scsi_debug\n    }"
    res = resolve(parse(conf_text(rule, "LUN 0 any")), *sysfs_lookup(tmp_path))
    assert res.absent == ["any"]
    assert "matches 2 SCSI devices (2:0:0:0, 3:0:0:0)" in res.warnings[0]
    assert "add serial or wwn" in res.warnings[0]


def test_our_own_tcm_loop_re_export_does_not_count(tmp_path: Path) -> None:
    add_scsi(tmp_path, "2:0:0:0", serial="SER-A")
    add_scsi(tmp_path, "7:0:1:1", serial="SER-A")  # the same disk seen through tcm_loop
    for host, proc_name in (("host2", "scsi_debug"), ("host7", "tcm_loopback")):
        (tmp_path / "class/scsi_host" / host).mkdir(parents=True)
        (tmp_path / "class/scsi_host" / host / "proc_name").write_text(proc_name + "\n")
    res = resolve(parse(conf_text(BACKUP, "LUN 0 backup0")), *sysfs_lookup(tmp_path))
    assert res.present == {"backup0": "2:0:0:0"} and res.warnings == []


def test_wwn_matches_the_sysfs_wwid_with_or_without_prefix(tmp_path: Path) -> None:
    add_scsi(tmp_path, "4:0:0:1", wwid="naa.5000c500a1b2c3d4")
    for wwn in ("naa.5000c500a1b2c3d4", "5000C500A1B2C3D4"):
        rule = f"    DEVICE w {{\n        wwn {wwn}\n    }}"
        res = resolve(parse(conf_text(rule, "LUN 0 w")), *sysfs_lookup(tmp_path))
        assert res.present == {"w": "4:0:0:1"}, wwn


def test_a_label_resolving_to_an_address_already_named_is_left_out(tmp_path: Path) -> None:
    add_scsi(tmp_path, "2:0:0:0", serial="SER-A")
    devices = BACKUP + "\n    DEVICE 2:0:0:0"
    res = resolve(parse(conf_text(devices, "LUN 0 2:0:0:0")), *sysfs_lookup(tmp_path))
    assert res.present == {"2:0:0:0": "2:0:0:0"}
    assert res.absent == ["backup0"]
    assert "already names" in res.warnings[0]


@pytest.mark.parametrize(
    ("devices", "luns", "message"),
    [
        ("    DEVICE backup0", "LUN 0 backup0",
         "h.conf:5: pass-through device 'backup0' is neither an address H:C:I:L nor a label"),
        ("    DEVICE 1:0:0:0 {\n        serial X\n    }", "LUN 0 1:0:0:0",
         "h.conf:5: pass-through device 1:0:0:0 is named by its address and also has serial"),
        ("    DEVICE b {\n        serial \"\"\n    }", "LUN 0 b",
         "h.conf:5: device b: serial is empty"),
        # SCST's own rules still hold for labels: LUN 0, known devices, duplicates.
        (BACKUP, "LUN 1 backup0", "target iqn.2024-01.org.test:hp has no LUN 0"),
        (BACKUP, "LUN 0 backup0\nLUN 1 backup0", "device backup0 is exported twice"),
        (BACKUP, "LUN 0 nothere", "names unknown device 'nothere'"),
    ],
)  # fmt: skip
def test_config_errors_name_the_line(devices: str, luns: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(conf_text(devices, luns), "h.conf")
    assert message in str(info.value)


def test_without_pass_through_devices_parse_equals_conf_parse() -> None:
    from tcmu_scst.scst import conf

    text = "HANDLER vdisk_nullio {\n DEVICE n0\n}\n"
    assert parse(text, "a.conf") == conf.parse(text, "a.conf")
    assert not hotplug_rules.has_labels(parse(text))


def test_resolve_uses_the_given_lookups() -> None:
    asked: list[Identity] = []

    def find(identity: Identity) -> list[str]:
        asked.append(identity)
        return ["9:0:0:0"]

    config = parse(conf_text(BACKUP, "LUN 0 backup0"))
    res = resolve(config, find, lambda hctl: False)
    assert asked == [Identity(serial="SER-A")]
    assert res.present == {"backup0": "9:0:0:0"}


def test_config_check_reads_labels_through_commands_load(tmp_path: Path) -> None:
    # 'config check/apply' (and the boot unit) go through commands.load.
    path = tmp_path / "scst.conf"
    path.write_text(conf_text(BACKUP, "LUN 0 null0\nLUN 1 backup0"))
    config = commands.load(path)
    # No such disk on a test host: the rule and its LUN are left out, not refused.
    assert [d.name for d in config.devices] == ["null0"]
    assert [lun.device for lun in config.targets[0].luns] == ["null0"]
