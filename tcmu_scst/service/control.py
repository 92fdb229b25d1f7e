"""The daemon's control socket: a root-only Unix socket speaking JSON lines.

The shell and the CLI manipulate configfs themselves; runtime state only the daemon
knows (devices it serves, command counters, the size histogram behind ``/sgv``, the
``threads`` setting) comes from here. One request per connection::

    -> {"op": "status"}
    <- {"ok": true, "devices": [...], "threads": 2}
"""

from __future__ import annotations

import enum
import json
import os
import selectors
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from tcmu_scst.errors import TcmuScstError

DEFAULT_SOCKET: Final = Path("/run/tcmu-scst/control.sock")
MAX_REQUEST: Final = 64 * 1024

Request = dict[str, Any]
Reply = dict[str, Any]


class Op(enum.StrEnum):
    """The requests the daemon answers (``{"op": ...}``; a plain string works too)."""

    PING = "ping"
    STATUS = "status"
    SET_THREADS = "set_threads"
    TRACE_LEVEL = "trace_level"
    RESCAN = "rescan"
    HOTPLUG = "hotplug"


class ControlError(TcmuScstError):
    """The daemon could not be reached or refused a request."""


class ControlServer:
    """Accepts one-shot JSON requests; ``handle`` maps a request to a reply.

    In the daemon (:meth:`attach`) every client is non-blocking and served by the
    main loop's selector as its bytes arrive: a client that connects and sends nothing
    (or does not read its answer) costs nothing until :meth:`expire` drops it after
    ``client_timeout``. :meth:`serve_one` is the blocking form, for servers on a
    thread of their own (tests).
    """

    def __init__(
        self, path: Path, handle: Callable[[Request], Reply], client_timeout: float = 2.0
    ) -> None:
        self.path = path
        self.handle = handle
        self.client_timeout = client_timeout
        self._selector: selectors.BaseSelector | None = None
        self._clients: dict[int, _Client] = {}
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ControlError(f"{path} exists and is not a socket: remove it or pick another")
            if _answers(path):
                raise ControlError(f"another daemon is listening on {path}")
            path.unlink()  # a stale socket from a daemon that died
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # 0600: root only
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        self.sock.listen(8)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- non-blocking, on a selector --------------------------------------------------
    def attach(self, selector: selectors.BaseSelector) -> None:
        """Serve from ``selector``'s loop (callbacks without arguments as key.data)."""
        self._selector = selector
        selector.register(self.sock, selectors.EVENT_READ, self._accept)

    def _accept(self) -> None:
        assert self._selector is not None
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: the client sees its connection closed
            conn.setblocking(False)
            client = _Client(conn, time.monotonic() + self.client_timeout)
            self._clients[conn.fileno()] = client
            self._selector.register(conn, selectors.EVENT_READ, partial(self._read, client))

    def _read(self, client: _Client) -> None:
        try:
            chunk = client.conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        client.inbox += chunk
        if chunk and b"\n" not in chunk and len(client.inbox) <= MAX_REQUEST:
            return
        client.outbox = self._answer(bytes(client.inbox))
        assert self._selector is not None
        self._selector.modify(client.conn, selectors.EVENT_WRITE, partial(self._write, client))
        self._write(client)

    def _write(self, client: _Client) -> None:
        try:
            sent = client.conn.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        client.outbox = client.outbox[sent:]
        if not client.outbox:
            self._drop(client)

    def expire(self, now: float | None = None) -> None:
        """Drop clients that have not finished within ``client_timeout``."""
        now = time.monotonic() if now is None else now
        for client in [c for c in self._clients.values() if c.deadline <= now]:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        if self._clients.pop(client.conn.fileno(), None) is not None and self._selector:
            self._selector.unregister(client.conn)
        client.conn.close()

    # -- blocking, one connection ---------------------------------------------------
    def serve_one(self) -> None:
        """Answer one pending connection (call when the socket is readable)."""
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(self.client_timeout)
            try:
                answer = self._answer(_read_line(conn))
            except (ValueError, OSError) as err:
                answer = _encode({"ok": False, "error": f"bad request: {err}"})
            try:
                conn.sendall(answer)
            except OSError:
                pass

    def _answer(self, data: bytes) -> bytes:
        try:
            if len(data) > MAX_REQUEST:
                raise ValueError("request too large")
            request = json.loads(data)
            if not isinstance(request, dict):
                raise ValueError("request is not a JSON object")
            reply = self.handle(request)
        except (ValueError, OSError) as err:
            reply = {"ok": False, "error": f"bad request: {err}"}
        except TcmuScstError as err:
            reply = {"ok": False, "error": str(err)}
        return _encode(reply)

    def close(self) -> None:
        for client in list(self._clients.values()):
            self._drop(client)
        if self._selector is not None:
            try:
                self._selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
        self.sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


@dataclass
class _Client:
    conn: socket.socket
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytes = b""


def _encode(reply: Reply) -> bytes:
    return json.dumps(reply).encode() + b"\n"


def _answers(path: Path) -> bool:
    """Does a live server accept connections on ``path``? (a dead one's refuses)"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _read_line(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if b"\n" in chunk:
            break
        if total > MAX_REQUEST:
            raise ValueError("request too large")
    return b"".join(chunks)


def request(op: Op | str, path: Path = DEFAULT_SOCKET, timeout: float = 5.0, **args: Any) -> Reply:
    """Send one request to the daemon and return its reply (raises ControlError)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        raw = _read_line(sock)
    except FileNotFoundError:
        raise ControlError(
            f"the tcmu-scst daemon is not running ({path} missing): start it with "
            "'tcmu-scst daemon' or 'systemctl start tcmu-scst'"
        ) from None
    except OSError as err:
        raise ControlError(f"cannot talk to the daemon at {path}: {err}") from err
    finally:
        sock.close()
    try:
        reply = json.loads(raw)
    except ValueError as err:
        raise ControlError(f"the daemon answered garbage: {raw[:80]!r}") from err
    if not isinstance(reply, dict):
        raise ControlError("the daemon's reply is not a JSON object")
    if not reply.get("ok", False):
        raise ControlError(str(reply.get("error", "request refused")))
    return reply


def daemon_running(path: Path = DEFAULT_SOCKET) -> bool:
    try:
        request(Op.PING, path, timeout=1.0)
    except ControlError:
        return False
    return True
