"""Serve a TCMU user backstore with one of our handlers, in the lab guest.

Two ways, both exported through tcm_loop so the kernel's own initiator (sd, sr, st,
sg) sees the LUN:

* :func:`serve` — no daemon: the test opens the UIO device and runs a
  :class:`DeviceRunner` with the handler the dev_config names (nobody answers
  netlink: ``nl_reply_supported=-1``). For handler-focused tests.
* :class:`DaemonThread` — the real daemon (netlink, recovery, control socket) on a
  thread of the test process. For control-plane tests.

Everything made is undone through the caller's :class:`contextlib.ExitStack` (the
``lio_stack`` fixture), last made first undone.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tcmu_scst.handler import Handler
from tcmu_scst.kernel import uio
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import LoopbackTpg
from tcmu_scst.kernel.lio import CoreBackstore, UserBackstore, UserBackstoreOptions
from tcmu_scst.kernel.scsi_nodes import ScsiNodes
from tcmu_scst.service import registry
from tcmu_scst.service.daemon import Daemon
from tcmu_scst.service.device import DeviceRunner, serve_in_thread


@dataclass
class Served:
    backstore: UserBackstore
    handler: Handler
    runner: DeviceRunner
    port: uio.UioDevice
    lun: ScsiNodes | None


_counter = iter(range(10_000))


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
    """The real daemon on a thread (control socket under ``tmp``)."""

    def __init__(self, tmp: Path, threads: int = 2) -> None:
        self.socket = tmp / "control.sock"
        self.daemon = Daemon(control_socket=self.socket, threads=threads)
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
