"""Releasing a configfs writer that waits for a netlink reply nobody sends (lab only).

Reply support is switched on and nobody answers, so ``enable`` blocks; block_netlink +
reset_netlink must release it. The module flag is restored (SET_FEATURES 0) and the
watchdog releases the writer again should the recipe fail, so nothing stays blocked.
"""

from __future__ import annotations

import errno
import threading
import time

from tcmu_scst.errors import ConfigfsError
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.lio import UserBackstore, UserBackstoreOptions
from tcmu_scst.kernel.netlink import AddedDevice, TcmuModuleParams, TcmuNetlink

NAME = "kt_stuck"


def test_stuck_enable_is_released_by_reset_netlink() -> None:
    cfs = Configfs()
    params = TcmuModuleParams()
    outcome: dict[str, object] = {}

    def create() -> None:
        try:
            opts = UserBackstoreOptions(dev_config="kt/stuck", dev_size=1 << 20)
            outcome["device"] = UserBackstore.create(cfs, NAME, opts)
        except BaseException as err:
            outcome["error"] = err

    client = TcmuNetlink().open()
    worker = threading.Thread(target=create, daemon=True)
    try:
        assert client.set_features(True)
        worker.start()
        time.sleep(2)
        assert worker.is_alive(), f"enable did not wait for a reply: {outcome}"
        events = client.receive()
        assert [type(e) for e in events] == [AddedDevice]
        assert params.reset_netlink() is False  # EBUSY unless netlink is blocked
        assert params.release_stuck_writers(grace=1.0)
        worker.join(10)
        assert not worker.is_alive()
    finally:
        client.set_features(False)
        client.close()
        if worker.is_alive():
            params.release_stuck_writers(grace=1.0)
            worker.join(10)
        found = UserBackstore.find(cfs, NAME)
        if found is not None:
            found.delete()
    err = outcome.get("error")
    print("writer outcome:", outcome)
    assert isinstance(err, ConfigfsError), outcome
    # EINTR from the reset, or EAGAIN if Python retried the write while still blocked.
    assert err.errno in (errno.EINTR, errno.EAGAIN)
    assert UserBackstore.find(cfs, NAME) is None
    assert not params.block_netlink
