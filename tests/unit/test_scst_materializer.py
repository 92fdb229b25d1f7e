"""Default materializer (case C) on the fake configfs: iSCSI login stats, qla2xxx sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import apply_config
from tcmu_scst.scst.materializer import KernelLog, Materialized, Materializer, refused_initiators
from tcmu_scst.scst.ownership import load_ownership
from tcmu_scst.testing.fake_configfs import FakeConfigfs

IQN = "iqn.2024-01.org.test:t1"
STATS = f"iscsi/{IQN}/fabric_statistics"
TPG = f"iscsi/{IQN}/tpgt_1"
QLA = "21:00:00:24:ff:31:4c:48"


def setup(tmp_path: Path, targets: str) -> tuple[FakeConfigfs, Path]:
    (tmp_path / "cfs").mkdir()
    cfs = FakeConfigfs(tmp_path / "cfs", loaded_modules={"tcm_qla2xxx"})
    devices = "HANDLER vdisk_fileio {\n"
    for name in ("d0", "d1"):
        (tmp_path / f"{name}.img").write_bytes(b"\0" * 512)
        devices += f" DEVICE {name} {{\n  filename {tmp_path}/{name}.img\n }}\n"
    state = tmp_path / "state.json"
    apply_config(cfs, conf.parse(devices + "}\n" + targets, "m.conf"), state)
    return cfs, state


CASE_C_ISCSI = (
    f"TARGET_DRIVER iscsi {{\n TARGET {IQN} {{\n"
    '  IncomingUser "joe secret123456"\n'
    "  LUN 0 d1 {\n   read_only 1\n  }\n"
    "  GROUP g {\n   LUN 0 d0\n   LUN 1 d1\n   INITIATOR iqn.2024-01.named\n  }\n  enabled"
    " 1\n }\n}\n"
)


def refuse(cfs: FakeConfigfs, name: str, count: int) -> None:
    """What the kernel records when it refuses an unknown initiator's login."""
    cfs.kernel_set(f"{STATS}/iscsi_login_stats/authorize_fails", str(count))
    cfs.kernel_set(f"{STATS}/iscsi_tgt_attr/last_fail_type", "4")
    cfs.kernel_set(f"{STATS}/iscsi_tgt_attr/fail_intr_name", name)


def test_refused_iscsi_initiator_gets_an_acl_with_the_default_map(tmp_path: Path) -> None:
    cfs, state = setup(tmp_path, CASE_C_ISCSI)
    poller = Materializer(cfs, state)
    assert poller.poll_once() == []  # nothing refused yet
    refuse(cfs, "iqn.2024-01.newcomer", 1)
    assert poller.poll_once() == [Materialized("iscsi", IQN, "iqn.2024-01.newcomer")]
    acl = f"{TPG}/acls/iqn.2024-01.newcomer"
    assert cfs.read(f"{acl}/tag") == "Default"
    assert cfs.read(f"{acl}/auth/userid") == "joe"
    assert cfs.listdir(acl).count("lun_0") == 1 and not cfs.exists(f"{acl}/lun_1")
    assert cfs.read(f"{acl}/lun_0/write_protect") == "1"
    assert poller.poll_once() == []  # counter unchanged: nothing new
    owned = load_ownership(state).targets[0]
    assert owned.materialized == ["iqn.2024-01.newcomer"]


def test_materialized_acls_survive_reapply_and_follow_the_default_map(tmp_path: Path) -> None:
    cfs, state = setup(tmp_path, CASE_C_ISCSI)
    refuse(cfs, "iqn.2024-01.newcomer", 3)
    Materializer(cfs, state).poll_once()
    again = apply_config(cfs, conf.parse(_devices(tmp_path) + CASE_C_ISCSI, "m.conf"), state)
    assert again.operations == 0
    flipped = CASE_C_ISCSI.replace("read_only 1", "read_only 0")
    apply_config(cfs, conf.parse(_devices(tmp_path) + flipped, "m.conf"), state)
    assert cfs.read(f"{TPG}/acls/iqn.2024-01.newcomer/lun_0/write_protect") == "0"
    # Default covering everything -> case B: materialized ACLs are no longer needed.
    case_b = flipped.replace("   LUN 0 d0\n   LUN 1 d1\n", "   LUN 0 d1\n")
    apply_config(cfs, conf.parse(_devices(tmp_path) + case_b, "m.conf"), state)
    assert not cfs.exists(f"{TPG}/acls/iqn.2024-01.newcomer")
    assert cfs.exists(f"{TPG}/acls/iqn.2024-01.named")


def _devices(tmp_path: Path) -> str:
    text = "HANDLER vdisk_fileio {\n"
    for name in ("d0", "d1"):
        text += f" DEVICE {name} {{\n  filename {tmp_path}/{name}.img\n }}\n"
    return text + "}\n"


def test_known_names_and_non_authorization_failures_are_ignored(tmp_path: Path) -> None:
    cfs, state = setup(tmp_path, CASE_C_ISCSI)
    poller = Materializer(cfs, state)
    refuse(cfs, "iqn.2024-01.named", 1)  # has an ACL already
    assert poller.poll_once() == []
    refuse(cfs, "iqn.2024-01.badpass", 2)
    cfs.kernel_set(f"{STATS}/iscsi_tgt_attr/last_fail_type", "2")  # authentication failure
    assert poller.poll_once() == []
    assert cfs.listdir(f"{TPG}/acls") == ["iqn.2024-01.named"]


def test_first_poll_after_start_picks_up_a_refusal_that_happened_before(tmp_path: Path) -> None:
    cfs, state = setup(tmp_path, CASE_C_ISCSI)
    refuse(cfs, "iqn.2024-01.early", 5)
    assert [m.initiator for m in Materializer(cfs, state).poll_once()] == ["iqn.2024-01.early"]


@pytest.mark.parametrize("case_a", [True, False])
def test_only_case_c_targets_are_materialized(tmp_path: Path, case_a: bool) -> None:
    luns = "" if case_a else "  LUN 0 d0\n"
    cfs, state = setup(
        tmp_path, f"TARGET_DRIVER iscsi {{\n TARGET {IQN} {{\n{luns}  enabled 1\n }}\n}}\n"
    )
    refuse(cfs, "iqn.2024-01.x", 1)
    assert Materializer(cfs, state).poll_once() == []
    assert cfs.listdir(f"{TPG}/acls") == []


def test_qla2xxx_login_only_sessions_become_acls(tmp_path: Path) -> None:
    cfs, state = setup(
        tmp_path,
        f"TARGET_DRIVER qla2x00t {{\n TARGET {QLA} {{\n  LUN 0 d0\n"
        "  GROUP g {\n   LUN 0 d1\n   INITIATOR 21:00:00:24:ff:31:4c:49\n  }\n  enabled 1\n"
        " }\n}\n",
    )
    tpg = f"qla2xxx/{QLA}/tpgt_1"
    assert cfs.read(f"{tpg}/attrib/demo_mode_login_only") == "1"
    cfs.kernel_set(f"{tpg}/dynamic_sessions", "21:00:00:24:FF:31:4C:50\n\x00")
    created = Materializer(cfs, state).poll_once()
    assert created == [Materialized("qla2xxx", QLA, "21:00:00:24:ff:31:4c:50")]
    assert cfs.exists(f"{tpg}/acls/21:00:00:24:ff:31:4c:50/lun_0")
    assert not cfs.exists(f"{tpg}/acls/21:00:00:24:ff:31:4c:50/tag")  # no tag on FC


KMSG = [
    "iSCSI Login negotiation failed.",
    "iSCSI Initiator Node: iqn.2024-01.from-log is not authorized to access iSCSI target"
    " portal group: 1.",
    "iSCSI Initiator Node: iqn.other-tpg is not authorized to access iSCSI target portal group: 2.",
]


def test_refused_names_come_from_the_kernel_log_line() -> None:
    assert refused_initiators(KMSG) == ["iqn.2024-01.from-log"]  # only tpgt_1 is ours


def test_kernel_log_refusal_materializes_on_every_case_c_iscsi_target(tmp_path: Path) -> None:
    second = CASE_C_ISCSI.replace(IQN, "iqn.2024-01.org.test:t2").replace(
        "TARGET_DRIVER iscsi {\n", ""
    )[:-2]  # same body, second TARGET in the same driver section
    cfs, state = setup(tmp_path, CASE_C_ISCSI[:-2] + second + "}\n")
    batches = [KMSG, []]
    poller = Materializer(cfs, state, kernel_log=lambda: batches.pop(0))
    # "Unknown" is what Linux 6.1 leaves in fail_intr_name: never a name to use.
    refuse(cfs, "Unknown", 1)
    created = poller.poll_once()
    assert sorted((m.wwn, m.initiator) for m in created) == [
        (IQN, "iqn.2024-01.from-log"),
        ("iqn.2024-01.org.test:t2", "iqn.2024-01.from-log"),
    ]
    assert poller.poll_once() == []


def test_kernel_log_reader_without_access_reports_nothing(tmp_path: Path) -> None:
    assert KernelLog(tmp_path / "no-kmsg").new_messages() == []
