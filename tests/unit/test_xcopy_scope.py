"""The EXTENDED COPY access rule (kernel.exposure, service.units) on the fake configfs:
two devices may be copied between only when every initiator reaches both the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.command import GOOD
from tcmu_scst.kernel.exposure import ANY_INITIATOR, Access, exposure, same_exposure
from tcmu_scst.kernel.fabrics import IscsiTpg, LoopbackTpg
from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions
from tcmu_scst.scsi.identity import naa_designator
from tcmu_scst.scsi.sbc import SbcDevice
from tcmu_scst.service.units import ServedUnits
from tcmu_scst.testing.fake_configfs import FakeConfigfs
from tcmu_scst.testing.scsi_harness import make_disk, run

IQN = "iqn.2003-01.org.example:t1"
INI_A = "iqn.1993-08.org.debian:01:a"
INI_B = "iqn.1993-08.org.debian:01:b"
BS = 512


@pytest.fixture
def fake(tmp_path: Path) -> FakeConfigfs:
    return FakeConfigfs(tmp_path)


def _backstore(fake: FakeConfigfs, name: str) -> UserBackstore:
    return UserBackstore.create(fake, name, UserBackstoreOptions(f"vdisk/{name}", 1 << 20))


def _iscsi_pair(fake: FakeConfigfs) -> tuple[IscsiTpg, UserBackstore, UserBackstore]:
    d1, d2 = _backstore(fake, "d1"), _backstore(fake, "d2")
    tpg = IscsiTpg.create(fake, IQN)
    tpg.add_lun(0, d1)
    tpg.add_lun(1, d2)
    return tpg, d1, d2


def test_exposure_lists_acls_demo_mode_and_aclless_fabrics(fake: FakeConfigfs) -> None:
    tpg, d1, d2 = _iscsi_pair(fake)
    assert exposure(fake, d1.rel) == frozenset()
    tpg.add_acl(INI_A).map_lun(0, 0)
    tpg.add_acl(INI_B).map_lun(0, 0, write_protect=True)
    assert exposure(fake, d1.rel) == {Access("iscsi", IQN, 1, INI_A, False),
                                      Access("iscsi", IQN, 1, INI_B, True)}
    tpg.set_attrib("generate_node_acls", 1)
    assert Access("iscsi", IQN, 1, ANY_INITIATOR, True) in exposure(fake, d2.rel)
    loop = LoopbackTpg.create(fake)
    loop.add_lun(0, d2)
    assert Access("loopback", loop.wwn, 1, ANY_INITIATOR, False) in exposure(fake, d2.rel)


def test_same_exposure_needs_identical_acls_and_write_protection(fake: FakeConfigfs) -> None:
    tpg, d1, d2 = _iscsi_pair(fake)
    assert not same_exposure(fake, d1.rel, d2.rel)  # exported to nobody: never
    a = tpg.add_acl(INI_A)
    a.map_lun(0, 0)
    assert not same_exposure(fake, d1.rel, d2.rel)  # INI_A sees d1 only
    a.map_lun(1, 1)
    assert same_exposure(fake, d1.rel, d2.rel)
    a.set_write_protect(1, True)
    assert not same_exposure(fake, d1.rel, d2.rel)  # read-only d2 must not be written
    a.set_write_protect(1, False)
    tpg.add_acl(INI_B).map_lun(0, 0)
    assert not same_exposure(fake, d1.rel, d2.rel)  # INI_B could copy into d2


def _served(fake: FakeConfigfs, domain: ServedUnits, backstore: UserBackstore
            ) -> tuple[SbcDevice, bytearray]:
    device, backend = make_disk(name=backstore.name)

    class Handler:
        pass

    handler = Handler()
    handler.device = device  # type: ignore[attr-defined]
    domain.serve(backstore.rel, handler)  # type: ignore[arg-type]
    return device, backend.data


def _xcopy(origin: SbcDevice, src: SbcDevice, dst: SbcDevice, blocks: int) -> bytes:
    def cscd(dev: SbcDevice) -> bytes:
        naa = naa_designator(dev.config)
        return (bytes((0xE4, 0, 0, 0, 0x01, 0x03, 0, len(naa))) + naa).ljust(28, b"\0") + (
            BS.to_bytes(4, "big"))

    seg = (bytes((0x02, 0, 0, 24, 0, 0, 0, 1, 0, 0)) + blocks.to_bytes(2, "big")
           + bytes(8) + bytes(8))
    targets = cscd(src) + cscd(dst)
    header = bytes((0, 3 << 3)) + len(targets).to_bytes(2, "big") + bytes(4) + len(
        seg).to_bytes(4, "big") + bytes(4)
    plist = header + targets + seg
    cdb = bytes((0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0)) + len(plist).to_bytes(4, "big") + bytes(2)
    result = run(origin.execute, cdb, plist).result
    return bytes((result.status,)) + result.sense


def test_domain_copies_between_devices_only_under_the_rule(fake: FakeConfigfs) -> None:
    tpg, d1, d2 = _iscsi_pair(fake)
    domain = ServedUnits(fake)
    dev1, data1 = _served(fake, domain, d1)
    dev2, data2 = _served(fake, domain, d2)
    data1[:BS * 4] = b"\x5a" * (BS * 4)
    acl = tpg.add_acl(INI_A)
    acl.map_lun(0, 0)
    refused = _xcopy(dev1, dev1, dev2, 4)
    assert refused[0] != GOOD and refused[1 + 2] == 0x0A and refused[1 + 12:1 + 14] == b"\x08\x04"
    assert data2[:BS * 4] == bytes(BS * 4)
    acl.map_lun(1, 1)
    assert _xcopy(dev1, dev1, dev2, 4)[0] == GOOD
    assert data2[:BS * 4] == b"\x5a" * (BS * 4)
    # The copy may also be sent to a third LU naming two others: same rule for each.
    d3 = _backstore(fake, "d3")
    tpg.add_lun(2, d3)
    dev3, _ = _served(fake, domain, d3)
    assert _xcopy(dev3, dev1, dev2, 4)[0] != GOOD  # d3 is exported to nobody
    acl.map_lun(2, 2)
    assert _xcopy(dev3, dev1, dev2, 4)[0] == GOOD
    domain.forget(d2.rel)
    assert _xcopy(dev1, dev1, dev2, 4)[0] != GOOD  # no longer served: unknown designator
