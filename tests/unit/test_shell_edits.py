"""Pure model edits behind the shell commands."""

from __future__ import annotations

import pytest

from tcmu_scst.errors import ConfigError
from tcmu_scst.scst.model import Device, Lun, ScstConfig, Target
from tcmu_scst.shell import edits


def test_first_portal_replaces_the_implied_default() -> None:
    tgt = Target("iscsi", "iqn.2024-01.org.test:t", portals=["0.0.0.0:3260"])
    edits.add_portal(tgt, "127.0.0.1")
    assert tgt.portals == ["127.0.0.1:3260"]
    edits.add_portal(tgt, "[::1]:3261")
    assert tgt.portals == ["127.0.0.1:3260", "[::1]:3261"]
    with pytest.raises(ConfigError, match="already listens"):
        edits.add_portal(tgt, "127.0.0.1:3260")
    edits.del_portal(tgt, "127.0.0.1")
    assert tgt.portals == ["[::1]:3261"]


def test_close_drops_luns_everywhere_and_default_is_builtin() -> None:
    config = ScstConfig(devices=[Device("d0", "vdisk_nullio"), Device("d1", "vdisk_nullio")])
    edits.add_lun(config, "Default", "d0", 0, False)  # Default appears on first use
    edits.add_group(config, "g")
    edits.add_lun(config, "g", "d0", 0, True)
    config.targets.append(Target("iscsi", "iqn.2024-01.org.test:t", luns=[Lun(0, "d0")]))
    removed = edits.remove_device(config, "d0", frozenset({"vdisk_nullio"}))
    assert removed.name == "d0"
    assert all(not g.luns for g in config.groups) and not config.targets[0].luns
    with pytest.raises(ConfigError, match="no device d1 here"):
        edits.remove_device(config, "d1", frozenset({"vcdrom"}))


def test_assign_reassigns_the_handler() -> None:
    config = ScstConfig()
    edits.assign(config, "1:0:1:0", "dev_disk")
    edits.assign(config, "1:0:1:0", "dev_disk_perf")
    assert [(d.name, d.handler) for d in config.devices] == [("1:0:1:0", "dev_disk_perf")]
    with pytest.raises(ConfigError, match="H:C:I:L"):
        edits.assign(config, "1:0:1", "dev_disk")
