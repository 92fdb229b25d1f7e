"""SCSI compliance run with libiscsi's iscsi-test-cu, INSIDE the lab guest.

A backstore (any LIO core device: fileio today, our TCMU vdisk later) is exported over
iSCSI on 127.0.0.1:3260 in demo mode, ``iscsi-test-cu --dataloss -V --test SCSI`` runs
against it, each test's outcome is parsed (pass / skip / fail) and compared with a
checked-in expectations file listing every test that is *not* expected to pass::

    # name                         outcome  reason
    SCSI.CompareAndWrite.Simple    fail     wrong sense on over-long COMPARE AND WRITE

A regression is a test that should pass and does not, an unlisted non-pass, or a
listed skip that now fails. Tests that do better than listed are reported (tighten
the file) but do not fail the run.

In the guest::

    python3 -m tcmu_scst.lab.compliance --fileio --expect tests/kernel/compliance-fileio.txt
    python3 -m tcmu_scst.lab.compliance --vdisk --expect tests/kernel/compliance-vdisk.txt
    python3 -m tcmu_scst.lab.compliance --vdisk --vdisk-flag thin_provisioned \\
        --vdisk-flag removable --expect tests/kernel/compliance-vdisk-thin-removable.txt
    python3 -m tcmu_scst.lab.compliance --backstore /sys/kernel/config/target/core/user_0/d \\
        --expect tests/kernel/compliance-vdisk.txt --record /results/vdisk.txt
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tcmu_scst.errors import ConfigError, LabError, TcmuScstError
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import IscsiTpg
from tcmu_scst.kernel.lio import CoreBackstore, FileioBackstore

Outcome = Literal["pass", "skip", "fail"]
COMPLIANCE_IQN = "iqn.2003-01.org.tcmu-scst:compliance"
PORTAL_IP, PORTAL_PORT = "127.0.0.1", 3260
PORTAL = f"{PORTAL_IP}:{PORTAL_PORT}"
DEFAULT_FAMILY = "SCSI"

_SUITE_RE = re.compile(r"^Suite: (\S+)")
_TEST_RE = re.compile(r"^  Test: (\S+) \.\.\.(.*)$")
_RESULT_RE = re.compile(r"^(passed|FAILED)\b")
_RAN_RE = re.compile(r"^\s+tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)")
_SKIP_TAG = "[SKIPPED]"
_FAIL_TAG = "[FAILED]"


@dataclass(frozen=True)
class CaseResult:
    name: str  # FAMILY.Suite.Test
    outcome: Outcome
    reason: str = ""


@dataclass
class _Open:
    name: str
    lines: list[str] = field(default_factory=list)
    verdict: str | None = None


def _reason(lines: Sequence[str], tag: str) -> str:
    for line in lines:
        at = line.find(tag)
        if at >= 0:
            return line[at + len(tag) :].strip()
    return ""


def _close(test: _Open) -> CaseResult:
    if test.verdict == "FAILED":
        reason = _reason(test.lines, _FAIL_TAG) or next(
            (ln.strip() for ln in test.lines if re.match(r"^\s+\d+\. ", ln)), ""
        )
        return CaseResult(test.name, "fail", reason)
    if test.verdict == "passed":
        if any(_SKIP_TAG in ln for ln in test.lines):
            return CaseResult(test.name, "skip", _reason(test.lines, _SKIP_TAG))
        return CaseResult(test.name, "pass")
    return CaseResult(test.name, "fail", "no verdict in the output (test crashed?)")


def parse_cunit(text: str, family: str = DEFAULT_FAMILY) -> list[CaseResult]:
    """Outcomes of every test in iscsi-test-cu's verbose CUnit output, in order.

    A test that printed ``[SKIPPED]`` counts as a skip even though CUnit says passed.
    Raises LabError when the Run Summary disagrees with what was parsed.
    """
    results: list[CaseResult] = []
    suite = ""
    current: _Open | None = None
    ran: int | None = None
    for line in text.splitlines():
        suite_match = _SUITE_RE.match(line)
        test_match = _TEST_RE.match(line)
        boundary = suite_match or test_match or line.startswith("Run Summary:")
        if boundary and current is not None:
            results.append(_close(current))
            current = None
        if suite_match:
            suite = suite_match.group(1)
        elif test_match:
            current = _Open(f"{family}.{suite}.{test_match.group(1)}")
            rest = test_match.group(2)
            verdict = _RESULT_RE.match(rest)
            if verdict:
                current.verdict = verdict.group(1)
            else:
                current.lines.append(rest)
        elif current is not None:
            verdict = _RESULT_RE.match(line)
            if verdict and current.verdict is None:
                current.verdict = verdict.group(1)
            else:
                current.lines.append(line)
        else:
            ran_match = _RAN_RE.match(line)
            if ran_match:
                ran = int(ran_match.group(2))
    if current is not None:
        results.append(_close(current))
    if ran is not None and ran != len(results):
        raise LabError(
            f"iscsi-test-cu reports {ran} tests run but {len(results)} were parsed; "
            "its output format changed: update tcmu_scst.lab.compliance.parse_cunit"
        )
    return results


def parse_expectations(text: str, source: str = "expectations") -> dict[str, CaseResult]:
    """``NAME  skip|fail  reason`` lines; lines starting with ``#`` are comments."""
    expected: dict[str, CaseResult] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2 or parts[1] not in ("skip", "fail"):
            raise ConfigError("expected 'TEST_NAME  skip|fail  reason'", source, lineno)
        if parts[0] in expected:
            raise ConfigError(f"{parts[0]} is listed twice", source, lineno)
        outcome: Outcome = "skip" if parts[1] == "skip" else "fail"
        expected[parts[0]] = CaseResult(parts[0], outcome, parts[2] if len(parts) > 2 else "")
    return expected


def format_expectations(results: Iterable[CaseResult], header: str = "") -> str:
    """An expectations file listing every non-passing result."""
    rows = [r for r in results if r.outcome != "pass"]
    width = max((len(r.name) for r in rows), default=0)
    lines = [f"# {h}" if h else "#" for h in header.splitlines()] if header else []
    lines += [f"{r.name:<{width}}  {r.outcome:<4}  {r.reason}".rstrip() for r in rows]
    return "\n".join(lines) + "\n"


@dataclass
class Comparison:
    regressions: list[str] = field(default_factory=list)
    improvements: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # listed but not run

    @property
    def ok(self) -> bool:
        return not self.regressions


def compare(results: Sequence[CaseResult], expected: Mapping[str, CaseResult]) -> Comparison:
    cmp = Comparison()
    seen = set()
    for r in results:
        seen.add(r.name)
        want = expected.get(r.name)
        want_outcome = want.outcome if want else "pass"
        if r.outcome == want_outcome:
            continue
        line = f"{r.name}: expected {want_outcome}, got {r.outcome}"
        if r.reason:
            line += f" ({r.reason})"
        worse = r.outcome == "fail" or (r.outcome == "skip" and want_outcome == "pass")
        (cmp.regressions if worse else cmp.improvements).append(line)
    cmp.stale = sorted(set(expected) - seen)
    return cmp


def run_iscsi_test_cu(
    url: str, family: str = DEFAULT_FAMILY, log: Path | None = None
) -> str:
    """Run the family against ``url``; return the output (also written to ``log``)."""
    argv = ["iscsi-test-cu", "--dataloss", "--Verbose-scsi", "--test", family, url]
    if log is not None:
        # Streamed, not written at the end: a run that stalls still shows where.
        try:
            with open(log, "w") as sink:
                returncode = subprocess.run(
                    argv, stdout=sink, stderr=subprocess.STDOUT, check=False
                ).returncode
        except FileNotFoundError as err:
            raise LabError(
                "iscsi-test-cu not found; install it: apt-get install libiscsi-bin"
            ) from err
        output = log.read_text(errors="replace")
    else:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                                  check=False)
            returncode = proc.returncode
        except FileNotFoundError as err:
            raise LabError(
                "iscsi-test-cu not found; install it: apt-get install libiscsi-bin"
            ) from err
        output = proc.stdout + proc.stderr
    if "Run Summary:" not in output:
        raise LabError(
            f"iscsi-test-cu exited {returncode} without a Run Summary: "
            + " ".join(output.strip().splitlines()[-3:])
        )
    return output


# Makes the backstore to test in the given tree (or names an existing one by its path
# under target/) and registers its removal on the stack.
BackstoreFactory = Callable[[ExitStack, Configfs], CoreBackstore | str]


def fileio_backstore(size: int = 256 << 20, backing: Path = Path("/run/compliance0.img")) -> (
    BackstoreFactory
):
    """Factory for LIO's in-kernel fileio on a sparse file (the reference run)."""

    def create(stack: ExitStack, cfs: Configfs) -> CoreBackstore:
        if backing.exists():
            backing.unlink()
        stack.callback(backing.unlink, missing_ok=True)
        dev = FileioBackstore.create(cfs, "compliance0", backing, size)
        stack.callback(dev.delete)
        return dev

    return create


def vdisk_backstore(
    size: int = 256 << 20,
    backing: Path = Path("/run/compliance-vdisk.img"),
    *,
    block_size: int = 512,
    threads: int = 2,
    flags: Iterable[str] = (),
    filename: str = "",
    **params: bool,
) -> BackstoreFactory:
    """Factory for OUR vdisk: a TCMU user backstore whose vdisk dev_config names a
    sparse file, served by a DeviceRunner thread of this process (no daemon: the
    backstore is created with nl_reply_supported=-1). ``params`` are VdiskParams flags
    (write_through=True, thin_provisioned=True, ...); ``flags`` names more to set.
    ``filename`` instead of ``backing``: a store that exists already (an ``rbd:`` image
    of ``size`` bytes)."""
    params = {**dict.fromkeys(flags, True), **params}

    def create(stack: ExitStack, cfs: Configfs) -> CoreBackstore:
        # Imported here: the fileio path must not need the service/handler layers.
        from tcmu_scst.handlers import vdisk_params
        from tcmu_scst.kernel import uio
        from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions
        from tcmu_scst.service import registry
        from tcmu_scst.service.device import serve_in_thread

        if not filename:
            if backing.exists():
                backing.unlink()
            with open(backing, "wb") as handle:
                handle.truncate(size)
            stack.callback(backing.unlink, missing_ok=True)
        vdisk = vdisk_params.VdiskParams(
            name="compliance1", filename=filename or str(backing), blocksize=block_size
        )
        for flag, value in params.items():
            if not isinstance(getattr(vdisk, flag, None), bool):
                raise LabError(f"vdisk has no flag {flag!r}")
            setattr(vdisk, flag, value)
        dev_config = vdisk_params.to_dev_config(vdisk)
        # cmd_time_out: a command the handler never completes fails after 30 s instead
        # of hanging iscsi-test-cu (which has no timeout of its own).
        options = UserBackstoreOptions(dev_config=dev_config, dev_size=size,
                                       hw_block_size=block_size, nl_reply_supported=-1,
                                       cmd_time_out=30)
        backstore = UserBackstore.create(cfs, "compliance1", options)
        stack.callback(backstore.delete)
        backstore.set_attrib("tmr_notification", 1)  # resets clear PREVENT (as the daemon)
        handler = registry.open_handler(dev_config)
        port = uio.UioDevice(uio.find_device(backstore.hba_index, backstore.name))
        _runner, stop = serve_in_thread(port, handler, threads, "compliance1")
        stack.callback(stop)
        return backstore

    return create


def export_iscsi_demo(
    stack: ExitStack, cfs: Configfs, backstore: CoreBackstore | str
) -> IscsiTpg:
    """``backstore`` as LUN 0 of COMPLIANCE_IQN on PORTAL, open to every initiator."""
    tpg = IscsiTpg.create(cfs, COMPLIANCE_IQN)
    # Disables first (dropping the sessions), then LUNs, portal, TPG and target.
    stack.callback(tpg.delete)
    tpg.set_demo_mode()
    tpg.add_portal(PORTAL_IP, PORTAL_PORT)
    tpg.add_lun(0, backstore)
    tpg.enable()
    return tpg


def run_compliance(
    create_backstore: BackstoreFactory,
    *,
    family: str = DEFAULT_FAMILY,
    log: Path | None = None,
    cfs: Configfs | None = None,
) -> list[CaseResult]:
    """Create the backstore, export it on 127.0.0.1:3260 (demo mode), run, tear down
    (everything, last made first, whether the run succeeded or not)."""
    cfs = cfs or Configfs()
    with ExitStack() as stack:
        backstore = create_backstore(stack, cfs)
        export_iscsi_demo(stack, cfs, backstore)
        output = run_iscsi_test_cu(f"iscsi://{PORTAL}/{COMPLIANCE_IQN}/0", family, log)
    return parse_cunit(output, family)


def report(results: Sequence[CaseResult], cmp: Comparison) -> str:
    counts = {o: sum(1 for r in results if r.outcome == o) for o in ("pass", "skip", "fail")}
    lines = [
        f"compliance: {len(results)} tests: {counts['pass']} pass, {counts['skip']} skip, "
        f"{counts['fail']} fail"
    ]
    lines += [f"REGRESSION {x}" for x in cmp.regressions]
    lines += [f"better than expected (tighten the file unless racy): {x}" for x in cmp.improvements]
    lines += [f"listed but not run: {x}" for x in cmp.stale]
    return "\n".join(lines)


def _vdisk_flags() -> set[str]:
    import dataclasses

    from tcmu_scst.handlers.vdisk_params import VdiskParams

    return {f.name for f in dataclasses.fields(VdiskParams) if f.type in ("bool", bool)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="libiscsi compliance run (inside the lab)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--fileio", action="store_true", help="LIO fileio on a sparse file")
    what.add_argument("--vdisk", action="store_true",
                      help="our vdisk (TCMU user backstore) on a sparse file")
    what.add_argument("--backstore", type=Path, help="configfs path of an enabled core device")
    parser.add_argument("--vdisk-flag", action="append", default=[], metavar="FLAG",
                        help="with --vdisk: a vdisk flag to set (thin_provisioned, removable, "
                        "write_through, ...); repeatable")
    parser.add_argument("--expect", type=Path, required=True, help="expectations file")
    parser.add_argument("--family", default=DEFAULT_FAMILY)
    parser.add_argument("--log", type=Path, help="write iscsi-test-cu's full output here")
    parser.add_argument("--record", type=Path, help="write the observed expectations here")
    args = parser.parse_args(argv)
    if args.vdisk_flag:
        known = _vdisk_flags()
        unknown = sorted(set(args.vdisk_flag) - known)
        if not args.vdisk or unknown:
            parser.error(f"--vdisk-flag goes with --vdisk and takes one of {sorted(known)}")
    try:
        expected = parse_expectations(args.expect.read_text(), str(args.expect))
        factory: BackstoreFactory
        if args.fileio:
            factory = fileio_backstore()
        elif args.vdisk:
            factory = vdisk_backstore(flags=args.vdisk_flag)
        else:
            backstore = Configfs().relative(args.backstore.resolve())
            factory = lambda stack, cfs: backstore  # noqa: E731

        results = run_compliance(factory, family=args.family, log=args.log)
    except (TcmuScstError, OSError) as err:
        print(f"compliance: error: {err}", file=sys.stderr)
        return 2
    if args.record:
        args.record.write_text(format_expectations(results))
    cmp = compare(results, expected)
    print(report(results, cmp))
    return 0 if cmp.ok else 1


if __name__ == "__main__":
    sys.exit(main())
