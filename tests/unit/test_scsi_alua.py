"""ALUA answers of the emulation (scsi.alua) and the kernel group reader (kernel.alua)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tcmu_scst.command import GOOD
from tcmu_scst.kernel.alua import KernelPortGroups
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.scsi.alua import AccessState, PortGroup
from tcmu_scst.service.units import CachedPortGroups
from tcmu_scst.testing import scsi_harness as h
from tcmu_scst.testing.scsi_harness import make_disk, run


class Groups:
    def __init__(self, *groups: PortGroup) -> None:
        self.list = list(groups)
        self.changes: list[tuple[int, AccessState]] = []
        self.fail = False

    def groups(self) -> list[PortGroup]:
        return self.list

    def set_state(self, group_id: int, state: AccessState) -> None:
        if self.fail:
            raise OSError(22, "Invalid argument")
        self.changes.append((group_id, state))


def rtpg(fmt: int = 0, alloc: int = 1024) -> bytes:
    return bytes((0xA3, (fmt << 5) | 0x0A, 0, 0, 0, 0)) + alloc.to_bytes(4, "big") + bytes(2)


def stpg(length: int) -> bytes:
    return bytes((0xA4, 0x0A, 0, 0, 0, 0)) + length.to_bytes(4, "big") + bytes(2)


def _designators(page: bytes) -> list[tuple[int, bytes]]:
    """(association, whole descriptor) of each VPD 83h designation descriptor."""
    out, pos = [], 4
    while pos < len(page):
        end = pos + 4 + page[pos + 3]
        out.append(((page[pos + 1] >> 4) & 0x03, page[pos:end]))
        pos = end
    return out


ACTIVE = PortGroup(1, AccessState.ACTIVE_OPTIMIZED, preferred=True, ports=(1,))
STANDBY = PortGroup(2, AccessState.STANDBY, ports=(2, 3))


def test_without_kernel_groups_there_is_no_alua() -> None:
    dev, _ = make_disk()
    assert run(dev.execute, h.inquiry(), in_len=96).data[5] & 0x30 == 0
    assert run(dev.execute, rtpg(), in_len=64).sense.code == (0x05, 0x24, 0x00)


def test_report_target_port_groups_lists_states_ports_and_preference() -> None:
    dev, _ = make_disk()
    dev.attach_port_groups(Groups(STANDBY, ACTIVE))
    assert run(dev.execute, h.inquiry(), in_len=96).data[5] & 0x30 == 0x30  # TPGS 11b
    data = run(dev.execute, rtpg(), in_len=1024).data
    assert int.from_bytes(data[0:4], "big") == len(data) - 4 == 8 + 4 + 8 + 8
    assert data[4:12] == bytes((0x80, 0xDF, 0, 1, 0, 0, 0, 1))
    assert data[12:16] == bytes((0, 0, 0, 1))
    assert data[16:24] == bytes((0x02, 0xDF, 0, 2, 0, 0, 0, 2))
    assert data[24:32] == bytes((0, 0, 0, 2, 0, 0, 0, 3))
    extended = run(dev.execute, rtpg(fmt=1), in_len=1024).data
    assert extended[4] == 0x10 and extended[8:] == data[4:]
    assert run(dev.execute, rtpg(fmt=2), in_len=64).sense.field == (True, 1, 7)
    # Two groups: no port-independent designator can be given in VPD 83h.
    page = run(dev.execute, h.inquiry(page=0x83), in_len=255).data
    assert all(assoc == 0 for assoc, _ in _designators(page))


def test_vpd_83_names_the_group_and_port_when_they_do_not_depend_on_the_path() -> None:
    dev, _ = make_disk()
    dev.attach_port_groups(Groups(ACTIVE))
    page = run(dev.execute, h.inquiry(page=0x83), in_len=255).data
    port_designators = [d for d in _designators(page) if d[0] == 1]
    assert port_designators == [(1, bytes((0x01, 0x14, 0, 4, 0, 0, 0, 1))),  # rel. port 1
                                (1, bytes((0x01, 0x15, 0, 4, 0, 0, 0, 1)))]  # group 1


def test_set_target_port_groups_moves_groups_through_the_source() -> None:
    dev, _ = make_disk()
    source = Groups(ACTIVE, STANDBY)
    dev.attach_port_groups(source)
    params = bytes(4) + bytes((0x00, 0, 0, 2)) + bytes((0x02, 0, 0, 1))
    assert run(dev.execute, stpg(len(params)), params).status == GOOD
    assert source.changes == [(2, AccessState.ACTIVE_OPTIMIZED), (1, AccessState.STANDBY)]
    unknown = bytes(4) + bytes((0x00, 0, 0, 9))
    assert run(dev.execute, stpg(8), unknown).sense.field == (False, 6, 7)
    offline = bytes(4) + bytes((0x0E, 0, 0, 1))
    assert run(dev.execute, stpg(8), offline).sense.field == (False, 4, 3)
    assert run(dev.execute, stpg(6), bytes(6)).sense.code == (0x05, 0x1A, 0x00)
    source.fail = True
    failed = run(dev.execute, stpg(8), bytes(4) + bytes((0x01, 0, 0, 1)))
    assert failed.sense.code == (0x04, 0x67, 0x0A)


def test_set_target_port_groups_needs_explicit_alua() -> None:
    dev, _ = make_disk()
    dev.attach_port_groups(Groups(PortGroup(1, 0, explicit=False, ports=(1,))))
    assert run(dev.execute, h.inquiry(), in_len=96).data[5] & 0x30 == 0x10  # implicit only
    assert run(dev.execute, stpg(8), bytes(8)).sense.code == (0x05, 0x20, 0x00)


# -- kernel.alua over a configfs-shaped directory -------------------------------------


def _write(root: Path, rel: str, text: str) -> None:
    path = root / "target" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _group(root: Path, dev: str, name: str, gid: str, state: int, access: str,
           preferred: int = 0) -> None:
    base = f"{dev}/alua/{name}"
    for leaf, value in {
        "tg_pt_gp_id": gid, "alua_access_state": f"{state}\n", "alua_access_type": access,
        "alua_access_status": "None\n", "preferred": f"{preferred}\n",
        "alua_support_transitioning": "1\n", "alua_support_offline": "1\n",
        "alua_support_lba_dependent": "0\n", "alua_support_unavailable": "1\n",
        "alua_support_standby": "1\n", "alua_support_active_nonoptimized": "1\n",
        "alua_support_active_optimized": "1\n",
    }.items():
        _write(root, f"{base}/{leaf}", value)


def _lun(root: Path, tpg: str, lun: int, dev: str, group: str, rtpi: int) -> None:
    lun_dir = root / "target" / tpg / "lun" / f"lun_{lun}"
    lun_dir.mkdir(parents=True)
    (lun_dir / "link").symlink_to(root / "target" / dev)
    _write(root, f"{tpg}/lun/lun_{lun}/alua_tg_pt_gp",
           f"TG Port Alias: {group}\nTG Port Group ID: 0\n")
    _write(root, f"{tpg}/lun/lun_{lun}/statistics/scsi_port/indx", f"{rtpi}\n")


@pytest.fixture
def tree(tmp_path: Path) -> Configfs:
    dev = "core/user_0/disk1"
    (tmp_path / "target" / dev).mkdir(parents=True)
    _group(tmp_path, dev, "default_tg_pt_gp", "0\n", 0, "Implicit and Explicit\n")
    _group(tmp_path, dev, "west", "7\n", 2, "3\n", preferred=1)
    _group(tmp_path, dev, "unused", "9\n", 0, "3\n")
    _lun(tmp_path, "loopback/naa.5001405aaaaaaaaa/tpgt_1", 0, dev, "default_tg_pt_gp", 1)
    _lun(tmp_path, "loopback/naa.5001405bbbbbbbbb/tpgt_1", 3, dev, "west", 2)
    other = "core/user_0/disk2"
    (tmp_path / "target" / other).mkdir(parents=True)
    _lun(tmp_path, "loopback/naa.5001405bbbbbbbbb/tpgt_1", 4, other, "default_tg_pt_gp", 3)
    return Configfs(tmp_path)


def test_kernel_groups_are_read_with_their_ports(tree: Configfs) -> None:
    groups = {g.group_id: g for g in KernelPortGroups(tree, "core/user_0/disk1").groups()}
    assert set(groups) == {0, 7}  # "unused" holds no port of ours
    assert groups[0].ports == (1,) and groups[0].implicit and groups[0].explicit
    west = groups[7]
    assert (west.state, west.preferred, west.ports) == (AccessState.STANDBY, True, (2,))
    assert west.supported == 0xCF  # all but LBA dependent


def test_kernel_set_state_writes_the_group(tree: Configfs) -> None:
    source = KernelPortGroups(tree, "core/user_0/disk1")
    source.set_state(7, AccessState.ACTIVE_NONOPTIMIZED)
    assert tree.read("core/user_0/disk1/alua/west/alua_access_state") == "1"
    with pytest.raises(LookupError):
        source.set_state(5, AccessState.STANDBY)


def test_cached_groups_never_wait_for_a_blocked_configfs_read() -> None:
    """tcm_loop scans a LUN inside the symlink that links it: a command that read
    configfs there would wait for itself. The cache answers at once."""
    release = threading.Event()

    class Blocked(Groups):
        def groups(self) -> list[PortGroup]:
            release.wait(5)
            return self.list

    cached = CachedPortGroups(Blocked(ACTIVE), max_age=0, wait=0.05)
    started = time.monotonic()
    assert cached.groups() == []
    assert time.monotonic() - started < 1
    release.set()
    deadline = time.monotonic() + 5
    while cached.groups() != [ACTIVE]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    source = Groups(ACTIVE)
    cached = CachedPortGroups(source)
    assert cached.groups() == [ACTIVE]  # a quick read is waited for: fresh answers
    source.list = [STANDBY]
    cached.set_state(1, AccessState.STANDBY)
    assert source.changes == [(1, AccessState.STANDBY)]
    assert cached.groups() == [STANDBY]  # re-read after the change
