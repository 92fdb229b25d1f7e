"""A throw-away single-node Ceph cluster on loopback, for tests and trials of vdisk_rbd.

One monitor, one OSD on memstore (its objects live in the OSD's memory), no manager,
no authentication, pools of size 1. Everything (config, monitor store, logs, sockets)
lives in one directory; nothing listens beyond 127.0.0.1. Start-up takes about 30 s
under the lab VM's TCG emulation, a few seconds on real hardware.

Facts this relies on (Debian 12's Ceph 16.2.15):

- the guest's host name is no valid CRUSH name, so the OSD does not place itself
  (``osd crush update on start = false``) and is put under a ``host`` bucket by hand;
- the OSD is registered with the uuid it is made with (``ceph osd create UUID``,
  ``ceph-osd --mkfs --osd-uuid UUID``);
- ``ceph-mon`` needs a CPU with the instructions the erasure-code plugin probes for
  (the lab VM runs QEMU with ``-cpu max``);
- without a manager there are no PG statistics, so readiness is a write through the
  pool (``rados put``), which blocks until the placement groups are active.

Usage::

    with CephCluster(Path("/tmp/ceph")) as cluster:
        cluster.create_pool("rbd")
        cluster.rbd("create", "--size", "1G", "rbd/disk")
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

#: The Debian packages the cluster needs (``ceph-common`` brings ``ceph``/``rbd``/``rados``).
PACKAGES = ("ceph-mon", "ceph-osd", "ceph-common")

# Every client command gives up after this many seconds instead of hanging.
_CLIENT_TIMEOUT = 60


class CephError(RuntimeError):
    """A cluster command failed or the cluster did not come up."""


def missing_tools() -> list[str]:
    """The Ceph programs not installed (empty when a cluster can be started)."""
    tools = ("ceph-mon", "ceph-osd", "monmaptool", "ceph-authtool", "ceph", "rbd", "rados")
    return [t for t in tools if shutil.which(t) is None]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CephCluster:
    """A running single-node cluster rooted at ``directory`` (created, then removed)."""

    def __init__(self, directory: Path, *, memstore_bytes: int = 2 << 30) -> None:
        self.dir = directory
        self.port = _free_port()
        self.fsid = str(uuid.uuid4())
        self.conf = directory / "ceph.conf"
        self.memstore_bytes = memstore_bytes
        self._mon: subprocess.Popen[bytes] | None = None
        self._osd: subprocess.Popen[bytes] | None = None
        self.osd_id = -1
        self.osd_uuid = str(uuid.uuid4())

    # -- configuration -----------------------------------------------------------

    def conf_text(self) -> str:
        d = self.dir
        return "\n".join([
            "[global]",
            f"fsid = {self.fsid}",
            f"mon host = [v1:127.0.0.1:{self.port}]",
            "mon initial members = a",
            "public network = 127.0.0.0/8",
            "ms bind msgr2 = false",  # one legacy (v1) address: nothing to negotiate
            "ms bind ipv6 = false",
            "auth cluster required = none",
            "auth service required = none",
            "auth client required = none",
            "osd pool default size = 1",
            "osd pool default min size = 1",
            "osd pool default pg autoscale mode = off",
            "mon allow pool size one = true",
            "mon allow pool delete = true",
            "mon warn on pool no redundancy = false",
            "osd objectstore = memstore",
            f"memstore device bytes = {self.memstore_bytes}",
            "osd crush update on start = false",
            "osd class update on start = false",
            "osd pool default pg num = 8",
            "osd pool default pgp num = 8",
            f"run dir = {d}/run",
            f"admin socket = {d}/run/$name.asok",
            f"pid file = {d}/run/$name.pid",
            f"log file = {d}/log/$name.log",
            f"mon data = {d}/mon/$name",
            f"osd data = {d}/osd/$name",
            f"keyring = {d}/keyring",
            "",
        ])

    # -- commands ----------------------------------------------------------------

    def _run(self, *argv: str, timeout: float = _CLIENT_TIMEOUT) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise CephError(f"{' '.join(argv)}: no answer within {timeout} s") from exc
        if proc.returncode:
            raise CephError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def ceph(self, *args: str, timeout: float = _CLIENT_TIMEOUT) -> str:
        """Run ``ceph ARGS`` against this cluster and return its output."""
        return self._run("ceph", "-c", str(self.conf), "--connect-timeout", "30", *args,
                         timeout=timeout)

    def rbd(self, *args: str, timeout: float = _CLIENT_TIMEOUT) -> str:
        """Run ``rbd ARGS`` against this cluster and return its output."""
        return self._run("rbd", "-c", str(self.conf), *args, timeout=timeout)

    def rados(self, *args: str, timeout: float = _CLIENT_TIMEOUT) -> str:
        """Run ``rados ARGS`` against this cluster and return its output."""
        return self._run("rados", "-c", str(self.conf), *args, timeout=timeout)

    # -- life cycle --------------------------------------------------------------

    def start(self) -> CephCluster:
        for sub in ("run", "log", "mon", "osd"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.conf_text())
        conf = str(self.conf)
        self._run("ceph-authtool", "--create-keyring", str(self.dir / "keyring"),
                  "--gen-key", "-n", "mon.", "--cap", "mon", "allow *")
        monmap = str(self.dir / "monmap")
        self._run("monmaptool", "--create", "--fsid", self.fsid,
                  "--addv", "a", f"[v1:127.0.0.1:{self.port}]", monmap)
        self._run("ceph-mon", "-c", conf, "--mkfs", "-i", "a", "--monmap", monmap)
        self._mon = self._daemon("ceph-mon", "-i", "a")
        self.ceph("mon", "stat", timeout=120)
        self.osd_id = int(self.ceph("osd", "create", self.osd_uuid).strip())
        (self.dir / "osd" / f"osd.{self.osd_id}").mkdir(exist_ok=True)
        self._run("ceph-osd", "-c", conf, "-i", str(self.osd_id), "--mkfs",
                  "--osd-uuid", self.osd_uuid, timeout=120)
        self.ceph("osd", "crush", "add-bucket", "node", "host")
        self.ceph("osd", "crush", "move", "node", "root=default")
        self.ceph("osd", "crush", "add", f"osd.{self.osd_id}", "1.0", "host=node")
        self.start_osd()
        return self

    def _daemon(self, program: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.dir / "log" / f"{program}.out", "ab") as log:
            return subprocess.Popen([program, "-f", "-c", str(self.conf), *args],
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def start_osd(self) -> None:
        """(Re)start the OSD and wait until the monitor sees it up.

        memstore keeps the objects in the OSD's memory, so a restarted OSD comes back
        empty: tests that stop it do so with SIGSTOP (:meth:`pause_osd`) instead.
        """
        self._osd = self._daemon("ceph-osd", "-i", str(self.osd_id))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self._osd.poll() is not None:
                raise CephError(f"ceph-osd exited with {self._osd.returncode}; see "
                                f"{self.dir}/log")
            if f"osd.{self.osd_id} up" in self.ceph("osd", "dump"):
                return
            time.sleep(1)
        raise CephError("the OSD did not come up within 180 s")

    def pause_osd(self) -> None:
        """Freeze the OSD (SIGSTOP): the cluster is unreachable for I/O, data kept."""
        assert self._osd is not None
        os.kill(self._osd.pid, signal.SIGSTOP)

    def resume_osd(self, *, rejoin: bool = False) -> None:
        """Let a frozen OSD run again. ``rejoin``: also mark it down, so that it boots
        into a new interval. A lone OSD frozen for longer than its PGs' read lease
        (heartbeat grace x read lease ratio: 16 s) finds them "laggy" when it runs
        again and parks their client ops for good (no peer renews the lease; seen in
        the lab, and ceph/ceph-container#1682); a new interval ends that."""
        assert self._osd is not None
        os.kill(self._osd.pid, signal.SIGCONT)
        if not rejoin:
            return
        self.ceph("osd", "down", str(self.osd_id))
        deadline = time.monotonic() + 180
        while f"osd.{self.osd_id} up" not in self.ceph("osd", "dump"):
            if time.monotonic() > deadline:
                raise CephError(f"osd.{self.osd_id} did not rejoin within 180 s")
            time.sleep(1)

    def create_pool(self, pool: str, pg_num: int = 8) -> None:
        """An RBD pool of size 1, usable when this returns."""
        self.ceph("osd", "pool", "create", pool, str(pg_num), str(pg_num))
        self.ceph("osd", "pool", "set", pool, "size", "1", "--yes-i-really-mean-it")
        self.ceph("osd", "pool", "application", "enable", pool, "rbd")
        # Blocks until the placement groups are active (no manager, so no PG stats).
        self.rados("-p", pool, "put", "tcmu-scst-probe", "/dev/null", timeout=180)
        self.rados("-p", pool, "rm", "tcmu-scst-probe")

    def stop(self) -> None:
        for proc in (self._osd, self._mon):
            if proc is None or proc.poll() is not None:
                continue
            try:
                os.kill(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._osd = self._mon = None

    def __enter__(self) -> CephCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
