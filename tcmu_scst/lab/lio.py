"""Just enough LIO configfs for the lab: fileio backstores, iSCSI demo mode, tcm_loop.

Runs inside the guest (as root, configfs mounted). Every object created is pushed on
a :class:`Teardown` so callers undo it in reverse order, even after a failure half
way. Deliberately small and independent of tcmu_scst.kernel.configfs: the lab and its
fixtures must work while the real configfs layer is still being written.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tcmu_scst.errors import ConfigfsError

TARGET = Path("/sys/kernel/config/target")


class Teardown:
    """A stack of undo actions, run last-in first-out by :meth:`close`."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, action: Callable[[], None]) -> None:
        self._undo.append((what, action))

    def close(self) -> None:
        """Undo everything; raise the first failure after trying all the rest."""
        failures: list[str] = []
        while self._undo:
            what, action = self._undo.pop()
            try:
                action()
            except OSError as err:
                failures.append(f"{what}: {err}")
        if failures:
            raise ConfigfsError("teardown left objects behind: " + "; ".join(failures))

    def __enter__(self) -> Teardown:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_attr(path: Path, value: str | int) -> None:
    """Write one configfs attribute; ConfigfsError names the file and the errno."""
    try:
        with open(path, "w") as handle:
            handle.write(str(value))
    except OSError as err:
        raise ConfigfsError(
            f"cannot write {value!r} to {path}: {err.strerror}", str(path), err.errno or 0
        ) from err


def read_attr(path: Path) -> str:
    return path.read_text().strip()


def make_dir(path: Path, stack: Teardown) -> Path:
    try:
        path.mkdir()
    except OSError as err:
        raise ConfigfsError(
            f"cannot create {path}: {err.strerror}", str(path), err.errno or 0
        ) from err
    stack.push(f"rmdir {path}", path.rmdir)
    return path


def make_link(target: Path, link: Path, stack: Teardown) -> None:
    try:
        link.symlink_to(target)
    except OSError as err:
        raise ConfigfsError(
            f"cannot link {link} -> {target}: {err.strerror}", str(link), err.errno or 0
        ) from err
    stack.push(f"unlink {link}", link.unlink)


def fabric_dir(fabric: str) -> Path:
    """``target/<fabric>``, created on first use (the kernel then loads the module)."""
    path = TARGET / fabric
    if not path.is_dir():
        try:
            path.mkdir()
        except FileExistsError:
            pass
        except OSError as err:
            raise ConfigfsError(
                f"cannot register fabric {fabric}: {err.strerror}; is its module loaded?",
                str(path),
                err.errno or 0,
            ) from err
    return path


def free_hba_index(core: Path = TARGET / "core") -> int:
    """Lowest N not used by any ``<plugin>_N`` HBA (rtslib's convention)."""
    used = set()
    for entry in core.iterdir() if core.is_dir() else ():
        _, sep, index = entry.name.rpartition("_")
        if sep and index.isdigit():
            used.add(int(index))
    return next(n for n in range(len(used) + 1) if n not in used)


def create_fileio(
    name: str, backing: Path, size: int, stack: Teardown, *, buffered: bool = False
) -> Path:
    """A LIO fileio backstore on ``backing`` (created sparse if missing); its path."""
    if not backing.exists():
        with open(backing, "wb") as handle:
            handle.truncate(size)
    hba = make_dir(TARGET / "core" / f"fileio_{free_hba_index()}", stack)
    dev = make_dir(hba / name, stack)
    control = f"fd_dev_name={backing},fd_dev_size={size}"
    if buffered:
        control += ",fd_buffered_io=1"
    write_attr(dev / "control", control)
    write_attr(dev / "enable", 1)
    return dev


def export_iscsi_demo(
    iqn: str, backstores: Sequence[Path], stack: Teardown, *, portal: str = "0.0.0.0:3260"
) -> Path:
    """Export backstores as LUN 0.. of ``iqn``/tpgt_1 in demo mode, no auth; TPG path."""
    wwn = make_dir(fabric_dir("iscsi") / iqn, stack)
    tpg = make_dir(wwn / "tpgt_1", stack)
    for attr, value in (
        ("authentication", 0),
        ("generate_node_acls", 1),
        ("demo_mode_write_protect", 0),
        ("cache_dynamic_acls", 1),
    ):
        write_attr(tpg / "attrib" / attr, value)
    make_dir(tpg / "np" / portal, stack)
    for lun, backstore in enumerate(backstores):
        lun_dir = make_dir(tpg / "lun" / f"lun_{lun}", stack)
        make_link(backstore, lun_dir / f"lab{lun}", stack)
    write_attr(tpg / "enable", 1)
    # Disabling first drops the sessions so the LUNs can be unlinked.
    stack.push(f"disable {tpg}", lambda: write_attr(tpg / "enable", 0))
    return tpg


@dataclass(frozen=True)
class LoopLun:
    """A backstore seen through tcm_loop as a local SCSI device."""

    hctl: str  # host:channel:target:lun
    block: str | None  # /dev/sdX (None for non-disk types without a block node)
    sg: str | None  # /dev/sgN


def _naa() -> str:
    # 0x5001405 is the IEEE OUI prefix LIO itself uses for generated NAA names.
    return "naa.5001405" + secrets.token_hex(5)[:9]


def export_loop(
    backstore: Path, lun: int, stack: Teardown, *, timeout: float = 15.0, need_block: bool = True
) -> LoopLun:
    """Export ``backstore`` as LUN ``lun`` of a new tcm_loop target; wait for its nodes.

    ``need_block=False`` for device types without a block node (tape, changer...).
    """
    wwn = make_dir(fabric_dir("loopback") / _naa(), stack)
    tpg = make_dir(wwn / "tpgt_1", stack)
    # The nexus must exist before LUNs are linked; it is dropped after they are gone.
    write_attr(tpg / "nexus", _naa())
    stack.push(f"drop nexus of {tpg}", lambda: write_attr(tpg / "nexus", "NULL"))
    lun_dir = make_dir(tpg / "lun" / f"lun_{lun}", stack)
    make_link(backstore, lun_dir / "lab", stack)
    host, channel, target = read_attr(tpg / "address").split(":")
    hctl = f"{host}:{channel}:{target}:{lun}"
    return wait_for_scsi_device(hctl, timeout=timeout, need_block=need_block)


def _children(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def scsi_device_nodes(hctl: str, sysfs: Path = Path("/sys/class/scsi_device")) -> LoopLun:
    """The /dev nodes of a SCSI device, found through sysfs (no udev in the guest)."""
    device = sysfs / hctl / "device"
    blocks = _children(device / "block")
    sgs = _children(device / "scsi_generic")
    return LoopLun(
        hctl=hctl,
        block=f"/dev/{blocks[0]}" if blocks else None,
        sg=f"/dev/{sgs[0]}" if sgs else None,
    )


def wait_for_scsi_device(hctl: str, *, timeout: float = 15.0, need_block: bool = True) -> LoopLun:
    """Poll sysfs until the device at ``hctl`` has its sg (and block) node in /dev."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = scsi_device_nodes(hctl)
        ready = nodes.sg is not None and (nodes.block is not None or not need_block)
        if ready and all(os.path.exists(n) for n in (nodes.block, nodes.sg) if n):
            return nodes
        if time.monotonic() > deadline:
            raise ConfigfsError(
                f"SCSI device {hctl} did not appear within {timeout:g} s "
                f"(found {nodes}); check dmesg",
                str(hctl),
                errno.ETIMEDOUT,
            )
        time.sleep(0.1)
