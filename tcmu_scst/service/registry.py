"""Which handler serves a TCMU device: the dev_config subtype names it.

``dev_config`` is ``<subtype>/<handler string>`` (tcmu-abi §1.1). The subtypes here
are SCST's handler names; a device whose subtype is not listed belongs to another
TCMU daemon (tcmu-runner, say) and is left alone. Handler modules are imported on
first use, so a missing optional dependency only affects its own handler.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Final

from tcmu_scst.errors import HandlerError
from tcmu_scst.handler import Handler

# subtype -> "module:callable" taking the handler string and returning a Handler.
FACTORIES: Final[dict[str, str]] = {
    "vdisk": "tcmu_scst.handlers.vdisk:open_dev_config",
    "vcdrom": "tcmu_scst.handlers.vcdrom:open_dev_config",
    "dev_disk": "tcmu_scst.handlers.passthrough:open_dev_config",
    "dev_tape": "tcmu_scst.handlers.passthrough:open_dev_config",
    "dev_processor": "tcmu_scst.handlers.passthrough:open_dev_config",
    "dev_cdrom": "tcmu_scst.handlers.passthrough:open_dev_config",
    "dev_modisk": "tcmu_scst.handlers.passthrough:open_dev_config",
    "dev_changer": "tcmu_scst.handlers.passthrough:open_dev_config",
    "dev_raid": "tcmu_scst.handlers.passthrough:open_dev_config",
    "dev_disk_perf": "tcmu_scst.handlers.perf:open_dev_config",
    "dev_modisk_perf": "tcmu_scst.handlers.perf:open_dev_config",
    "dev_tape_perf": "tcmu_scst.handlers.perf:open_dev_config",
}


def owns(subtype: str) -> bool:
    """Whether a device with this dev_config subtype is ours to serve."""
    return subtype in FACTORIES


def factory(subtype: str) -> Callable[[str], Handler]:
    try:
        target = FACTORIES[subtype]
    except KeyError:
        raise HandlerError(f"no tcmu-scst handler is called {subtype!r}") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        func: Callable[[str], Handler] = getattr(module, attr)
    except (ImportError, AttributeError) as err:
        raise HandlerError(f"handler {subtype!r} is not available in this build: {err}") from err
    return func


def open_handler(dev_config: str) -> Handler:
    """Open the handler a full ``dev_config`` string asks for."""
    subtype = dev_config.split("/", 1)[0]
    return factory(subtype)(dev_config)
