"""The lab cache: kernel, module tree and initramfs per kernel package version.

Layout (root: $TCMU_SCST_LAB_CACHE or ~/.cache/tcmu-scst/lab)::

    <release>_<debian version>/
        vmlinuz
        modules/lib/modules/<release>/...   staged modules, depmod'ed
        boot-order.json                     required/optional insmod order
        initramfs-<recipe>.cpio.gz          recipe = hash of /init, busybox, module list
        kernel.ok                           written last: the kernel part is complete

Several engineers may start the lab at once: building is serialised with a lock file
and every artefact is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tcmu_scst.errors import LabError
from tcmu_scst.lab import initramfs, kernelpkg
from tcmu_scst.lab.modules import lab_modules

CACHE_ENV = "TCMU_SCST_LAB_CACHE"
# Bump when the staging logic changes in a way the recipe hash cannot see.
LAYOUT_VERSION = "1"


@dataclass(frozen=True)
class LabImage:
    """Everything QEMU needs to boot the guest."""

    release: str
    kernel: Path
    initrd: Path


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "tcmu-scst" / "lab"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def modules_key() -> str:
    """Key of the staged module set (changes when lab_modules() changes)."""
    return hashlib.sha256((LAYOUT_VERSION + repr(lab_modules())).encode()).hexdigest()[:16]


def kernel_complete(entry: Path) -> bool:
    marker = entry / "kernel.ok"
    return marker.is_file() and marker.read_text().split()[-1:] == [modules_key()]


def recipe_hash(busybox: Path) -> str:
    """Key of the initramfs: what goes into it besides the kernel's modules."""
    digest = hashlib.sha256()
    digest.update(LAYOUT_VERSION.encode())
    digest.update(initramfs.init_script().encode())
    digest.update(repr(lab_modules()).encode())
    digest.update(hashlib.sha256(busybox.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _log(message: str) -> None:
    print(f"tcmu-scst lab: {message}", file=sys.stderr, flush=True)


def _build_kernel(pkg: kernelpkg.KernelPackage, entry: Path) -> None:
    """Download, unpack and stage the kernel and its modules into ``entry``."""
    entry.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kernel-", dir=entry) as scratch_name:
        scratch = Path(scratch_name)
        _log(f"downloading {pkg.name} {pkg.version} (once; cached in {entry})")
        deb = kernelpkg.download(pkg, scratch)
        unpacked = scratch / "root"
        kernelpkg.unpack(deb, unpacked)
        vmlinuz = unpacked / "boot" / f"vmlinuz-{pkg.release}"
        if not vmlinuz.is_file():
            raise LabError(f"{deb.name} holds no boot/vmlinuz-{pkg.release}; wrong package?")
        modules_tmp = scratch / "modules"
        required, optional = kernelpkg.stage_modules(
            unpacked, pkg.release, lab_modules(), modules_tmp
        )
        shutil.rmtree(entry / "modules", ignore_errors=True)
        modules_tmp.rename(entry / "modules")
        shutil.copyfile(vmlinuz, entry / "vmlinuz")
        order = {"required": required, "optional": optional, "release": pkg.release}
        (entry / "boot-order.json").write_text(json.dumps(order, indent=1) + "\n")
    (entry / "kernel.ok").write_text(f"{pkg.name} {pkg.version} {modules_key()}\n")


def _newest_cached(root: Path) -> Path | None:
    complete = [p.parent for p in root.glob("*/kernel.ok")]
    return max(complete, key=lambda p: p.stat().st_mtime) if complete else None


def _resolve_entry(root: Path) -> tuple[Path, kernelpkg.KernelPackage | None]:
    """Cache entry for the current kernel package; offline, fall back to the newest."""
    try:
        pkg = kernelpkg.resolve()
    except LabError as err:
        cached = _newest_cached(root)
        if cached is None:
            raise
        _log(f"using cached kernel {cached.name} ({err})")
        return cached, None
    return root / pkg.cache_key, pkg


def prepare(root: Path | None = None) -> LabImage:
    """Return a bootable image, building whatever part of the cache is missing."""
    root = root or cache_root()
    busybox = initramfs.find_static_busybox()
    entry, pkg = _resolve_entry(root)
    with locked(root / f"{entry.name}.lock"):
        if not kernel_complete(entry):
            if pkg is None:
                raise LabError(f"cache entry {entry} is incomplete and apt cannot resolve it")
            _build_kernel(pkg, entry)
        order = json.loads((entry / "boot-order.json").read_text())
        initrd = entry / f"initramfs-{recipe_hash(busybox)}.cpio.gz"
        if not initrd.is_file():
            _log(f"building initramfs {initrd.name}")
            initramfs.build(
                initrd,
                release=order["release"],
                modules_root=entry / "modules",
                required=order["required"],
                optional=order["optional"],
                busybox=busybox,
            )
    return LabImage(release=order["release"], kernel=entry / "vmlinuz", initrd=initrd)
