"""Test doubles for the pass-through handlers: a fake SG_IO ioctl and a fake sysfs.

Only the ioctl primitive is replaced: :class:`FakeSg` receives the very
``struct sg_io_hdr`` the handler built, reads the CDB and Data-Out through its
pointers (iovec array or flat buffer), and writes Data-In, sense and the status
fields back through them, like the sg driver does.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcmu_scst.command import CHECK_CONDITION, GOOD, Command, DataBuffer, Result
from tcmu_scst.handlers.sg_io import SG_IO, SG_SCSI_RESET, SgIoHdr, SgIovec


@dataclass
class Reply:
    status: int = GOOD
    data: bytes = b""  # Data-In the device sends
    sense: bytes = b""
    host: int = 0
    driver: int = 0
    resid: int | None = None  # None: dxfer_len - bytes actually sent
    delay: float = 0.0


@dataclass
class Sent:
    cdb: bytes
    direction: int
    dxfer_len: int
    data_out: bytes
    timeout: int
    iovec_count: int


Responder = Callable[[Sent], Reply]


def ua_sense() -> bytes:
    sense = bytearray(18)
    sense[0], sense[2], sense[7], sense[12] = 0x70, 0x06, 10, 0x29
    return bytes(sense)


@dataclass
class SimpleDevice:
    """A device that answers READ CAPACITY, MODE SENSE (tape block descriptor),
    READ/WRITE(10) on a byte array, and GOOD without data otherwise."""

    block_size: int = 512
    tape_block: int = 0
    blocks: int = 64
    storage: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        if not self.storage:
            self.storage = bytearray(self.blocks * self.block_size)

    def __call__(self, sent: Sent) -> Reply:
        op = sent.cdb[0]
        if op == 0x25:
            return Reply(data=struct.pack(">II", self.blocks - 1, self.block_size))
        if op == 0x1A:
            bd = struct.pack(">I", 0) + struct.pack(">I", self.tape_block)
            return Reply(data=bytes([11, 0, 0, 8]) + bd)
        if op == 0x28:
            lba = struct.unpack(">I", sent.cdb[2:6])[0]
            count = struct.unpack(">H", sent.cdb[7:9])[0]
            start = lba * self.block_size
            return Reply(data=bytes(self.storage[start : start + count * self.block_size]))
        if op == 0x2A:
            lba = struct.unpack(">I", sent.cdb[2:6])[0]
            start = lba * self.block_size
            self.storage[start : start + len(sent.data_out)] = sent.data_out
            return Reply()
        if op == 0x12:
            inquiry = bytearray(36)
            inquiry[8:16], inquiry[16:32] = b"Linux   ", b"scsi_debug      "
            return Reply(data=bytes(inquiry))
        return Reply()


class FakeSg:
    """A replacement for ``fcntl.ioctl`` on an sg fd."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or SimpleDevice()
        self.sent: list[Sent] = []
        self.resets: list[int] = []
        self.fail_errno: int | None = None
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def cdbs(self) -> list[bytes]:
        return [s.cdb for s in self.sent]

    def __call__(self, fd: int, request: int, arg: Any) -> int:
        if request == SG_SCSI_RESET:
            self.resets.append(struct.unpack("i", bytes(arg))[0])
            return 0
        assert request == SG_IO, f"unexpected ioctl {request:#x}"
        if self.fail_errno is not None:
            raise OSError(self.fail_errno, "fake failure")
        hdr: SgIoHdr = arg
        assert hdr.interface_id == ord("S")
        cdb = ctypes.string_at(hdr.cmdp, hdr.cmd_len)
        chunks = self._chunks(hdr)
        data_out = b"".join(ctypes.string_at(addr, n) for addr, n in chunks)
        sent = Sent(cdb, hdr.dxfer_direction, hdr.dxfer_len, data_out, hdr.timeout,
                    hdr.iovec_count)
        with self.lock:
            self.sent.append(sent)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = self.responder(sent)
            if reply.delay:
                time.sleep(reply.delay)
        finally:
            with self.lock:
                self.in_flight -= 1
        sent_len = 0
        if hdr.dxfer_direction in (-3, -4):  # FROM_DEV: write Data-In through the pointers
            data = reply.data[: hdr.dxfer_len]
            for addr, n in chunks:
                part = data[sent_len : sent_len + n]
                ctypes.memmove(addr, part, len(part))
                sent_len += len(part)
        elif hdr.dxfer_direction == -2:
            sent_len = hdr.dxfer_len
        hdr.status = reply.status
        hdr.masked_status = reply.status >> 1
        hdr.host_status = reply.host
        hdr.driver_status = reply.driver | (0x08 if reply.sense else 0)
        sense = reply.sense[: hdr.mx_sb_len]
        ctypes.memmove(hdr.sbp, sense, len(sense))
        hdr.sb_len_wr = len(sense)
        hdr.resid = hdr.dxfer_len - sent_len if reply.resid is None else reply.resid
        abnormal = reply.status or reply.host or reply.driver or reply.sense
        hdr.info = 1 if abnormal else 0
        return 0

    @staticmethod
    def _chunks(hdr: SgIoHdr) -> list[tuple[int, int]]:
        if not hdr.dxfer_len:
            return []
        if hdr.iovec_count:
            iov = (SgIovec * hdr.iovec_count).from_address(hdr.dxferp)
            chunks, left = [], hdr.dxfer_len
            for entry in iov:
                n = min(entry.iov_len, left)
                chunks.append((int(entry.iov_base), n))
                left -= n
            return chunks
        return [(int(hdr.dxferp), hdr.dxfer_len)]


def make_sysfs(
    root: Path,
    hctl: str = "1:0:1:0",
    device_type: int = 0,
    *,
    vendor: str = "Linux",
    model: str = "scsi_debug",
    rev: str = "0191",
    sg: str | None = "sg3",
    block: str | None = None,
    serial: str = "",
    wwid: str = "",
    vpd83: bytes = b"",
) -> Path:
    """Build ``root/sys`` with one device and ``root/dev/<sg>``; returns ``root/sys``."""
    sysfs = root / "sys"
    device = sysfs / "class/scsi_device" / hctl / "device"
    device.mkdir(parents=True)
    (device / "type").write_text(f"{device_type}\n")
    (device / "vendor").write_text(f"{vendor:<8}\n")
    (device / "model").write_text(f"{model:<16}\n")
    (device / "rev").write_text(f"{rev}\n")
    if sg:
        (device / "scsi_generic" / sg).mkdir(parents=True)
        (root / "dev").mkdir(exist_ok=True)
        (root / "dev" / sg).write_bytes(b"")
    if block:
        (device / "block" / block).mkdir(parents=True)
    if serial:
        raw = serial.encode()
        (device / "vpd_pg80").write_bytes(bytes([0, 0x80, 0, len(raw)]) + raw)
    if wwid:
        (device / "wwid").write_text(wwid + "\n")
    if vpd83:
        (device / "vpd_pg83").write_bytes(vpd83)
    return sysfs


class Completions:
    """Collects async completions of commands (serialized mode)."""

    def __init__(self) -> None:
        self.results: dict[int, Result] = {}
        self.cond = threading.Condition()

    def command(self, cmd_id: int, cdb: bytes, data: bytes | bytearray = b"") -> Command:
        views = [memoryview(bytearray(data))] if data else []

        def done(result: Result) -> None:
            with self.cond:
                assert cmd_id not in self.results, f"cmd {cmd_id} completed twice"
                self.results[cmd_id] = result
                self.cond.notify_all()

        return Command(cmd_id, cdb, DataBuffer(views), complete=done)

    def wait(self, count: int, timeout: float = 10.0) -> dict[int, Result]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.results) >= count, timeout), (
                f"only {len(self.results)} of {count} commands completed"
            )
            return dict(self.results)


def check_condition_with(key: int, asc: int, ascq: int) -> Callable[[Result], bool]:
    def matches(result: Result) -> bool:
        return (result.status == CHECK_CONDITION and result.sense[2] == key
                and result.sense[12] == asc and result.sense[13] == ascq)

    return matches
