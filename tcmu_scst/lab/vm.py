"""QEMU for the lab guest: command line, output streaming, exit status, no strays.

The guest boots Debian's kernel under TCG with the host's root file system shared
read-only over virtio-9p. QEMU runs in its own session with stdin/stdout on pipes,
so the user's terminal stays cooked and Ctrl-C reaches us, not the guest: we then
stop QEMU ourselves (gracefully first if the caller gave us a way to).
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from tcmu_scst.errors import LabError
from tcmu_scst.lab.console import ConsoleFilter
from tcmu_scst.lab.tools import find_tool

DEFAULT_MEMORY_MB = 3072
DEFAULT_CPUS = 2
_PR_SET_PDEATHSIG = 1
_POWEROFF_GRACE = 15.0  # seconds between the exit status and QEMU's own exit
_FORWARD_RE = re.compile(r"^(?:(?P<addr>[0-9.]+):)?(?P<host>\d{1,5}):(?P<guest>\d{1,5})$")


@dataclass(frozen=True)
class PortForward:
    """A host TCP port forwarded to a guest port (QEMU user networking hostfwd)."""

    host_port: int
    guest_port: int
    host_addr: str = "127.0.0.1"

    @classmethod
    def parse(cls, text: str) -> PortForward:
        """``HOSTPORT:GUESTPORT`` or ``ADDR:HOSTPORT:GUESTPORT``."""
        match = _FORWARD_RE.match(text.strip())
        if match is None:
            raise LabError(
                f"bad port forward {text!r}: expected HOSTPORT:GUESTPORT, e.g. 3260:3260"
            )
        host, guest = int(match["host"]), int(match["guest"])
        if not (0 < host < 65536 and 0 < guest < 65536):
            raise LabError(f"bad port forward {text!r}: ports must be 1..65535")
        return cls(host, guest, match["addr"] or "127.0.0.1")

    def hostfwd(self) -> str:
        return f"hostfwd=tcp:{self.host_addr}:{self.host_port}-:{self.guest_port}"


@dataclass(frozen=True)
class VmConfig:
    kernel: Path
    initrd: Path
    job: str  # path of the job script, as seen in the host root (= in the guest)
    results_dir: Path | None = None
    memory_mb: int = DEFAULT_MEMORY_MB
    cpus: int = DEFAULT_CPUS
    forwards: tuple[PortForward, ...] = ()
    verbose: bool = False
    extra_append: tuple[str, ...] = field(default_factory=tuple)


def _opt_path(path: Path | str) -> str:
    """A path as a QEMU option value (commas are doubled)."""
    return str(path).replace(",", ",,")


def kernel_cmdline(cfg: VmConfig) -> str:
    for value in (cfg.job,):
        if any(c.isspace() for c in value):
            raise LabError(f"job path {value!r} contains whitespace; set TMPDIR to a plain path")
    args = [
        "console=ttyS0,115200",
        "panic=-1",  # a dying /init reboots, and -no-reboot turns that into an exit
        "rdinit=/init",
        "loglevel=4" if cfg.verbose else "loglevel=1",
        # TCG: no tsc calibration surprises, no time wasted on mitigations
        "tsc=reliable", "mitigations=off", "nokaslr",
        f"tcmu_scst_lab.job={cfg.job}",
        f"tcmu_scst_lab.results={1 if cfg.results_dir else 0}",
        *cfg.extra_append,
    ]
    return " ".join(args)


def qemu_argv(cfg: VmConfig, qemu: str = "qemu-system-x86_64") -> list[str]:
    """The complete QEMU command line for ``cfg``."""
    netdev = ",".join(["user", "id=net0", *(f.hostfwd() for f in cfg.forwards)])
    argv = [
        qemu,
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-machine", "pc", "-accel", "tcg,thread=multi", "-cpu", "max",
        "-smp", str(cfg.cpus), "-m", str(cfg.memory_mb),
        "-serial", "stdio", "-monitor", "none",
        "-kernel", _opt_path(cfg.kernel), "-initrd", _opt_path(cfg.initrd),
        "-append", kernel_cmdline(cfg),
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
    ]
    if cfg.results_dir is not None:
        argv += [
            "-fsdev",
            f"local,id=results,path={_opt_path(cfg.results_dir)},security_model=none,"
            "multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=results,mount_tag=results",
        ]
    argv += [
        "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
    ]
    return argv


def _die_with_parent() -> None:
    """In the QEMU child before exec: get SIGKILLed if we die, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise LabError("terminated by SIGTERM; the guest was stopped")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Make sure QEMU is gone: SIGTERM (QEMU exits cleanly on it), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    cfg: VmConfig,
    *,
    timeout: float | None = None,
    out: TextIO | None = None,
    graceful_stop: bytes | None = None,
    stop_grace: float = 30.0,
) -> int:
    """Boot the guest, stream the command's output to ``out``, return its exit status.

    ``graceful_stop``: bytes written to the guest console on the first Ctrl-C (the
    guest command is expected to wind down and exit); a second Ctrl-C, or
    ``stop_grace`` seconds without exit, kills QEMU.
    """
    out = out or sys.stdout
    argv = qemu_argv(cfg, find_tool("qemu-system-x86_64"))
    if cfg.verbose:
        print(f"tcmu-scst lab: {render_argv(argv)}", file=sys.stderr, flush=True)
    console = ConsoleFilter(verbose=cfg.verbose)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # terminal signals are ours to handle
            preexec_fn=_die_with_parent,
        )
    except OSError as err:
        raise LabError(f"cannot start QEMU: {err}; install qemu-system-x86") from err
    assert proc.stdout is not None and proc.stdin is not None
    deadline = time.monotonic() + timeout if timeout else None
    stopping = False  # Ctrl-C seen, or the command is done: QEMU may be killed at deadline
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:
        # A CI cancel (SIGTERM) must not leave QEMU running: turn it into an exception.
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        fd = proc.stdout.fileno()
        while True:
            try:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if wait == 0.0 and stopping:
                    break  # the guest did not power off in time: kill it below
                if wait == 0.0:
                    raise LabError(
                        f"the guest did not finish within {timeout:g} s; QEMU was killed "
                        "(raise --timeout if the command needs longer)"
                    )
                ready, _, _ = select.select([fd], [], [], wait)
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                text = console.feed(chunk)
                if text:
                    out.write(text)
                    out.flush()
                if console.exit_status is not None and not stopping:
                    # The status is known; give the guest a moment to power off.
                    stopping = True
                    deadline = time.monotonic() + _POWEROFF_GRACE
            except KeyboardInterrupt:
                if graceful_stop is None or stopping:
                    raise
                stopping = True
                print("\ntcmu-scst lab: stopping the guest (Ctrl-C again to kill it)",
                      file=sys.stderr, flush=True)
                try:
                    proc.stdin.write(graceful_stop)
                    proc.stdin.flush()
                except OSError:
                    pass
                grace_end = time.monotonic() + stop_grace
                deadline = grace_end if deadline is None else min(deadline, grace_end)
        out.write(console.flush())
        out.flush()
        try:
            qemu_status = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            qemu_status = -1
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
        _stop(proc)
        proc.stdin.close()
        proc.stdout.close()
    if console.exit_status is None:
        if console.started:  # the command's output was streamed: it ends above
            raise LabError(
                f"the guest stopped while the command ran, without reporting its exit "
                f"status (QEMU exit {qemu_status}); the command's last output is above"
            )
        tail = "\n".join(list(console.boot_log)[-30:])
        raise LabError(
            f"the guest stopped without reporting the command's exit status (QEMU exit "
            f"{qemu_status}); last console lines:\n{tail}"
        )
    return console.exit_status


def render_argv(argv: Sequence[str]) -> str:
    """A shell-pasteable rendering of a QEMU command line (for --verbose)."""
    return " ".join(shlex.quote(a) for a in argv)
