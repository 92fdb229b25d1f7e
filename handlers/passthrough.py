"""SCST's pass-through handlers: a local SCSI device served to initiators through TCMU.

``dev_disk`` (type 0), ``dev_tape`` (1), ``dev_processor`` (3), ``dev_cdrom`` (5),
``dev_modisk`` (7), ``dev_changer`` (8) and ``dev_raid`` (0Ch) each forward the
initiator's CDBs to the device at H:C:I:L through its ``/dev/sgN`` (SG_IO).

Before a command reaches the device it is decoded with the type's table
(``passthrough_ops``): the data direction and the length the CDB implies. TCMU gives
neither (tcmu-abi §2.6), so:

* an opcode the table does not know is refused with INVALID COMMAND OPERATION CODE
  (as SCST did) unless the params list it in ``vendor_in``/``vendor_out``;
* a Data-Out command whose buffer is shorter than the CDB demands is refused with
  INVALID FIELD IN CDB instead of sending the device garbage;
* Data-In: ``dxfer_len`` is the buffer length, so the device can never write past
  it; the initiator gets ``dxfer_len - resid`` bytes. Data-Out: the CDB's length.

Modes (SCST's STRICT_SERIALIZING as a per-device option, default on for tapes and
changers): *serialized*, where :meth:`handle` (inline, on the ring thread, so ring
order is kept) only queues and one thread sends one command at a time; and
*concurrent*, where the runner's worker threads each issue their own SG_IO.

Task management (:meth:`on_tmr`): an aborted command still queued here is completed
with TASK ABORTED without being sent. A LUN/target reset also drops every queued
command and resets the device (SG_SCSI_RESET_DEVICE, on the ring thread: new
commands wait for the reset). Limit: an SG_IO already in the device cannot be
cancelled from userspace; it completes (or times out) on its own, and the kernel
ignores its status.

A device that stops answering (ENXIO from sg: offline; DID_NO_CONNECT,
DID_BAD_TARGET) is gone for this handler: later commands get LOGICAL UNIT NOT
SUPPORTED without an ioctl, until its sysfs ``state`` reads ``running`` again (an
offline device brought back). A deleted one (ENODEV from its sg node, which stays
detached, or its sysfs entry gone) never comes back to this handler; a reopen (``dev_config`` swap,
restart) finds the new device.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tcmu_scst.command import (
    CHECK_CONDITION,
    GOOD,
    TASK_ABORTED,
    Command,
    Direction,
    Result,
    TmrNotice,
)
from tcmu_scst.errors import HandlerError
from tcmu_scst.handler import Handler
from tcmu_scst.kernel.scsi_sysfs import (
    SYSFS,
    TYPE_HANDLERS,
    ScsiDeviceInfo,
    find_by_identity,
    read_device,
)
from tcmu_scst.scsi.sense import HARDWARE_ERROR, ILLEGAL_REQUEST, UNIT_ATTENTION

from . import passthrough_ops as ops
from .passthrough_params import PassthroughParams, parse_dev_config
from .sg_io import IoctlFn, SgDevice, SgDirection, SgIoError
from .sg_mapping import GONE_ERRNOS, LUN_NOT_SUPPORTED, check, is_gone, map_errno, map_result

__all__ = [
    "PassthroughHandler",
    "PassthroughParams",
    "find_by_identity",
    "open_dev_config",
    "open_passthrough",
]

log = logging.getLogger("tcmu_scst.handlers.passthrough")

# tcmu-abi §2.4 TMR types.
TMR_ABORT_TASK = 1
TMR_ABORT_TASK_SET = 2
TMR_CLEAR_TASK_SET = 4
TMR_LUN_RESET = 5
TMR_TARGET_WARM_RESET = 6
TMR_TARGET_COLD_RESET = 7
RESET_TMRS = frozenset({TMR_LUN_RESET, TMR_TARGET_WARM_RESET, TMR_TARGET_COLD_RESET})

TASK_ABORTED_RESULT = Result(TASK_ABORTED)
INVALID_OPCODE = check(ILLEGAL_REQUEST, 0x20, 0x00)
INVALID_FIELD_IN_CDB = check(ILLEGAL_REQUEST, 0x24, 0x00)

_SG_DIRECTIONS = {
    Direction.NONE: SgDirection.NONE,
    Direction.IN: SgDirection.FROM_DEV,
    Direction.OUT: SgDirection.TO_DEV,
}
#: Block size assumed until READ CAPACITY answers (no medium yet, say).
_DEFAULT_BLOCK = {ops.TYPE_DISK: 512, ops.TYPE_MOD: 512, ops.TYPE_CDROM: 2048}
_CAPACITY_TYPES = frozenset(_DEFAULT_BLOCK)
_PROBE_TRIES = 3  # a fresh device answers its first commands with UNIT ATTENTION
#: How long close() waits for a command still in the device before leaving the fd to
#: the worker (it closes it when the SG_IO returns): a tape ERASE may take hours.
CLOSE_WAIT = 30.0
#: CDB length by opcode group (what the ring uses too, tcmu-abi §2.3).
_GROUP_CDB_LEN = (6, 10, 10, 12, 16, 12, 10, 10)


@dataclass(frozen=True, slots=True)
class Plan:
    """How one command goes to the device."""

    direction: Direction
    dxfer_len: int


class PassthroughHandler(Handler):
    """One local SCSI device, served as is."""

    handler_name: ClassVar[str] = ""

    def __init__(
        self,
        params: PassthroughParams,
        *,
        sysfs: Path = SYSFS,
        dev_root: Path = Path("/dev"),
        ioctl: IoctlFn = fcntl.ioctl,
    ) -> None:
        self.params = params.validate()
        self.info: ScsiDeviceInfo = read_device(params.hctl, sysfs)
        if self.info.device_type != params.device_type:
            right = TYPE_HANDLERS.get(self.info.device_type)
            advice = f"use {right}" if right else "no pass-through handler serves that type"
            raise HandlerError(f"{self.info.describe()}; {advice}")
        if self.info.sg is None:
            raise HandlerError(
                f"{params.hctl} has no SCSI generic node; load the sg module (modprobe sg)"
            )
        self.label = f"{params.handler} {params.hctl}"
        self.serialized = params.effective_serialized
        self.timeout_ms = params.effective_timeout * 1000
        self.state = ops.DeviceState(params.device_type, _DEFAULT_BLOCK.get(params.device_type, 0))
        self.device = SgDevice.open(str(dev_root / Path(self.info.sg).name), ioctl=ioctl)
        self._lock = threading.Lock()
        self._inflight: dict[int, Command] = {}  # ids in the device right now
        self._done: set[int] = set()  # ids completed since they last started
        self._aborted: set[int] = set()  # concurrent mode: ids to abort when they start
        self._queue: collections.deque[Command] = collections.deque()  # serialized mode
        self._wakeup = threading.Condition(self._lock)
        self._closing = False
        self._gone = False
        self._detached = False  # the sg node answered ENODEV: gone for good
        self._state_file = sysfs / "class/scsi_device" / params.hctl / "device/state"
        self._refused_ops: set[int] = set()
        self._worker: threading.Thread | None = None
        self._worker_exited = False
        self._worker_owns_fd = False
        try:
            self._probe()
        except BaseException:
            self.device.close()
            raise
        if self.serialized:
            self._worker = threading.Thread(
                target=self._serial_loop, name=f"sg-{params.hctl}", daemon=True
            )
            self._worker.start()
        log.info(
            "%s: serving %s %s (%s) through %s, %s, block size %d, timeout %d s",
            self.label, self.info.vendor, self.info.model, self.info.type_name,
            self.info.sg, "serialized" if self.serialized else "concurrent",
            self.state.block_size, params.effective_timeout,
        )

    # -- the Handler interface ------------------------------------------------------

    def handle(self, cmd: Command) -> Result | None:
        if not self.serialized:
            return self._run(cmd)
        with self._wakeup:
            self._queue.append(cmd)
            self._wakeup.notify()
        return None

    def is_inline(self, cmd: Command) -> bool:
        # Serialized: handle() only queues, and running it on the ring thread keeps
        # ring order, which a stateful device needs. Concurrent: every command may
        # block in the device, so it goes to a worker thread.
        return self.serialized

    def on_tmr(self, notice: TmrNotice) -> None:
        reset = notice.tmr_type in RESET_TMRS
        dropped: list[Command] = []
        with self._lock:
            ids = set(notice.cmd_ids)
            for cmd in list(self._queue):
                if cmd.cmd_id in ids or reset:
                    self._queue.remove(cmd)
                    dropped.append(cmd)
            queued_ids = {cmd.cmd_id for cmd in dropped}
            for cmd_id in ids - queued_ids:
                if cmd_id in self._inflight:
                    log.info(
                        "%s: cmd_id %d is already in the device; it cannot be cancelled",
                        self.label, cmd_id,
                    )
                elif not self.serialized and cmd_id not in self._done:
                    # Still waiting for a worker thread: abort it when it starts.
                    self._aborted.add(cmd_id)
        for cmd in dropped:
            cmd.complete(TASK_ABORTED_RESULT)
        if dropped:
            log.info("%s: TMR %d: %d queued command(s) aborted unsent",
                     self.label, notice.tmr_type, len(dropped))
        if reset and not self._gone:
            try:
                self.device.reset_device()
                log.warning("%s: TMR %d: device reset", self.label, notice.tmr_type)
            except SgIoError as err:
                log.error("%s: TMR %d: %s", self.label, notice.tmr_type, err)

    def close(self) -> None:
        with self._wakeup:
            if self._closing:
                return
            self._closing = True
            leftover = list(self._queue)
            self._queue.clear()
            self._wakeup.notify_all()
        for cmd in leftover:
            cmd.complete(TASK_ABORTED_RESULT)
        if self._worker is not None:
            self._worker.join(CLOSE_WAIT)
            with self._lock:
                if not self._worker_exited:
                    # Closing the fd under a running SG_IO could hand its number to
                    # another open; the worker closes it when the command returns.
                    self._worker_owns_fd = True
                    log.warning("%s: a command is still in the device; %s stays open "
                                "until it returns", self.label, self.info.sg)
                    return
        self.device.close()

    # -- execution --------------------------------------------------------------------

    def _serial_loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue and not self._closing:
                    self._wakeup.wait()
                if not self._queue:
                    self._worker_exited = True
                    if self._worker_owns_fd:
                        self.device.close()
                    return
                cmd = self._queue.popleft()
            try:
                result = self._run(cmd)
            except Exception:
                log.exception("%s: failed on %r", self.label, cmd)
                result = check(HARDWARE_ERROR, 0x44, 0x00)
            cmd.complete(result)

    def _run(self, cmd: Command) -> Result:
        with self._lock:
            if cmd.cmd_id in self._aborted:
                self._aborted.discard(cmd.cmd_id)
                self._done.add(cmd.cmd_id)
                return TASK_ABORTED_RESULT
            self._inflight[cmd.cmd_id] = cmd
            self._done.discard(cmd.cmd_id)
        try:
            return self.execute(cmd)
        finally:
            with self._lock:
                self._inflight.pop(cmd.cmd_id, None)
                self._done.add(cmd.cmd_id)

    def plan(self, cmd: Command) -> Plan | Result:
        """How ``cmd`` goes to the device, or the refusal the initiator gets instead."""
        if cmd.bidi_in is not None:
            return INVALID_OPCODE  # bidirectional commands (XDWRITEREAD) are obsolete
        if len(cmd.cdb) < _GROUP_CDB_LEN[cmd.cdb[0] >> 5]:
            return INVALID_FIELD_IN_CDB  # shorter than its opcode says: never decode past it
        buffer_len = cmd.data.length
        opcode = cmd.cdb[0]
        decoded = ops.decode(cmd.cdb, self.state)
        if decoded is None:
            if opcode in self.params.vendor_in:
                return Plan(Direction.IN, buffer_len)
            if opcode in self.params.vendor_out:
                return Plan(Direction.OUT, buffer_len)
            self._log_refused(opcode)
            return INVALID_OPCODE
        if decoded.direction is Direction.NONE:
            return Plan(Direction.NONE, 0)
        if decoded.direction is Direction.IN:
            return Plan(Direction.IN, buffer_len)
        if decoded.length is None:
            return Plan(Direction.OUT, buffer_len)
        if decoded.length > buffer_len:
            log.info(
                "%s: %s needs %d bytes of Data-Out, the initiator sent %d: refused",
                self.label, cmd.cdb[:1].hex(), decoded.length, buffer_len,
            )
            return INVALID_FIELD_IN_CDB
        return Plan(Direction.OUT, decoded.length)

    def execute(self, cmd: Command) -> Result:
        """Check, send and map one command (any thread)."""
        if self._gone and not self._back():
            return LUN_NOT_SUPPORTED
        plan = self.plan(cmd)
        if isinstance(plan, Result):
            return plan
        views = cmd.data.slices(0, plan.dxfer_len) if plan.dxfer_len else []
        try:
            res = self.device.execute(
                cmd.cdb, _SG_DIRECTIONS[plan.direction], views, plan.dxfer_len, self.timeout_ms
            )
        except SgIoError as err:
            if err.errno in GONE_ERRNOS:
                # sg answers ENODEV once its device is being deleted (the node stays
                # detached), ENXIO while the device is offline (it may come back).
                self._detached = err.errno == errno.ENODEV
                self._mark_gone(str(err))
            else:
                log.error("%s: cdb %s: %s", self.label, cmd.cdb.hex(), err)
            return map_errno(err.errno)
        if is_gone(res):
            self._mark_gone(f"host status {res.host_status:#x}")
        result = map_result(res, plan.direction)
        if result.status == GOOD:
            self._snoop(cmd, plan, res.transferred)
        if plan.direction is Direction.NONE and cmd.data.length and result.data_in_len is None:
            # The initiator gave a buffer for a command without data: if it expected
            # Data-In, make sure it gets zeros, never the buffer's old bytes.
            result = Result(result.status, result.sense, 0)
        return result

    def _mark_gone(self, why: str) -> None:
        if not self._gone:
            self._gone = True
            log.error(
                "%s: the device is gone (%s); answering LOGICAL UNIT NOT SUPPORTED",
                self.label, why,
            )

    def _back(self) -> bool:
        """Whether a gone device serves again: one set ``running`` after ``offline``
        does; one whose sg node is detached or whose sysfs entry is gone does not."""
        if self._detached:
            return False
        try:
            state = self._state_file.read_text().strip()
        except OSError:
            return False
        if state != "running":
            return False
        if self._gone:
            self._gone = False
            log.warning("%s: the device is running again; serving it", self.label)
        return True

    def _log_refused(self, opcode: int) -> None:
        level = logging.DEBUG if opcode in self._refused_ops else logging.WARNING
        self._refused_ops.add(opcode)
        log.log(
            level,
            "%s: refused opcode %02xh: not a %s command in the SCST tables; list it in "
            "vendor_in or vendor_out to forward it",
            self.label, opcode, self.info.type_name,
        )

    # -- device state (block size) ------------------------------------------------------

    def _probe(self) -> None:
        """Learn the block size: READ CAPACITY(10) for disks/MO/CD, MODE SENSE for tapes."""
        if self.state.device_type in _CAPACITY_TYPES:
            data = self._probe_command(bytes([0x25] + [0] * 9), 8)
            if len(data) >= 8:
                self._set_block_size(int.from_bytes(data[4:8], "big"))
        elif self.state.device_type == ops.TYPE_TAPE:
            data = self._probe_command(bytes([0x1A, 0, 0, 0, 12, 0]), 12)
            self._update_from_mode_data(data, ten=False)

    def _probe_command(self, cdb: bytes, length: int) -> bytes:
        buf = bytearray(length)
        for _ in range(_PROBE_TRIES):
            try:
                res = self.device.execute(
                    cdb, SgDirection.FROM_DEV, [memoryview(buf)], length, self.timeout_ms
                )
            except SgIoError as err:
                raise HandlerError(f"{self.label}: cannot talk to the device: {err}") from err
            if res.status == GOOD and res.host_status == 0:
                return bytes(buf[: res.transferred])
            if not (res.status == CHECK_CONDITION and len(res.sense) > 2
                    and res.sense[2] & 0x0F == UNIT_ATTENTION):
                break
        log.info("%s: no block size from the device yet (%s); assuming %d",
                 self.label, cdb[:1].hex(), self.state.block_size)
        return b""

    def _set_block_size(self, size: int) -> None:
        if size != self.state.block_size and (size == 0 or 1 <= size <= 1 << 24):
            log.info("%s: block size %d -> %d", self.label, self.state.block_size, size)
            self.state.block_size = size

    def _snoop(self, cmd: Command, plan: Plan, transferred: int) -> None:
        """Follow block-size changes in successful READ CAPACITY / MODE SENSE / SELECT."""
        op = cmd.cdb[0]
        dtype = self.state.device_type
        if dtype in _CAPACITY_TYPES:
            if op == 0x25 and transferred >= 8:
                self._set_block_size(int.from_bytes(cmd.data.read(4, 4), "big"))
            elif op == 0x9E and cmd.cdb[1] & 0x1F == 0x10 and transferred >= 12:
                self._set_block_size(int.from_bytes(cmd.data.read(8, 4), "big"))
        elif dtype == ops.TYPE_TAPE and op in (0x15, 0x55, 0x1A, 0x5A):
            length = transferred if plan.direction is Direction.IN else plan.dxfer_len
            self._update_from_mode_data(cmd.data.read(0, length), ten=op in (0x55, 0x5A))

    def _update_from_mode_data(self, data: bytes, *, ten: bool) -> None:
        """Take the block length from a mode parameter list's first block descriptor."""
        header = 8 if ten else 4
        if len(data) < header:
            return
        desc_len = int.from_bytes(data[6:8], "big") if ten else data[3]
        long_lba = ten and bool(data[4] & 0x01)
        if long_lba and desc_len >= 16 and len(data) >= header + 16:
            self._set_block_size(int.from_bytes(data[header + 12 : header + 16], "big"))
        elif not long_lba and desc_len >= 8 and len(data) >= header + 8:
            self._set_block_size(int.from_bytes(data[header + 5 : header + 8], "big"))


class DevDisk(PassthroughHandler):
    handler_name: ClassVar[str] = "dev_disk"


class DevTape(PassthroughHandler):
    handler_name: ClassVar[str] = "dev_tape"


class DevProcessor(PassthroughHandler):
    handler_name: ClassVar[str] = "dev_processor"


class DevCdrom(PassthroughHandler):
    handler_name: ClassVar[str] = "dev_cdrom"


class DevModisk(PassthroughHandler):
    handler_name: ClassVar[str] = "dev_modisk"


class DevChanger(PassthroughHandler):
    handler_name: ClassVar[str] = "dev_changer"


class DevRaid(PassthroughHandler):
    handler_name: ClassVar[str] = "dev_raid"


HANDLER_CLASSES: dict[str, type[PassthroughHandler]] = {
    cls.handler_name: cls
    for cls in (DevDisk, DevTape, DevProcessor, DevCdrom, DevModisk, DevChanger, DevRaid)
}


def open_passthrough(
    params: PassthroughParams,
    *,
    sysfs: Path = SYSFS,
    dev_root: Path = Path("/dev"),
    ioctl: IoctlFn = fcntl.ioctl,
) -> PassthroughHandler:
    params.validate()
    return HANDLER_CLASSES[params.handler](params, sysfs=sysfs, dev_root=dev_root, ioctl=ioctl)


def open_dev_config(dev_config: str) -> PassthroughHandler:
    """The daemon's factory (``service.registry``): ``dev_disk/hctl=...`` etc."""
    return open_passthrough(parse_dev_config(dev_config))
