"""The target core's metadata directories: ``<dbroot>/pr`` and ``<dbroot>/alua``.

Linux 6.1's target core keeps APTPL reservations in ``<dbroot>/pr/aptpl_<serial>`` and
ALUA state under ``<dbroot>/alua``; ``dbroot`` is ``target/dbroot`` in configfs
(``/var/target`` by default, ``/etc/target`` if that directory existed when
target_core_mod loaded). The kernel never creates these directories. Every
PERSISTENT RESERVE OUT that changes a registration rewrites the APTPL file (with
APTPL=0 it writes "No Registrations or Reservations"), and when that open fails the
command fails with NOT READY / LOGICAL UNIT COMMUNICATION FAILURE (08/00). targetcli
makes the directories; on a host without it nobody does, so we do (daemon start,
``config apply``).

The kernel opens these paths from its own threads, relative to *their* root: the
root of kthreadd (pid 2), which is the system's root except where pid 1 was started
by a chroot (the lab guest, containers). ``/proc/2/root`` reaches it from here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from tcmu_scst.errors import TcmuScstError
from tcmu_scst.kernel.configfs import DEFAULT_ROOT, Configfs

KTHREADD_ROOT: Final = Path("/proc/2/root")
SUBDIRS: Final = ("pr", "alua")


def kernel_threads_root(proc: Path = Path("/proc")) -> Path:
    """Where the target core's threads resolve absolute paths."""
    try:
        if (proc / "2" / "comm").read_text().strip() == "kthreadd":
            root = proc / "2" / "root"
            os.stat(root)  # follows the magic link: needs the right to ptrace-read pid 2
            return root
    except OSError:
        pass  # no /proc, or no right to follow pid 2's root: assume ours
    return Path("/")


def default_kernel_root(cfs: Configfs) -> Path | None:
    """The kernel's root for the real configfs; None for a fake tree (tests)."""
    return kernel_threads_root() if cfs.root == DEFAULT_ROOT else None


def ensure_metadata_dirs(cfs: Configfs, kernel_root: Path | None) -> list[Path]:
    """Create ``<dbroot>/pr`` and ``<dbroot>/alua`` as the kernel will see them;
    returns those created (as seen from here). Raises TcmuScstError if it cannot."""
    if kernel_root is None or not cfs.exists("dbroot"):
        return []  # no kernel to serve (a fake tree) or target_core_mod not loaded
    dbroot = cfs.read("dbroot").strip()
    if not dbroot.startswith("/"):
        raise TcmuScstError(f"target/dbroot is {dbroot!r}, not an absolute path")
    base = kernel_root / dbroot.lstrip("/")
    created = []
    for sub in SUBDIRS:
        path = base / sub
        if path.is_dir():
            continue
        try:
            path.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            if not path.is_dir():
                raise TcmuScstError(f"{dbroot}/{sub} exists and is not a directory") from None
            continue
        except OSError as err:
            raise TcmuScstError(
                f"cannot create {dbroot}/{sub} (persistent reservations need it): {err}"
            ) from err
        created.append(path)
    return created
