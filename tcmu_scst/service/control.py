"""The daemon's control socket: a root-only Unix socket speaking JSON lines.

The shell and the CLI manipulate configfs themselves; runtime state only the daemon
knows (devices it serves, command counters, the size histogram behind ``/sgv``, the
``threads`` setting) comes from here. One request per connection::

    -> {"op": "status"}
    <- {"ok": true, "devices": [...], "threads": 2}
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from tcmu_scst.errors import TcmuScstError

DEFAULT_SOCKET: Final = Path("/run/tcmu-scst/control.sock")
MAX_REQUEST: Final = 64 * 1024

Request = dict[str, Any]
Reply = dict[str, Any]


class ControlError(TcmuScstError):
    """The daemon could not be reached or refused a request."""


class ControlServer:
    """Accepts one-shot JSON requests; ``handle`` maps a request to a reply."""

    def __init__(self, path: Path, handle: Callable[[Request], Reply]) -> None:
        self.path = path
        self.handle = handle
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ControlError(f"{path} exists and is not a socket: remove it or pick another")
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

    def serve_one(self) -> None:
        """Answer one pending connection (call when the socket is readable)."""
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(2.0)
            try:
                data = _read_line(conn)
                request = json.loads(data)
                if not isinstance(request, dict):
                    raise ValueError("request is not a JSON object")
                reply = self.handle(request)
            except (ValueError, OSError) as err:
                reply = {"ok": False, "error": f"bad request: {err}"}
            except TcmuScstError as err:
                reply = {"ok": False, "error": str(err)}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


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


def request(op: str, path: Path = DEFAULT_SOCKET, timeout: float = 5.0, **args: Any) -> Reply:
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
        request("ping", path, timeout=1.0)
    except ControlError:
        return False
    return True
