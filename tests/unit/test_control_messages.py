"""The control socket's typed messages (service.messages) and their trip over a real
Unix socket (service.control): only the daemon behind the server is replaced."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigError, HandlerError, LabError, TcmuScstError
from tcmu_scst.service import messages
from tcmu_scst.service.control import ControlClient, ControlError
from tcmu_scst.service.messages import (
    Answer,
    DeviceStatus,
    GetStatus,
    HotplugAction,
    HotplugQuery,
    HotplugStatus,
    Op,
    Ping,
    Pong,
    Request,
    Rescan,
    SetThreads,
    SetTraceLevel,
    Status,
    ThreadsSet,
    TraceLevels,
)
from tcmu_scst.testing.control_server import serving

DEVICE = DeviceStatus("d0", 1, 3, "vdisk", "vdisk/x", 2, 7, 1, 0, 0, {"512": 5, "4096": 2})
REQUESTS: list[Request] = [Ping(), GetStatus(), SetThreads(4), SetTraceLevel("vdisk", 0x200),
                           Rescan(), HotplugQuery(HotplugAction.CHECK)]
ANSWERS: list[Answer] = [Pong("0.1.0", 42), Status(2, (DEVICE,)), ThreadsSet(4),
                         TraceLevels({"vdisk": 0x200}),
                         HotplugStatus(True, "/etc/tcmu-scst/scst.conf", 3, 1, False, "")]


def test_every_op_has_one_request_and_one_answer() -> None:
    assert set(messages.REQUESTS) == set(Op) == set(messages.ANSWERS)
    assert {type(r) for r in REQUESTS} == set(messages.REQUESTS.values())


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_requests_survive_the_wire(request_: Request) -> None:
    wire = json.loads(json.dumps(messages.encode(request_)))
    assert wire["op"] == request_.op
    assert messages.decode_request(wire) == request_


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: type(a).__name__)
def test_answers_survive_the_wire(answer: Answer) -> None:
    wire = json.loads(json.dumps(messages.encode(answer)))
    assert wire["ok"] is True
    assert messages.decode(type(answer), wire) == answer


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        ({"op": "explode"}, "unknown request 'explode'"),
        ({}, "unknown request None"),
        ({"op": "set_threads"}, "SetThreads: threads is missing"),
        ({"op": "set_threads", "threads": "4"}, "SetThreads.threads: want int, got str"),
        ({"op": "set_threads", "threads": True}, "SetThreads.threads: want int, got bool"),
        ({"op": "set_threads", "threads": 257}, "threads 257 is out of range 0..256"),
        ({"op": "set_threads", "threads": 4, "x": 1}, "SetThreads: unknown field 'x'"),
        ({"op": "trace_level", "owner": "vdisk", "mask": -1}, "mask"),
        ({"op": "trace_level", "owner": 3, "mask": 1}, "SetTraceLevel.owner: want str"),
        ({"op": "hotplug", "action": "explode"}, "'explode' is not one of status, check"),
    ],
)
def test_malformed_requests_name_what_is_wrong(wire: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        messages.decode_request(wire)


def test_a_malformed_answer_names_the_nested_field() -> None:
    wire = messages.encode(Status(2, (DEVICE,)))
    wire["devices"][0]["sizes"] = {"512": "five"}
    with pytest.raises(ValueError, match=r"DeviceStatus.sizes\['512'\]: want int, got str"):
        messages.decode(Status, wire)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Callable[[Request], Answer]], ControlClient]]:
    """Start a ControlServer on a thread around ``handle``; returns a client for it."""
    names = itertools.count()
    with contextlib.ExitStack() as stack:

        def start(handle: Callable[[Request], Answer]) -> ControlClient:
            path = tmp_path / f"c{next(names)}.sock"
            stack.enter_context(serving(path, handle))
            return ControlClient(path, timeout=3)

        yield start


def test_the_typed_client_gets_typed_answers(serve: Callable[..., ControlClient]) -> None:
    def handle(request: Request) -> Answer:
        match request:
            case Ping():
                return Pong("0.1.0", 42)
            case GetStatus() | Rescan():
                return Status(2, (DEVICE,))
            case SetThreads(threads=n):
                return ThreadsSet(n)
            case SetTraceLevel(owner=owner, mask=mask):
                return TraceLevels({owner: mask})
            case HotplugQuery(action=action):
                return HotplugStatus(action is HotplugAction.CHECK, "c", 0, 0, False, "")
        raise AssertionError(request)

    client = serve(handle)
    assert client.ping() == Pong("0.1.0", 42)
    assert client.status().devices == (DEVICE,)
    assert client.rescan().threads == 2
    assert client.set_threads(0) == 0
    assert client.set_trace_level("scsi_tgt", 1) == {"scsi_tgt": 1}
    assert client.hotplug(HotplugAction.CHECK).listening is True
    assert client.running()
    with pytest.raises(ControlError, match=r"threads 1000 is out of range 0\.\.256"):
        client.set_threads(1000)  # refused before it is sent


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ConfigError("scst.conf:3: no such handler"), ConfigError),
        (HandlerError("vdisk: cannot open /x"), HandlerError),
        (ControlError("hot-plug is off in this daemon"), ControlError),
        (LabError("not one of ours to send back"), TcmuScstError),
    ],
)
def test_a_refusal_keeps_its_error_class_across_the_socket(
    serve: Callable[..., ControlClient], raised: TcmuScstError, expected: type[TcmuScstError]
) -> None:
    def handle(_request: Request) -> Answer:
        raise raised

    with pytest.raises(expected) as caught:
        serve(handle).status()
    assert type(caught.value) is expected
    assert str(caught.value) == str(raised)


def test_a_bad_request_on_the_raw_socket_is_refused_as_such(
    serve: Callable[..., ControlClient],
) -> None:
    client = serve(lambda _request: Pong("x", 1))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(3)
        raw.connect(str(client.path))
        raw.sendall(b'{"op": "set_threads", "threads": "many"}\n')
        reply = json.loads(raw.makefile().readline())
    assert reply == {"ok": False, "kind": "ControlError",
                     "error": "bad request: SetThreads.threads: want int, got str"}


def test_an_answer_that_does_not_fit_is_a_control_error(
    serve: Callable[..., ControlClient],
) -> None:
    client = serve(lambda _request: ThreadsSet(3))  # a ping answered with the wrong type
    with pytest.raises(ControlError, match="answer does not fit: Pong: unknown field"):
        client.ping()


def test_no_daemon_is_one_clear_line(tmp_path: Path) -> None:
    client = ControlClient(tmp_path / "none.sock")
    with pytest.raises(ControlError, match="daemon is not running"):
        client.status()
    assert not client.running()
