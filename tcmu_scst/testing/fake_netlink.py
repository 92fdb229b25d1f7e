"""A scripted kernel side of the TCM-USER netlink family (a NetlinkSocket for tests).

:class:`FakeTcmuKernel` answers nlctrl GETFAMILY, ACKs (or refuses) requests, multicasts
events the test emits and checks replies the way target_core_user does: a ``*_DONE`` must
carry the DEVICE_ID of a pending request and the matching command; a mismatched command
drops the request without completing it (the real writer would hang: recorded in
:attr:`FakeTcmuKernel.hung`). ``fileno()`` is a real descriptor that is readable while
messages are queued, so a daemon's poll loop can run against it.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

from tcmu_scst.kernel.netlink import (
    CTRL_CMD_GETFAMILY,
    CTRL_CMD_NEWFAMILY,
    GENL_ID_CTRL,
    NLMSG_ERROR,
    TCMU_CMD_ADDED_DEVICE,
    TCMU_CMD_RECONFIG_DEVICE,
    TCMU_CMD_REMOVED_DEVICE,
    TCMU_CMD_SET_FEATURES,
    TCMU_GENL_NAME,
    TCMU_MCGRP_CONFIG,
    CtrlMsg,
    TcmuGenlMsg,
    decode,
    encode,
    split_messages,
)

_HDR = struct.Struct("=IHHII")


@dataclass(frozen=True)
class Reply:
    cmd: int
    status: int
    device_id: int


def build_error(seq: int, code: int, request: bytes) -> bytes:
    """An NLMSG_ERROR (ACK when ``code`` is 0) echoing the request's header."""
    body = struct.pack("=i", -code) + request[: _HDR.size]
    return _HDR.pack(_HDR.size + len(body), NLMSG_ERROR, 0, seq, 0) + body


class FakeTcmuKernel:
    """Implements the NetlinkSocket protocol; tests drive it with ``emit_*``."""

    def __init__(
        self, family_id: int = 0x1B, group_id: int = 9, set_features_errno: int = 0
    ) -> None:
        self.family_id = family_id
        self.group_id = group_id
        self.set_features_errno = set_features_errno
        self.joined: list[int] = []
        self.sent: list[bytes] = []
        self.replies: list[Reply] = []
        self.features: list[int] = []
        self.hung: list[int] = []  # device ids whose writer would never wake
        self.reply_supported = False
        self._pending: dict[int, int] = {}  # device_id -> command waiting for its DONE
        self._queue: deque[bytes] = deque()
        self._rx, self._tx = socket.socketpair()
        self._rx.setblocking(False)
        self.closed = False

    # ---- NetlinkSocket ------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sent.append(data)
        for mtype, _flags, seq, raw in split_messages(data):
            self._queue_msg(self._handle(mtype, seq, raw))

    def recv(self) -> bytes:
        if not self._queue:
            raise BlockingIOError(errno.EAGAIN, "no message queued")
        self._rx.recv(1)
        return self._queue.popleft()

    def join(self, group_id: int) -> None:
        if group_id != self.group_id:
            raise OSError(errno.EINVAL, "no such multicast group")
        self.joined.append(group_id)

    def fileno(self) -> int:
        return self._rx.fileno()

    def close(self) -> None:
        self.closed = True
        self._rx.close()
        self._tx.close()

    # ---- test side ----------------------------------------------------------------

    def emit(self, cmd: int, attrs: list[tuple[str, Any]], wait: bool | None = None) -> None:
        """Multicast a kernel event; ``wait`` (default: reply support on) makes it pending."""
        device_id = next(v for k, v in attrs if k == "TCMU_ATTR_DEVICE_ID")
        if wait if wait is not None else self.reply_supported:
            self._pending[device_id] = cmd
        self._queue_msg(encode(TcmuGenlMsg, self.family_id, cmd, attrs, 0, 0))

    def emit_added(self, device: str, minor: int, device_id: int) -> None:
        self.emit(TCMU_CMD_ADDED_DEVICE, self._base(device, minor, device_id))

    def emit_removed(self, device: str, minor: int, device_id: int) -> None:
        self.emit(TCMU_CMD_REMOVED_DEVICE, self._base(device, minor, device_id))

    def emit_reconfig(self, device: str, minor: int, device_id: int, **change: Any) -> None:
        """One of ``dev_cfg=str``, ``dev_size=int`` (PAD first) or ``write_cache=bool``."""
        attrs = self._base(device, minor, device_id)
        if "dev_cfg" in change:
            attrs.append(("TCMU_ATTR_DEV_CFG", change["dev_cfg"]))
        elif "dev_size" in change:
            attrs += [("TCMU_ATTR_PAD", b""), ("TCMU_ATTR_DEV_SIZE", change["dev_size"])]
        else:
            attrs.append(("TCMU_ATTR_WRITECACHE", int(change["write_cache"])))
        self.emit(TCMU_CMD_RECONFIG_DEVICE, attrs)

    def deliver(self, datagram: bytes) -> None:
        """Queue raw bytes as if the kernel had sent them (e.g. a recorded fixture)."""
        self._queue_msg(datagram)

    def pending(self) -> dict[int, int]:
        return dict(self._pending)

    @staticmethod
    def _base(device: str, minor: int, device_id: int) -> list[tuple[str, Any]]:
        return [
            ("TCMU_ATTR_DEVICE", device),
            ("TCMU_ATTR_MINOR", minor),
            ("TCMU_ATTR_DEVICE_ID", device_id),
        ]

    # ---- kernel behaviour ---------------------------------------------------------

    def _queue_msg(self, data: bytes) -> None:
        self._queue.append(data)
        self._tx.send(b"x")

    def _handle(self, mtype: int, seq: int, raw: bytes) -> bytes:
        if mtype == GENL_ID_CTRL:
            msg = decode(CtrlMsg, raw)
            if msg["cmd"] != CTRL_CMD_GETFAMILY:
                return build_error(seq, errno.EOPNOTSUPP, raw)
            if msg.get_attr("CTRL_ATTR_FAMILY_NAME") != TCMU_GENL_NAME:
                return build_error(seq, errno.ENOENT, raw)
            reply = encode(
                CtrlMsg,
                GENL_ID_CTRL,
                CTRL_CMD_NEWFAMILY,
                [
                    ("CTRL_ATTR_FAMILY_ID", self.family_id),
                    ("CTRL_ATTR_FAMILY_NAME", TCMU_GENL_NAME),
                    (
                        "CTRL_ATTR_MCAST_GROUPS",
                        [
                            {
                                "attrs": [
                                    ("CTRL_ATTR_MCAST_GRP_NAME", TCMU_MCGRP_CONFIG),
                                    ("CTRL_ATTR_MCAST_GRP_ID", self.group_id),
                                ]
                            }
                        ],
                    ),
                ],
                seq,
                0,
            )
            self._queue_msg(reply)
            return build_error(seq, 0, raw)
        if mtype != self.family_id:
            return build_error(seq, errno.ENOENT, raw)
        msg = decode(TcmuGenlMsg, raw)
        cmd = int(msg["cmd"])
        if cmd == TCMU_CMD_SET_FEATURES:
            if self.set_features_errno:
                return build_error(seq, self.set_features_errno, raw)
            flag = int(msg.get_attr("TCMU_ATTR_SUPP_KERN_CMD_REPLY") or 0)
            self.features.append(flag)
            self.reply_supported = bool(flag)
            return build_error(seq, 0, raw)
        return build_error(seq, self._done(cmd, msg), raw)

    def _done(self, cmd: int, msg: Any) -> int:
        status = msg.get_attr("TCMU_ATTR_CMD_STATUS")
        device_id = msg.get_attr("TCMU_ATTR_DEVICE_ID")
        if status is None or device_id is None:
            return errno.EINVAL
        self.replies.append(Reply(cmd, int(status), int(device_id)))
        waiting = self._pending.pop(int(device_id), None)
        if waiting is None:
            return errno.EINVAL  # nothing pending: the kernel refuses the DONE
        if waiting + 3 != cmd:
            self.hung.append(int(device_id))  # dropped without completion
            return errno.EINVAL
        return 0
