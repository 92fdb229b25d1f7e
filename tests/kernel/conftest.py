"""Kernel tests: they run INSIDE the lab guest, never on the host.

On the host, plain ``python3 -m pytest`` collects tests/kernel but deselects it (the
host has no target_core_user); tests/test_kernel_suite.py boots the guest once and
runs ``python3 -m pytest -m kernel tests/kernel -v`` there. Every item under
tests/kernel gets the ``kernel`` marker automatically.

Fixtures for everyone (see each docstring): ``configfs``, ``lio_stack``,
``fileio_backstore``, ``loop_export``, ``modprobe``.
"""

from __future__ import annotations

import faulthandler
import os
import subprocess
import termios
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.lio import CoreBackstore, FileioBackstore
from tcmu_scst.kernel.scsi_nodes import ScsiNodes
from tests.kernel.daemon_rig import DaemonProcess
from tests.kernel.tcmu_rig import export_loop

KERNEL_DIR = Path(__file__).resolve().parent
IN_LAB = os.environ.get("TCMU_SCST_IN_LAB") == "1"


def _is_kernel_item(item: pytest.Item) -> bool:
    return KERNEL_DIR in Path(str(item.path)).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests/kernel items ``kernel``; on the host, deselect them."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if _is_kernel_item(item):
            item.add_marker(pytest.mark.kernel)
            (kept if IN_LAB else dropped).append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# pytest-timeout (--timeout=900, signal method) cannot end a test whose main thread
# sleeps uninterruptibly in the kernel (seen in CI: a configfs open behind a backstore
# rmdir that waited for a netlink answer nobody would send), and the whole boot then
# waits for the host's bound. This watchdog runs on its own thread, a minute after
# pytest-timeout would have acted: it prints every Python thread's stack and the
# kernel's blocked tasks, then powers the guest off so the host reports the failure
# with that evidence at once.
WATCHDOG_SECONDS = float(os.environ.get("TCMU_SCST_TEST_WATCHDOG", "960"))


def _watchdog_fires(nodeid: str) -> None:
    # pytest captures fds 1 and 2 during the test, and the capture is lost with the
    # power-off: write to the guest's console (the host's terminal) directly.
    with open("/dev/console", "w") as console:
        print(f"\nWATCHDOG: {nodeid} still running after {WATCHDOG_SECONDS:g} s; "
              "stacks, blocked tasks, then power-off", file=console, flush=True)  # fmt: skip
        faulthandler.dump_traceback(file=console, all_threads=True)
        sysrq = Path("/proc/sysrq-trigger")
        sysrq.write_text("w")  # blocked (D state) tasks' kernel stacks into the kernel log
        dmesg = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
        print("\n".join(dmesg.stdout.splitlines()[-200:]), file=console, flush=True)
        termios.tcdrain(console.fileno())  # out of the serial line before power-off
    os.sync()
    sysrq.write_text("o")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    if not (IN_LAB and _is_kernel_item(item)):
        yield
        return
    timer = threading.Timer(WATCHDOG_SECONDS, _watchdog_fires, (item.nodeid,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def pytest_report_header(config: pytest.Config) -> str:
    if IN_LAB:
        return f"tcmu-scst lab guest: kernel {os.uname().release}"
    return (
        "tests/kernel deselected on the host: they run in the lab VM "
        "(tests/test_kernel_suite.py, or: tcmu-scst lab --run "
        "'python3 -m pytest -m kernel tests/kernel -v')"
    )


@pytest.fixture
def configfs() -> Configfs:
    """The real LIO tree (the target core is loaded and configfs mounted)."""
    cfs = Configfs()
    assert cfs.available(), f"{cfs.target} missing: is target_core_mod loaded and configfs mounted?"
    return cfs


@pytest.fixture
def lio_stack(configfs: Configfs) -> Iterator[ExitStack]:
    """One undo stack per test: register each LIO object's removal with
    ``lio_stack.callback(obj.delete)`` right after creating it; at the end they run in
    reverse creation order (LUN exports before backstores, etc.), all of them even when
    one fails. A test may close it early (``lio_stack.close()``) to tear down before
    its own checks."""
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def fileio_backstore(
    configfs: Configfs, lio_stack: ExitStack, tmp_path: Path
) -> Callable[..., FileioBackstore]:
    """Factory: ``fileio_backstore(size=64 MiB, name="fileio0", buffered=False)``
    -> an enabled LIO fileio device on a sparse file in tmp_path, deleted at the end."""
    counter = iter(range(1000))

    def make(size: int = 64 << 20, name: str | None = None, buffered: bool = False) -> (
        FileioBackstore
    ):
        name = name or f"fileio{next(counter)}"
        image = tmp_path / f"{name}.img"
        dev = FileioBackstore.create(configfs, name, image, size, buffered=buffered)
        lio_stack.callback(dev.delete)
        return dev

    return make


@pytest.fixture
def loop_export(lio_stack: ExitStack) -> Callable[..., ScsiNodes]:
    """Factory: ``loop_export(backstore, lun=0, need_block=True)`` exports a core
    backstore through a new tcm_loop target (see :func:`tcmu_rig.export_loop`) and
    returns its ScsiNodes: ``.hctl``, ``.block`` (/dev/sdX), ``.sg`` (/dev/sgN)."""

    def export(backstore: CoreBackstore, lun: int = 0, need_block: bool = True) -> ScsiNodes:
        return export_loop(lio_stack, backstore, lun, need_block=need_block)

    return export


@pytest.fixture
def modprobe() -> Iterator[Callable[..., None]]:
    """``modprobe("scsi_debug", "dev_size_mb=16", ...)``; unloaded again at teardown."""
    loaded: list[str] = []

    def load(module: str, *params: str) -> None:
        subprocess.run(["modprobe", module, *params], check=True)
        loaded.append(module)

    yield load
    for module in reversed(loaded):
        subprocess.run(["modprobe", "-r", module], check=False)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """``tcmu-scst daemon`` as a process (not yet started: ``daemon.start()``);
    stopped at teardown (SIGCONT, SIGTERM, exit status 0 expected)."""
    d = DaemonProcess(tmp_path)
    yield d
    d.stop()
