"""Build the guest's initramfs: static busybox, /init, and the staged kernel modules."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from tcmu_scst.errors import LabError
from tcmu_scst.lab.cpio import CpioWriter

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
_DIRS = (
    "bin", "sbin", "etc", "etc/lab", "proc", "sys", "dev", "mnt", "newroot", "run",
    "tmp", "root", "lib", "lib/modules",
)


def init_script() -> str:
    """The guest's /init (package data, see init.sh)."""
    return resources.files("tcmu_scst.lab").joinpath("init.sh").read_text()


def find_static_busybox() -> Path:
    """The host's busybox if it is statically linked (it runs before any libc exists)."""
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and is_static_elf(path.read_bytes()[:4096]):
            return path.resolve()
    raise LabError(
        "no statically linked busybox on this host (the guest's /init needs it); "
        "install it: apt-get install busybox-static"
    )


def is_static_elf(head: bytes) -> bool:
    """True for an ELF executable without a PT_INTERP (dynamic loader) segment."""
    if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
        return False
    phoff = int.from_bytes(head[32:40], "little")
    phentsize = int.from_bytes(head[54:56], "little")
    phnum = int.from_bytes(head[56:58], "little")
    for i in range(phnum):
        start = phoff + i * phentsize
        if start + 4 > len(head):
            return False  # header table beyond what we read: be conservative
        if int.from_bytes(head[start : start + 4], "little") == 3:  # PT_INTERP
            return False
    return True


def boot_list(required: Sequence[str], optional: Sequence[str]) -> str:
    """/etc/lab/modules.boot: ``required|optional <path>`` lines in load order."""
    lines = [f"required {p}" for p in required] + [f"optional {p}" for p in optional]
    return "".join(line + "\n" for line in lines)


def build(
    out: Path,
    *,
    release: str,
    modules_root: Path,
    required: Sequence[str],
    optional: Sequence[str],
    busybox: Path,
) -> None:
    """Write a gzip'ed newc initramfs to ``out`` (atomically)."""
    raw = io.BytesIO()
    cpio = CpioWriter(raw)
    for d in _DIRS:
        cpio.add_dir(d)
    cpio.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.add_symlink("bin/sh", "busybox")
    cpio.add_file("init", init_script().encode(), 0o755)
    cpio.add_file("etc/lab/release", (release + "\n").encode())
    cpio.add_file("etc/lab/modules.boot", boot_list(required, optional).encode())
    mod_dir = modules_root / "lib" / "modules" / release
    if not mod_dir.is_dir():
        raise LabError(f"staged module tree {mod_dir} is missing; delete the lab cache")
    for dirpath, dirnames, filenames in os.walk(mod_dir):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(modules_root)
        cpio.add_dir(str(rel_dir))
        for name in sorted(filenames):
            cpio.add_file(str(rel_dir / name), (Path(dirpath) / name).read_bytes())
    cpio.close()
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(gzip.compress(raw.getvalue(), compresslevel=6, mtime=0))
    tmp.replace(out)
