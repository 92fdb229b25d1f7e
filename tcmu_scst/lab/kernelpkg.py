"""Fetch Debian's kernel package and extract vmlinuz plus the modules the guest needs.

``linux-image-amd64`` is a meta package; the real image is whatever it currently
depends on (``linux-image-<release>``). We download that .deb with apt-get, unpack it
in a scratch directory, run depmod (the .deb ships no modules.dep: its postinst makes
it), and copy only the wanted modules and their dependencies, decompressed, into a
small module tree on which depmod runs again so modprobe works inside the guest.
"""

from __future__ import annotations

import glob
import gzip
import lzma
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tcmu_scst.errors import LabError
from tcmu_scst.lab.modules import ModuleSpec, load_order, parse_builtin, parse_modules_dep
from tcmu_scst.lab.tools import find_tool, run_tool

META_PACKAGE = "linux-image-amd64"
APT_LISTS = "/var/lib/apt/lists"

_DEPENDS_RE = re.compile(r"^\s*\|?Depends:\s*(linux-image-[0-9]\S*)\s*$", re.MULTILINE)
_VERSION_RE = re.compile(r"^Version:\s*(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class KernelPackage:
    """A concrete Debian kernel image package."""

    name: str  # linux-image-6.1.0-56-amd64
    version: str  # 6.1.192-2

    @property
    def release(self) -> str:
        """The kernel release (``uname -r`` in the guest, /lib/modules/<release>)."""
        return self.name.removeprefix("linux-image-")

    @property
    def cache_key(self) -> str:
        return f"{self.release}_{self.version}"


def parse_depends(apt_cache_depends: str) -> str:
    """The linux-image-<release> package named in ``apt-cache depends`` output."""
    match = _DEPENDS_RE.search(apt_cache_depends)
    if match is None:
        raise LabError(
            f"{META_PACKAGE} depends on no linux-image-<release> package; "
            "check 'apt-cache depends linux-image-amd64'"
        )
    return match.group(1)


def parse_version(apt_cache_show: str) -> str:
    match = _VERSION_RE.search(apt_cache_show)
    if match is None:
        raise LabError("apt-cache show printed no Version: field; run apt-get update")
    return match.group(1)


def apt_lists_present(lists_dir: str | None = None) -> bool:
    return bool(glob.glob(os.path.join(lists_dir or APT_LISTS, "*_Packages*")))


def resolve(meta: str = META_PACKAGE) -> KernelPackage:
    """The image package ``meta`` currently depends on, with its candidate version."""
    if not apt_lists_present():
        raise LabError(
            f"apt package lists are missing ({APT_LISTS} is empty), so {meta} cannot be "
            "resolved; run: apt-get update"
        )
    name = parse_depends(run_tool(["apt-cache", "depends", meta], f"resolve {meta}"))
    shown = run_tool(["apt-cache", "show", "--no-all-versions", name], f"look up {name}")
    return KernelPackage(name=name, version=parse_version(shown))


def download(pkg: KernelPackage, dest: Path) -> Path:
    """``apt-get download`` the package into ``dest``; returns the .deb path."""
    argv = ["apt-get", "download", "-q"]
    if os.geteuid() == 0:
        # apt's _apt sandbox user cannot write into root's cache directory.
        argv += ["-o", "APT::Sandbox::User=root"]
    run_tool([*argv, f"{pkg.name}={pkg.version}"], f"download {pkg.name}", cwd=str(dest))
    debs = sorted(dest.glob(f"{pkg.name}_*.deb"))
    if not debs:
        raise LabError(f"apt-get download left no {pkg.name}_*.deb in {dest}; retry")
    return debs[-1]


def unpack(deb: Path, dest: Path) -> None:
    run_tool(["dpkg-deb", "-x", str(deb), str(dest)], f"unpack {deb.name}")


def depmod(root: Path, release: str) -> None:
    """Write modules.dep (+ the binary indexes kmod's modprobe reads) under ``root``."""
    run_tool(["depmod", "-b", str(root), release], f"run depmod for {release}")


def decompress_module(src: Path, dst: Path) -> None:
    """Copy a module to ``dst`` (a .ko path), decompressing .xz/.zst/.gz on the way.

    The guest's busybox insmod cannot read compressed modules, so decompress here.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    name = src.name
    if name.endswith(".ko"):
        shutil.copyfile(src, dst)
    elif name.endswith(".ko.xz"):
        dst.write_bytes(lzma.decompress(src.read_bytes()))
    elif name.endswith(".ko.gz"):
        dst.write_bytes(gzip.decompress(src.read_bytes()))
    elif name.endswith(".ko.zst"):
        with dst.open("wb") as out:
            proc = subprocess.run([find_tool("zstd"), "-dc", str(src)], stdout=out, check=False)
        if proc.returncode != 0:
            raise LabError(f"cannot decompress {src}: zstd exited {proc.returncode}")
    else:
        raise LabError(f"{src} is not a kernel module (.ko[.xz|.zst|.gz])")


def plain_ko(path: str) -> str:
    """modules.dep path of the decompressed copy."""
    for suffix in (".xz", ".zst", ".gz"):
        if path.endswith(".ko" + suffix):
            return path[: -len(suffix)]
    return path


# Files of /lib/modules/<release> depmod and modprobe want besides the modules.
_MODULE_META = ("modules.builtin", "modules.builtin.modinfo", "modules.order")


def stage_modules(
    unpacked: Path, release: str, specs: Sequence[ModuleSpec], out_root: Path
) -> tuple[list[str], list[str]]:
    """Copy the wanted modules (+ deps) into ``out_root/lib/modules/<release>``.

    Returns (required boot order, optional boot order) as paths relative to the module
    directory, dependencies first. Non-boot modules are copied but not listed.
    """
    src_dir = unpacked / "lib" / "modules" / release
    if not src_dir.is_dir():
        raise LabError(f"the kernel package has no lib/modules/{release}; wrong package?")
    if not (src_dir / "modules.dep").is_file():
        depmod(unpacked, release)
    deps = parse_modules_dep((src_dir / "modules.dep").read_text())
    builtin_file = src_dir / "modules.builtin"
    builtin = parse_builtin(builtin_file.read_text()) if builtin_file.is_file() else frozenset()

    optional = [s.name for s in specs if s.optional]
    required_boot = load_order(
        [s.name for s in specs if s.at_boot and not s.optional], deps, builtin
    )
    optional_boot = load_order(
        [s.name for s in specs if s.at_boot and s.optional], deps, builtin, missing_ok=optional
    )
    later = load_order([s.name for s in specs if not s.at_boot], deps, builtin)

    dst_dir = out_root / "lib" / "modules" / release
    dst_dir.mkdir(parents=True, exist_ok=True)
    for rel in dict.fromkeys(required_boot + optional_boot + later):
        decompress_module(src_dir / rel, dst_dir / plain_ko(rel))
    for meta in _MODULE_META:
        if (src_dir / meta).is_file():
            shutil.copyfile(src_dir / meta, dst_dir / meta)
    depmod(out_root, release)
    optional_only = [p for p in optional_boot if p not in required_boot]
    return [plain_ko(p) for p in required_boot], [plain_ko(p) for p in optional_only]
