"""Building the guest image: cpio writer, initramfs bits, kernel package helpers, cache."""

from __future__ import annotations

import io
import lzma
import stat
import subprocess
from pathlib import Path

import pytest

from tcmu_scst.errors import LabError
from tcmu_scst.lab import cache, initramfs, kernelpkg
from tcmu_scst.lab.cpio import CpioWriter


def read_newc(data: bytes) -> list[tuple[str, int, bytes]]:
    """Independent little newc reader: (name, mode, data) per entry, trailer excluded."""
    entries: list[tuple[str, int, bytes]] = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize
        body += (4 - body % 4) % 4
        content = data[body : body + size]
        pos = body + size
        pos += (4 - pos % 4) % 4
        if name == "TRAILER!!!":
            return entries
        entries.append((name, mode, content))


def test_cpio_newc_round_trip() -> None:
    out = io.BytesIO()
    cpio = CpioWriter(out)
    cpio.add_dir("bin")
    cpio.add_file("bin/busybox", b"\x7fELF" + b"x" * 5, 0o755)
    cpio.add_symlink("bin/sh", "busybox")
    cpio.add_file("/init", b"#!/bin/sh\n", 0o755)
    cpio.close()
    data = out.getvalue()
    assert len(data) % 4 == 0
    entries = read_newc(data)
    assert [(n, stat.S_IFMT(m)) for n, m, _ in entries] == [
        ("bin", stat.S_IFDIR), ("bin/busybox", stat.S_IFREG), ("bin/sh", stat.S_IFLNK),
        ("init", stat.S_IFREG),
    ]
    assert entries[1][2] == b"\x7fELFxxxxx"
    assert stat.S_IMODE(entries[1][1]) == 0o755
    assert entries[2][2] == b"busybox"
    with pytest.raises(ValueError, match="closed"):
        cpio.add_dir("late")


def test_cpio_archive_is_readable_by_gnu_cpio(tmp_path: Path) -> None:
    archive = tmp_path / "a.cpio"
    with archive.open("wb") as handle:
        cpio = CpioWriter(handle)
        cpio.add_dir("etc")
        cpio.add_file("etc/release", b"6.1.0\n")
        cpio.close()
    listing = subprocess.run(
        ["cpio", "-t", "--quiet"], input=archive.read_bytes(), capture_output=True, check=True
    ).stdout.decode().split()
    assert listing == ["etc", "etc/release"]


def elf_header(with_interp: bool) -> bytes:
    head = bytearray(4096)
    head[0:4] = b"\x7fELF"
    head[4] = 2
    head[32:40] = (64).to_bytes(8, "little")  # e_phoff
    head[54:56] = (56).to_bytes(2, "little")  # e_phentsize
    head[56:58] = (2).to_bytes(2, "little")  # e_phnum
    head[64:68] = (1).to_bytes(4, "little")  # PT_LOAD
    head[120:124] = (3 if with_interp else 1).to_bytes(4, "little")
    return bytes(head)


def test_static_elf_detection() -> None:
    assert initramfs.is_static_elf(elf_header(with_interp=False))
    assert not initramfs.is_static_elf(elf_header(with_interp=True))
    assert not initramfs.is_static_elf(b"#!/bin/sh\n")


def test_boot_list_and_init_script() -> None:
    text = initramfs.boot_list(["kernel/a.ko", "kernel/b.ko"], ["kernel/c.ko"])
    assert text == "required kernel/a.ko\nrequired kernel/b.ko\noptional kernel/c.ko\n"
    init = initramfs.init_script()
    assert init.startswith("#!/bin/sh")
    for needed in ("mount -t 9p", "lowerdir=/mnt/host", "configfs", "ip link set lo up",
                   "chroot /newroot", "poweroff -f"):
        assert needed in init


def test_parse_apt_cache_output() -> None:
    depends = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n"
    assert kernelpkg.parse_depends(depends) == "linux-image-6.1.0-56-amd64"
    assert kernelpkg.parse_version("Package: x\nVersion: 6.1.192-2\nSize: 1\n") == "6.1.192-2"
    with pytest.raises(LabError, match="depends on no linux-image"):
        kernelpkg.parse_depends("linux-image-amd64\n  Depends: <nothing>\n")
    pkg = kernelpkg.KernelPackage("linux-image-6.1.0-56-amd64", "6.1.192-2")
    assert pkg.release == "6.1.0-56-amd64"
    assert pkg.cache_key == "6.1.0-56-amd64_6.1.192-2"


def test_missing_apt_lists_tell_to_run_apt_get_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernelpkg, "APT_LISTS", str(tmp_path))
    assert not kernelpkg.apt_lists_present(str(tmp_path))
    with pytest.raises(LabError, match="run: apt-get update"):
        kernelpkg.resolve()


def test_compressed_modules_are_decompressed(tmp_path: Path) -> None:
    src = tmp_path / "foo.ko.xz"
    src.write_bytes(lzma.compress(b"\x7fELF module"))
    dst = tmp_path / "out" / "foo.ko"
    kernelpkg.decompress_module(src, dst)
    assert dst.read_bytes() == b"\x7fELF module"
    assert kernelpkg.plain_ko("kernel/x/foo.ko.zst") == "kernel/x/foo.ko"
    assert kernelpkg.plain_ko("kernel/x/foo.ko") == "kernel/x/foo.ko"


def test_cache_root_honours_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, "/srv/labcache")
    assert cache.cache_root() == Path("/srv/labcache")
    monkeypatch.delenv(cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", "/x")
    assert cache.cache_root() == Path("/x/tcmu-scst/lab")


def test_kernel_cache_entry_is_complete_only_for_the_current_module_set(tmp_path: Path) -> None:
    assert not cache.kernel_complete(tmp_path)
    (tmp_path / "kernel.ok").write_text("linux-image-x 1.0 0123456789abcdef\n")
    assert not cache.kernel_complete(tmp_path)
    (tmp_path / "kernel.ok").write_text(f"linux-image-x 1.0 {cache.modules_key()}\n")
    assert cache.kernel_complete(tmp_path)


def test_missing_host_tools_name_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from tcmu_scst.lab import tools

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(tools, "_EXTRA_DIRS", ())
    with pytest.raises(LabError, match="apt-get install qemu-system-x86"):
        tools.find_tool("qemu-system-x86_64")
    with pytest.raises(LabError, match="apt-get install apt"):
        tools.find_tool("apt-get")


def test_missing_static_busybox_names_busybox_static(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initramfs, "BUSYBOX_CANDIDATES", ("/nonexistent/busybox",))
    with pytest.raises(LabError, match="apt-get install busybox-static"):
        initramfs.find_static_busybox()
