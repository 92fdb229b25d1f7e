"""scst.conf applied to the real LIO (in the lab guest) and checked with libiscsi and sysfs.

The tcmu-scst daemon serves the user backstores (INQUIRY answers carry the device name
as product id, so each LUN's identity is visible to the initiator).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import LoopbackTpg
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import ApplyError, apply_config
from tcmu_scst.scst.live import read_live
from tcmu_scst.scst.materializer import Materializer
from tcmu_scst.scst.ownership import load_ownership
from tests.kernel.tcmu_rig import iscsi_inq, product_id

pytestmark = pytest.mark.kernel

IQN = "iqn.2024-01.org.tcmu-scst:apply"
INI_A = "iqn.2024-01.org.test:ini-a"
INI_B = "iqn.2024-01.org.test:ini-b"
INI_C = "iqn.2024-01.org.test:ini-c"
PORTAL = "127.0.0.1"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[None]:
    socket = tmp_path / "control.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcmu_scst.cli", "daemon", "--threads", "1",
         "--control-socket", str(socket), "--log-level", "warning"],
    )  # fmt: skip
    deadline = time.monotonic() + 90  # slow when the host is busy
    while not socket.exists():
        assert proc.poll() is None, "the tcmu-scst daemon exited at start-up"
        assert time.monotonic() < deadline, "the tcmu-scst daemon did not start"
        time.sleep(0.1)
    yield
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture
def setup(tmp_path: Path, daemon: None) -> Iterator[tuple[Configfs, Path, Path]]:
    for name in ("d0", "d1"):
        with open(tmp_path / f"{name}.img", "wb") as f:
            f.truncate(16 << 20)
    cfs = Configfs()
    state = tmp_path / "state.json"
    yield cfs, state, tmp_path
    apply_config(cfs, conf.parse("", "empty"), state)  # clears everything we made


def devices(tmp_path: Path) -> str:
    text = "HANDLER vdisk_fileio {\n"
    for name in ("d0", "d1"):
        text += f" DEVICE {name} {{\n  filename {tmp_path}/{name}.img\n }}\n"
    return text + "}\n"


def iscsi(body: str) -> str:
    return (
        f"TARGET_DRIVER iscsi {{\n TARGET {IQN} {{\n  portal {PORTAL}:3260\n{body}"
        "  enabled 1\n }\n}\n"
    )


CASE_C = iscsi(
    "  LUN 0 d0\n"
    f"  GROUP g1 {{\n   LUN 0 d1\n   LUN 1 d0 {{\n    read_only 1\n   }}\n"
    f"   INITIATOR {INI_A}\n  }}\n"
)


def inquiry(initiator: str, lun: int, chap: str = "") -> subprocess.CompletedProcess[str]:
    return iscsi_inq(initiator, url(lun, chap))


def product(initiator: str, lun: int, chap: str = "") -> str:
    return product_id(initiator, url(lun, chap))


def url(lun: int, chap: str = "") -> str:
    user = f"{chap}@" if chap else ""  # libiscsi URL: iscsi://user%secret@host/iqn/lun
    return f"iscsi://{user}{PORTAL}/{IQN}/{lun}"


def discovered(initiator: str) -> str:
    proc = subprocess.run(
        ["iscsi-ls", "-i", initiator, f"iscsi://{PORTAL}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return proc.stdout + proc.stderr


def test_groups_numbering_materializer_and_case_a_on_iscsi(
    setup: tuple[Configfs, Path, Path],
) -> None:
    cfs, state, tmp_path = setup
    result = apply_config(cfs, conf.parse(devices(tmp_path) + CASE_C, "c.conf"), state)
    assert result.operations > 0
    tpg = f"iscsi/{IQN}/tpgt_1"
    assert cfs.read(f"{tpg}/attrib/generate_node_acls") == "0"
    assert cfs.read(f"{tpg}/acls/{INI_A}/tag") == "g1"
    assert cfs.read(f"{tpg}/acls/{INI_A}/lun_1/write_protect") == "1"
    # The group member sees its own numbering.
    assert product(INI_A, 0) == "d1"
    assert product(INI_A, 1) == "d0"
    # An unknown initiator is refused first (case C), then materialized with Default.
    assert inquiry(INI_B, 0).returncode != 0
    created = Materializer(cfs, state).poll_once()
    assert [m.initiator for m in created] == [INI_B]
    assert product(INI_B, 0) == "d0"
    assert inquiry(INI_B, 1).returncode != 0  # Default has one LUN only
    # Same file again: nothing to do on the real kernel either.
    again = apply_config(cfs, conf.parse(devices(tmp_path) + CASE_C, "c.conf"), state)
    assert again.steps == []
    # Case A: no default LUNs -> unknown initiators do not even discover the target.
    case_a = iscsi(f"  GROUP g1 {{\n   LUN 0 d1\n   INITIATOR {INI_A}\n  }}\n")
    apply_config(cfs, conf.parse(devices(tmp_path) + case_a, "a.conf"), state)
    assert cfs.read(f"{tpg}/attrib/demo_mode_discovery") == "0"
    assert IQN in discovered(INI_A)
    assert IQN not in discovered(INI_C)
    assert not cfs.exists(f"{tpg}/acls/{INI_B}")  # the materialized ACL went with case C


def test_case_b_demo_mode_with_chap_serves_unknown_initiators_at_default_numbers(
    setup: tuple[Configfs, Path, Path],
) -> None:
    cfs, state, tmp_path = setup
    body = iscsi(
        '  IncomingUser "joe secret123456"\n'
        f"  LUN 0 d1\n  LUN 1 d0\n  GROUP g {{\n   LUN 0 d0\n   INITIATOR {INI_A}\n  }}\n"
    )
    apply_config(cfs, conf.parse(devices(tmp_path) + body, "b.conf"), state)
    assert cfs.read(f"iscsi/{IQN}/tpgt_1/attrib/generate_node_acls") == "1"
    chap = "joe%secret123456"
    assert product(INI_C, 0, chap) == "d1" and product(INI_C, 1, chap) == "d0"
    assert product(INI_A, 0, chap) == "d0"
    assert inquiry(INI_C, 0).returncode != 0  # CHAP is enforced for demo-mode logins
    assert inquiry(INI_A, 0, "joe%wrongsecret99").returncode != 0  # and for ACLs
    again = apply_config(cfs, conf.parse(devices(tmp_path) + body, "b.conf"), state)
    assert again.steps == []  # CHAP read back from auth/ compares equal


def test_loopback_target_per_group_exports_the_groups_devices(
    setup: tuple[Configfs, Path, Path],
) -> None:
    cfs, state, tmp_path = setup
    body = (
        "TARGET_DRIVER scst_local {\n TARGET local {\n  LUN 0 d0\n"
        "  GROUP g {\n   LUN 0 d1\n  }\n }\n}\n"
    )
    apply_config(cfs, conf.parse(devices(tmp_path) + body, "l.conf"), state)
    seen = {}
    for owned in load_ownership(state).targets:
        nodes = LoopbackTpg(cfs, owned.wwn).wait_for_lun(0)
        assert nodes.block is not None
        model = Path(f"/sys/block/{os.path.basename(nodes.block)}/device/model").read_text()
        seen[owned.scst_group] = model.strip()
    assert seen == {"Default": "d0", "g": "d1"}


def test_kernel_error_mid_way_rolls_everything_back(setup: tuple[Configfs, Path, Path]) -> None:
    cfs, state, tmp_path = setup
    first = iscsi(f"  LUN 0 d0\n  GROUP g {{\n   LUN 0 d1\n   INITIATOR {INI_A}\n  }}\n")
    apply_config(cfs, conf.parse(devices(tmp_path) + first, "1.conf"), state)
    before = read_live(cfs, load_ownership(state))
    # The second file changes the group, adds a target, and gives that target an iSCSI
    # parameter value the kernel refuses (EINVAL on the param/ write). The parser now
    # refuses such a value itself, so it is put into the parsed model behind its back.
    second = (
        iscsi(f"  LUN 0 d1\n  GROUP g {{\n   LUN 0 d0\n   INITIATOR {INI_B}\n  }}\n")
        + "TARGET_DRIVER iscsi {\n TARGET iqn.2024-01.org.tcmu-scst:other {\n"
        "  LUN 0 d0\n  enabled 1\n }\n}\n"
    )
    config = conf.parse(devices(tmp_path) + second, "2.conf")
    config.targets[-1].attributes["HeaderDigest"] = "Bogus"
    with pytest.raises(ApplyError, match="all changes undone"):
        apply_config(cfs, config, state)
    after = read_live(cfs, load_ownership(state))
    assert after == before
    assert not cfs.exists("iscsi/iqn.2024-01.org.tcmu-scst:other")
    assert apply_config(cfs, conf.parse(devices(tmp_path) + first, "1.conf"), state).steps == []
    assert product(INI_A, 0) == "d1"


def write10(initiator: str, lun: int) -> str:
    """libiscsi's WRITE(10) test against one LUN; its CUnit output."""
    proc = subprocess.run(
        ["iscsi-test-cu", "--dataloss", "--test", "SCSI.Write10.Simple",
         f"--initiator-name={initiator}", f"iscsi://{PORTAL}/{IQN}/{lun}"],
        capture_output=True, text=True, errors="replace", timeout=300, check=False,
    )  # fmt: skip
    return proc.stdout + proc.stderr


def test_read_only_lun_refuses_writes_for_that_group_only(
    setup: tuple[Configfs, Path, Path],
) -> None:
    cfs, state, tmp_path = setup
    apply_config(cfs, conf.parse(devices(tmp_path) + CASE_C, "c.conf"), state)
    writable = write10(INI_A, 0)  # d1, read-write for g1
    protected = write10(INI_A, 1)  # d0, READ_ONLY for g1
    assert "Run Summary" in writable and "Run Summary" in protected, writable + protected
    assert "Test: Simple ...passed" in writable, writable
    # LIO's per-mapped-LUN write_protect, generic in the core, also for TCMU devices.
    assert "sense key DATA PROTECTION(0x07) / ASCQ WRITE_PROTECTED(0x2700)" in protected


WILD_HOST = "iqn.2024-01.org.wild:host1"


def test_wildcard_group_materializes_matching_initiators_only(
    setup: tuple[Configfs, Path, Path],
) -> None:
    """SCST 3.x ``INITIATOR iqn...:*``: LIO has no pattern ACLs; a matching initiator is
    refused once, gets an ACL with the group's LUNs, and one that does not match stays
    refused (the default set is empty)."""
    cfs, state, tmp_path = setup
    body = iscsi("  GROUP wild {\n   LUN 0 d1\n   INITIATOR iqn.2024-01.org.wild:*\n  }\n")
    apply_config(cfs, conf.parse(devices(tmp_path) + body, "w.conf"), state)
    tpg = f"iscsi/{IQN}/tpgt_1"
    assert cfs.read(f"{tpg}/attrib/generate_node_acls") == "0"
    assert cfs.listdir(f"{tpg}/acls") == []  # no ACL named after the pattern
    assert inquiry(WILD_HOST, 0).returncode != 0  # LIO has no login hook: first is refused
    assert inquiry(INI_C, 0).returncode != 0
    created = Materializer(cfs, state).poll_once()
    assert [m.initiator for m in created] == [WILD_HOST]
    assert cfs.read(f"{tpg}/acls/{WILD_HOST}/tag") == "wild"
    assert product(WILD_HOST, 0) == "d1"
    assert inquiry(INI_C, 0).returncode != 0  # matches no pattern: still refused
    assert Materializer(cfs, state).poll_once() == []
    assert cfs.listdir(f"{tpg}/acls") == [WILD_HOST]


SCSTADMIN_FILE = Path(__file__).parent.parent / "fixtures" / "scst3" / "scstadmin-write-config.conf"
SCSTADMIN_IQN = "iqn.2006-10.net.vlnb:tgt"


def test_a_file_written_by_scstadmin_applies_unchanged_with_its_wildcard_group(
    setup: tuple[Configfs, Path, Path],
) -> None:
    """The scstadmin-shaped file (non-key attributes, copy_manager, a group with
    ``INITIATOR iqn.1993-08.org.debian:*``) applies as is; libiscsi ``-i`` with a
    matching name lands in that group, another name in the target's default set."""
    from tcmu_scst.scst.commands import load

    cfs, state, tmp_path = setup
    with open(tmp_path / "disk01.img", "wb") as image:
        image.truncate(1 << 20)
    path = tmp_path / "scst.conf"
    path.write_text(SCSTADMIN_FILE.read_text().replace("@DIR@", str(tmp_path)))
    config = load(path)
    assert len(config.warnings) == 42  # one per attribute without effect
    apply_config(cfs, config, state)
    tpg = f"iscsi/{SCSTADMIN_IQN}/tpgt_1"
    assert cfs.read(f"{tpg}/param/MaxBurstLength") == "1048576"
    debian, other = "iqn.1993-08.org.debian:01:kt-wild", "iqn.2024-01.org.test:not-debian"
    url = f"iscsi://{PORTAL}/{SCSTADMIN_IQN}/0"
    assert iscsi_inq(debian, url).returncode != 0  # first login refused (case C)
    # (a new poller reads the whole kernel log: earlier tests' refusals may come too)
    assert debian in [m.initiator for m in Materializer(cfs, state).poll_once()]
    assert product_id(debian, url) == "disk01"
    assert cfs.read(f"{tpg}/acls/{debian}/tag") == "hosts"
    assert iscsi_inq(other, url).returncode != 0
    assert other in [m.initiator for m in Materializer(cfs, state).poll_once()]
    assert product_id(other, url) == "disk01"
    assert cfs.read(f"{tpg}/acls/{other}/tag") == "Default"  # the target's own LUNs
