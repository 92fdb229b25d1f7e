"""The TCM-USER generic netlink family: device events from the kernel and our replies.

Messages are declared as data (pyroute2 ``genlmsg`` classes with ``nla_map``, names as in
``target_core_user.h``) and framed here; the socket is a small object with
``send``/``recv``/``join``/``fileno``/``close`` so tests swap only the I/O
(:class:`tcmu_scst.testing.fake_netlink.ScriptedNetlinkSocket`).

Protocol facts (tcmu-abi.md §3): the kernel multicasts ADDED/REMOVED/RECONFIG on the
"config" group; when reply support is on (module-global flag set by SET_FEATURES, and the
device's ``nl_reply_supported`` > 0) the configfs writer blocks, uninterruptibly and without
timeout, until the matching ``*_DONE`` with the event's DEVICE_ID arrives. A mismatched
``*_DONE`` drops the pending request without waking the writer, so :meth:`TcmuNetlink.reply`
derives the reply command from the event and nothing else.
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pyroute2.netlink import ctrlmsg, genlmsg

from tcmu_scst.errors import NetlinkError

# ---- constants (target_core_user.h / genetlink.h) ---------------------------------------

TCMU_GENL_NAME = "TCM-USER"
TCMU_GENL_VERSION = 2
TCMU_MCGRP_CONFIG = "config"

TCMU_CMD_UNSPEC = 0
TCMU_CMD_ADDED_DEVICE = 1
TCMU_CMD_REMOVED_DEVICE = 2
TCMU_CMD_RECONFIG_DEVICE = 3
TCMU_CMD_ADDED_DEVICE_DONE = 4
TCMU_CMD_REMOVED_DEVICE_DONE = 5
TCMU_CMD_RECONFIG_DEVICE_DONE = 6
TCMU_CMD_SET_FEATURES = 7

TCMU_ATTR_UNSPEC = 0
TCMU_ATTR_DEVICE = 1
TCMU_ATTR_MINOR = 2
TCMU_ATTR_PAD = 3
TCMU_ATTR_DEV_CFG = 4
TCMU_ATTR_DEV_SIZE = 5
TCMU_ATTR_WRITECACHE = 6
TCMU_ATTR_CMD_STATUS = 7
TCMU_ATTR_DEVICE_ID = 8
TCMU_ATTR_SUPP_KERN_CMD_REPLY = 9

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
GENL_ID_CTRL = 0x10
CTRL_CMD_NEWFAMILY = 1
CTRL_CMD_GETFAMILY = 3
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1
NLM_F_ACK = 4

_NLMSGHDR = struct.Struct("=IHHII")
_DONE_FOR = {
    TCMU_CMD_ADDED_DEVICE: TCMU_CMD_ADDED_DEVICE_DONE,
    TCMU_CMD_REMOVED_DEVICE: TCMU_CMD_REMOVED_DEVICE_DONE,
    TCMU_CMD_RECONFIG_DEVICE: TCMU_CMD_RECONFIG_DEVICE_DONE,
}


class TcmuGenlMsg(genlmsg):  # type: ignore[misc]
    """A TCM-USER message; attribute order is the enum order (index == attribute type)."""

    nla_map = (
        ("TCMU_ATTR_UNSPEC", "none"),
        ("TCMU_ATTR_DEVICE", "asciiz"),
        ("TCMU_ATTR_MINOR", "uint32"),
        ("TCMU_ATTR_PAD", "hex"),
        ("TCMU_ATTR_DEV_CFG", "asciiz"),
        ("TCMU_ATTR_DEV_SIZE", "uint64"),
        ("TCMU_ATTR_WRITECACHE", "uint8"),
        ("TCMU_ATTR_CMD_STATUS", "int32"),
        ("TCMU_ATTR_DEVICE_ID", "uint32"),
        ("TCMU_ATTR_SUPP_KERN_CMD_REPLY", "uint8"),
    )


# nlctrl messages (family id and multicast group lookup) use pyroute2's declaration.
CtrlMsg = ctrlmsg


# ---- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceEvent:
    """A kernel request about one TCMU device; answer it with :meth:`TcmuNetlink.reply`."""

    cmd: int
    device: str  # uio name: tcm-user/<hba>/<dev>[/<dev_config>]
    minor: int  # /dev/uio<minor>
    device_id: int  # se_dev.dev_index; the reply must carry it
    version: int = TCMU_GENL_VERSION

    @property
    def done_cmd(self) -> int:
        return _DONE_FOR[self.cmd]

    @property
    def hba_index(self) -> int:
        return int(self.device.split("/")[1])

    @property
    def name(self) -> str:
        return self.device.split("/")[2]

    @property
    def dev_config(self) -> str:
        parts = self.device.split("/", 3)
        return parts[3] if len(parts) > 3 else ""

    @property
    def needs_reply(self) -> bool:
        # tcmu-runner answers only version > 1 messages (older kernels never wait).
        return self.version > 1


@dataclass(frozen=True)
class AddedDevice(DeviceEvent):
    pass


@dataclass(frozen=True)
class RemovedDevice(DeviceEvent):
    pass


@dataclass(frozen=True)
class ReconfigDevice(DeviceEvent):
    """Exactly one of the three fields is set (what was written to attrib/)."""

    dev_cfg: str | None = None
    dev_size: int | None = None
    write_cache: bool | None = None


def decode_event(msg: TcmuGenlMsg) -> DeviceEvent | None:
    """Turn a decoded kernel message into an event; None for commands we do not expect."""
    cmd = int(msg["cmd"])
    if cmd not in _DONE_FOR:
        return None
    device = msg.get_attr("TCMU_ATTR_DEVICE")
    minor = msg.get_attr("TCMU_ATTR_MINOR")
    device_id = msg.get_attr("TCMU_ATTR_DEVICE_ID")
    if device is None or minor is None or device_id is None:
        raise NetlinkError(
            f"TCM-USER command {cmd} lacks DEVICE, MINOR or DEVICE_ID: kernel too old "
            "(DEVICE_ID appeared in 4.17); upgrade the kernel"
        )
    common: dict[str, Any] = {
        "cmd": cmd,
        "device": str(device),
        "minor": int(minor),
        "device_id": int(device_id),
        "version": int(msg["version"]),
    }
    if cmd == TCMU_CMD_ADDED_DEVICE:
        return AddedDevice(**common)
    if cmd == TCMU_CMD_REMOVED_DEVICE:
        return RemovedDevice(**common)
    cfg = msg.get_attr("TCMU_ATTR_DEV_CFG")
    size = msg.get_attr("TCMU_ATTR_DEV_SIZE")
    wc = msg.get_attr("TCMU_ATTR_WRITECACHE")
    return ReconfigDevice(
        **common,
        dev_cfg=None if cfg is None else str(cfg),
        dev_size=None if size is None else int(size),
        write_cache=None if wc is None else bool(wc),
    )


def split_messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Split a datagram into (type, flags, seq, whole message bytes)."""
    out = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, mtype, flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise NetlinkError(
                f"truncated netlink message (length {length} at offset {offset} of "
                f"{len(data)}): receive buffer too small or corrupt datagram"
            )
        out.append((mtype, flags, seq, data[offset : offset + length]))
        offset += (length + 3) & ~3
    return out


def encode(
    cls: type[genlmsg], family: int, cmd: int, attrs: list[tuple[str, Any]], seq: int, flags: int
) -> bytes:
    msg = cls()
    msg["cmd"] = cmd
    msg["version"] = TCMU_GENL_VERSION if cls is TcmuGenlMsg else 1
    msg["attrs"] = attrs
    msg["header"]["type"] = family
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def decode(cls: type[genlmsg], data: bytes) -> Any:
    msg = cls(data)
    msg.decode()
    return msg


# ---- socket -----------------------------------------------------------------------------


class NetlinkSocket(Protocol):
    """The I/O a :class:`TcmuNetlink` needs; tests provide a scripted one."""

    def send(self, data: bytes) -> None: ...

    def recv(self) -> bytes: ...

    def join(self, group_id: int) -> None: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class KernelNetlinkSocket:
    """An AF_NETLINK/NETLINK_GENERIC socket bound to an automatic port id."""

    def __init__(self, rcvbuf: int = 1 << 20) -> None:
        try:
            self._sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_GENERIC
            )
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._sock.bind((0, 0))
        except OSError as err:
            raise NetlinkError(f"cannot open a generic netlink socket: {err}") from err

    def send(self, data: bytes) -> None:
        self._sock.sendto(data, (0, 0))

    def recv(self) -> bytes:
        return self._sock.recv(1 << 16)

    def join(self, group_id: int) -> None:
        self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group_id)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


def netlink_errno(err: BaseException) -> int:
    """The errno behind a NetlinkError raised here (0 if none)."""
    cause = err.__cause__
    return cause.errno or 0 if isinstance(cause, OSError) else 0


def _errname(code: int) -> str:
    return errno_mod.errorcode.get(code, str(code))


class TcmuNetlink:
    """Listen to TCM-USER events and answer them.

    ``open()`` resolves the family and joins "config"; the daemon polls :meth:`fileno`
    and calls :meth:`receive` when readable, then :meth:`reply` for each event.
    """

    def __init__(self, sock: NetlinkSocket | None = None) -> None:
        self._sock = sock
        self.family_id = 0
        self.group_id = 0
        self._seq = 0
        self._pending: list[DeviceEvent] = []

    # lifecycle

    def open(self) -> TcmuNetlink:
        if self._sock is None:
            self._sock = KernelNetlinkSocket()
        self.family_id, self.group_id = self._resolve_family()
        try:
            self._io().join(self.group_id)
        except OSError as err:
            raise NetlinkError(
                f"cannot join TCM-USER multicast group {self.group_id}: {err}; "
                "needs a network namespace that sees the target (netnsok)"
            ) from err
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> TcmuNetlink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._io().fileno()

    def _io(self) -> NetlinkSocket:
        if self._sock is None:
            raise NetlinkError("TCM-USER netlink is not open: call open() first")
        return self._sock

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    # requests

    def _transact(self, data: bytes, seq: int, what: str) -> list[bytes]:
        """Send ``data`` and read until the ACK/error for ``seq``; return reply messages.

        Events that arrive meanwhile are kept for the next :meth:`receive`.
        """
        io = self._io()
        try:
            io.send(data)
        except OSError as err:
            raise self._os_error(what, err) from err
        replies: list[bytes] = []
        while True:
            try:
                datagram = io.recv()
            except OSError as err:
                raise self._os_error(what, err) from err
            for mtype, _flags, mseq, raw in split_messages(datagram):
                if mtype == NLMSG_ERROR and mseq == seq:
                    code = -struct.unpack_from("=i", raw, _NLMSGHDR.size)[0]
                    if code:
                        raise NetlinkError(
                            f"{what} refused by the kernel: {_errname(code)} "
                            f"({os.strerror(code)})"
                            + (" ; run as root (CAP_NET_ADMIN)" if code == errno_mod.EPERM else ""),
                        ) from OSError(code, os.strerror(code))
                    return replies
                if mseq == seq and mtype not in (NLMSG_NOOP, NLMSG_DONE):
                    replies.append(raw)
                else:
                    self._pending.extend(self._events([(mtype, _flags, mseq, raw)]))

    def _os_error(self, what: str, err: OSError) -> NetlinkError:
        code = err.errno or 0
        exc = NetlinkError(f"{what} failed: {_errname(code)} ({err.strerror or err})")
        exc.__cause__ = err
        return exc

    def _resolve_family(self) -> tuple[int, int]:
        seq = self._next_seq()
        request = encode(
            CtrlMsg,
            GENL_ID_CTRL,
            CTRL_CMD_GETFAMILY,
            [("CTRL_ATTR_FAMILY_NAME", TCMU_GENL_NAME)],
            seq,
            NLM_F_REQUEST | NLM_F_ACK,
        )
        try:
            replies = self._transact(request, seq, "resolving netlink family TCM-USER")
        except NetlinkError as err:
            if netlink_errno(err) == errno_mod.ENOENT:
                raise NetlinkError(
                    "netlink family TCM-USER is not registered: load target_core_user "
                    "(modprobe target_core_user)"
                ) from err
            raise
        for raw in replies:
            msg = decode(CtrlMsg, raw)
            family = msg.get_attr("CTRL_ATTR_FAMILY_ID")
            for group in msg.get_attr("CTRL_ATTR_MCAST_GROUPS") or []:
                if group.get_attr("CTRL_ATTR_MCAST_GRP_NAME") == TCMU_MCGRP_CONFIG:
                    return int(family), int(group.get_attr("CTRL_ATTR_MCAST_GRP_ID"))
        raise NetlinkError(
            f"netlink family {TCMU_GENL_NAME} has no '{TCMU_MCGRP_CONFIG}' multicast group; "
            "unexpected kernel"
        )

    def _request(self, cmd: int, attrs: list[tuple[str, Any]], what: str) -> None:
        seq = self._next_seq()
        data = encode(TcmuGenlMsg, self.family_id, cmd, attrs, seq, NLM_F_REQUEST | NLM_F_ACK)
        self._transact(data, seq, what)

    def set_features(self, reply_supported: bool = True) -> bool:
        """Tell the kernel we send ``*_DONE`` replies (module-global, outlives us).

        Returns False when the kernel lacks SET_FEATURES (EOPNOTSUPP): it never waits.
        """
        try:
            self._request(
                TCMU_CMD_SET_FEATURES,
                [("TCMU_ATTR_SUPP_KERN_CMD_REPLY", int(reply_supported))],
                f"SET_FEATURES(reply_supported={int(reply_supported)})",
            )
        except NetlinkError as err:
            if netlink_errno(err) == errno_mod.EOPNOTSUPP:
                return False
            raise
        return True

    def reply(self, event: DeviceEvent, status: int = 0) -> None:
        """Send exactly the ``*_DONE`` matching ``event`` (status 0 or a negative errno)."""
        if status > 0:
            raise NetlinkError(f"reply status must be 0 or a negative errno, got {status}")
        self._request(
            event.done_cmd,
            [("TCMU_ATTR_CMD_STATUS", status), ("TCMU_ATTR_DEVICE_ID", event.device_id)],
            f"reply to {type(event).__name__} of {event.device} (device id {event.device_id})",
        )

    # events

    def receive(self) -> list[DeviceEvent]:
        """Events from one datagram (plus any kept during a request); may block."""
        if self._pending:
            events, self._pending = self._pending, []
            return events
        try:
            datagram = self._io().recv()
        except OSError as err:
            if err.errno == errno_mod.ENOBUFS:
                raise NetlinkError(
                    "TCM-USER events were lost (socket receive buffer overrun): "
                    "rescan /sys/class/uio for tcm-user devices"
                ) from err
            raise self._os_error("receiving TCM-USER events", err) from err
        return self._events(split_messages(datagram))

    def _events(self, messages: list[tuple[int, int, int, bytes]]) -> list[DeviceEvent]:
        events = []
        for mtype, _flags, _seq, raw in messages:
            if mtype != self.family_id:
                continue  # stray ACKs and other families
            event = decode_event(decode(TcmuGenlMsg, raw))
            if event is not None:
                events.append(event)
        return events


# ---- module parameters ------------------------------------------------------------------


class TcmuModuleParams:
    """``/sys/module/target_core_user/parameters`` (injectable root for tests)."""

    def __init__(self, root: Path = Path("/sys/module/target_core_user/parameters")) -> None:
        self.root = Path(root)

    def _read(self, name: str) -> str:
        try:
            return (self.root / name).read_text().strip()
        except OSError as err:
            raise NetlinkError(
                f"cannot read {self.root / name}: {err.strerror}; is target_core_user loaded?"
            ) from err

    def _write(self, name: str, value: str) -> None:
        try:
            fd = os.open(self.root / name, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as err:
            raise NetlinkError(
                f"cannot write {value} to {self.root / name}: {_errname(err.errno or 0)} "
                f"({err.strerror}); run as root with target_core_user loaded"
            ) from err

    @property
    def block_netlink(self) -> bool:
        return self._read("block_netlink") in ("1", "Y")

    def set_block_netlink(self, blocked: bool) -> None:
        """While blocked, new netlink requests fail with EAGAIN."""
        self._write("block_netlink", "1" if blocked else "0")

    def reset_netlink(self) -> bool:
        """Complete every pending request with EINTR; False when the kernel refuses
        (EBUSY: allowed only while block_netlink is 1)."""
        try:
            self._write("reset_netlink", "1")
        except NetlinkError as err:
            if netlink_errno(err) == errno_mod.EBUSY:
                return False
            raise
        return True

    def release_stuck_writers(self, grace: float = 0.5) -> bool:
        """tcmu-runner's start-up recipe: block, reset pending requests, unblock.

        Stays blocked for ``grace`` seconds after the reset: a writer released with EINTR
        may retry at once (Python's os.write does, PEP 475), and the retry must meet
        EAGAIN, not a fresh wait. Returns False if the kernel refused the reset.
        """
        self.set_block_netlink(True)
        try:
            accepted = self.reset_netlink()
            time.sleep(grace)
        finally:
            self.set_block_netlink(False)
        return accepted

    @property
    def global_max_data_area_mb(self) -> int:
        return int(self._read("global_max_data_area_mb"))
