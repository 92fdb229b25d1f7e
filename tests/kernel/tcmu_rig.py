"""What the kernel tests share, in the lab guest: serving a TCMU user backstore with
one of our handlers, exporting it, and the few commands every test drives it with.

Two ways to serve, both exported through tcm_loop so the kernel's own initiator (sd, sr, st,
sg) sees the LUN:

* :func:`serve` — no daemon: the test opens the UIO device and runs a
  :class:`DeviceRunner` with the handler the dev_config names (nobody answers
  netlink: ``nl_reply_supported=-1``). For handler-focused tests.
* :class:`DaemonThread` — the real daemon (netlink, recovery, control socket) on a
  thread of the test process. For control-plane tests.

Everything made is undone through the caller's :class:`contextlib.ExitStack` (the
``lio_stack`` fixture), last made first undone.

Then one of each helper the tests used to copy: :func:`wait_until`, :func:`dd`,
:func:`sg_raw`, :func:`uio_names`, scsi_debug (:func:`load_scsi_debug`,
:func:`unload_scsi_debug`), libiscsi (:func:`iscsi_inq`, :func:`product_id`,
:func:`iscsi_perf`) and the compliance check (:func:`check_compliance`).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tcmu_scst.handler import Handler
from tcmu_scst.kernel import uio
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import LoopbackTpg
from tcmu_scst.kernel.lio import CoreBackstore, UserBackstore, UserBackstoreOptions
from tcmu_scst.kernel.netlink import TcmuNetlink
from tcmu_scst.kernel.scsi_nodes import ScsiNodes, wait_for_scsi_nodes
from tcmu_scst.kernel.scsi_sysfs import ScsiDeviceInfo, find_by_identity, read_device
from tcmu_scst.lab import compliance
from tcmu_scst.service import registry
from tcmu_scst.service.daemon import Daemon
from tcmu_scst.service.device import DeviceRunner, serve_in_thread
from tcmu_scst.service.hotplug import Hotplug


@dataclass
class Served:
    backstore: UserBackstore
    handler: Handler
    runner: DeviceRunner
    port: uio.UioDevice
    lun: ScsiNodes | None


_counter = iter(range(10_000))
MiB = 1 << 20


def export_loop(
    stack: ExitStack, backstore: CoreBackstore | str, lun: int = 0, *, need_block: bool = True
) -> ScsiNodes:
    """Export ``backstore`` (or its path under target/) as LUN ``lun`` of a new tcm_loop
    target; wait for the kernel's initiator to make its sg (and block) node.

    ``need_block=False`` for device types without a block node (tape, changer...).
    """
    tpg = LoopbackTpg.create(Configfs())
    stack.callback(tpg.delete)  # LUN links, nexus, TPG and target, in that order
    tpg.add_lun(lun, backstore)
    return tpg.wait_for_lun(lun, need_block=need_block)


def create_backstore(
    stack: ExitStack,
    dev_config: str,
    size: int,
    *,
    block_size: int = 512,
    name: str | None = None,
    nl_reply_supported: int | None = -1,
    cmd_time_out: int | None = None,
) -> UserBackstore:
    name = name or f"tcmu{next(_counter)}"
    options = UserBackstoreOptions(
        dev_config=dev_config,
        dev_size=size,
        hw_block_size=block_size,
        nl_reply_supported=nl_reply_supported,
        cmd_time_out=cmd_time_out,
    )
    backstore = UserBackstore.create(Configfs(), name, options)
    stack.callback(backstore.delete)
    return backstore


def serve(
    stack: ExitStack,
    dev_config: str,
    size: int,
    *,
    block_size: int = 512,
    threads: int = 2,
    export: bool = True,
    need_block: bool = True,
    lun: int = 0,
    handler: Handler | None = None,
) -> Served:
    """Create a user backstore, serve it with its handler, export it on tcm_loop."""
    backstore = create_backstore(stack, dev_config, size, block_size=block_size)
    handler = handler or registry.open_handler(dev_config)
    info = uio.find_device(backstore.hba_index, backstore.name)
    port = uio.UioDevice(info)
    runner, stop = serve_in_thread(port, handler, threads, backstore.name)
    stack.callback(stop)
    exported = None
    if export:
        exported = export_loop(stack, backstore, lun, need_block=need_block)
    return Served(backstore, handler, runner, port, exported)


class DaemonThread:
    """The real daemon on a thread (control socket under ``tmp``); ``start``/``stop`` or
    a ``with`` block. ``hotplug`` and ``netlink`` replace the daemon's own (hot-plug tests)."""

    def __init__(
        self,
        tmp: Path,
        threads: int = 2,
        *,
        hotplug: Hotplug | None = None,
        netlink: TcmuNetlink | None = None,
    ) -> None:
        self.socket = tmp / "control.sock"
        self.hotplug = hotplug
        self.daemon = Daemon(
            control_socket=self.socket, threads=threads, hotplug=hotplug, netlink=netlink
        )
        self.thread = threading.Thread(target=self._run, name="daemon", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as err:  # surfaced by stop()
            self.error = err

    def start(self) -> DaemonThread:
        self.daemon.start()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "daemon did not stop"
        if self.error is not None:
            raise self.error

    def __enter__(self) -> DaemonThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serves(self, name: str) -> bool:
        return any(key[1] == name for key in list(self.daemon.devices))


# ---- small commands ------------------------------------------------------------------


def wait_until(
    cond: Callable[[], object], what: str, timeout: float = 30.0, every: float = 0.1
) -> None:
    """Poll ``cond`` every ``every`` seconds until it is true; fail the test naming
    ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def dd(*args: str) -> None:
    subprocess.run(["dd", *args, "status=none"], check=True, timeout=120)


def sg_raw(node: str, cdb: bytes, *, read: int = 0, write: bytes = b"", timeout: int = 20,
           out: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Send ``cdb`` with sg_raw (``read`` bytes of Data-In, optionally saved to ``out``;
    ``write`` as Data-Out); its exit status says GOOD (0) or not, stderr the sense."""
    args = ["sg_raw", "-t", str(timeout)]
    if read:
        args += ["-r", str(read)]
        if out is not None:
            args += ["-o", str(out)]
    if write:
        src = Path(f"/tmp/sgraw-{os.getpid()}-{threading.get_ident()}.bin")
        src.write_bytes(write)
        args += ["-s", str(len(write)), "-i", str(src)]
    args += [node, *(f"{b:02x}" for b in cdb)]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout + 30)


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def _checked(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: "
                             f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def ext4_round_trip(dev: str, mnt: Path, run: Runner = _checked) -> None:
    """mkfs.ext4 on ``dev``, files written and synced, umount, ``fsck -n`` clean, the
    files read back from a read-only mount. ``run(*argv, check=)`` runs each command."""
    run("modprobe", "ext4")
    run("mkfs.ext4", "-q", "-F", dev)
    mnt.mkdir(exist_ok=True)
    run("mount", dev, str(mnt))
    files = {f"f{i}": os.urandom(300_000 + i * 4097) for i in range(8)}
    try:
        for name, data in files.items():
            (mnt / name).write_bytes(data)
        run("sync")
    finally:
        run("umount", str(mnt))
    fsck = run("fsck.ext4", "-n", "-f", dev, check=False)
    assert fsck.returncode == 0, f"fsck -n found problems: {fsck.stdout}{fsck.stderr}"
    run("mount", "-o", "ro", dev, str(mnt))
    try:
        for name, data in files.items():
            assert (mnt / name).read_bytes() == data, f"{name} came back different"
    finally:
        run("umount", str(mnt))


def fio_verify(dev: str, jobs: tuple[tuple[str, str], ...], run: Runner = _checked) -> None:
    """fio random writes then verify, direct I/O, QD 8, one run per ``(bs, size)``.

    Fixed sizes keep fio's random map on: no two writes overlap, so a mismatch is
    corruption, not a race between overlapping writes."""
    for bs, size in jobs:
        fio = run("fio", f"--name=verify{bs}", f"--filename={dev}", "--rw=randwrite",
                  f"--bs={bs}", f"--size={size}", "--direct=1", "--ioengine=libaio",
                  "--iodepth=8", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1",
                  "--verify_state_save=0", check=False)
        assert fio.returncode == 0, fio.stdout + fio.stderr


def fstrim_frees(dev: str, mnt: Path, allocated: Callable[[], int],
                 run: Runner = _checked) -> None:
    """A thin device gives space back: ext4 (made without discard) holds a 32 MiB file,
    the file goes, fstrim; ``allocated()`` (bytes the store holds) drops by 24 MiB or
    more, and fsck stays clean."""
    run("modprobe", "ext4")
    run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", dev)
    mnt.mkdir(exist_ok=True)
    run("mount", dev, str(mnt))
    try:
        (mnt / "big").write_bytes(os.urandom(32 * MiB))
        run("sync")
        filled = allocated()
        (mnt / "big").unlink()
        run("sync")
        trim = run("fstrim", "-v", str(mnt))
        assert "trimmed" in trim.stdout, trim.stdout
    finally:
        run("umount", str(mnt))
    freed = allocated()
    assert filled >= 32 * MiB, f"only {filled} bytes allocated after writing 32 MiB"
    assert freed <= filled - 24 * MiB, f"fstrim freed too little: {filled} -> {freed}"
    fsck = run("fsck.ext4", "-n", "-f", dev, check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def wait_for_block_size(block: str, size: int, timeout: float = 30.0) -> None:
    """Until sd reports ``size`` bytes for ``block``: TEST UNIT READY (which takes the
    CAPACITY DATA HAS CHANGED unit attention), then a rescan, every half second."""
    name = Path(block).name
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        subprocess.run(["sg_turs", block], check=False, capture_output=True)
        Path(f"/sys/block/{name}/device/rescan").write_text("1")
        seen = int(Path(f"/sys/block/{name}/size").read_text()) * 512
        if seen == size:
            return
        time.sleep(0.5)
    pytest.fail(f"{block} still reports {seen} bytes, not {size}, after {timeout:g} s")


def uio_names() -> list[str]:
    return [Path(p).read_text().strip() for p in glob.glob("/sys/class/uio/uio*/name")]


# ---- scsi_debug: a local SCSI device to pass through -----------------------------------


def unload_scsi_debug(timeout: float = 15.0) -> None:
    """Unload scsi_debug left by an earlier test (its parameters are load-time only).

    Measured on 6.1: once ``ch`` attached to a scsi_debug changer, the module stays
    "in use" (refcnt 1, no holder, no open fd) until the SCSI device is deleted.
    """
    deadline = time.monotonic() + timeout
    while Path("/sys/module/scsi_debug").exists():
        if time.monotonic() > deadline:
            pytest.fail("scsi_debug is still loaded from an earlier test; cannot reload it")
        for device in find_by_identity(vendor="Linux", model="scsi_debug"):
            delete = Path("/sys/class/scsi_device") / device.hctl / "device/delete"
            if delete.exists():
                delete.write_text("1")
        subprocess.run(["modprobe", "-r", "scsi_debug"], check=False, capture_output=True)
        time.sleep(0.2)


def load_scsi_debug(
    modprobe: Callable[..., None], *params: str, need_block: bool = False
) -> ScsiDeviceInfo:
    """(Re)load scsi_debug with one target and one LUN; its device once its nodes exist."""
    unload_scsi_debug()
    modprobe("scsi_debug", "num_tgts=1", "max_luns=1", *params)
    wait_until(lambda: find_by_identity(vendor="Linux", model="scsi_debug"),
               "scsi_debug's device in sysfs", 15)  # fmt: skip
    found = find_by_identity(vendor="Linux", model="scsi_debug")
    assert len(found) == 1, f"more than one scsi_debug device: {found}"
    wait_for_scsi_nodes(found[0].hctl, need_block=need_block)
    return read_device(found[0].hctl)


# ---- libiscsi initiators ----------------------------------------------------------------


def iscsi_inq(initiator: str, url: str) -> subprocess.CompletedProcess[str]:
    """INQUIRY as ``initiator``; url ``iscsi://[user%secret@]host[:port]/iqn/lun``."""
    return subprocess.run(
        ["iscsi-inq", "-i", initiator, url], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def product_id(initiator: str, url: str) -> str:
    """The PRODUCT IDENTIFICATION ``initiator`` sees at ``url`` (our device's name)."""
    done = iscsi_inq(initiator, url)
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        if line.startswith("Product:"):  # iscsi-inq prints "Product:<id padded>"
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no product id in {done.stdout!r}")


def iscsi_perf(initiator: str, url: str, *options: str) -> subprocess.Popen[bytes]:
    """A background session doing I/O as ``initiator`` (``-t SECONDS``, ``-m DEPTH``...)."""
    return subprocess.Popen(
        ["iscsi-perf", "-i", initiator, *options, url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


# ---- libiscsi compliance -----------------------------------------------------------------

RESULTS = Path("/results")


def _publish(log: Path) -> Path:
    """Copy the log to /results (host-visible) when the lab mounted it.

    The run itself logs to a guest-local file: several VMs may share ./results, and
    the parser must never read another run's output.
    """
    if not (os.path.ismount(RESULTS) and os.access(RESULTS, os.W_OK)):
        return log
    target = RESULTS / log.name
    partial = RESULTS / f".{log.name}.{os.getpid()}"
    shutil.copyfile(log, partial)
    partial.replace(target)
    return target


def check_compliance(expectations: Path, factory: compliance.BackstoreFactory, tmp: Path) -> None:
    """Run iscsi-test-cu against ``factory``'s backstore; fail on any regression from
    the ``expectations`` file (its log, ``<stem>.log``, is published to /results)."""
    expected = compliance.parse_expectations(expectations.read_text(), str(expectations))
    log = tmp / f"{expectations.stem}.log"
    try:
        results = compliance.run_compliance(factory, log=log)
    finally:
        if log.exists():
            log = _publish(log)
    assert len(results) > 200, f"only {len(results)} tests ran; see {log}"
    verdict = compliance.compare(results, expected)
    print(compliance.report(results, verdict))
    assert verdict.ok, compliance.report(results, verdict) + f"\nfull output: {log}"
