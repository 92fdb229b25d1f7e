"""QEMU command-line construction and port-forward parsing (no QEMU is started)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tcmu_scst.errors import LabError
from tcmu_scst.lab.vm import PortForward, VmConfig, kernel_cmdline, qemu_argv


def config(**overrides: object) -> VmConfig:
    base: dict[str, object] = {
        "kernel": Path("/cache/vmlinuz"),
        "initrd": Path("/cache/initramfs.cpio.gz"),
        "job": "/tmp/tcmu-scst-lab-x/job.sh",
    }
    base.update(overrides)
    return VmConfig(**base)  # type: ignore[arg-type]


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == option]


def test_qemu_argv_boots_tcg_with_serial_console_and_no_reboot() -> None:
    argv = qemu_argv(config(), qemu="/usr/bin/qemu-system-x86_64")
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    for flag in ("-nographic", "-no-reboot", "-nodefaults"):
        assert flag in argv
    assert option_values(argv, "-accel") == ["tcg,thread=multi"]
    assert option_values(argv, "-cpu") == ["max"]
    assert option_values(argv, "-smp") == ["2"]
    assert option_values(argv, "-m") == ["3072"]
    assert option_values(argv, "-serial") == ["stdio"]
    assert option_values(argv, "-kernel") == ["/cache/vmlinuz"]
    assert option_values(argv, "-initrd") == ["/cache/initramfs.cpio.gz"]


def test_host_root_is_shared_read_only_with_remapped_devices() -> None:
    argv = qemu_argv(config())
    fsdevs = option_values(argv, "-fsdev")
    assert fsdevs == ["local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap"]
    assert "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot" in option_values(argv, "-device")


def test_results_share_is_writable_and_commas_in_paths_are_escaped() -> None:
    argv = qemu_argv(config(results_dir=Path("/work/a,b/results")))
    results = [f for f in option_values(argv, "-fsdev") if "id=results" in f]
    assert results == ["local,id=results,path=/work/a,,b/results,security_model=none,"
                       "multidevs=remap"]
    assert "readonly" not in results[0]
    assert "tcmu_scst_lab.results=1" in kernel_cmdline(config(results_dir=Path("/r")))
    assert "tcmu_scst_lab.results=0" in kernel_cmdline(config())


def test_user_network_with_port_forwards() -> None:
    argv = qemu_argv(config(forwards=(PortForward(3260, 3260), PortForward(8080, 80, "0.0.0.0"))))
    assert option_values(argv, "-netdev") == [
        "user,id=net0,hostfwd=tcp:127.0.0.1:3260-:3260,hostfwd=tcp:0.0.0.0:8080-:80"
    ]
    assert "virtio-net-pci,netdev=net0" in option_values(argv, "-device")


def test_memory_and_kernel_command_line() -> None:
    argv = qemu_argv(config(memory_mb=1024, cpus=1))
    assert option_values(argv, "-m") == ["1024"]
    assert option_values(argv, "-smp") == ["1"]
    append = option_values(argv, "-append")[0].split()
    assert "console=ttyS0,115200" in append
    assert "panic=-1" in append
    assert "tcmu_scst_lab.job=/tmp/tcmu-scst-lab-x/job.sh" in append


def test_job_path_with_whitespace_is_refused() -> None:
    with pytest.raises(LabError, match="whitespace"):
        kernel_cmdline(config(job="/tmp/my dir/job.sh"))


def test_port_forward_parsing() -> None:
    assert PortForward.parse("3260:3260") == PortForward(3260, 3260)
    assert PortForward.parse("0.0.0.0:13260:3260") == PortForward(13260, 3260, "0.0.0.0")
    for bad in ("3260", "a:b", "70000:1", "0:3260"):
        with pytest.raises(LabError, match="bad port forward"):
            PortForward.parse(bad)


def fake_qemu(tmp_path: Path, console: str) -> Path:
    script = tmp_path / "qemu-system-x86_64"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{console}EOF\nexit 0\n")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("started", [True, False])
def test_a_guest_that_powers_off_without_a_status_is_reported_by_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: bool
) -> None:
    # e.g. the kernel suite's watchdog powered the guest off after printing its stacks:
    # the message must point at the streamed output, not repeat the boot log.
    from tcmu_scst.lab import vm
    from tcmu_scst.lab.console import START_MARKER

    command = f"{START_MARKER}\nWATCHDOG: stacks\n" if started else ""
    qemu = fake_qemu(tmp_path, f"SeaBIOS\nLinux version 6.1\n{command}")
    monkeypatch.setattr(vm, "find_tool", lambda name: str(qemu))
    out = io.StringIO()
    with pytest.raises(LabError) as err:
        vm.run(config(), out=out, timeout=30)
    if started:
        assert "while the command ran" in str(err.value)
        assert "SeaBIOS" not in str(err.value)
        assert "WATCHDOG: stacks" in out.getvalue()
    else:
        assert "last console lines" in str(err.value) and "SeaBIOS" in str(err.value)
