"""One declaration of each handler (kernel.handler_table); every layer derives from it."""

from __future__ import annotations

from tcmu_scst.handlers import (
    passthrough,
    passthrough_params,
    perf,
    vcdrom,
    vcdrom_params,
    vdisk,
    vdisk_params,
)
from tcmu_scst.kernel import handler_table, scsi_sysfs
from tcmu_scst.kernel.handler_table import HANDLERS, Kind
from tcmu_scst.scst import devconfig, model
from tcmu_scst.service import registry
from tcmu_scst.shell import nodes


def test_every_catalogue_entry_has_a_factory_and_every_factory_an_entry() -> None:
    assert set(registry.FACTORIES) == {h.subtype for h in HANDLERS} == handler_table.SUBTYPES
    assert set(registry.KIND_FACTORIES) == set(Kind)
    expected = {
        Kind.VDISK: vdisk.open_dev_config,
        Kind.VCDROM: vcdrom.open_dev_config,
        Kind.PASSTHROUGH: passthrough.open_dev_config,
        Kind.PERF: perf.open_dev_config,
    }
    for spec in HANDLERS:
        assert registry.FACTORIES[spec.subtype] is expected[spec.kind], spec.name
        assert registry.owns(spec.subtype)


def test_names_are_unique_and_subtypes_follow_the_kind() -> None:
    names = [h.name for h in HANDLERS]
    assert len(names) == len(set(names))
    assert {h.subtype for h in HANDLERS if h.kind is Kind.VDISK} == {"vdisk"}
    assert all(h.subtype == h.name for h in HANDLERS if h.kind is not Kind.VDISK)
    assert handler_table.by_name("dev_tape_perf") == HANDLERS[-1]
    assert handler_table.by_name("vdisk") is None


def test_every_layer_derives_its_handler_maps_from_the_table() -> None:
    # Device types as SCST's handlers report them (SPC peripheral device type).
    assert handler_table.HANDLER_TYPES == {
        "vdisk_fileio": 0, "vdisk_blockio": 0, "vdisk_nullio": 0, "vdisk_rbd": 0, "vcdrom": 5,
        "dev_disk": 0, "dev_disk_perf": 0, "dev_tape": 1, "dev_tape_perf": 1,
        "dev_processor": 3, "dev_cdrom": 5, "dev_modisk": 7, "dev_modisk_perf": 7,
        "dev_changer": 8, "dev_raid": 0x0C,
    }  # fmt: skip
    assert model.Device("x", "vcdrom").scsi_type == 5
    assert {*vdisk_params.HANDLER_NAMES, "vcdrom"} == handler_table.VIRTUAL_HANDLERS
    assert {*scsi_sysfs.HANDLER_TYPES, *perf.HANDLER_TYPES} == handler_table.ASSIGNED_HANDLERS
    assert {
        vdisk_params.FILEIO, vdisk_params.BLOCKIO, vdisk_params.NULLIO, vdisk_params.RBD,
    } == nodes.VDISK_HANDLERS  # fmt: skip
    assert scsi_sysfs.TYPE_HANDLERS == {
        0: "dev_disk", 1: "dev_tape", 3: "dev_processor", 5: "dev_cdrom", 7: "dev_modisk",
        8: "dev_changer", 0x0C: "dev_raid",
    }  # fmt: skip
    assert tuple(scsi_sysfs.TYPE_HANDLERS.values()) == passthrough_params.HANDLER_NAMES
    assert passthrough_params.DEFAULT_TIMEOUTS["dev_tape"] == 14400
    assert {"dev_tape", "dev_changer"} == passthrough_params.SERIALIZED_BY_DEFAULT
    assert {"dev_tape", "dev_changer"} == devconfig.NO_KERNEL_TIMEOUT
    assert set(scsi_sysfs.HANDLER_TYPES) == devconfig.REAL_PASSTHROUGH
    assert set(perf.HANDLER_TYPES) == devconfig.PERF_HANDLERS
    assert set(handler_table.TYPE_DESCRIPTIONS) == set(handler_table.HANDLER_TYPES.values())


def test_the_codecs_take_their_parameter_lists_from_the_table() -> None:
    spec = handler_table.by_name("vdisk_nullio")
    assert spec is not None and vdisk_params.ATTRIBUTES["vdisk_nullio"] == set(spec.parameter_names)
    assert "o_direct" in vdisk_params.ATTRIBUTES["vdisk_fileio"]
    assert "o_direct" not in vdisk_params.ATTRIBUTES["vdisk_blockio"]
    assert {"filename", "t10_dev_id", "usn"} == vcdrom_params.ATTRIBUTES
    assert passthrough_params.ATTRIBUTES == ("serialized", "timeout", "vendor_in", "vendor_out")
    for spec in HANDLERS:
        if spec.kind is Kind.PASSTHROUGH:
            assert spec.parameter_names == passthrough_params.ATTRIBUTES


def test_parameters_fixed_at_scsts_default_come_from_the_table() -> None:
    import pytest

    from tcmu_scst.errors import ConfigError

    for spec in HANDLERS:
        if spec.kind is Kind.VDISK:
            assert dict(spec.fixed)["tst"] == "1"
            with pytest.raises(ConfigError, match=r"tst='0' is not supported.*only 1"):
                vdisk_params.parse_attributes(spec.name, "d", {"tst": "0"})
    vdisk_params.parse_attributes("vdisk_nullio", "d", {"tst": "1", "dif_type": "0"})
    vcdrom_params.parse_attributes("cd", {"read_only": "1"})
    with pytest.raises(ConfigError, match="vcdrom has only read_only=1"):
        vcdrom_params.parse_attributes("cd", {"read_only": "0"})
