"""The SCST layer writes each handler's own dev_config, and reads it back.

There is one encoding per handler (its ``*_params`` module); the daemon opens exactly
what ``config apply`` writes, for every handler name scst.conf accepts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.errors import ConfigError
from tcmu_scst.kernel.handler_table import HANDLER_TYPES
from tcmu_scst.scst.devconfig import decode_dev_config, encode_dev_config
from tcmu_scst.scst.model import Device
from tcmu_scst.service import registry


def _device(handler: str, tmp_path: Path) -> Device:
    if handler in ("vdisk_fileio", "vcdrom"):
        image = tmp_path / "image"
        image.write_bytes(bytes(4096))
        return Device("d0", handler, {"filename": str(image)})
    if handler == "vdisk_nullio":
        return Device("d0", handler, {})
    if handler == "vdisk_rbd":
        return Device("d0", handler, {"filename": "rbd:pool/image:conf=/etc/ceph/c.conf"})
    if handler == "vdisk_blockio":
        return Device("d0", handler, {"filename": "/dev/null-blk"})
    return Device("1:0:2:0", handler, {})  # pass-through and perf: named by H:C:I:L


@pytest.mark.parametrize("handler", sorted(HANDLER_TYPES))
def test_every_handler_round_trips_through_its_own_codec(handler: str, tmp_path: Path) -> None:
    device = _device(handler, tmp_path)
    text = encode_dev_config(device)
    subtype = text.split("/", 1)[0]
    assert registry.owns(subtype), text
    back = decode_dev_config("d0", text)
    assert (back.name, back.handler) == (device.name, device.handler)
    assert back.params.get("filename") == device.params.get("filename")


def test_the_old_mode_form_is_refused_not_guessed() -> None:
    # The SCST layer once wrote "vdisk/n=..;mode=fileio" while the handlers were absent;
    # no daemon could serve it. Reading it now names the problem instead of guessing.
    with pytest.raises(ConfigError, match="backstore d0"):
        decode_dev_config("d0", "vdisk/n=d0;mode=fileio;filename=%2Fimg")


def test_a_foreign_subtype_is_not_ours() -> None:
    with pytest.raises(ConfigError, match="not a tcmu-scst device"):
        decode_dev_config("d0", "qcow/some/image.qcow2")
