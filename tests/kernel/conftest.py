"""Kernel tests: they run INSIDE the lab guest, never on the host.

On the host, plain ``python3 -m pytest`` collects tests/kernel but deselects it (the
host has no target_core_user); tests/test_kernel_suite.py boots the guest once and
runs ``python3 -m pytest -m kernel tests/kernel -v`` there. Every item under
tests/kernel gets the ``kernel`` marker automatically.

Fixtures for everyone (see each docstring): ``configfs``, ``lio_stack``,
``fileio_backstore``, ``loop_export``, ``modprobe``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tcmu_scst.lab import lio

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


def pytest_report_header(config: pytest.Config) -> str:
    if IN_LAB:
        return f"tcmu-scst lab guest: kernel {os.uname().release}"
    return (
        "tests/kernel deselected on the host: they run in the lab VM "
        "(tests/test_kernel_suite.py, or: tcmu-scst lab --run "
        "'python3 -m pytest -m kernel tests/kernel -v')"
    )


@pytest.fixture
def configfs() -> Path:
    """/sys/kernel/config/target (the target core is loaded and configfs mounted)."""
    path = lio.TARGET
    assert path.is_dir(), f"{path} missing: is target_core_mod loaded and configfs mounted?"
    return path


@pytest.fixture
def lio_stack(configfs: Path) -> Iterator[lio.Teardown]:
    """One undo stack per test: every LIO object a fixture creates is removed at the
    end, in reverse creation order (LUN links before backstores, etc.)."""
    stack = lio.Teardown()
    yield stack
    stack.close()


FileioFactory = Callable[..., Path]


@pytest.fixture
def fileio_backstore(lio_stack: lio.Teardown, tmp_path: Path) -> FileioFactory:
    """Factory: ``fileio_backstore(size=64 MiB, name="fileio0", buffered=False)``
    -> configfs path of an enabled LIO fileio device on a sparse file in tmp_path."""
    counter = iter(range(1000))

    def make(size: int = 64 << 20, name: str | None = None, buffered: bool = False) -> Path:
        name = name or f"fileio{next(counter)}"
        return lio.create_fileio(
            name, tmp_path / f"{name}.img", size, lio_stack, buffered=buffered
        )

    return make


LoopFactory = Callable[..., lio.LoopLun]


@pytest.fixture
def loop_export(lio_stack: lio.Teardown) -> LoopFactory:
    """Factory: ``loop_export(backstore_path, lun=0, need_block=True)`` exports a core
    backstore through a new tcm_loop target+TPG+nexus and returns a LoopLun with
    ``.hctl``, ``.block`` (/dev/sdX) and ``.sg`` (/dev/sgN), waiting for the nodes."""

    def export(backstore: Path, lun: int = 0, need_block: bool = True) -> lio.LoopLun:
        return lio.export_loop(backstore, lun, lio_stack, need_block=need_block)

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
