"""The flat READ/WRITE(10/16) path answers exactly what the general path answers."""

from __future__ import annotations

import errno
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from tcmu_scst.command import Command, DataBuffer, Result
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi.block import BackendError, WouldBlock
from tcmu_scst.scsi.sbc import SbcDevice
from tcmu_scst.scsi.spc import SpcDevice
from tcmu_scst.testing import scsi_harness as h
from tcmu_scst.testing.memory_backend import MemoryBackend
from tcmu_scst.testing.scsi_harness import make_disk, run

BS = 512
SIZE = 64 * BS
PLAIN = (op.READ_10, op.WRITE_10, op.READ_16, op.WRITE_16)


def _general(dev: SbcDevice) -> SbcDevice:
    """The same device, its data-path shortcut bypassed (SpcDevice's dispatch)."""

    class General(SbcDevice):
        def _execute(self, cmd):  # type: ignore[no-untyped-def]
            return SpcDevice._execute(self, cmd)

    dev.__class__ = General
    return dev


def _pair(state: dict[str, object], count: int = 2) -> tuple[tuple[SbcDevice, MemoryBackend], ...]:
    """``count`` identical devices; the second one answers by the general path."""
    out = []
    for general in (False, True, False)[:count]:
        dev, backend = make_disk(SIZE, read_only=bool(state["read_only"]))
        backend.data[:] = bytes(i * 7 & 0xFF for i in range(SIZE))
        if general:
            _general(dev)
        if state["ua"]:
            dev.notify_resized()
        dev.started = not state["stopped"]
        if state["fail"]:
            backend.fail("write", errno.ENOSPC)
            backend.fail("read", errno.EIO)
        out.append((dev, backend))
    return tuple(out)


def usually(
    plain: st.SearchStrategy[int], odd: st.SearchStrategy[int]
) -> st.SearchStrategy[int]:
    """``plain`` four times in five: most examples are commands the shortcut takes."""
    return st.sampled_from([True, True, True, True, False]).flatmap(
        lambda p: plain if p else odd
    )


def rarely() -> st.SearchStrategy[bool]:
    return st.sampled_from([False, False, False, False, True])


@settings(max_examples=600, deadline=None)
@given(
    opcode=st.sampled_from(PLAIN),
    lba=usually(st.integers(0, 60), st.integers(0, 2**64 - 1)),
    blocks=usually(st.integers(1, 4), st.integers(0, 2**32 - 1)),
    byte1=usually(st.sampled_from([0, 0x08, 0x10]), st.integers(0, 255)),
    group=usually(st.just(0), st.integers(0, 255)),
    control=usually(st.just(0), st.integers(0, 255)),
    extra=usually(st.just(0), st.sampled_from([-1, 1])),  # CDB one byte short / long
    buf_blocks=usually(st.integers(4, 6), st.integers(0, 10)),
    state=st.fixed_dictionaries({
        "read_only": rarely(), "ua": rarely(), "stopped": rarely(), "fail": rarely(),
    }),
)
def test_plain_path_answers_like_the_general_path(
    opcode: int, lba: int, blocks: int, byte1: int, group: int, control: int, extra: int,
    buf_blocks: int, state: dict[str, object],
) -> None:
    cdb = bytearray(h.rw_cdb(opcode, lba % (2**32 if opcode in (0x28, 0x2A) else 2**64),
                             blocks % (2**16 if opcode in (0x28, 0x2A) else 2**32)))
    cdb[1] = byte1
    cdb[-2] = group
    cdb[-1] = control
    raw = bytes(cdb) + b"\x00" if extra > 0 else bytes(cdb[: len(cdb) + extra] if extra else cdb)
    writing = opcode in (op.WRITE_10, op.WRITE_16)
    data = bytes((i * 13 + 5) & 0xFF for i in range(buf_blocks * BS))
    replies = []
    for i, (dev, backend) in enumerate(_pair(state, 3)):
        # The third device is served as the ring thread serves: the flat path's
        # single call first, the worker's execute() when it declines.
        execute = dev.execute if i < 2 else _ring_thread(dev, backend)
        reply = run(execute, raw, data_out=data if writing else None,
                    in_len=0 if writing else buf_blocks * BS)
        replies.append((reply.result, reply.buffer, bytes(backend.data),
                        dev.unit_attentions.pending()))
    assert replies[0] == replies[1] == replies[2]


def _ring_thread(dev: SbcDevice, backend: MemoryBackend) -> Callable[[Command], Result]:
    """try_plain_nowait over a transfer like the file backend's (declines durable
    writes and errors), then execute() for what it did not answer."""

    def transfer(offset: int, views: list[memoryview], length: int, writing: bool,
                 fua: bool) -> int | None:
        if writing and fua:
            return None
        try:
            if writing:
                backend.write(offset, length, DataBuffer(views))
            else:
                backend.read(offset, length, DataBuffer(views))
        except BackendError:
            return None
        return length

    def execute(cmd: Command) -> Result:
        try:
            result = dev.try_plain_nowait(cmd, transfer)
        except WouldBlock:
            result = None
        return dev.execute(cmd) if result is None else result

    return execute


def test_the_shortcut_is_taken_for_plain_commands() -> None:
    dev, backend = make_disk(SIZE)
    calls: list[int] = []
    real = SpcDevice._execute

    def spy(self: SpcDevice, cmd: object) -> object:
        calls.append(1)
        return real(self, cmd)  # type: ignore[arg-type]

    SpcDevice._execute = spy  # type: ignore[method-assign,assignment]
    try:
        assert run(dev.execute, h.rw_cdb(op.WRITE_10, 3, 2), data_out=b"x" * 1024).status == 0
        assert run(dev.execute, h.rw_cdb(op.READ_16, 3, 2), in_len=1024).data == b"x" * 1024
        assert calls == []  # neither went through the general dispatch
        run(dev.execute, h.rw_cdb(op.READ_6, 3, 2), in_len=1024)
        assert calls == [1]
    finally:
        SpcDevice._execute = real  # type: ignore[method-assign]
    assert backend.data[3 * BS : 5 * BS] == b"x" * 1024
