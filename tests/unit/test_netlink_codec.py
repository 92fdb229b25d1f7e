"""Byte-level TCM-USER message encoding and decoding."""

from __future__ import annotations

import struct

import pytest

from tcmu_scst.errors import NetlinkError
from tcmu_scst.kernel import netlink as nl
from tcmu_scst.kernel.netlink import (
    AddedDevice,
    ReconfigDevice,
    RemovedDevice,
    TcmuGenlMsg,
    decode,
    decode_event,
    encode,
    split_messages,
)

FAMILY = 0x1B


def nla(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def kernel_message(cmd: int, attrs: bytes, seq: int = 0) -> bytes:
    body = struct.pack("=BBH", cmd, 2, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), FAMILY, 0, seq, 0) + body


DEVICE = b"tcm-user/0/d1/file//var/lib/d1.img\0"
BASE = (
    nla(nl.TCMU_ATTR_DEVICE, DEVICE)
    + nla(nl.TCMU_ATTR_MINOR, struct.pack("=I", 2))
    + nla(nl.TCMU_ATTR_DEVICE_ID, struct.pack("=I", 41))
)


def test_constants_match_target_core_user_h() -> None:
    assert (nl.TCMU_CMD_ADDED_DEVICE, nl.TCMU_CMD_SET_FEATURES) == (1, 7)
    assert nl.TCMU_CMD_RECONFIG_DEVICE_DONE == 6
    assert (nl.TCMU_ATTR_PAD, nl.TCMU_ATTR_DEVICE_ID, nl.TCMU_ATTR_SUPP_KERN_CMD_REPLY) == (3, 8, 9)
    names = [name for name, _ in TcmuGenlMsg.nla_map]
    assert names.index("TCMU_ATTR_DEV_SIZE") == nl.TCMU_ATTR_DEV_SIZE
    assert names.index("TCMU_ATTR_CMD_STATUS") == nl.TCMU_ATTR_CMD_STATUS


def test_decode_hand_built_added() -> None:
    event = decode_event(decode(TcmuGenlMsg, kernel_message(nl.TCMU_CMD_ADDED_DEVICE, BASE)))
    assert event == AddedDevice(
        cmd=1, device="tcm-user/0/d1/file//var/lib/d1.img", minor=2, device_id=41, version=2
    )
    assert (event.hba_index, event.name, event.dev_config) == (0, "d1", "file//var/lib/d1.img")
    assert event.done_cmd == nl.TCMU_CMD_ADDED_DEVICE_DONE


def test_decode_reconfig_with_pad_before_dev_size() -> None:
    attrs = (
        BASE + nla(nl.TCMU_ATTR_PAD, b"") + nla(nl.TCMU_ATTR_DEV_SIZE, struct.pack("=Q", 1 << 33))
    )
    event = decode_event(decode(TcmuGenlMsg, kernel_message(nl.TCMU_CMD_RECONFIG_DEVICE, attrs)))
    assert isinstance(event, ReconfigDevice)
    assert event.dev_size == 1 << 33
    assert event.dev_cfg is None and event.write_cache is None


def test_decode_reconfig_dev_cfg_and_write_cache() -> None:
    attrs = BASE + nla(nl.TCMU_ATTR_DEV_CFG, b"file//new\n\0")
    event = decode_event(decode(TcmuGenlMsg, kernel_message(3, attrs)))
    assert isinstance(event, ReconfigDevice) and event.dev_cfg == "file//new\n"
    attrs = BASE + nla(nl.TCMU_ATTR_WRITECACHE, b"\x01")
    event = decode_event(decode(TcmuGenlMsg, kernel_message(3, attrs)))
    assert isinstance(event, ReconfigDevice) and event.write_cache is True


def test_removed_and_unknown_commands() -> None:
    event = decode_event(decode(TcmuGenlMsg, kernel_message(2, BASE)))
    assert isinstance(event, RemovedDevice) and event.done_cmd == 5
    assert decode_event(decode(TcmuGenlMsg, kernel_message(7, b""))) is None
    with pytest.raises(NetlinkError, match="DEVICE_ID"):
        decode_event(decode(TcmuGenlMsg, kernel_message(1, nla(1, DEVICE))))


def test_encode_reply_is_byte_exact() -> None:
    data = encode(
        TcmuGenlMsg,
        FAMILY,
        nl.TCMU_CMD_ADDED_DEVICE_DONE,
        [("TCMU_ATTR_CMD_STATUS", -5), ("TCMU_ATTR_DEVICE_ID", 41)],
        seq=9,
        flags=nl.NLM_F_REQUEST | nl.NLM_F_ACK,
    )
    expected = (
        struct.pack("=IHHII", 36, FAMILY, 5, 9, 0)
        + struct.pack("=BBH", 4, 2, 0)
        + nla(nl.TCMU_ATTR_CMD_STATUS, struct.pack("=i", -5))
        + nla(nl.TCMU_ATTR_DEVICE_ID, struct.pack("=I", 41))
    )
    assert data == expected


def test_split_messages_handles_several_and_truncation() -> None:
    one = kernel_message(1, BASE, seq=1)
    two = kernel_message(2, BASE, seq=2)
    parts = split_messages(one + two)
    assert [(t, s) for t, _f, s, _r in parts] == [(FAMILY, 1), (FAMILY, 2)]
    assert parts[1][3] == two
    with pytest.raises(NetlinkError, match="truncated"):
        split_messages(one[:-4])
