"""vdisk_rbd against a real Ceph cluster in the lab guest, seen by sd through tcm_loop.

One single-node cluster (1 monitor, 1 memstore OSD, loopback only; see
``tcmu_scst.testing.ceph``) serves every test of this module: starting it takes
about 30 s under TCG, so it is started once. The real daemon (on a thread) opens
each device from its dev_config, as it would in production.

* a file system (mkfs, files, umount, fsck -n clean, files read back) and fio --verify;
* fstrim on a thin device frees RADOS objects (``rbd du`` shows it);
* ``rbd resize`` elsewhere: the daemon's size watch resizes the device and sd sees
  the new capacity; RECONFIG dev_size grows the image;
* ``config check`` refuses a missing pool or image in one line naming file and line;
* libiscsi's compliance run on a thin RBD LUN matches ``compliance-rbd.txt`` (378 and
  397 s in two lab runs on 2026-12-07, the slow test of this module: some 40,000 I/O
  commands, each a round trip to the memstore OSD under TCG; README, Compliance);
* last (its long freeze upsets the lone OSD until it rejoins): the OSD frozen under
  I/O: the initiator gets its error within the bound (the librados op timeout, the
  daemon's deadlines, the SCSI retries), no task stays in D state, and I/O on the
  same device works again once the OSD runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tcmu_scst.handlers.vdisk_params import VdiskParams, to_dev_config
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.lio import UserBackstore
from tcmu_scst.kernel.scsi_nodes import ScsiNodes
from tcmu_scst.lab import compliance
from tcmu_scst.testing.ceph import CephCluster, CephError, missing_tools

from .tcmu_rig import (
    DaemonThread,
    check_compliance,
    create_backstore,
    export_loop,
    ext4_round_trip,
    fio_verify,
    fstrim_frees,
    wait_for_block_size,
    wait_until,
)

MiB = 1 << 20
POOL = "rbd"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    missing = missing_tools()
    assert not missing, f"Ceph is not installed: {missing}; apt-get install ceph-mon ceph-osd " \
                        "ceph-common python3-rbd python3-rados"
    with CephCluster(tmp_path_factory.mktemp("ceph"), memstore_bytes=1 << 30) as ceph:
        ceph.create_pool(POOL)
        yield ceph


def run(*argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: "
                             f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def filename(cluster: CephCluster, image: str, *options: str) -> str:
    return ":".join([f"rbd:{POOL}/{image}", f"conf={cluster.conf}", *options])


def rbd_disk(stack: ExitStack, tmp_path: Path, cluster: CephCluster, image: str,
             size: int, *options: str, object_size: str = "4M",
             **flags: bool) -> tuple[ScsiNodes, DaemonThread]:
    """A new image served by the daemon and exported on tcm_loop."""
    cluster.rbd("create", "--size", f"{size // MiB}M", "--object-size", object_size,
                f"{POOL}/{image}")
    params = VdiskParams(name=image, filename=filename(cluster, image, *options), **flags)
    daemon = DaemonThread(tmp_path).start()
    stack.callback(daemon.stop)  # after the backstore's removal (registered later)
    backstore = create_backstore(stack, to_dev_config(params), size, name=image,
                                 nl_reply_supported=None)
    lun = export_loop(stack, backstore)
    assert lun.block and lun.sg
    return lun, daemon


def used_bytes(cluster: CephCluster, image: str) -> int:
    report = json.loads(cluster.rbd("du", "--format", "json", f"{POOL}/{image}"))
    return int(report["images"][0]["used_size"])


def test_filesystem_and_fio_verify(lio_stack: ExitStack, tmp_path: Path,
                                   cluster: CephCluster) -> None:
    lun, _ = rbd_disk(lio_stack, tmp_path, cluster, "fs", 64 * MiB)
    dev = lun.block
    assert dev
    ext4_round_trip(dev, tmp_path / "mnt", run)
    fio_verify(dev, (("16k", "16M"), ("512", "1M")), run)
    # After SYNCHRONIZE CACHE the data is in the cluster, not only in our librbd
    # cache: another client (rbd export) reads what the initiator reads.
    run("sg_sync", dev)
    exported = tmp_path / "export.img"
    cluster.rbd("export", f"{POOL}/fs", str(exported))
    with open(dev, "rb", buffering=0) as disk:
        assert disk.read(MiB) == exported.read_bytes()[:MiB]


def test_fstrim_frees_objects(lio_stack: ExitStack, tmp_path: Path,
                              cluster: CephCluster) -> None:
    # rbd du counts whole objects: small ones, so that ext4's metadata (at the start of
    # each 8 MiB block group) keeps little of the freed space counted as used.
    lun, _ = rbd_disk(lio_stack, tmp_path, cluster, "thin", 64 * MiB, object_size="256K",
                      thin_provisioned=True)
    dev = lun.block
    assert dev
    fstrim_frees(dev, tmp_path / "mnt", lambda: used_bytes(cluster, "thin"), run)


def test_resize_is_seen_by_the_initiator(lio_stack: ExitStack, tmp_path: Path,
                                         cluster: CephCluster) -> None:
    lun, _ = rbd_disk(lio_stack, tmp_path, cluster, "grow", 32 * MiB)
    assert lun.block
    name = Path(lun.block).name
    assert int(Path(f"/sys/block/{name}/size").read_text()) * 512 == 32 * MiB
    found = UserBackstore.find(Configfs(), "grow")
    assert found is not None
    # Grown by another client of the cluster: the daemon's size watch (every 5 s)
    # resizes the device by itself, no admin step.
    cluster.rbd("resize", "--size", "48M", f"{POOL}/grow")
    wait_for_block_size(lun.block, 48 * MiB, timeout=60)
    assert int(found.attrib("dev_size")) == 48 * MiB
    # Grown here, as 'resync_size' to a larger size does: RECONFIG dev_size to the
    # daemon, which grows the image.
    found.set_dev_size(64 * MiB)
    wait_for_block_size(lun.block, 64 * MiB)
    info = json.loads(cluster.rbd("info", "--format", "json", f"{POOL}/grow"))
    assert int(info["size"]) == 64 * MiB


def test_config_check_refuses_a_missing_pool_or_image(tmp_path: Path,
                                                      cluster: CephCluster) -> None:
    cluster.rbd("create", "--size", "16M", f"{POOL}/present")
    for image, words in ((f"{POOL}/present", None),
                         (f"{POOL}/absent", "has no image 'absent'"),
                         ("nopool/present", "no pool 'nopool'")):
        conf_file = tmp_path / "scst.conf"
        conf_file.write_text("HANDLER vdisk_rbd {\n DEVICE d0 {\n"
                             f"  filename rbd:{image}:conf={cluster.conf}\n }}\n}}\n")
        proc = run(sys.executable, "-m", "tcmu_scst.cli", "config", "check", str(conf_file),
                   check=False)
        if words is None:
            assert proc.returncode == 0, proc.stdout + proc.stderr
            continue
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1, proc.stdout + proc.stderr
        assert f"{conf_file}:2: device d0" in lines[0] and words in lines[0], lines[0]


def test_libiscsi_compliance_matches_expectations(tmp_path: Path, cluster: CephCluster) -> None:
    cluster.rbd("create", "--size", "256M", f"{POOL}/compliance")
    factory = compliance.vdisk_backstore(size=256 * MiB, filename=filename(cluster, "compliance"),
                                         thin_provisioned=True)
    check_compliance(Path(__file__).parent / "compliance-rbd.txt", factory, tmp_path)


def _d_state_tasks() -> list[str]:
    stuck = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm_end = text.rfind(")")
        if text[comm_end + 2 : comm_end + 3] == "D":
            stuck.append(text[: comm_end + 1])
    return stuck


def _dmesg_tail(lines: int = 60) -> str:
    """The kernel's last words (sd's retries and timeouts), for a failure message."""
    proc = run("dmesg", check=False)
    return "\n".join(proc.stdout.splitlines()[-lines:])


def _wait_until_serving(cluster: CephCluster, image: str, timeout: float = 300) -> float:
    """Wait until a new client can write to the pool and open ``image``; returns the
    seconds it took.

    After a freeze of half a minute the OSD served a plain write 2 s after it ran
    again, but a new client's ``rbd create`` and image opens (object-class calls) got
    no answer for minutes (seen in the lab)."""
    start = time.monotonic()
    while True:
        try:
            cluster.rados("-p", POOL, "put", "tcmu-scst-probe", "/dev/null", timeout=30)
            cluster.rbd("info", image, timeout=30)  # its header too (object class calls)
        except CephError:
            if time.monotonic() - start > timeout:
                osd_log = sorted((cluster.dir / "log").glob("*osd*"))
                tail = osd_log[-1].read_text(errors="replace")[-3000:] if osd_log else ""
                pytest.fail(f"the cluster serves no new client of {image} {timeout:.0f} s "
                            "after the OSD "
                            f"resumed: {cluster.ceph('osd', 'dump')}\n{tail}")
            continue
        took = time.monotonic() - start
        print(f"the cluster served a new client {took:.0f} s after the OSD resumed")
        return took


def _dd_write(dev: str, payload: Path, seek_mib: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["dd", f"if={payload}", f"of={dev}", "bs=1M", f"seek={seek_mib}", "oflag=direct",
         "status=none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_frozen_osd_gives_errors_in_bounded_time_then_io_resumes(
    lio_stack: ExitStack, tmp_path: Path, cluster: CephCluster
) -> None:
    # Write-through (no librbd cache): each write waits for the OSD. Ops give up after
    # 4 s (librados' op timeout, or the daemon's deadline 1 s later for what librbd
    # holds itself): ABORTED COMMAND 2E/02, then BUSY while librbd still holds them;
    # sd retries both until (retries + 1) x its timeout (6 x 6 s).
    lun, _ = rbd_disk(lio_stack, tmp_path, cluster, "faulty", 16 * MiB,
                      "rados_osd_op_timeout=4", write_through=True)
    dev = lun.block
    assert dev
    name = Path(dev).name
    Path(f"/sys/block/{name}/device/timeout").write_text("6")
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(MiB))
    # The kernel's own reads of a new disk (partition scan) must be over before the
    # freeze: issued with the default 30 s timeout, their retries would hold dd up
    # for up to (5 + 1) x 30 s.
    run("dd", f"if={dev}", "of=/dev/null", "bs=4096", "count=1", "iflag=direct")
    wait_until(lambda: Path(f"/sys/block/{name}/inflight").read_text().split() == ["0", "0"],
               f"{dev} idle")
    bound = 6 * 6 + 30  # sd's budget, plus one op timeout and the guest's slowness

    # 1. Frozen for good: dd fails within the bound, and nothing stays in D state.
    cluster.pause_osd()
    try:
        start = time.monotonic()
        dd = _dd_write(dev, payload, 1)
        try:
            dd.wait(timeout=bound + 60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dd still blocked {bound + 60} s after the OSD froze: "
                        f"{_d_state_tasks()}\n{_dmesg_tail()}")
        took = time.monotonic() - start
        print(f"a write to the frozen cluster failed after {took:.0f} s")
        assert dd.returncode != 0, "a write to a frozen cluster reported success"
        assert took <= bound, f"the error took {took:.0f} s, over the bound of {bound} s\n" \
                              f"{_dmesg_tail()}"
        assert not [t for t in _d_state_tasks() if "dd" in t]
    finally:
        cluster.resume_osd(rejoin=True)  # past the PGs' read lease: see there

    # 2. The OSD runs again: once the cluster serves a new client, the same device
    # writes and reads back (the daemon replaced its client if librbd held on to
    # I/O it never finished, and blocklisted the old one).
    _wait_until_serving(cluster, f"{POOL}/faulty")
    dd = _dd_write(dev, payload, 2)
    _, err = dd.communicate(timeout=120)
    assert dd.returncode == 0, f"{err}\n{_dmesg_tail()}"
    with open(dev, "rb", buffering=0) as disk:
        disk.seek(2 * MiB)
        assert disk.read(MiB) == payload.read_bytes()

    # 3. A short freeze inside the bound: the retries carry the write through.
    cluster.pause_osd()
    try:
        dd = _dd_write(dev, payload, 4)
        time.sleep(8)
    finally:
        cluster.resume_osd()
    _, err = dd.communicate(timeout=bound + 60)
    assert dd.returncode == 0, f"a write across a short freeze failed: {err}"
    with open(dev, "rb", buffering=0) as disk:
        disk.seek(4 * MiB)
        assert disk.read(MiB) == payload.read_bytes()
