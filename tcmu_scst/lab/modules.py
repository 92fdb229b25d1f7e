"""Kernel module bookkeeping for the lab guest: modules.dep parsing and load order.

Pure logic, no I/O besides what the caller passes in, so it is unit-tested against a
sample modules.dep. Module *names* are normalised the way the kernel does it
(``crc32c-intel`` and ``crc32c_intel`` are the same module).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tcmu_scst.errors import LabError

# Suffixes a module file may carry in a Debian kernel package.
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


@dataclass(frozen=True)
class ModuleSpec:
    """A module the guest wants; ``optional`` ones may be absent or fail to load."""

    name: str
    optional: bool = False
    at_boot: bool = True


def lab_modules() -> tuple[ModuleSpec, ...]:
    """Everything the guest needs, in the order /init should try to load it.

    ``at_boot=False`` modules are installed (so ``modprobe`` finds them) but left for the
    tests to load with their own parameters (scsi_debug).
    """
    required_boot = (
        # virtio transport, the 9p host root and the overlay on top of it
        "virtio_pci", "virtio_net", "virtio_rng",
        "9pnet_virtio", "9p", "overlay",
        # the SCSI target core and its backstores and fabrics
        "configfs", "target_core_mod", "target_core_user", "target_core_file",
        "target_core_iblock", "target_core_pscsi", "tcm_loop", "iscsi_target_mod",
        # iSCSI logins ask the crypto API for crc32c; nothing depends on these modules
        "crc32c_generic", "libcrc32c", "uio",
        # SCSI upper-level drivers so tcm_loop/scsi_debug LUNs get /dev nodes
        "sd_mod", "sg", "sr_mod", "st", "ch", "loop",
    )
    specs = [ModuleSpec(n) for n in required_boot]
    specs.append(ModuleSpec("crc32c_intel", optional=True))  # needs SSE4.2 in the guest CPU
    specs.append(ModuleSpec("scsi_debug", at_boot=False))
    specs.append(ModuleSpec("isofs", at_boot=False))  # vcdrom tests mount ISO images
    specs.append(ModuleSpec("ext4", at_boot=False))  # vdisk tests mkfs + mount + fsck
    # dm-multipath over two ALUA paths (test_scst_alua.py); multipathd's default path
    # selector is service-time, round-robin is the one a hand-made table names.
    # dm_flakey: the fault tests' backing device that fails on a timer (test_dm_faults.py).
    for name in ("dm_mod", "dm_multipath", "dm_round_robin", "dm_service_time",
                 "dm_queue_length", "scsi_dh_alua", "dm_flakey"):  # fmt: skip
        specs.append(ModuleSpec(name, at_boot=False))
    return tuple(specs)


def module_name(path: str) -> str:
    """``kernel/arch/x86/crypto/crc32c-intel.ko.xz`` -> ``crc32c_intel``."""
    base = path.rsplit("/", 1)[-1]
    for suffix in sorted(MODULE_SUFFIXES, key=len, reverse=True):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, ...]]:
    """Parse modules.dep into ``{module path: (dependency paths...)}``.

    Paths stay relative to ``/lib/modules/<version>/`` exactly as depmod wrote them.
    """
    deps: dict[str, tuple[str, ...]] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        path, sep, rest = line.partition(":")
        if not sep or not path:
            raise LabError(
                f"modules.dep line {lineno} is not 'path: deps' ({raw!r}); "
                "regenerate it with depmod"
            )
        deps[path.strip()] = tuple(rest.split())
    return deps


def parse_builtin(text: str) -> frozenset[str]:
    """Names of modules compiled into the kernel (modules.builtin)."""
    return frozenset(module_name(line.strip()) for line in text.splitlines() if line.strip())


def index_by_name(deps: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """``{module name: path}`` for every module in modules.dep."""
    return {module_name(path): path for path in deps}


def load_order(
    wanted: Iterable[str],
    deps: Mapping[str, tuple[str, ...]],
    builtin: frozenset[str] = frozenset(),
    *,
    missing_ok: Iterable[str] = (),
) -> list[str]:
    """Module paths to insmod, dependencies first, each exactly once.

    Built-in modules are skipped silently; a wanted module that is neither built in nor
    in modules.dep raises LabError unless it is named in ``missing_ok``.
    """
    by_name = index_by_name(deps)
    tolerated = {n.replace("-", "_") for n in missing_ok}
    order: list[str] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(path: str) -> None:
        if path in done:
            return
        if path in visiting:
            raise LabError(f"modules.dep has a dependency cycle through {path}; rerun depmod")
        visiting.add(path)
        for dep in deps.get(path, ()):
            if dep not in deps:
                raise LabError(
                    f"modules.dep lists {dep} (needed by {path}) without its own entry; "
                    "rerun depmod"
                )
            visit(dep)
        visiting.discard(path)
        done.add(path)
        order.append(path)

    for raw_name in wanted:
        name = raw_name.replace("-", "_")
        if name in builtin:
            continue
        path = by_name.get(name)
        if path is None:
            if name in tolerated:
                continue
            raise LabError(
                f"kernel module {name} is neither built in nor in modules.dep; "
                "the kernel package does not provide it"
            )
        visit(path)
    return order
