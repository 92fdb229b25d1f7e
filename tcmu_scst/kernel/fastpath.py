"""The compiled path for plain READ/WRITE(10/16): what it is allowed to do, and whether
it is there.

``_fastring`` (C, built with the package when a compiler is at hand, see setup.py)
answers the leading plain READ and WRITE entries of a ring straight from the
mapping: the entry, its CDB checks, one ``preadv2``/``pwritev2`` on the backing file
and the response, without a Python object per command (tcmu_scst/kernel/_fastring.c
says exactly what it serves and where it stops). A handler describes, per wake-up, what
its device allows in a :class:`PlainPlan`; :meth:`Ring.serve_plain
<tcmu_scst.kernel.ring.Ring.serve_plain>` runs it. Without the module, or with
``TCMU_SCST_COMPILED=0`` in the environment, nothing changes but speed: the Python
path answers the same commands with the same bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Final

#: Set to 0 to serve every command in Python even when the compiled path is built.
ENV_SWITCH: Final = "TCMU_SCST_COMPILED"

#: Buckets of the per-runner histogram the compiled path counts into: index k counts
#: commands whose data buffer rounds up to ``1 << k`` bytes.
HISTOGRAM_LEN: Final = 64


@dataclass(frozen=True, slots=True)
class PlainPlan:
    """What the compiled path may do for one device, decided by its handler.

    Built afresh on every wake-up from the device's state (unit attentions, readiness,
    capacity, write protection, cache mode), so a change is seen by the next batch.
    """

    fd: int  # the backing file, read and written at lba * block_size
    block_size: int
    blocks: int  # capacity: LBAs [0, blocks) exist
    max_blocks: int  # the longest transfer (VPD B0); longer ones get their sense in Python
    writes_ok: bool  # plain WRITEs may be answered GOOD once written (no durability due)
    fua_ok: bool  # ... FUA ones too (NV_CACHE, or a file opened for synchronous writes)
    rwf_flags: int  # RWF_NOWAIT, or 0 for a file system in memory that never waits
    max_read_bytes: int  # READs of this many bytes or more go to a worker
    reject10: bytes  # the CDB bits the SCSI layer refuses in READ/WRITE(10), 10 bytes
    reject16: bytes  # ... and in READ/WRITE(16), 16 bytes


def _load() -> ModuleType | None:
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    try:
        from tcmu_scst.kernel import _fastring
    except ImportError:
        return None
    return _fastring


#: The compiled module, or None (not built, or switched off): decided at import.
ACCELERATOR: ModuleType | None = _load()
