"""vdisk_rbd: the rbd: file name, its parameters, and the handler over a fake librbd.

The fake (``rbd_fakes``) replaces only the cluster, pool and image objects; commands
go through the real handler, SBC emulation and aio completion path.
"""

from __future__ import annotations

import errno
import importlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tcmu_scst.command import BUSY, CHECK_CONDITION, GOOD, Command, DataBuffer, Result
from tcmu_scst.errors import ConfigError, HandlerError
from tcmu_scst.handlers import _rbd_binding, _vdisk_rbd, rbd_spec, vdisk
from tcmu_scst.handlers.vdisk_params import (
    RBD,
    VdiskParams,
    parse_attributes,
    parse_dev_config,
    parse_proc_open,
    to_attributes,
    to_dev_config,
)
from tcmu_scst.handlers.vdisk_rbd import RbdHandler
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scst import devconfig
from tcmu_scst.scst.model import Device
from tcmu_scst.testing import scsi_harness as h
from tests.unit.rbd_fakes import OBJECT, FakeCluster, FakeImage, RadosError

MiB = 1 << 20
FILENAME = "rbd:pool/disk:conf=/etc/ceph/test.conf:id=tcmu"


# -- the rbd: file name ----------------------------------------------------------------


def test_spec_parses_pool_image_conf_id_and_options() -> None:
    spec = rbd_spec.parse(r"rbd:p1/img-2.x:conf=/a\:b.conf:id=client.admin:rbd_cache_size=1024")
    assert (spec.pool, spec.image, spec.conf, spec.user) == ("p1", "img-2.x", "/a:b.conf", "admin")
    assert spec.rados_options["rbd_cache_size"] == "1024"
    # A cluster that stops answering fails I/O in bounded time unless the user says otherwise.
    assert spec.rados_options["rados_osd_op_timeout"] == rbd_spec.DEFAULT_OSD_OP_TIMEOUT
    custom = rbd_spec.parse("rbd:p/i:rados_osd_op_timeout=5")
    assert custom.rados_options["rados_osd_op_timeout"] == "5"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("rbd:pool", "POOL/IMAGE"),
        ("rbd:/img", "POOL/IMAGE"),
        ("rbd:pool/img@snap", "no snapshots"),
        ("rbd:pool/ns/img", "no namespaces"),
        ("rbd:pool/img:conf", "KEY=VALUE"),
        ("rbd:pool/img:conf=relative.conf", "absolute"),
        ("rbd:pool/img:Bad-Key=1", "no Ceph option"),
        ("/var/disk.img", "no RBD image"),
    ],
)
def test_spec_errors_are_one_line_and_precise(name: str, words: str) -> None:
    with pytest.raises(HandlerError) as info:
        rbd_spec.parse(name)
    assert words in str(info.value) and "\n" not in str(info.value)


# -- parameters: scst.conf attributes, dev_config, 0.9.6 proc --------------------------------


def test_attributes_and_dev_config_round_trip() -> None:
    params = parse_attributes(RBD, "d1", {"filename": FILENAME, "thin_provisioned": "1",
                                          "write_through": "1", "blocksize": "4096"})
    assert params.rbd and params.handler_name == RBD and params.vendor == "SCST_RBD"
    text = to_dev_config(params)
    assert ":" not in text and "," not in text
    assert parse_dev_config(text) == params
    assert to_attributes(params) == (RBD, {"filename": FILENAME, "blocksize": "4096",
                                           "write_through": "1", "thin_provisioned": "1"})


def test_proc_open_with_an_rbd_name_is_an_rbd_device() -> None:
    params = parse_proc_open("open d1 rbd:pool/disk 4096 WRITE_THROUGH")
    assert params.handler_name == RBD and params.blocksize == 4096 and params.write_through


@pytest.mark.parametrize(
    ("handler", "attrs", "words"),
    [
        (RBD, {"filename": "/var/disk.img"}, "rbd:POOL/IMAGE"),
        ("vdisk_fileio", {"filename": "rbd:pool/disk"}, "needs the vdisk_rbd handler"),
        (RBD, {"filename": "rbd:pool/disk", "nv_cache": "1"}, "unknown attribute"),
        (RBD, {"filename": "rbd:pool/disk", "o_direct": "1"}, "unknown attribute"),
    ],
)
def test_attribute_errors(handler: str, attrs: dict[str, str], words: str) -> None:
    with pytest.raises((ConfigError, HandlerError)) as info:
        parse_attributes(handler, "d1", attrs)
    assert words in str(info.value)


def test_proc_flags_an_image_cannot_have_are_refused() -> None:
    with pytest.raises(HandlerError, match="cannot be NV_CACHE"):
        parse_proc_open("open d1 rbd:pool/disk NV_CACHE")


# -- the binding ------------------------------------------------------------------------


def test_missing_binding_names_the_packages(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    real_import = importlib.import_module

    def no_ceph(name: str, package: str | None = None) -> object:
        if name in ("rados", "rbd"):
            raise ImportError(name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", no_ceph)
    monkeypatch.setattr(_rbd_binding, "DIST_PACKAGES", tmp_path)
    with pytest.raises(HandlerError) as info:
        _rbd_binding.load()
    message = str(info.value)
    assert "apt-get install python3-rados python3-rbd" in message and "\n" not in message


# -- the handler over a fake cluster ----------------------------------------------------------


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster()
    monkeypatch.setattr(_rbd_binding, "load", fake.binding)
    return fake


def open_disk(cluster: FakeCluster, size: int = 4 * MiB, filename: str = FILENAME,
              **flags: bool) -> tuple[RbdHandler, FakeImage]:
    image = cluster.pools.get("pool", {}).get("disk") or cluster.add_image("pool", "disk", size)
    params = VdiskParams(name="d1", filename=filename, **flags)
    handler = vdisk.open_dev_config(to_dev_config(params))
    assert isinstance(handler, RbdHandler)
    return handler, image


def submit(handler: RbdHandler, cdb: bytes, data_out: bytes | None = None,
           in_len: int = 0) -> h.Reply:
    """Run one command, waiting for an asynchronous completion when there is one."""
    answered: list[Result] = []
    done = threading.Event()

    def complete(result: Result) -> None:
        answered.append(result)
        done.set()

    probe, backing = h.make_command(cdb, data_out, in_len)
    cmd = Command(1, probe.cdb, probe.data, complete=complete)
    result = handler.handle(cmd)
    if result is None:
        assert done.wait(10), "the asynchronous completion never came"
        result = answered[0]
    else:
        assert not answered
    placed = result.data_in_len or 0
    return h.Reply(result, bytes(backing[:placed]), bytes(backing))


def test_open_configures_the_cluster_handle(cluster: FakeCluster) -> None:
    handler, _ = open_disk(cluster)
    assert cluster.conf["@conffile"] == "/etc/ceph/test.conf" and cluster.conf["@id"] == "tcmu"
    assert cluster.conf["rbd_cache"] == "true"  # write-back by default (WCE=1)
    assert cluster.conf["rbd_skip_partial_discard"] == "false"  # unmapped reads as zeros
    assert handler.size == 4 * MiB and handler.mode_names() == "RBD"
    handler.close()
    assert not cluster.connected


def test_write_through_turns_the_librbd_cache_off(cluster: FakeCluster) -> None:
    handler, image = open_disk(cluster, write_through=True)
    assert cluster.conf["rbd_cache"] == "false"
    # Every write is durable (WCE=0): without a cache, once librbd completes it.
    reply = submit(handler, h.rw_cdb(op.WRITE_10, 0, 1, byte1=0x08), b"\x11" * 512)
    assert reply.status == GOOD and image.calls == ["aio_write", "write"]


def test_read_and_write_complete_asynchronously(cluster: FakeCluster) -> None:
    handler, image = open_disk(cluster)
    payload = bytes(range(256)) * 8
    cmd = Command(1, h.rw_cdb(op.WRITE_10, 8, 4), DataBuffer([memoryview(bytearray(payload))]),
                  complete=lambda r: None)
    assert handler.handle(cmd) is None  # answered later, from librbd's thread
    reply = submit(handler, h.rw_cdb(op.WRITE_10, 8, 4), payload)
    assert reply.status == GOOD and image.data[8 * 512 : 12 * 512] == payload
    assert "aio_write" in image.calls and "aio_flush" not in image.calls
    reply = submit(handler, h.rw_cdb(op.READ_16, 8, 4), in_len=2048)
    assert reply.status == GOOD and reply.data == payload and "aio_read" in image.calls


def test_fua_write_is_flushed_before_good(cluster: FakeCluster) -> None:
    handler, image = open_disk(cluster)
    reply = submit(handler, h.rw_cdb(op.WRITE_10, 0, 1, byte1=0x08), b"\x11" * 512)
    assert reply.status == GOOD
    assert image.calls[-4:] == ["aio_write", "write", "aio_flush", "flush"]


def test_synchronize_cache_flushes(cluster: FakeCluster) -> None:
    handler, image = open_disk(cluster)
    assert submit(handler, h.rw_cdb(op.SYNCHRONIZE_CACHE, 0, 0)).status == GOOD
    assert image.calls[-1] == "flush"


def test_unmap_and_write_same_unmap_discard(cluster: FakeCluster) -> None:
    handler, image = open_disk(cluster, thin_provisioned=True)
    submit(handler, h.rw_cdb(op.WRITE_10, 0, 32), b"\xee" * (32 * 512))
    params = h.unmap_params([(0, 8)])
    assert submit(handler, h.unmap(len(params)), params).status == GOOD
    assert image.calls[-1] == "discard" and image.data[:4096] == bytes(4096)
    assert image.data[4096:8192] == b"\xee" * 4096
    reply = submit(handler, h.rw_cdb(op.WRITE_SAME_16, 8, 8, byte1=0x08), bytes(512))
    assert reply.status == GOOD and image.calls[-1] == "discard"
    # GET LBA STATUS from the allocation map: blocks 0-15 deallocated, 16-31 mapped.
    reply = submit(handler, h.get_lba_status(0), in_len=4096)
    assert reply.status == GOOD
    first = reply.data[8:24]
    assert int.from_bytes(first[:8], "big") == 0 and int.from_bytes(first[8:12], "big") == 16
    assert first[12] & 0x0F == 1  # deallocated


def test_get_lba_status_asks_librbd_only_about_objects_that_exist(cluster: FakeCluster) -> None:
    # The object map first (whole objects: no OSD round trip), then the precise
    # extents of the objects it names: not one round trip per object of the range.
    handler, image = open_disk(cluster, thin_provisioned=True)
    for lba in (8, 2048 + 16, 8191):  # 4 KiB at 4 KiB, 1 MiB + 8 KiB, the last block
        submit(handler, h.rw_cdb(op.WRITE_10, lba, 1), b"\x01" * 512)
    image.diffs.clear()
    reply = submit(handler, h.get_lba_status(0), in_len=4096)
    assert reply.status == GOOD
    descriptors = [(int.from_bytes(reply.data[p : p + 8], "big"),
                    int.from_bytes(reply.data[p + 8 : p + 12], "big"), reply.data[p + 12])
                   for p in range(8, len(reply.data), 16)]
    assert descriptors == [(0, 8, 1), (8, 8, 0), (16, 2048, 1), (2064, 8, 0),
                           (2072, 8184 - 2072, 1), (8184, 8, 0)]
    object_blocks = OBJECT // 512
    assert image.diffs == [(0, 4 * MiB, True), (0, OBJECT, False),
                           (2048 // object_blocks * OBJECT, OBJECT, False),
                           (4 * MiB - OBJECT, OBJECT, False)]
    handler.close()


def test_write_same_writes_the_pattern(cluster: FakeCluster) -> None:
    handler, image = open_disk(cluster)
    reply = submit(handler, h.rw_cdb(op.WRITE_SAME_16, 2, 3), b"\x5a" * 512)
    assert reply.status == GOOD and image.data[1024 : 1024 + 1536] == b"\x5a" * 1536


def test_compare_and_write(cluster: FakeCluster) -> None:
    handler, image = open_disk(cluster)
    image.data[0:512] = b"\x01" * 512
    good = submit(handler, h.compare_and_write(0, 1), b"\x01" * 512 + b"\x02" * 512)
    assert good.status == GOOD and image.data[:512] == b"\x02" * 512
    bad = submit(handler, h.compare_and_write(0, 1), b"\x01" * 512 + b"\x03" * 512)
    assert bad.status == CHECK_CONDITION and bad.sense.code == (0xE, 0x1D, 0x00)
    assert image.data[:512] == b"\x02" * 512


def test_read_only_refuses_writes(cluster: FakeCluster) -> None:
    handler, image = open_disk(cluster, read_only=True)
    assert image.read_only
    reply = submit(handler, h.rw_cdb(op.WRITE_10, 0, 1), bytes(512))
    assert reply.status == CHECK_CONDITION and reply.sense.code == (0x7, 0x27, 0x00)


def test_unreachable_cluster_is_a_retryable_aborted_command(cluster: FakeCluster) -> None:
    handler, image = open_disk(cluster)
    # librados' op timeout: COMMAND TIMEOUT DURING PROCESSING, which Linux retries (not
    # NOT READY 04/0A, an ALUA transition recent kernels requeue every second).
    image.fail = errno.ETIMEDOUT
    for cdb, data, in_len in ((h.rw_cdb(op.READ_10, 0, 1), None, 512),
                              (h.rw_cdb(op.WRITE_10, 0, 1), bytes(512), 0),
                              (h.rw_cdb(op.SYNCHRONIZE_CACHE, 0, 0), None, 0)):
        reply = submit(handler, cdb, data, in_len)
        assert reply.status == CHECK_CONDITION and reply.sense.code == (0xB, 0x2E, 0x02)
    image.fail = errno.ESHUTDOWN  # blocklisted, connection gone: communication failure
    reply = submit(handler, h.rw_cdb(op.WRITE_10, 0, 1), bytes(512))
    assert reply.sense.code == (0xB, 0x08, 0x00)
    image.fail = errno.EIO  # a real I/O error stays a medium error
    reply = submit(handler, h.rw_cdb(op.READ_10, 0, 1), in_len=512)
    assert reply.sense.code == (0x3, 0x11, 0x00)
    image.fail = 0  # the cluster is back: I/O resumes on the same handle
    assert submit(handler, h.rw_cdb(op.READ_10, 0, 1), in_len=512).status == GOOD


def test_an_operation_librbd_never_finishes_is_answered_by_its_deadline(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # librbd holds I/O without a timeout when it waits for the exclusive lock while
    # the image's watch is broken: the command must be answered anyway, and nothing
    # new queued behind it until librbd lets go.
    monkeypatch.setattr(_vdisk_rbd, "DEADLINE_SLACK", 0.0)
    handler, image = open_disk(cluster, filename=FILENAME + ":rados_osd_op_timeout=0.05")
    image.data[:512] = b"\x42" * 512
    image.hang = True
    cluster.down = True  # no new client either (see the next test)
    answers: list[Result] = []
    answered = threading.Event()

    def complete(result: Result) -> None:
        answers.append(result)
        answered.set()

    read, backing = h.make_command(h.rw_cdb(op.READ_10, 0, 1), in_len=512)
    cmd = Command(1, read.cdb, read.data, complete=complete)
    assert handler.handle(cmd) is None
    assert answered.wait(10), "a read librbd never finished was never answered"
    assert answers[0].status == CHECK_CONDITION
    assert h.Sense.parse(answers[0].sense).code == (0xB, 0x2E, 0x02)
    assert handler.backend.stalled == 1
    # While librbd holds it: BUSY at once, on the ring thread too, nothing submitted.
    submitted = len(image.calls)
    for cdb, data in ((h.rw_cdb(op.WRITE_10, 0, 1), bytes(512)),
                      (h.rw_cdb(op.SYNCHRONIZE_CACHE, 0, 0), None)):
        assert submit(handler, cdb, data).status == BUSY
    probe, _ = h.make_command(h.rw_cdb(op.READ_16, 0, 1), in_len=512)
    assert handler.try_inline(probe) == Result(BUSY)
    assert submit(handler, h.inquiry(), in_len=96).status == GOOD  # no I/O: answered
    assert len(image.calls) == submitted
    # The cluster returns: the late completion answers nothing and writes nothing
    # into the (ring's) buffer, which the initiator may have reused by then.
    cluster.down = False
    image.release()
    assert len(answers) == 1 and backing == bytearray([h.STALE]) * 512
    assert handler.backend.stalled == 0
    reply = submit(handler, h.rw_cdb(op.READ_10, 0, 1), in_len=512)
    assert reply.status == GOOD and reply.data == b"\x42" * 512
    # The workers' synchronous calls are bounded the same way.
    image.hang = True
    reply = submit(handler, h.rw_cdb(op.SYNCHRONIZE_CACHE, 0, 0))
    assert reply.sense.code == (0xB, 0x2E, 0x02) and handler.backend.stalled == 1
    image.release()
    assert handler.backend.stalled == 0
    handler.close()


def test_a_client_that_never_lets_go_is_fenced_off_and_replaced(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_vdisk_rbd, "DEADLINE_SLACK", 0.0)
    monkeypatch.setattr(_vdisk_rbd, "RECOVERY_RETRY", 0.01)
    handler, image = open_disk(cluster, filename=FILENAME + ":rados_osd_op_timeout=0.05")
    first = cluster.clients[-1]
    cluster.down = True
    image.hang = True
    reply = submit(handler, h.rw_cdb(op.WRITE_10, 0, 1), b"\x01" * 512)
    assert reply.sense.code == (0xB, 0x2E, 0x02)
    assert submit(handler, h.rw_cdb(op.READ_10, 0, 1), in_len=512).status == BUSY
    # The cluster is back, but the first client never finishes what it holds: a new
    # client opens the image, and the old one is blocklisted before anything is sent.
    image.hang = False
    cluster.down = False
    _wait_for(lambda: not handler.backend.busy, "the new client serving")
    assert handler.backend.stalled == 0
    assert cluster.blocklisted == [(first, _vdisk_rbd.BLOCKLIST_SECONDS)]
    reply = submit(handler, h.rw_cdb(op.WRITE_10, 0, 1), b"\x02" * 512)
    assert reply.status == GOOD and image.data[:512] == b"\x02" * 512
    handler.close()


def _wait_for(condition: Callable[[], object], what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"never: {what}")


def _stall_then_recover(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch,
                        while_fencing: Callable[[RbdHandler, FakeImage], None]
                        ) -> tuple[RbdHandler, FakeImage]:
    """A write librbd never finishes (answered by its deadline), then the cluster
    back: the recovery runs ``while_fencing`` between the old client's blocklist and
    the switch to the new one (``wait_for_latest_osdmap``); returns once it switched."""
    monkeypatch.setattr(_vdisk_rbd, "DEADLINE_SLACK", 0.0)
    monkeypatch.setattr(_vdisk_rbd, "RECOVERY_RETRY", 0.01)
    handler, image = open_disk(cluster, filename=FILENAME + ":rados_osd_op_timeout=0.05")
    image.hang = True
    reply = submit(handler, h.rw_cdb(op.WRITE_10, 0, 1), b"\x01" * 512)
    assert reply.sense.code == (0xB, 0x2E, 0x02)
    cluster.on_osdmap = lambda: while_fencing(handler, image)
    _wait_for(lambda: len(cluster.handles) == 2 and handler.backend.image is cluster.handles[1]
              and handler.try_inline(h.make_command(h.rw_cdb(op.READ_16, 0, 1), in_len=512)[0])
              is None, "the new client serving")
    return handler, image


def test_no_command_reaches_a_fenced_client(cluster: FakeCluster,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Once blocklisted, the old client's held write fails (librbd lets go of it), so
    # nothing is stalled any more, but the new client does not serve yet: a command
    # arriving then is BUSY (the initiator retries it), never sent to the fenced
    # client (which would fail it: COMMUNICATION FAILURE).
    window: list[object] = []

    def while_fencing(handler: RbdHandler, image: FakeImage) -> None:
        image.release()
        window.append(handler.backend.stalled)
        window.append(submit(handler, h.rw_cdb(op.WRITE_10, 0, 1), b"\x03" * 512).status)
        probe, _ = h.make_command(h.rw_cdb(op.READ_16, 0, 1), in_len=512)
        window.append(handler.try_inline(probe))

    handler, image = _stall_then_recover(cluster, monkeypatch, while_fencing)
    assert window == [0, BUSY, Result(BUSY)]
    assert cluster.fenced_calls == []
    reply = submit(handler, h.rw_cdb(op.WRITE_10, 0, 1), b"\x02" * 512)
    assert reply.status == GOOD and image.data[:512] == b"\x02" * 512
    assert cluster.fenced_calls == []
    # Its operations ended (failed) already: the old client is closed, not leaked.
    old = cluster.handles[0]
    _wait_for(lambda: old.client in cluster.shut_down, "the old client shut down")
    assert old.closed and not cluster.handles[1].closed
    handler.close()


def test_a_client_fenced_half_way_is_never_used_again(cluster: FakeCluster,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The old client is blocklisted, its held write fails (nothing is stalled any
    # more), then the fencing attempt fails (no answer to the osdmap wait) and the
    # cluster is away: until a later attempt succeeds, I/O is BUSY, never sent to it.
    attempts: list[int] = []

    def while_fencing(handler: RbdHandler, image: FakeImage) -> None:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            image.release()
            cluster.down = True
            raise RadosError("[errno 110] RADOS timed out", errno.ETIMEDOUT)

    monkeypatch.setattr(_vdisk_rbd, "DEADLINE_SLACK", 0.0)
    monkeypatch.setattr(_vdisk_rbd, "RECOVERY_RETRY", 0.01)
    handler, image = open_disk(cluster, filename=FILENAME + ":rados_osd_op_timeout=0.05")
    image.hang = True
    cluster.on_osdmap = lambda: while_fencing(handler, image)
    reply = submit(handler, h.rw_cdb(op.WRITE_10, 0, 1), b"\x01" * 512)
    assert reply.sense.code == (0xB, 0x2E, 0x02)
    _wait_for(lambda: attempts and handler.backend.stalled == 0, "a failed fencing attempt")
    for _ in range(3):
        reply = submit(handler, h.rw_cdb(op.WRITE_10, 0, 1), b"\x03" * 512)
        assert reply.status == BUSY
        threading.Event().wait(0.02)
    assert cluster.fenced_calls == [] and len(attempts) == 1
    cluster.down = False
    _wait_for(lambda: handler.backend.image is cluster.handles[-1]
              and not handler.backend.busy, "the new client serving")
    reply = submit(handler, h.rw_cdb(op.WRITE_10, 0, 1), b"\x02" * 512)
    assert reply.status == GOOD and image.data[:512] == b"\x02" * 512
    assert cluster.fenced_calls == [] and attempts == [0, 1]
    handler.close()


def test_a_replaced_client_is_closed_once_librbd_ends_what_it_held(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    def while_fencing(handler: RbdHandler, image: FakeImage) -> None:
        image.hang = False  # new I/O runs; the old client's write stays held

    handler, image = _stall_then_recover(cluster, monkeypatch, while_fencing)
    old = cluster.handles[0]
    assert submit(handler, h.rw_cdb(op.WRITE_10, 0, 1), b"\x02" * 512).status == GOOD
    assert not old.closed  # librbd still holds its write
    image.release()  # it ends (fenced: ESHUTDOWN), and lands nowhere
    _wait_for(lambda: old.client in cluster.shut_down, "the old client shut down")
    assert old.closed and image.data[:512] == b"\x02" * 512
    assert cluster.fenced_calls == []
    handler.close()
    assert cluster.handles[1].closed


def test_op_timeout_must_be_seconds(cluster: FakeCluster) -> None:
    cluster.add_image("pool", "disk", MiB)
    for value, words in (("soon", "not a number of seconds"), ("-1", "negative")):
        with pytest.raises(HandlerError, match=words):
            open_disk(cluster, filename=f"{FILENAME}:rados_osd_op_timeout={value}")


def test_resize_grows_the_image_and_reports_capacity_change(cluster: FakeCluster) -> None:
    handler, image = open_disk(cluster)
    image.resize(8 * MiB)  # rbd resize elsewhere, then the admin's resync (dev_size)
    assert handler.resize(8 * MiB) == 8 * MiB
    reply = submit(handler, h.read_capacity16())
    assert reply.status == CHECK_CONDITION and reply.sense.code == (0x6, 0x2A, 0x09)
    reply = submit(handler, h.read_capacity16(), in_len=32)
    assert int.from_bytes(reply.data[:8], "big") == 8 * MiB // 512 - 1
    assert handler.resize(16 * MiB) == 16 * MiB and len(image.data) == 16 * MiB
    with pytest.raises(HandlerError, match="would hide data"):
        handler.resize(MiB)


def test_grown_size_tells_an_rbd_resize_elsewhere_without_serving_it(
    cluster: FakeCluster,
) -> None:
    handler, image = open_disk(cluster)
    served = handler.backend.size
    assert RbdHandler.watches_size and handler.grown_size() is None
    image.resize(served + 3 * MiB + 100)  # not a whole number of blocks
    assert handler.grown_size() == served + 3 * MiB  # whole blocks
    assert handler.backend.size == served  # served only after the RECONFIG
    assert handler.resize(served + 3 * MiB) == served + 3 * MiB
    assert handler.grown_size() is None


def test_missing_pool_or_image_is_a_one_line_open_error(cluster: FakeCluster) -> None:
    cluster.add_image("pool", "other", MiB)
    for filename, words in (("rbd:nopool/disk", "no pool 'nopool'"),
                            ("rbd:pool/disk", "has no image 'disk'; create it")):
        with pytest.raises(HandlerError, match=words):
            RbdHandler(VdiskParams(name="d1", filename=filename))
    cluster.down = True
    with pytest.raises(HandlerError, match="cannot connect"):
        RbdHandler(VdiskParams(name="d1", filename="rbd:pool/other"))


def test_config_check_opens_the_image(cluster: FakeCluster) -> None:
    cluster.add_image("pool", "disk", 3 * MiB)
    device = Device("d1", RBD, {"filename": "rbd:pool/disk"})
    devconfig.check_device_files(device)
    assert devconfig.size_of(device) == 3 * MiB
    missing = Device("d2", RBD, {"filename": "rbd:pool/gone"})
    with pytest.raises(ConfigError, match="has no image 'gone'"):
        devconfig.check_device_files(missing)
    assert devconfig.size_of(missing) == 0  # like a missing file: the daemon reports it
