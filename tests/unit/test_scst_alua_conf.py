"""SCST 3.x DEVICE_GROUP / TARGET_GROUP syntax: parse, validate, write back (issue 16)."""

from __future__ import annotations

import pytest

from tcmu_scst.errors import ConfigError
from tcmu_scst.scst import conf
from tcmu_scst.scst.model import DeviceGroup, TargetGroup, TargetGroupMember

BASE = """\
HANDLER vdisk_fileio {
    DEVICE disk1 {
        filename /tmp/d1
    }
    DEVICE disk2 {
        filename /tmp/d2
    }
}
TARGET_DRIVER scst_local {
    TARGET west {
        LUN 0 disk1
    }
    TARGET east {
        LUN 0 disk1
    }
}
"""

ALUA = """\
DEVICE_GROUP dg1 {
    DEVICE disk1
    TARGET_GROUP tg_west {
        group_id 1
        state active
        preferred
        TARGET west
    }
    TARGET_GROUP tg_east {
        group_id 2
        state standby
        TARGET east {
            rel_tgt_id 2
        }
    }
}
"""


def test_device_group_is_parsed_with_states_ids_and_members() -> None:
    config = conf.parse(BASE + ALUA, "c.conf")
    assert config.device_groups == [
        DeviceGroup(
            "dg1",
            ["disk1"],
            [
                TargetGroup("tg_west", 1, "active", True, [TargetGroupMember("west")]),
                TargetGroup("tg_east", 2, "standby", False, [TargetGroupMember("east", 2)]),
            ],
        )
    ]


def test_device_groups_round_trip_through_the_writer() -> None:
    config = conf.parse(BASE + ALUA, "c.conf")
    text = conf.write(config)
    assert "DEVICE_GROUP dg1 {" in text and "preferred 1" in text and "rel_tgt_id 2" in text
    assert conf.parse(text, "again.conf") == config


def _alua(body: str) -> str:
    return BASE + "DEVICE_GROUP dg1 {\n" + body + "}\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (" DEVICE disk1\n TARGET_GROUP t {\n  group_id 0\n }\n",
         "c.conf:19: target group t of device group dg1: group_id 0 is out of range 1..65535 "
         "(LIO reserves 0 for its default group); set group_id"),
        (" TARGET_GROUP t {\n  group_id 1\n  state sleepy\n }\n",
         "c.conf:20: state 'sleepy' is not one of active, nonoptimized, standby, unavailable, "
         "offline, transitioning"),
        (" TARGET_GROUP t {\n  group_id 1\n  TARGET nowhere\n }\n",
         "c.conf:20: target group t of device group dg1 names target nowhere, which no "
         "TARGET_DRIVER defines; LIO can only group its own ports: define the target or "
         "remove the line"),
        (" TARGET_GROUP a {\n  group_id 7\n }\n TARGET_GROUP b {\n  group_id 7\n }\n",
         "c.conf:21: group_id 7 is used by target groups a and b of device group dg1; give "
         "each its own id"),
        (" TARGET_GROUP a {\n  group_id 1\n  TARGET west\n }\n TARGET_GROUP b {\n"
         "  group_id 2\n  TARGET west\n }\n",
         "c.conf:24: target west is in target groups a and b of device group dg1; a port has "
         "one group"),
        (" TARGET_GROUP default_tg_pt_gp {\n  group_id 1\n }\n",
         "c.conf:18: target group name default_tg_pt_gp is LIO's built-in group of every "
         "device; pick another"),
        (" TARGET_GROUP a {\n  group_id x\n }\n",
         "c.conf:19: group_id 'x' is not a decimal number"),
        (" TARGET_GROUP a {\n  group_id 1\n  group_id 2\n }\n",
         "c.conf:20: group_id of target group a is set twice; keep one"),
        (" TARGET_GROUP a {\n  group_id 1\n  preferred 2\n }\n",
         "c.conf:20: preferred must be 0 or 1, not '2'"),
        (" TARGET_GROUP a {\n  group_id 1\n  TARGET west {\n   rel_tgt_id 0\n  }\n }\n",
         "c.conf:20: target group a of device group dg1: rel_tgt_id 0 is out of range 1..65535"),
        (" TARGET_GROUP a {\n  group_id 1\n  weight 3\n }\n",
         "c.conf:20: unknown keyword 'weight' at TARGET_GROUP a; expected group_id, state, "
         "preferred, TARGET"),
        (" LUN 0 disk1\n", "c.conf:18: unknown keyword 'LUN' at DEVICE_GROUP dg1; expected "
         "DEVICE, TARGET_GROUP"),
    ],
)  # fmt: skip
def test_bad_device_groups_name_file_and_line(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        conf.parse(_alua(body), "c.conf")
    assert str(info.value) == message


def test_a_device_belongs_to_one_device_group() -> None:
    text = BASE + ALUA + "DEVICE_GROUP dg2 {\n    DEVICE disk1\n}\n"
    with pytest.raises(ConfigError) as info:
        conf.parse(text, "c.conf")
    assert str(info.value) == (
        "c.conf:34: device disk1 is in device group dg1 and dg2; a device belongs to one "
        "device group"
    )
