"""Host side of ``tcmu-scst lab`` without --run: boot, run the demo, stop on Ctrl-C."""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from pathlib import Path

from tcmu_scst.errors import LabError
from tcmu_scst.lab import runner, vm

ISCSI_PORT = 3260


def check_port_free(port: int, addr: str = "127.0.0.1") -> None:
    """LabError now rather than an obscure QEMU hostfwd failure later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((addr, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise LabError(
                    f"{addr}:{port} is already in use on the host (another lab or an iSCSI "
                    "target?); stop it or pick another port with --port"
                ) from err
            raise LabError(f"cannot use {addr}:{port} on the host: {err.strerror}") from err


def run_demo(
    *,
    host_port: int = ISCSI_PORT,
    memory_mb: int = vm.DEFAULT_MEMORY_MB,
    extra_forwards: Sequence[vm.PortForward] = (),
    results_dir: Path | None = None,
    timeout: float | None = None,
    verbose: bool = False,
) -> int:
    check_port_free(host_port)
    forwards = [vm.PortForward(host_port, ISCSI_PORT), *extra_forwards]
    print(f"tcmu-scst lab: booting the demo target (host port {host_port}), ~10 s ...",
          flush=True)
    return runner.run_command(
        f"exec python3 -m tcmu_scst.lab.demo --host-port {host_port}",
        timeout=timeout,
        memory_mb=memory_mb,
        forwards=forwards,
        results_dir=results_dir,
        verbose=verbose,
        graceful_stop=b"\n",
    )
