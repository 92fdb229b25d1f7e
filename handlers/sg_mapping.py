"""From what SG_IO reported to what the initiator gets.

Policy (SAM-5 / SPC-4), decided once here:

* The device answered (host byte DID_OK): its SCSI status and sense bytes go to the
  initiator unchanged. Data-In length = ``dxfer_len - resid`` (also with CHECK
  CONDITION: TCMU returns data with sense, SPC's "data may have been transferred").
  A CHECK CONDITION without sense bytes (a broken LLD) becomes ABORTED COMMAND
  00h/00h so the initiator retries rather than reading an empty sense.
* The device is gone (DID_NO_CONNECT, DID_BAD_TARGET, errno ENODEV/ENXIO):
  ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED (25h/00h), as SCST answered for LUNs
  it could not serve.
* Timeout (DID_TIME_OUT, DRIVER_TIMEOUT): CHECK CONDITION, ABORTED COMMAND,
  COMMAND TIMEOUT DURING PROCESSING (2Eh/02h, SPC-5). Not BUSY: BUSY promises the
  command was not executed, while a timed-out command may have been (a write may
  have reached the medium, a tape may have moved). ABORTED COMMAND says "state
  unknown, retry if you may", which the Linux initiator does.
* Aborted or reset by the host side (DID_ABORT, DID_RESET, DID_SOFT_ERROR,
  DID_TRANSPORT_*): ABORTED COMMAND 00h/00h for the same reason.
* Transient host congestion before the command was sent (DID_BUS_BUSY,
  DID_IMM_RETRY, DID_REQUEUE, ENOMEM, EAGAIN, EBUSY): status BUSY.
* DID_NEXUS_FAILURE (a reservation conflict on the local path): RESERVATION CONFLICT.
* DID_MEDIUM_ERROR: MEDIUM ERROR, UNRECOVERED READ ERROR / WRITE ERROR by direction.
* Any other host/driver failure: HARDWARE ERROR, INTERNAL TARGET FAILURE (44h/00h).
"""

from __future__ import annotations

import errno

from tcmu_scst.command import (
    BUSY,
    CHECK_CONDITION,
    GOOD,
    RESERVATION_CONFLICT,
    Direction,
    Result,
)
from tcmu_scst.scsi.sense import (
    ABORTED_COMMAND,
    HARDWARE_ERROR,
    ILLEGAL_REQUEST,
    MEDIUM_ERROR,
    build_sense,
)

from . import sg_io
from .sg_io import SgResult


def check(key: int, asc: int, ascq: int, data_in_len: int | None = None) -> Result:
    return Result(CHECK_CONDITION, build_sense(key, asc, ascq), data_in_len)


LUN_NOT_SUPPORTED = check(ILLEGAL_REQUEST, 0x25, 0x00)
TIMED_OUT = check(ABORTED_COMMAND, 0x2E, 0x02)
ABORTED = check(ABORTED_COMMAND, 0x00, 0x00)
INTERNAL_FAILURE = check(HARDWARE_ERROR, 0x44, 0x00)
BUSY_RESULT = Result(BUSY)

_GONE_HOSTS = frozenset({sg_io.DID_NO_CONNECT, sg_io.DID_BAD_TARGET})
_ABORTED_HOSTS = frozenset({
    sg_io.DID_ABORT, sg_io.DID_RESET, sg_io.DID_SOFT_ERROR, sg_io.DID_TRANSPORT_DISRUPTED,
    sg_io.DID_TRANSPORT_FAILFAST, sg_io.DID_TRANSPORT_MARGINAL, sg_io.DID_PARITY,
})
_BUSY_HOSTS = frozenset({sg_io.DID_BUS_BUSY, sg_io.DID_IMM_RETRY, sg_io.DID_REQUEUE})
GONE_ERRNOS = frozenset({errno.ENODEV, errno.ENXIO})
_BUSY_ERRNOS = frozenset({errno.ENOMEM, errno.EAGAIN, errno.EBUSY})


def is_gone(res: SgResult) -> bool:
    return res.host_status in _GONE_HOSTS


def map_result(res: SgResult, direction: Direction) -> Result:
    """The initiator's answer for a command the ioctl accepted."""
    data_in = res.transferred if direction is Direction.IN else None
    host = res.host_status
    driver = res.driver_status & sg_io.DRIVER_MASK
    if host == sg_io.DID_OK and driver != sg_io.DRIVER_TIMEOUT:
        if res.status == CHECK_CONDITION and not res.sense:
            return Result(ABORTED.status, ABORTED.sense, data_in)
        if res.status == CHECK_CONDITION:
            return Result(CHECK_CONDITION, res.sense, data_in)
        if res.status == GOOD and driver not in (sg_io.DRIVER_OK, sg_io.DRIVER_SENSE):
            return INTERNAL_FAILURE  # the driver failed the command despite GOOD
        return Result(res.status, b"", data_in)
    if host in _GONE_HOSTS:
        return LUN_NOT_SUPPORTED
    if host == sg_io.DID_TIME_OUT or driver == sg_io.DRIVER_TIMEOUT:
        return TIMED_OUT
    if host in _BUSY_HOSTS:
        return BUSY_RESULT
    if host in _ABORTED_HOSTS:
        return ABORTED
    if host == sg_io.DID_NEXUS_FAILURE:
        return Result(RESERVATION_CONFLICT)
    if host == sg_io.DID_MEDIUM_ERROR:
        return check(MEDIUM_ERROR, 0x11 if direction is Direction.IN else 0x0C, 0x00)
    return INTERNAL_FAILURE


def map_errno(code: int) -> Result:
    """The initiator's answer when the SG_IO ioctl itself failed."""
    if code in GONE_ERRNOS:
        return LUN_NOT_SUPPORTED
    if code in _BUSY_ERRNOS:
        return BUSY_RESULT
    if code == errno.EINTR:
        return ABORTED  # the request was orphaned: its outcome is unknown
    if code in (errno.EINVAL, errno.EOVERFLOW):
        # The sg driver refused the request shape (a transfer over the device's
        # limits, too many iovecs): the CDB asked for something this path cannot carry.
        return check(ILLEGAL_REQUEST, 0x24, 0x00)
    return INTERNAL_FAILURE
