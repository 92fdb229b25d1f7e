"""The daemon's control socket: a root-only Unix socket speaking JSON lines.

The shell and the CLI manipulate configfs themselves; runtime state only the daemon
knows (devices it serves, command counters, the size histogram behind ``/sgv``, the
``threads`` setting) comes from here. One request per connection, the messages of
service.messages::

    -> {"op": "status"}
    <- {"ok": true, "devices": [...], "threads": 2}

:class:`ControlClient` is the typed client; an error the daemon raised comes back as
the same :mod:`tcmu_scst.errors` class.
"""

from __future__ import annotations

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
from typing import Any, Final, TypeVar

from tcmu_scst import errors
from tcmu_scst.errors import TcmuScstError
from tcmu_scst.service import messages

DEFAULT_SOCKET: Final = Path("/run/tcmu-scst/control.sock")
MAX_REQUEST: Final = 64 * 1024


class ControlError(TcmuScstError):
    """The daemon could not be reached, refused a request, or answered nonsense."""


#: Error classes an answer may name (``kind``): raised again as such by the client.
#: Only classes whose first argument is the message; anything else is a ControlError.
_KINDS: Final[dict[str, type[TcmuScstError]]] = {
    cls.__name__: cls
    for cls in (errors.TcmuScstError, errors.KernelError, errors.UioError,
                errors.RingError, errors.ConfigfsError, errors.NetlinkError,
                errors.ConfigError, errors.HandlerError, ControlError)
}


class ControlServer:
    """Accepts one-shot JSON requests; ``handle`` maps a request to a reply.

    In the daemon (:meth:`attach`) every client is non-blocking and served by the
    main loop's selector as its bytes arrive: a client that connects and sends nothing
    (or does not read its answer) costs nothing until :meth:`expire` drops it after
    ``client_timeout``. :meth:`serve_one` is the blocking form, for servers on a
    thread of their own (tests).
    """

    def __init__(
        self,
        path: Path,
        handle: Callable[[messages.Request], messages.Answer],
        client_timeout: float = 2.0,
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
                answer = _refusal(ControlError(f"bad request: {err}"))
            try:
                conn.sendall(answer)
            except OSError:
                pass

    def _answer(self, data: bytes) -> bytes:
        try:
            if len(data) > MAX_REQUEST:
                raise ValueError("request too large")
            obj = json.loads(data)
            if not isinstance(obj, dict):
                raise ValueError("request is not a JSON object")
            request = messages.decode_request(obj)
        except ValueError as err:
            return _refusal(ControlError(f"bad request: {err}"))
        try:
            return _encode(messages.encode(self.handle(request)))
        except TcmuScstError as err:
            return _refusal(err)

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


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _refusal(err: TcmuScstError) -> bytes:
    kind = type(err).__name__ if type(err).__name__ in _KINDS else "TcmuScstError"
    return _encode({"ok": False, "error": str(err), "kind": kind})


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


A = TypeVar("A")


class ControlClient:
    """Talks to the daemon at ``path``: one connection per request.

    Raises :class:`ControlError` when the daemon cannot be reached or answers
    nonsense, and the daemon's own error class when it refuses a request.
    """

    def __init__(self, path: Path = DEFAULT_SOCKET, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def ping(self) -> messages.Pong:
        return self._ask(messages.Ping(), messages.Pong)

    def status(self) -> messages.Status:
        return self._ask(messages.GetStatus(), messages.Status)

    def set_threads(self, threads: int) -> int:
        try:
            request = messages.SetThreads(threads)
        except ValueError as err:
            raise ControlError(str(err)) from None
        return self._ask(request, messages.ThreadsSet).threads

    def set_trace_level(self, owner: str, mask: int) -> dict[str, int]:
        try:
            request = messages.SetTraceLevel(owner, mask)
        except ValueError as err:
            raise ControlError(str(err)) from None
        return self._ask(request, messages.TraceLevels).trace_levels

    def rescan(self) -> messages.Status:
        return self._ask(messages.Rescan(), messages.Status)

    def hotplug(
        self, action: messages.HotplugAction = messages.HotplugAction.STATUS
    ) -> messages.HotplugStatus:
        return self._ask(messages.HotplugQuery(action), messages.HotplugStatus)

    def running(self) -> bool:
        """Does a daemon answer on :attr:`path` (within a second)?"""
        try:
            ControlClient(self.path, timeout=1.0).ping()
        except ControlError:
            return False
        return True

    def _ask(self, request: messages.Request, answer: type[A]) -> A:
        reply = self._exchange(messages.encode(request))
        if not reply.get("ok", False):
            kind = _KINDS.get(str(reply.get("kind")), ControlError)
            raise kind(str(reply.get("error", "request refused")))
        try:
            return messages.decode(answer, reply)
        except ValueError as err:
            raise ControlError(f"the daemon's answer does not fit: {err}") from None

    def _exchange(self, obj: dict[str, Any]) -> dict[str, Any]:
        path = self.path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(path))
            sock.sendall(_encode(obj))
            raw = _read_line(sock)
        except FileNotFoundError:
            raise ControlError(
                f"the tcmu-scst daemon is not running ({path} missing): start it with "
                "'tcmu-scst daemon' or 'systemctl start tcmu-scst'"
            ) from None
        except (OSError, ValueError) as err:
            raise ControlError(f"cannot talk to the daemon at {path}: {err}") from err
        finally:
            sock.close()
        try:
            reply = json.loads(raw)
        except ValueError as err:
            raise ControlError(f"the daemon answered garbage: {raw[:80]!r}") from err
        if not isinstance(reply, dict):
            raise ControlError("the daemon's reply is not a JSON object")
        return reply


def daemon_running(path: Path = DEFAULT_SOCKET) -> bool:
    return ControlClient(path).running()
