"""Module dependency resolution for the lab guest, from a sample modules.dep."""

from __future__ import annotations

import pytest

from tcmu_scst.errors import LabError
from tcmu_scst.lab.modules import (
    lab_modules,
    load_order,
    module_name,
    parse_builtin,
    parse_modules_dep,
)

# Excerpt of Debian 6.1.0-56-amd64's modules.dep (as written by depmod).
SAMPLE_DEP = """\
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/fs/configfs/configfs.ko:
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/drivers/uio/uio.ko:
kernel/lib/crc-t10dif.ko: kernel/crypto/crct10dif_common.ko
kernel/crypto/crct10dif_common.ko:
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/target/target_core_mod.ko: kernel/drivers/scsi/scsi_common.ko \
kernel/lib/crc-t10dif.ko kernel/fs/configfs/configfs.ko kernel/crypto/crct10dif_common.ko
kernel/drivers/target/target_core_user.ko: kernel/drivers/uio/uio.ko \
kernel/drivers/target/target_core_mod.ko kernel/drivers/scsi/scsi_common.ko \
kernel/lib/crc-t10dif.ko kernel/fs/configfs/configfs.ko kernel/crypto/crct10dif_common.ko
kernel/drivers/scsi/scsi_debug.ko.xz: kernel/drivers/scsi/scsi_common.ko
""".replace("\\\n", "")

SAMPLE_BUILTIN = "kernel/fs/overlayfs/overlay.ko\nkernel/drivers/virtio/virtio_pci.ko\n"


def test_module_name_normalises_dashes_and_suffixes() -> None:
    assert module_name("kernel/arch/x86/crypto/crc32c-intel.ko") == "crc32c_intel"
    assert module_name("kernel/drivers/scsi/scsi_debug.ko.xz") == "scsi_debug"
    assert module_name("kernel/x/foo.ko.zst") == "foo"


def test_parse_modules_dep_keeps_paths_and_dependencies() -> None:
    deps = parse_modules_dep(SAMPLE_DEP)
    assert deps["kernel/fs/9p/9p.ko"] == (
        "kernel/net/9p/9pnet.ko", "kernel/fs/fscache/fscache.ko", "kernel/fs/netfs/netfs.ko"
    )
    assert deps["kernel/fs/configfs/configfs.ko"] == ()


def test_parse_modules_dep_rejects_garbage() -> None:
    with pytest.raises(LabError, match="line 2"):
        parse_modules_dep("kernel/a.ko:\nno colon here\n")


def test_load_order_puts_every_dependency_first_exactly_once() -> None:
    deps = parse_modules_dep(SAMPLE_DEP)
    order = load_order(["target_core_user", "9p", "configfs"], deps)
    assert len(order) == len(set(order))
    position = {path: i for i, path in enumerate(order)}
    for path in order:
        for dep in deps[path]:
            assert position[dep] < position[path], f"{dep} must precede {path}"
    assert order[-1] == "kernel/fs/9p/9p.ko"
    assert "kernel/drivers/uio/uio.ko" in order


def test_load_order_skips_builtins_and_unknown_optional_modules() -> None:
    deps = parse_modules_dep(SAMPLE_DEP)
    builtin = parse_builtin(SAMPLE_BUILTIN)
    order = load_order(
        ["overlay", "virtio_pci", "crc32c-intel", "nonexistent"],
        deps,
        builtin,
        missing_ok=["nonexistent"],
    )
    assert order == ["kernel/arch/x86/crypto/crc32c-intel.ko"]


def test_load_order_names_a_missing_required_module() -> None:
    with pytest.raises(LabError, match=r"tcm_loop is neither built in nor in modules\.dep"):
        load_order(["tcm_loop"], parse_modules_dep(SAMPLE_DEP))


def test_load_order_detects_cycles_and_dangling_dependencies() -> None:
    with pytest.raises(LabError, match="cycle"):
        load_order(["a"], {"a.ko": ("b.ko",), "b.ko": ("a.ko",)})
    with pytest.raises(LabError, match="without its own entry"):
        load_order(["a"], {"a.ko": ("missing.ko",)})


def test_lab_modules_cover_the_target_stack_and_keep_scsi_debug_for_later() -> None:
    specs = {s.name: s for s in lab_modules()}
    for needed in ("target_core_user", "tcm_loop", "iscsi_target_mod", "9p", "uio",
                   "crc32c_generic", "sd_mod", "sg"):
        assert specs[needed].at_boot and not specs[needed].optional
    assert not specs["scsi_debug"].at_boot
    assert specs["crc32c_intel"].optional
