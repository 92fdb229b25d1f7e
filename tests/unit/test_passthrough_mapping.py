"""SG_IO outcomes -> what the initiator gets."""

from __future__ import annotations

import errno

import pytest

from tcmu_scst.command import BUSY, CHECK_CONDITION, GOOD, RESERVATION_CONFLICT, Direction, Result
from tcmu_scst.handlers import sg_io
from tcmu_scst.handlers.sg_io import SgResult
from tcmu_scst.handlers.sg_mapping import map_errno, map_result

DEVICE_SENSE = bytes([0x72, 0x03, 0x11, 0x00, 0, 0, 0, 0])  # descriptor format, kept as is


def sg(status: int = GOOD, sense: bytes = b"", host: int = 0, driver: int = 0,
       resid: int = 0, dxfer_len: int = 512) -> SgResult:
    return SgResult(status, sense, host, driver, resid, 0, 1, dxfer_len)


def key_asc(result: Result) -> tuple[int, int, int, int]:
    return result.status, result.sense[2] & 0x0F, result.sense[12], result.sense[13]


def test_good_data_in_uses_residual() -> None:
    result = map_result(sg(resid=412, dxfer_len=512), Direction.IN)
    assert (result.status, result.data_in_len) == (GOOD, 100)


def test_data_out_reports_no_data_in() -> None:
    assert map_result(sg(resid=12), Direction.OUT).data_in_len is None


def test_device_status_and_sense_are_passed_unchanged() -> None:
    result = map_result(sg(CHECK_CONDITION, DEVICE_SENSE, driver=sg_io.DRIVER_SENSE, resid=512),
                        Direction.IN)
    assert result.status == CHECK_CONDITION and result.sense == DEVICE_SENSE
    assert result.data_in_len == 0
    assert map_result(sg(RESERVATION_CONFLICT), Direction.NONE).status == RESERVATION_CONFLICT
    assert map_result(sg(BUSY), Direction.NONE).status == BUSY
    assert map_result(sg(0x28), Direction.NONE).status == 0x28  # TASK SET FULL


def test_check_condition_without_sense_becomes_aborted_command() -> None:
    assert key_asc(map_result(sg(CHECK_CONDITION), Direction.NONE)) == (CHECK_CONDITION, 0xB, 0, 0)


@pytest.mark.parametrize(
    ("host", "driver", "expected"),
    [
        (sg_io.DID_NO_CONNECT, 0, (CHECK_CONDITION, 0x5, 0x25, 0x00)),
        (sg_io.DID_BAD_TARGET, 0, (CHECK_CONDITION, 0x5, 0x25, 0x00)),
        (sg_io.DID_TIME_OUT, 0, (CHECK_CONDITION, 0xB, 0x2E, 0x02)),
        (sg_io.DID_OK, sg_io.DRIVER_TIMEOUT, (CHECK_CONDITION, 0xB, 0x2E, 0x02)),
        (sg_io.DID_ABORT, 0, (CHECK_CONDITION, 0xB, 0x00, 0x00)),
        (sg_io.DID_RESET, 0, (CHECK_CONDITION, 0xB, 0x00, 0x00)),
        (sg_io.DID_TRANSPORT_DISRUPTED, 0, (CHECK_CONDITION, 0xB, 0x00, 0x00)),
        (sg_io.DID_ERROR, 0, (CHECK_CONDITION, 0x4, 0x44, 0x00)),
        (sg_io.DID_OK, sg_io.DRIVER_ERROR, (CHECK_CONDITION, 0x4, 0x44, 0x00)),
        (sg_io.DID_MEDIUM_ERROR, 0, (CHECK_CONDITION, 0x3, 0x11, 0x00)),
    ],
)
def test_host_and_driver_errors(host: int, driver: int, expected: tuple[int, ...]) -> None:
    assert key_asc(map_result(sg(host=host, driver=driver), Direction.IN)) == expected


@pytest.mark.parametrize("host", [sg_io.DID_BUS_BUSY, sg_io.DID_IMM_RETRY, sg_io.DID_REQUEUE])
def test_transient_host_states_are_busy(host: int) -> None:
    result = map_result(sg(host=host), Direction.OUT)
    assert (result.status, result.sense) == (BUSY, b"")


def test_nexus_failure_is_reservation_conflict() -> None:
    assert map_result(sg(host=sg_io.DID_NEXUS_FAILURE), Direction.OUT).status == (
        RESERVATION_CONFLICT
    )


def test_medium_error_on_write_is_write_error() -> None:
    assert key_asc(map_result(sg(host=sg_io.DID_MEDIUM_ERROR), Direction.OUT))[2] == 0x0C


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENODEV, (CHECK_CONDITION, 0x5, 0x25, 0x00)),
        (errno.ENXIO, (CHECK_CONDITION, 0x5, 0x25, 0x00)),
        (errno.EINTR, (CHECK_CONDITION, 0xB, 0x00, 0x00)),
        (errno.EINVAL, (CHECK_CONDITION, 0x5, 0x24, 0x00)),
        (errno.EIO, (CHECK_CONDITION, 0x4, 0x44, 0x00)),
    ],
)
def test_errno_mapping(code: int, expected: tuple[int, ...]) -> None:
    assert key_asc(map_errno(code)) == expected


@pytest.mark.parametrize("code", [errno.ENOMEM, errno.EAGAIN, errno.EBUSY])
def test_resource_errnos_are_busy(code: int) -> None:
    assert map_errno(code).status == BUSY
