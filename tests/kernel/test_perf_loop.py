"""The perf handlers seen by the kernel's sd and st drivers through tcm_loop.

Reads return zeros even right after writes of random data (the ring's data area
still holds those bytes: the handler must overwrite them), fio random reads run
without errors, and the tape attaches to st and answers mt and dd.
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

from tcmu_scst.handlers._perf_tape import PerfTapeDevice
from tcmu_scst.handlers.perf import PerfHandler, PerfParams, to_dev_config

from .tcmu_rig import dd, serve

MiB = 1 << 20


def read_all(dev: str, length: int) -> bytes:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return os.pread(fd, length, 0)
    finally:
        os.close(fd)


def test_disk_perf_reads_zeros_after_random_writes(lio_stack: ExitStack) -> None:
    size = 32 * MiB
    config = to_dev_config(PerfParams("dev_disk_perf", "perf0", size=size))
    served = serve(lio_stack, config, size)
    assert served.lun is not None and served.lun.block is not None
    dev = served.lun.block
    sysfs = Path(f"/sys/class/scsi_device/{served.lun.hctl}/device")
    assert (sysfs / "type").read_text().strip() == "0"
    assert int(Path(f"/sys/block/{Path(dev).name}/size").read_text()) * 512 == size
    # Random data through the ring (discarded by the handler), then direct reads.
    dd("if=/dev/urandom", f"of={dev}", "bs=1M", "count=8", "oflag=direct")
    dd(f"if={dev}", "of=/tmp/perf0.bin", "bs=1M", "count=32", "iflag=direct")
    assert Path("/tmp/perf0.bin").read_bytes() == bytes(size)
    out = subprocess.run(
        # fio checks every block it reads against the zero pattern (exit 1 otherwise).
        ["fio", "--name=zeros", f"--filename={dev}", "--rw=randread", "--bs=4k",
         "--direct=1", "--ioengine=libaio", "--iodepth=8", "--runtime=2", "--time_based",
         "--verify=pattern", "--verify_pattern=0x00", "--output-format=json"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)["jobs"][0]
    assert job["error"] == 0
    assert job["read"]["io_bytes"] > 0


def test_modisk_perf_is_optical_memory(lio_stack: ExitStack) -> None:
    size = 8 * MiB
    config = to_dev_config(PerfParams("dev_modisk_perf", "mo0", size=size, blocksize=2048))
    served = serve(lio_stack, config, size, block_size=2048)
    assert served.lun is not None and served.lun.block is not None
    sysfs = Path(f"/sys/class/scsi_device/{served.lun.hctl}/device")
    assert (sysfs / "type").read_text().strip() == "7"
    dd("if=/dev/urandom", f"of={served.lun.block}", "bs=64k", "count=16", "oflag=direct")
    assert read_all(served.lun.block, MiB) == bytes(MiB)


def test_tape_perf_attaches_to_st(lio_stack: ExitStack) -> None:
    config = to_dev_config(PerfParams("dev_tape_perf", "tape0"))
    served = serve(lio_stack, config, MiB, need_block=False)
    assert served.lun is not None
    sysfs = Path(f"/sys/class/scsi_device/{served.lun.hctl}/device")
    assert (sysfs / "type").read_text().strip() == "1"
    tapes = sorted(p.name for p in (sysfs / "scsi_tape").iterdir())
    st = next(name for name in tapes if name.startswith("nst") and name[3:].isdigit())
    node = f"/dev/{st}"
    assert os.path.exists(node), f"{node} missing ({tapes})"
    assert isinstance(served.handler, PerfHandler)
    device = served.handler.device
    assert isinstance(device, PerfTapeDevice)
    subprocess.run(["mt", "-f", node, "rewind"], check=True, timeout=30)
    dd("if=/dev/urandom", f"of={node}", "bs=64k", "count=4")
    # 4 variable blocks, plus the filemark st writes when a written file is closed.
    assert device.position == 5 and device.block_length == 0
    status = subprocess.run(["mt", "-f", node, "status"], capture_output=True, text=True,
                            timeout=30)
    assert status.returncode == 0, status
    subprocess.run(["mt", "-f", node, "seek", "10"], check=True, timeout=30)  # LOCATE
    assert device.position == 10
    subprocess.run(["mt", "-f", node, "rewind"], check=True, timeout=30)
    assert device.position == 0
    out = subprocess.run(["dd", f"if={node}", "bs=64k", "count=4", "status=none"],
                         capture_output=True, check=True, timeout=60)
    assert out.stdout == bytes(4 * 65536)
    assert device.position == 4
