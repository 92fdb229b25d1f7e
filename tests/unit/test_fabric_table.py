"""One declaration of each fabric (kernel.fabric_table); every layer derives from it."""

from __future__ import annotations

from tcmu_scst.kernel import configfs, fabric_table, fabrics
from tcmu_scst.kernel.fabric_table import FABRICS, MANAGED, has
from tcmu_scst.scst import importer, mapping, model


def test_every_layer_derives_its_fabric_maps_from_the_table() -> None:
    assert {f.directory: f.module for f in FABRICS} == configfs.FABRIC_MODULES
    assert {"iscsi", "loopback"} == configfs.AUTOLOADED_FABRICS
    assert fabrics.FC_FABRICS == ("qla2xxx", "fc")
    assert model.FABRIC_DRIVERS == {
        "iscsi": "iscsi", "loopback": "scst_local", "qla2xxx": "qla2x00t", "tcm_fc": "fcst",
    }  # fmt: skip
    assert {"qla2xxx", "tcm_fc"} == model.FC_FABRICS
    assert {f.name: f.directory for f in MANAGED} == mapping.FABRIC_DIRS
    assert set(importer.FABRICS) == {f.name for f in MANAGED}


def test_names_and_directories_are_unique_and_capabilities_answer_by_name() -> None:
    for column in ("name", "directory", "module"):
        values = [getattr(f, column) for f in FABRICS]
        assert len(values) == len(set(values)), column
    assert fabric_table.by_directory("fc") == fabric_table.by_name("tcm_fc")
    assert has("iscsi", "chap_and_portals") and not has("qla2xxx", "chap_and_portals")
    assert not has("loopback", "acls") and has("tcm_fc", "acls")
    assert not has(None, "acls") and not has("nonesuch", "iscsi_names")
    # What the model says through the table: CHAP exists only on iSCSI.
    assert model.name_fits_fabric("iqn.2024-01.x:h", "iscsi")
    assert not model.name_fits_fabric("iqn.*", "loopback")


def test_each_fabric_specific_behaviour_is_a_capability_of_the_table() -> None:
    rows = {f.name: f for f in MANAGED}
    with_cap = {
        cap: {name for name, f in rows.items() if getattr(f, cap)}
        for cap in ("nexus", "iscsi_login", "acl_tags", "demo_mode", "login_only")
    }
    assert with_cap == {
        "nexus": {"loopback"},
        "iscsi_login": {"iscsi"},
        "acl_tags": {"iscsi"},
        "demo_mode": {"iscsi", "loopback", "qla2xxx"},
        "login_only": {"qla2xxx"},
    }
    # Kernel-facing code asks by configfs directory: tcm_fc lives in target/fc.
    assert not fabric_table.dir_has("fc", "demo_mode") and fabric_table.dir_has("fc", "acls")
    assert fabric_table.dir_has("loopback", "nexus") and not fabric_table.dir_has(None, "nexus")
    assert not fabric_table.dir_has("tcm_fc", "acls")  # a model name is not a directory
