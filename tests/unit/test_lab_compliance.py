"""Parsing libiscsi's CUnit output and comparing it with an expectations file."""
# ruff: noqa: E501  (RECORDED is verbatim tool output; its long lines are the point)

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigError, LabError
from tcmu_scst.lab import compliance
from tcmu_scst.lab.compliance import (
    COMPLIANCE_IQN,
    CaseResult,
    compare,
    format_expectations,
    parse_cunit,
    parse_expectations,
)
from tcmu_scst.testing.fake_configfs import FakeConfigfs

# Recorded from `iscsi-test-cu --dataloss --Verbose-scsi --test SCSI` against LIO fileio
# in the lab (trimmed: some tests and most SCSI lines left out; summary adjusted to 5).
RECORDED = """\
    Send INQUIRY (Expecting SUCCESS) evpd:1 page_code:b1 alloc_len:255
    [OK] INQUIRY returned SUCCESS NO SENSE(0x00) (null)(0x0000)
    Send REPORT_SUPPORTED_OPCODE (Expecting SUCCESS) RCTD:1 OPTIONS:0 OPCODE:0x00 SA:0 ALLOC_LEN:65535
    [SKIPPED] REPORT_SUPPORTED_OPCODES is not implemented.



     CUnit - A unit testing framework for C - Version 2.1-3
     http://cunit.sourceforge.net/


Suite: CompareAndWrite
  Test: Simple ...
    Send COMPAREANDWRITE (Expecting CHECK_CONDITION) LBA:524032 LEN:262144 WRPROTECT:0
    [FAILED] COMPAREANDWRITE failed with wrong sense. Should have failed with ILLEGAL_REQUEST(0x05)/INVALID_FIELD_IN_CDB(0x2400) but failed with Sense: (null)(0x05)/(0x0e03)

FAILED
    1. test_compareandwrite_simple.c:71  - CU_ASSERT_EQUAL(_r,0)
    2. test_compareandwrite_simple.c:123  - CU_ASSERT_EQUAL(_r,0)
  Test: DpoFua ...
    Test COMPAREANDWRITE DPO/FUA flags
    Send READ16 (Expecting SUCCESS) LBA:256 blocks:1 rdprotect:0 dpo:0 fua:0 fua_nv:0 group:0
    [OK] READ16 returned SUCCESS NO SENSE(0x00) (null)(0x0000)
    [SKIPPED] REPORT_SUPPORTED_OPCODES is not implemented.
passed
  Test: InvalidDataOutSize ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
passed    Send PRIN/READ_KEYS

Suite: Reserve6
  Test: Simple ...
    Test basic RESERVE6/RELEASE6 commands if supported
    Send RESERVE6
    [OK] RESERVE6 returned SUCCESS.
    Send RELEASE6
    [OK] RELEASE6 returned SUCCESS.
passed
  Test: Quiet ...passed


Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      2      2    n/a      0        0
               tests      5      5      4      1        0
             asserts    271    271    270      1      n/a

Elapsed time =    0.072 seconds
Tests completed with return value: 0
"""


def test_recorded_output_gives_pass_skip_and_fail() -> None:
    results = parse_cunit(RECORDED)
    assert [(r.name, r.outcome) for r in results] == [
        ("SCSI.CompareAndWrite.Simple", "fail"),
        ("SCSI.CompareAndWrite.DpoFua", "skip"),
        ("SCSI.CompareAndWrite.InvalidDataOutSize", "skip"),
        ("SCSI.Reserve6.Simple", "pass"),
        ("SCSI.Reserve6.Quiet", "pass"),
    ]
    assert results[0].reason.startswith("COMPAREANDWRITE failed with wrong sense")
    assert results[2].reason == "Logical unit is fully provisioned. Skipping test"


def test_summary_mismatch_means_the_format_changed() -> None:
    broken = RECORDED.replace("  Test: Quiet ...passed\n", "")
    with pytest.raises(LabError, match="5 tests run but 4 were parsed"):
        parse_cunit(broken)


def test_test_without_verdict_counts_as_failure() -> None:
    results = parse_cunit("Suite: Read10\n  Test: Simple ...\n    Send READ10\n")
    assert results == [CaseResult("SCSI.Read10.Simple", "fail", "no verdict in the output "
                                  "(test crashed?)")]


def test_expectations_round_trip_and_comments() -> None:
    results = parse_cunit(RECORDED)
    text = format_expectations(results, header="recorded for the unit test")
    assert text.startswith("# recorded for the unit test\n")
    expected = parse_expectations(text)
    assert set(expected) == {
        "SCSI.CompareAndWrite.Simple",
        "SCSI.CompareAndWrite.DpoFua",
        "SCSI.CompareAndWrite.InvalidDataOutSize",
    }
    assert expected["SCSI.CompareAndWrite.DpoFua"].outcome == "skip"
    assert compare(results, expected).ok


def test_bad_expectation_lines_are_config_errors_with_line_numbers() -> None:
    with pytest.raises(ConfigError, match=r"exp\.txt:2: "):
        parse_expectations("# ok\nSCSI.X.Y  broken  why\n", "exp.txt")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_expectations("SCSI.X.Y skip a\nSCSI.X.Y fail b\n")


def test_regressions_improvements_and_stale_entries() -> None:
    results = [
        CaseResult("SCSI.A.ShouldPass", "fail", "boom"),
        CaseResult("SCSI.A.Unlisted", "skip", "not implemented"),
        CaseResult("SCSI.A.WasSkip", "fail", "worse"),
        CaseResult("SCSI.A.WasFail", "pass"),
        CaseResult("SCSI.A.WasFail2", "skip", "meh"),
        CaseResult("SCSI.A.Same", "skip", "as listed"),
    ]
    expected = parse_expectations(
        "SCSI.A.WasSkip skip x\nSCSI.A.WasFail fail y\nSCSI.A.WasFail2 fail z\n"
        "SCSI.A.Same skip as listed\nSCSI.A.Gone fail removed\n"
    )
    verdict = compare(results, expected)
    assert not verdict.ok
    assert [r.split(":")[0] for r in verdict.regressions] == [
        "SCSI.A.ShouldPass", "SCSI.A.Unlisted", "SCSI.A.WasSkip"
    ]
    assert [r.split(":")[0] for r in verdict.improvements] == [
        "SCSI.A.WasFail", "SCSI.A.WasFail2"
    ]
    assert verdict.stale == ["SCSI.A.Gone"]


# ---- the LIO side of a run, on the fake configfs -------------------------------------


def _fake_run(monkeypatch: pytest.MonkeyPatch, fake: FakeConfigfs, result: str | Exception,
              seen: list[str]) -> None:
    def run(url: str, family: str, log: Path | None) -> str:
        tpg = f"iscsi/{COMPLIANCE_IQN}/tpgt_1"
        seen.append(url)
        seen.append(fake.read(f"{tpg}/enable"))
        seen.extend(fake.listdir(f"{tpg}/np"))
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(compliance, "run_iscsi_test_cu", run)


def test_fileio_run_exports_in_demo_mode_and_removes_everything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeConfigfs(tmp_path / "cfs")
    seen: list[str] = []
    _fake_run(monkeypatch, fake, RECORDED, seen)
    image = tmp_path / "c0.img"
    results = compliance.run_compliance(
        compliance.fileio_backstore(1 << 20, image), cfs=fake
    )
    assert len(results) == 5
    assert seen == [f"iscsi://{compliance.PORTAL}/{COMPLIANCE_IQN}/0", "1", compliance.PORTAL]
    tpg = f"iscsi/{COMPLIANCE_IQN}/tpgt_1"
    assert fake.index_of("write", f"{tpg}/attrib/generate_node_acls", "1") < fake.index_of(
        "write", f"{tpg}/enable", "1"
    )
    # Torn down in reverse: the TPG (disabled first) before the backstore, then the file.
    assert fake.index_of("write", f"{tpg}/enable", "0") < fake.index_of("rmdir", "core/fileio_0/")
    assert not fake.exists("iscsi/" + COMPLIANCE_IQN) and fake.listdir("core") == ["alua"]
    assert not image.exists()


def test_a_failed_run_still_removes_everything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeConfigfs(tmp_path / "cfs")
    _fake_run(monkeypatch, fake, LabError("iscsi-test-cu exited 1 without a Run Summary"), [])
    with pytest.raises(LabError, match="without a Run Summary"):
        compliance.run_compliance(
            compliance.fileio_backstore(1 << 20, tmp_path / "c0.img"), cfs=fake
        )
    assert not fake.exists("iscsi/" + COMPLIANCE_IQN) and fake.listdir("core") == ["alua"]
