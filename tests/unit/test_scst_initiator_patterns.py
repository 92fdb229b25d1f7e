"""SCST 3.x initiator patterns (``*``, ``?``, leading ``!``) in file, shell and materializer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigError
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import apply_config
from tcmu_scst.scst.mapping import map_config
from tcmu_scst.scst.materializer import Materialized, Materializer
from tcmu_scst.scst.model import ScstConfig, wildcard_match
from tcmu_scst.scst.ownership import load_ownership
from tcmu_scst.scst.save import live_config
from tcmu_scst.shell import edits
from tests.unit.test_scst_materializer import IQN, TPG, _devices, refuse, setup

WILD = "iqn.2024-01.org.wild:*"


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("iqn.2024-01.org.wild:*", "iqn.2024-01.org.wild:host1", True),
        ("iqn.2024-01.org.wild:*", "iqn.2024-01.org.wild:", True),
        ("iqn.2024-01.org.wild:*", "iqn.2024-01.org.other:host1", False),
        ("iqn.*.wild:h?", "iqn.2024-01.org.wild:h1", True),
        ("iqn.*.wild:h?", "iqn.2024-01.org.wild:h12", False),
        ("*:h*1*", "iqn.2024-01.x:h-a-1-b", True),
        ("!iqn.2024-01.org.bad:*", "iqn.2024-01.org.good:x", True),
        ("!iqn.2024-01.org.bad:*", "iqn.2024-01.org.bad:x", False),
        ("iqn.2024-01.org.wild:*", "IQN.2024-01.ORG.WILD:X", False),  # exact, as the kernel
        ("a!b", "a!b", True),  # '!' negates only in front
        ("*", "", True),
        ("?", "", False),
    ],
)
def test_wildcard_match_as_scst(pattern: str, name: str, matches: bool) -> None:
    assert wildcard_match(pattern, name) is matches


def target(groups: str, default_luns: str = "") -> str:
    return (
        f"TARGET_DRIVER iscsi {{\n TARGET {IQN} {{\n{default_luns}{groups}  enabled 1\n }}\n}}\n"
    )


def group(name: str, luns: str, *initiators: str) -> str:
    members = "".join(f"   INITIATOR {i}\n" for i in initiators)
    return f"  GROUP {name} {{\n{luns}{members}  }}\n"


def parse(tmp_path: Path, body: str) -> ScstConfig:
    return conf.parse(_devices(tmp_path) + body, "p.conf")


def test_patterns_are_no_acls_the_target_goes_to_case_c(tmp_path: Path) -> None:
    config = parse(tmp_path, target(group("wild", "   LUN 0 d1\n", WILD)))
    (lio,) = map_config(config, size_of=lambda d: 512).targets
    assert lio.tpg.acls == []  # no ACL named "iqn...:*"
    assert lio.default_case == "C"
    assert (lio.tpg.attributes["generate_node_acls"], lio.tpg.attributes["demo_mode_discovery"]) \
        == ("0", "1")  # fmt: skip
    assert lio.default_open is False  # the default set is empty: others stay refused
    assert [(r.group, r.patterns) for r in lio.pattern_rules] == [("wild", (WILD,))]
    assert list(lio.tpg.luns.values()) == ["d1"]


def test_a_name_matched_by_an_earlier_groups_pattern_belongs_to_that_group(
    tmp_path: Path,
) -> None:
    body = target(
        group("wild", "   LUN 0 d1\n", WILD)
        + group("named", "   LUN 0 d0\n", "iqn.2024-01.org.wild:host1", "iqn.2024-01.other:x")
    )
    (lio,) = map_config(parse(tmp_path, body), size_of=lambda d: 512).targets
    assert {a.name: a.group for a in lio.tpg.acls} == {
        "iqn.2024-01.org.wild:host1": "wild",  # SCST: first group whose entries match
        "iqn.2024-01.other:x": "named",
    }


def test_matching_initiator_is_materialized_with_its_groups_map_others_stay_refused(
    tmp_path: Path,
) -> None:
    cfs, state = setup(tmp_path, target(group("wild", "   LUN 0 d1\n   LUN 3 d0\n", WILD)))
    poller = Materializer(cfs, state)
    refuse(cfs, "iqn.2024-01.org.other:host9", 1)
    assert poller.poll_once() == []  # matches nothing, default set empty: no ACL
    assert cfs.listdir(f"{TPG}/acls") == []
    refuse(cfs, "iqn.2024-01.org.wild:host1", 2)
    assert poller.poll_once() == [Materialized("iscsi", IQN, "iqn.2024-01.org.wild:host1")]
    acl = f"{TPG}/acls/iqn.2024-01.org.wild:host1"
    assert cfs.read(f"{acl}/tag") == "wild"
    assert sorted(n for n in cfs.listdir(acl) if n.startswith("lun_")) == ["lun_0", "lun_3"]


def test_negated_pattern_and_default_for_the_rest(tmp_path: Path) -> None:
    body = target(
        group("notbad", "   LUN 0 d1\n", "!iqn.2024-01.org.bad:*"), default_luns="  LUN 0 d0\n"
    )
    cfs, state = setup(tmp_path, body)
    poller = Materializer(cfs, state)
    refuse(cfs, "iqn.2024-01.org.good:a", 1)  # the kernel keeps the last name only
    poller.poll_once()
    refuse(cfs, "iqn.2024-01.org.bad:b", 2)
    poller.poll_once()
    assert cfs.read(f"{TPG}/acls/iqn.2024-01.org.good:a/tag") == "notbad"
    assert cfs.read(f"{TPG}/acls/iqn.2024-01.org.bad:b/tag") == "Default"  # the target's LUNs


def test_reapply_keeps_matching_materialized_acls_and_drops_unmatched_ones(
    tmp_path: Path,
) -> None:
    body = target(group("wild", "   LUN 0 d1\n", WILD))
    cfs, state = setup(tmp_path, body)
    refuse(cfs, "iqn.2024-01.org.wild:host1", 1)
    Materializer(cfs, state).poll_once()
    assert apply_config(cfs, parse(tmp_path, body), state).operations == 0
    narrowed = body.replace(WILD, "iqn.2024-01.org.wild:db*")
    apply_config(cfs, parse(tmp_path, narrowed), state)
    assert not cfs.exists(f"{TPG}/acls/iqn.2024-01.org.wild:host1")
    assert load_ownership(state).targets[0].materialized == []


def test_config_save_writes_the_patterns_back(tmp_path: Path) -> None:
    body = target(group("wild", "   LUN 0 d1\n", WILD, "iqn.2024-01.exact:one"))
    cfs, state = setup(tmp_path, body)
    saved = live_config(cfs, load_ownership(state))
    (grp,) = saved.targets[0].groups
    assert (grp.name, grp.initiators, [(x.number, x.device) for x in grp.luns]) == (
        "wild",
        [WILD, "iqn.2024-01.exact:one"],
        [(0, "d1")],
    )


@pytest.mark.parametrize(
    ("initiator", "message"),
    [
        ("!", "p.conf:13: initiator pattern '!' has nothing after '!' (in group g of target "),
        ("iqn.2024-01.a/*", "p.conf:13: initiator name 'iqn.2024-01.a/*' contains '/' or"
         " white space"),
    ],
)
def test_bad_patterns_are_refused_with_their_line(
    tmp_path: Path, initiator: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(tmp_path, target(group("g", "   LUN 0 d0\n", initiator)))
    assert str(info.value).startswith(message)


def test_fc_patterns_are_lower_cased_and_must_look_like_wwpns(tmp_path: Path) -> None:
    body = (
        "TARGET_DRIVER qla2x00t {\n TARGET 21:00:00:24:ff:31:4c:48 {\n  GROUP g {\n"
        "   LUN 0 d0\n   INITIATOR 21:00:00:24:FF:*\n   INITIATOR host*\n  }\n }\n}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse(tmp_path, body)
    assert str(info.value) == (
        "p.conf:14: initiator pattern 'host*' cannot match an FC WWPN; use lower-case hex, "
        "':', '*' and '?' only, e.g. 21:00:00:24:ff:* (in group g of target "
        "21:00:00:24:ff:31:4c:48)"
    )
    ok = parse(tmp_path, body.replace("   INITIATOR host*\n", ""))
    assert ok.targets[0].groups[0].initiators == ["21:00:00:24:ff:*"]


def test_the_shell_takes_patterns_too(tmp_path: Path) -> None:
    config = parse(tmp_path, "GROUP g {\n LUN 0 d0\n}\n")
    edits.add_name(config, "g", WILD)
    edits.add_name(config, "g", "!iqn.2024-01.org.bad:*")
    assert config.groups[0].initiators == [WILD, "!iqn.2024-01.org.bad:*"]
    with pytest.raises(ConfigError, match="nothing after '!'"):
        edits.add_name(config, "g", "!")
