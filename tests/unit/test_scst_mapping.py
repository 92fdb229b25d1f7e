"""SCST model -> desired LIO state: Default cases A/B/C, ACL numbering, loopback, FC, CHAP."""

from __future__ import annotations

import pytest

from tcmu_scst.scst import conf, legacy_conf
from tcmu_scst.scst.mapping import Chap, DesiredState, LioTarget, MappedLun, map_config

DEVICES = """\
HANDLER vdisk_fileio {
    DEVICE d0 {
        filename /srv/d0
    }
    DEVICE d1 {
        filename /srv/d1
    }
    DEVICE d2 {
        filename /srv/d2
    }
}
HANDLER vcdrom {
    DEVICE cd {
        filename /srv/cd.iso
    }
}
"""
IQN = "iqn.2024-01.org.test:t"


def desired(body: str) -> DesiredState:
    return map_config(conf.parse(DEVICES + body, "m.conf"), size_of=lambda d: 1 << 20)


def only(state: DesiredState, fabric: str = "iscsi") -> LioTarget:
    (target,) = [t for t in state.targets if t.fabric == fabric]
    return target


def iscsi(body: str) -> LioTarget:
    return only(desired(f"TARGET_DRIVER iscsi {{\n TARGET {IQN} {{\n{body}\n }}\n}}\n"))


def test_case_a_empty_default_hides_the_target_and_keeps_demo_mode_off() -> None:
    tgt = iscsi("  GROUP g {\n   LUN 0 d1\n   INITIATOR iqn.2024-01.a\n  }\n  enabled 1")
    assert tgt.default_case == "A"
    assert tgt.tpg.attributes["generate_node_acls"] == "0"
    assert tgt.tpg.attributes["demo_mode_discovery"] == "0"
    assert tgt.tpg.luns == {0: "d1"}
    assert [(a.name, a.group, a.mapped_luns) for a in tgt.tpg.acls] == [
        ("iqn.2024-01.a", "g", [MappedLun(0, 0, False)])
    ]
    assert tgt.default_map == []
    assert tgt.tpg.enabled


def test_case_b_default_covers_everything_uses_demo_mode_with_its_ro_flag() -> None:
    tgt = iscsi(
        "  LUN 0 d0 {\n   read_only 1\n  }\n  LUN 1 d1 {\n   read_only 1\n  }\n"
        "  GROUP g {\n   LUN 0 d1\n   INITIATOR iqn.2024-01.a\n  }"
    )
    assert tgt.default_case == "B"
    attrs = tgt.tpg.attributes
    assert (attrs["generate_node_acls"], attrs["demo_mode_write_protect"]) == ("1", "1")
    assert attrs["demo_mode_discovery"] == "1"
    # In demo mode the TPG index must equal Default's LUN number.
    assert tgt.tpg.luns == {0: "d0", 1: "d1"}
    # Named member: own numbering (d1 as LUN 0), writable in its group.
    assert tgt.tpg.acls[0].mapped_luns == [MappedLun(0, 1, False)]
    assert not tgt.tpg.enabled  # "enabled 1" missing: SCST targets start disabled


def test_case_b_ignores_ro_flag_of_a_cdrom_but_not_mixed_disk_flags() -> None:
    assert iscsi("  LUN 0 d0\n  LUN 1 cd {\n   read_only 1\n  }").default_case == "B"
    mixed = iscsi("  LUN 0 d0\n  LUN 1 d1 {\n   read_only 1\n  }")
    assert mixed.default_case == "C"
    assert mixed.default_map == [MappedLun(0, 0, False), MappedLun(1, 1, True)]


def test_case_c_device_only_in_a_group_needs_the_materializer() -> None:
    tgt = iscsi("  LUN 0 d0\n  GROUP g {\n   LUN 0 d2\n   LUN 1 d0\n   INITIATOR"
                " iqn.2024-01.a\n  }")
    assert tgt.default_case == "C"
    attrs = tgt.tpg.attributes
    assert (attrs["generate_node_acls"], attrs["demo_mode_discovery"]) == ("0", "1")
    assert tgt.tpg.luns == {0: "d0", 1: "d2"}
    assert tgt.default_map == [MappedLun(0, 0, False)]
    assert tgt.tpg.acls[0].mapped_luns == [MappedLun(0, 1, False), MappedLun(1, 0, False)]


def test_case_c_renumbered_default_and_materialized_names_get_the_default_map() -> None:
    config = conf.parse(
        DEVICES + f"TARGET_DRIVER iscsi {{\n TARGET {IQN} {{\n  LUN 0 d1\n"
        "  GROUP g {\n   LUN 0 d0\n   LUN 1 d1\n   INITIATOR iqn.2024-01.a\n  }\n }\n}\n",
        "m.conf",
    )
    state = map_config(
        config,
        size_of=lambda d: 0,
        hints={("iscsi", IQN): {"d1": 1, "d0": 0}},  # live indices are kept
        materialized={("iscsi", IQN): ["iqn.2024-01.seen", "iqn.2024-01.a"]},
    )
    tgt = only(state)
    assert tgt.default_case == "C"
    assert tgt.tpg.luns == {1: "d1", 0: "d0"}
    assert tgt.default_map == [MappedLun(0, 1, False)]
    acls = {a.name: a for a in tgt.tpg.acls}
    assert acls["iqn.2024-01.seen"].materialized and acls["iqn.2024-01.seen"].group == "Default"
    assert acls["iqn.2024-01.seen"].mapped_luns == [MappedLun(0, 1, False)]
    assert not acls["iqn.2024-01.a"].materialized  # a named member stays its group's


def test_read_only_lun_becomes_write_protect_and_group_is_the_tag() -> None:
    tgt = iscsi(
        "  GROUP ro {\n   LUN 0 d0 {\n    read_only 1\n   }\n   LUN 3 d1\n"
        "   INITIATOR iqn.2024-01.a\n   INITIATOR iqn.2024-01.b\n  }"
    )
    for acl in tgt.tpg.acls:
        assert acl.group == "ro"
        assert acl.mapped_luns == [MappedLun(0, 0, True), MappedLun(3, 3, False)]


def test_first_group_wins_for_a_name_in_several_groups() -> None:
    tgt = iscsi(
        "  GROUP first {\n   LUN 0 d0\n   INITIATOR iqn.2024-01.a\n  }\n"
        "  GROUP second {\n   LUN 0 d1\n   INITIATOR iqn.2024-01.a\n   INITIATOR iqn.2024-01.b\n  }"
    )
    groups = {a.name: a.group for a in tgt.tpg.acls}
    assert groups == {"iqn.2024-01.a": "first", "iqn.2024-01.b": "second"}


def test_global_096_groups_expand_into_every_target_of_a_matching_fabric() -> None:
    legacy = """\
[HANDLER vdisk]
DEVICE d0,/srv/d0
DEVICE d1,/srv/d1
[GROUP g]
USER iqn.1993-08.org.debian:01:abc
USER 21:00:00:24:ff:31:4c:49
[ASSIGNMENT g]
DEVICE d1,0,READ_ONLY
[ASSIGNMENT Default]
DEVICE d0,0
[GROUP Default_iqn.2006-10.net.vlnb:t2]
[ASSIGNMENT Default_iqn.2006-10.net.vlnb:t2]
DEVICE d1,0
[TARGETS enable]
HOST iqn.2006-10.net.vlnb:t1
HOST iqn.2006-10.net.vlnb:t2
HOST 50:01:43:80:02:31:4c:48
"""
    state = map_config(legacy_conf.parse_legacy(legacy, "o.conf"), size_of=lambda d: 0)
    t1, t2, fc = state.targets
    # Global group members exist on every target, but only where the name format fits.
    assert [a.name for a in t1.tpg.acls] == ["iqn.1993-08.org.debian:01:abc"]
    assert [a.name for a in fc.tpg.acls] == ["21:00:00:24:ff:31:4c:49"]
    assert t1.tpg.acls[0].mapped_luns == [MappedLun(0, 1, True)]
    # Default_<target> beats Default.
    assert t1.default_group == "Default" and t1.tpg.luns[0] == "d0"
    assert t2.default_group == "Default_iqn.2006-10.net.vlnb:t2"
    assert t2.default_case == "B" and t2.tpg.luns == {0: "d1"}
    # qla2xxx: Default (d0) is not the whole table (d1 for the group) -> C, login_only.
    assert fc.fabric == "qla2xxx" and fc.default_case == "C"
    assert fc.tpg.attributes["generate_node_acls"] == "1"
    assert fc.tpg.attributes["demo_mode_login_only"] == "1"


@pytest.mark.parametrize(("luns", "login_only"), [("", "1"), ("  LUN 0 d0\n", "0")])
def test_qla2xxx_case_a_and_b(luns: str, login_only: str) -> None:
    state = desired(
        f"TARGET_DRIVER qla2x00t {{\n TARGET 21:00:00:24:ff:31:4c:48 {{\n{luns}"
        "  GROUP g {\n   LUN 0 d0\n   INITIATOR 21:00:00:24:ff:31:4c:49\n  }\n }\n}\n"
    )
    tgt = only(state, "qla2xxx")
    assert tgt.wwn == "21:00:00:24:ff:31:4c:48"
    assert tgt.tpg.attributes["demo_mode_login_only"] == login_only
    assert tgt.tpg.portals == [] and tgt.tpg.params == {}


def test_tcm_fc_uses_fc_directory_and_warns_that_default_cannot_reach_unknowns() -> None:
    state = desired("TARGET_DRIVER fcst {\n TARGET 20:00:00:11:22:33:44:55 {\n  LUN 0 d0\n }\n}\n")
    tgt = only(state, "fc")
    assert tgt.tpg.attributes == {}
    assert state.warnings == [
        "tcm_fc target 20:00:00:11:22:33:44:55: LIO's tcm_fc has no demo mode and no login "
        "hook, so initiators outside named groups do not get Default's LUNs; name them"
    ]


def test_loopback_one_lio_target_per_group_with_stable_names() -> None:
    body = (
        "TARGET_DRIVER scst_local {\n TARGET local {\n  LUN 0 d0\n"
        "  GROUP g1 {\n   LUN 0 d1\n   LUN 1 d2\n  }\n"
        "  GROUP g2 {\n   LUN 0 d2 {\n    read_only 1\n   }\n"
        "   INITIATOR naa.5001405000000001\n  }\n }\n}\n"
    )
    first, again = desired(body), desired(body)
    targets = [t for t in first.targets if t.fabric == "loopback"]
    assert [(t.scst_group, t.tpg.luns) for t in targets] == [
        ("Default", {0: "d0"}),
        ("g1", {0: "d1", 1: "d2"}),
        ("g2", {0: "d2"}),
    ]
    assert [t.wwn for t in targets] == [t.wwn for t in again.targets]  # deterministic
    assert all(t.wwn.startswith("naa.5001405") and len(t.wwn) == 20 for t in targets)
    assert targets[2].tpg.nexus == "naa.5001405000000001"  # an naa initiator is the nexus
    assert targets[0].tpg.nexus is not None and targets[0].tpg.nexus.startswith("naa.")
    assert all(t.tpg.acls == [] for t in targets)
    assert any("READ_ONLY LUNs are not write-protected" in w for w in first.warnings)


def test_chap_target_account_reaches_demo_auth_and_acls_group_account_overrides() -> None:
    tgt = iscsi(
        '  IncomingUser "joe secret123456"\n  OutgoingUser "tgt mutual123456"\n  LUN 0 d0\n'
        "  GROUP g {\n   LUN 0 d0\n   INITIATOR iqn.2024-01.a\n"
        '   IncomingUser "amy secret654321"\n  }\n  GROUP h {\n   LUN 0 d0\n'
        "   INITIATOR iqn.2024-01.b\n  }"
    )
    assert tgt.default_case == "B"
    assert tgt.tpg.attributes["authentication"] == "1"
    assert tgt.tpg.auth == Chap("joe", "secret123456", "tgt", "mutual123456")
    acls = {a.name: a.chap for a in tgt.tpg.acls}
    assert acls["iqn.2024-01.a"] == Chap("amy", "secret654321", "tgt", "mutual123456")
    assert acls["iqn.2024-01.b"] == Chap("joe", "secret123456", "tgt", "mutual123456")


def test_no_chap_means_authentication_off_and_portal_default() -> None:
    tgt = iscsi("  LUN 0 d0\n  HeaderDigest CRC32C\n  comment hello")
    assert tgt.tpg.attributes["authentication"] == "0"
    assert tgt.tpg.auth is None
    assert tgt.tpg.portals == ["0.0.0.0:3260"]
    assert tgt.tpg.params == {"HeaderDigest": "CRC32C"}  # comment is kept, not applied


def test_driver_enabled_0_disables_every_target_and_backstores_carry_dev_config() -> None:
    state = desired(
        f"TARGET_DRIVER iscsi {{\n enabled 0\n TARGET {IQN} {{\n  LUN 0 d0\n  enabled 1\n }}\n}}\n"
    )
    assert not only(state).tpg.enabled
    names = [b.name for b in state.backstores]
    assert names == ["d0", "d1", "d2", "cd"]
    d0 = state.backstores[0]
    assert d0.dev_config.startswith("vdisk/") and "," not in d0.dev_config
    assert (d0.dev_size, d0.hw_block_size) == (1 << 20, 512)
    assert state.backstores[3].hw_block_size == 2048  # vcdrom


def test_loopback_target_without_luns_exists_and_serves_default() -> None:
    # A declared target exists; with no LUNs of its own it serves Default (0.9.6 rules).
    body = "TARGET_DRIVER loopback {\n TARGET naa.5001405aaaaaaaaa {\n }\n}\n"
    empty = only(desired(body), "loopback")
    assert (empty.wwn, empty.scst_group, empty.tpg.luns) == ("naa.5001405aaaaaaaaa", "Default", {})
    served = only(desired("GROUP Default {\n LUN 0 d1\n}\n" + body), "loopback")
    assert (served.wwn, served.tpg.luns) == ("naa.5001405aaaaaaaaa", {0: "d1"})
