"""Which handler serves a TCMU device: the dev_config subtype names it.

``dev_config`` is ``<subtype>/<handler string>`` (tcmu-abi §1.1). The subtypes here
are SCST's handler names; a device whose subtype is not listed belongs to another
TCMU daemon (tcmu-runner, say) and is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from tcmu_scst.errors import HandlerError
from tcmu_scst.handler import Handler
from tcmu_scst.handlers import passthrough, perf, vcdrom, vdisk
from tcmu_scst.kernel.handler_table import HANDLERS, Kind

Factory = Callable[[str], Handler]
# Each kind of handler (kernel.handler_table) -> the callable taking the whole dev_config
# and returning a Handler.
KIND_FACTORIES: Final[dict[Kind, Factory]] = {
    Kind.VDISK: vdisk.open_dev_config,
    Kind.VCDROM: vcdrom.open_dev_config,
    Kind.PASSTHROUGH: passthrough.open_dev_config,
    Kind.PERF: perf.open_dev_config,
}
# dev_config subtype -> factory, for every handler of the catalogue.
FACTORIES: Final[dict[str, Factory]] = {h.subtype: KIND_FACTORIES[h.kind] for h in HANDLERS}


def owns(subtype: str) -> bool:
    """Whether a device with this dev_config subtype is ours to serve."""
    return subtype in FACTORIES


def factory(subtype: str) -> Factory:
    try:
        return FACTORIES[subtype]
    except KeyError:
        raise HandlerError(f"no tcmu-scst handler is called {subtype!r}") from None


def open_handler(dev_config: str) -> Handler:
    """Open the handler a full ``dev_config`` string asks for."""
    subtype = dev_config.split("/", 1)[0]
    return factory(subtype)(dev_config)
