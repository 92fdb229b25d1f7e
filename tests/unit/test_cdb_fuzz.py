"""The kernel CDB fuzz test's commands, straight into the handlers (no kernel).

``tcmu_scst.testing.cdb_fuzz`` makes the commands (every opcode, valid commands with
one mutation each, random bytes); here each goes to a thin vdisk on a file, a
read-only removable 4 KiB-block vdisk, a vcdrom and a perf disk opened by the
registry as the daemon opens them. Every answer must
be well formed, and a rejected command must leave the backing file as it was.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcmu_scst.command import CHECK_CONDITION, Direction, Result
from tcmu_scst.handler import Handler
from tcmu_scst.handlers.perf import PerfParams
from tcmu_scst.handlers.perf import to_dev_config as perf_config
from tcmu_scst.handlers.vcdrom_params import VcdromParams
from tcmu_scst.handlers.vcdrom_params import to_dev_config as vcdrom_config
from tcmu_scst.handlers.vdisk_params import VdiskParams
from tcmu_scst.handlers.vdisk_params import to_dev_config as vdisk_config
from tcmu_scst.service import registry
from tcmu_scst.testing.cdb_fuzz import FuzzCommand, Geometry, check_answer, fuzz_commands, specs_for
from tcmu_scst.testing.scsi_harness import make_command

KiB = 1024


class Device:
    """A handler opened from a dev_config, with its backing file (if any)."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.image: Path | None = None
        if kind == "vdisk":
            self.image = tmp / "disk.img"
            self.image.write_bytes(random.Random(1).randbytes(256 * KiB))
            config = vdisk_config(VdiskParams(name="fz", filename=str(self.image),
                                              thin_provisioned=True))
            self.geo, self.type = Geometry(512, 512), 0
        elif kind == "vdisk-4k-ro":  # another geometry, removable, write-protected
            self.image = tmp / "disk4k.img"
            self.image.write_bytes(random.Random(3).randbytes(256 * KiB))
            config = vdisk_config(VdiskParams(name="fz4k", filename=str(self.image),
                                              blocksize=4096, removable=True, read_only=True))
            self.geo, self.type = Geometry(4096, 64), 0
        elif kind == "vcdrom":
            self.image = tmp / "cd.iso"
            self.image.write_bytes(random.Random(2).randbytes(64 * 2048))
            config = vcdrom_config(VcdromParams("fzcd", str(self.image)))
            self.geo, self.type = Geometry(2048, 64), 5
        else:
            config = perf_config(PerfParams("dev_disk_perf", "fzperf", size=256 * KiB))
            self.geo, self.type = Geometry(512, 512), 0
        self.handler: Handler = registry.open_handler(config)

    def contents(self) -> bytes:
        return self.image.read_bytes() if self.image is not None else b""

    def execute(self, fuzz: FuzzCommand) -> Result:
        data = fuzz.data if fuzz.direction is Direction.OUT else None
        cmd, _ = make_command(fuzz.cdb, data_out=data, in_len=fuzz.length)
        result = self.handler.handle(cmd)
        assert result is not None
        if result.data_in_len is not None:
            assert 0 <= result.data_in_len <= fuzz.length, fuzz
        return result


KINDS = ["vdisk", "vdisk-4k-ro", "vcdrom", "perf"]


@pytest.fixture(params=KINDS)
def device(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Device]:
    dev = Device(request.param, tmp_path)
    yield dev
    dev.handler.close()


def fuzz(device: Device, seed: int, count: int) -> None:
    rng = random.Random(seed)
    before = device.contents()
    for command in fuzz_commands(rng, count, device.geo, specs_for(device.type)):
        result = device.execute(command)
        problem = check_answer(result.status, result.sense)
        assert problem is None, f"seed {seed}: {command}: {problem}"
        after = device.contents()
        if result.status == CHECK_CONDITION:
            assert after == before, f"seed {seed}: {command} failed but changed the medium"
        before = after


def test_the_kernel_tests_seed_in_process(device: Device) -> None:
    """The kernel test's seed and count: whatever it would find, this finds first."""
    fuzz(device, 14, 1500)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_seeds(kind: str, seed: int) -> None:
    """A fresh device per example, so a failing seed reproduces on its own."""
    with tempfile.TemporaryDirectory() as tmp:
        dev = Device(kind, Path(tmp))
        try:
            fuzz(dev, seed, 120)
        finally:
            dev.handler.close()
