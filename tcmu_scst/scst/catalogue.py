"""Every attribute SCST 3.x writes to ``scst.conf``, and what it does here: one table.

SCST's ``scstadmin -write_config`` writes every non-default attribute of the core, the
device handlers, the devices, the target drivers, the targets, their LUNs and their
initiator groups (names from SCST's ``scst/README``, ``iscsi-scst/README``,
``scst_local/README`` and scst.conf(5)). A file written by SCST 3.x must apply
unchanged, so each attribute is one of:

* **applied** — LIO has the equivalent and tcmu-scst sets it (the keyword's reader in
  :mod:`tcmu_scst.scst.conf` or the handler's own parameter codec does the work);
* **ignored** — accepted with one warning naming the file and line and saying why it
  has no effect on LIO; the value is kept where ``config save`` can write it back;

anything else at that level is an error. The parser, the mapping and the man page
take their lists from here; nothing else declares SCST attribute names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tcmu_scst.ascii import is_decimal


class Level(Enum):
    GLOBAL = "top level"
    HANDLER = "HANDLER"
    DEVICE = "DEVICE"
    DRIVER = "TARGET_DRIVER"
    TARGET = "TARGET"
    GROUP = "GROUP"
    LUN = "LUN"


@dataclass(frozen=True)
class Ignored:
    """An SCST attribute accepted without effect, and why."""

    name: str
    level: Level
    reason: str
    # Only for these target drivers (LIO fabric names) or, for DEVICE, these handlers;
    # empty: everywhere.
    drivers: frozenset[str] = frozenset()


_BOOLEAN = ("Yes", "No")
_SEGMENT = (512, 2**24 - 1)  # RFC 7143 13.12-13.14: 512 to 2**24-1 bytes
# iSCSI negotiation keys LIO keeps in tpgt_N/param/ (RFC 7143 section 13 names) and the
# values RFC 7143 allows: a tuple of words (a list key takes several, comma-separated),
# an inclusive (low, high) number range, or None for free text. Applied.
_ISCSI_VALUES: dict[str, tuple[str, ...] | tuple[int, int] | None] = {
    "AuthMethod": ("CHAP", "None"),  # LIO implements these two of RFC 7143 12.1
    "HeaderDigest": ("CRC32C", "None"),
    "DataDigest": ("CRC32C", "None"),
    "MaxConnections": (1, 65535),
    "TargetAlias": None,
    "InitialR2T": _BOOLEAN,
    "ImmediateData": _BOOLEAN,
    "MaxRecvDataSegmentLength": _SEGMENT,
    "MaxXmitDataSegmentLength": _SEGMENT,
    "MaxBurstLength": _SEGMENT,
    "FirstBurstLength": _SEGMENT,
    "DefaultTime2Wait": (0, 3600),
    "DefaultTime2Retain": (0, 3600),
    "MaxOutstandingR2T": (1, 65535),
    "DataPDUInOrder": _BOOLEAN,
    "DataSequenceInOrder": _BOOLEAN,
    "ErrorRecoveryLevel": (0, 2),
    "IFMarker": _BOOLEAN,
    "OFMarker": _BOOLEAN,
    "IFMarkInt": (1, 65535),  # RFC 3720 A.3.2 (markers left RFC 7143): N or N~M
    "OFMarkInt": (1, 65535),
}
ISCSI_PARAMS = frozenset(_ISCSI_VALUES)
_LIST_KEYS = frozenset({"AuthMethod", "HeaderDigest", "DataDigest"})


def iscsi_param_error(key: str, value: str) -> str | None:
    """Why ``value`` is not a valid value of iSCSI key ``key`` (RFC 7143), or None."""
    allowed = _ISCSI_VALUES[key]
    if allowed is None:
        return None if value.isprintable() and len(value.encode()) <= 255 else (
            f"{key} {value!r} must be printable text of at most 255 bytes"
        )  # fmt: skip
    if isinstance(allowed[0], str):
        words = value.split(",") if key in _LIST_KEYS else [value]
        if all(w in allowed for w in words) and len(set(words)) == len(words):
            return None
        how = "one or more of" if key in _LIST_KEYS else "one of"
        return f"{key} {value!r} is not valid; use {how} {', '.join(map(str, allowed))}"
    low, high = int(allowed[0]), int(allowed[1])
    parts = value.split("~") if key.endswith("MarkInt") else [value]
    if len(parts) <= 2 and all(is_decimal(p) for p in parts) and all(
        low <= int(p) <= high for p in parts
    ):
        return None
    return f"{key} {value!r} is out of range; use a decimal number {low}..{high} (RFC 7143)"

# The SCST target driver whose only target is the internal EXTENDED COPY manager.
COPY_MANAGER_DRIVER = "copy_manager"

# SCST target drivers whose sections are read (so their errors show) but not applied,
# and why; each gives one warning at its TARGET_DRIVER line, never a refusal.
UNAPPLIED_DRIVERS: dict[str, str] = {
    # SCST's ib_srpt names targets ib_srpt_target_N (or by node GUID); LIO's ib_srpt
    # fabric (configfs srpt/) names them by HCA port GUID/GID, and tcmu-scst has no
    # InfiniBand/RDMA port to create or test them on.
    "ib_srpt": "tcmu-scst does not drive LIO's srpt fabric (SRP needs an InfiniBand/RDMA "
    "port; LIO names srpt targets by port GUID, not as SCST does)",
}

_CORE = "SCST core tuning; LIO's core has its own and no equivalent knob"
_THREADS = "SCST per-device threads; the tcmu-scst daemon serves each device's ring itself"
_INQUIRY = "INQUIRY identification is the handler's own (product = device name, see README)"
_ISCSI_TIMERS = "iSCSI-SCST connection tuning; LIO's iSCSI target has fixed equivalents"
_AFFINITY = "SCST thread/CPU placement; LIO runs its own per-connection threads"
_ISNS = "iSNS is not supported by LIO's iSCSI target"
_NONE = "informational in SCST; nothing to set on LIO"

_ISCSI = frozenset({"iscsi"})
_FILE_BACKED = frozenset({"vdisk_fileio", "vdisk_blockio", "vcdrom"})

# fmt: off
_IGNORED: tuple[Ignored, ...] = (
    # -- global (/sys/kernel/scst_tgt) --------------------------------------------------
    Ignored("max_tasklet_cmd", Level.GLOBAL, _CORE),
    Ignored("poll_us", Level.GLOBAL, _CORE),
    Ignored("suspend", Level.GLOBAL, "SCST I/O suspension; LIO has none to set at boot"),
    Ignored("trace_level", Level.GLOBAL, "SCST debug tracing; use 'tcmu-scst trace' instead"),
    Ignored("force_global_sgv_pool", Level.GLOBAL, _CORE),
    Ignored("measure_latency", Level.GLOBAL, _CORE),
    # -- handler (/sys/kernel/scst_tgt/handlers/H) -------------------------------------
    Ignored("trace_level", Level.HANDLER, "SCST debug tracing; use 'tcmu-scst trace' instead"),
    Ignored("pr_dump_dir", Level.HANDLER, "PR state lives in LIO's core (<dbroot>/pr)"),
    # -- device (common to every SCST device; handler parameters live in the handlers) --
    Ignored("threads_num", Level.DEVICE, _THREADS),
    Ignored("threads_pool_type", Level.DEVICE, _THREADS),
    Ignored("max_tgt_dev_commands", Level.DEVICE, "LIO queues per session (queue_depth)"),
    Ignored("numa_node_id", Level.DEVICE, _AFFINITY),
    Ignored("prod_id", Level.DEVICE, _INQUIRY),
    Ignored("prod_rev_lvl", Level.DEVICE, _INQUIRY),
    Ignored("t10_vend_id", Level.DEVICE, _INQUIRY),
    Ignored("vend_specific_id", Level.DEVICE, _INQUIRY),
    Ignored("inq_vend_specific", Level.DEVICE, _INQUIRY),
    Ignored("scsi_device_name", Level.DEVICE, _INQUIRY),
    Ignored("eui64_id", Level.DEVICE, _INQUIRY),
    Ignored("naa_id", Level.DEVICE, _INQUIRY),
    Ignored("opt_trans_len", Level.DEVICE, "the block limits VPD page is the handler's own"),
    Ignored("lb_per_pb_exp", Level.DEVICE, "READ CAPACITY(16) is the handler's own"),
    Ignored("pr_file_name", Level.DEVICE, "PR state lives in LIO's core (<dbroot>/pr)"),
    Ignored("read_zero", Level.DEVICE, "vdisk_nullio reads always return zeros here"),
    Ignored("expl_alua", Level.DEVICE, "ALUA is LIO's (configfs alua/), see README"),
    Ignored("dif_mode", Level.DEVICE, "T10-PI is not implemented (README)"),
    Ignored("dif_static_app_tag", Level.DEVICE, "T10-PI is not implemented (README)"),
    Ignored("dif_filename", Level.DEVICE, "T10-PI is not implemented (README)"),
    Ignored("gen_tp_soft_threshold_reached_UA", Level.DEVICE, "no thin-provisioning threshold"),
    # scstadmin writes the size of file-backed devices too; it is read, never set.
    Ignored("size", Level.DEVICE, "the size comes from the backing file", _FILE_BACKED),
    Ignored("size_mb", Level.DEVICE, "the size comes from the backing file", _FILE_BACKED),
    # -- target drivers (/sys/kernel/scst_tgt/targets/D) ------------------------------
    Ignored("trace_level", Level.DRIVER, "SCST debug tracing; use 'tcmu-scst trace' instead"),
    Ignored("iSNSServer", Level.DRIVER, _ISNS, _ISCSI),
    Ignored("isns_entity_name", Level.DRIVER, _ISNS, _ISCSI),
    Ignored("internal_portal", Level.DRIVER, "no iSER/internal portals on LIO", _ISCSI),
    Ignored("link_local", Level.DRIVER, "LIO's SendTargets lists its portals as they are",
            _ISCSI),
    Ignored("IncomingUser", Level.DRIVER, "discovery CHAP (LIO iscsi/discovery_auth) is not "
            "applied: discovery stays open", _ISCSI),
    Ignored("OutgoingUser", Level.DRIVER, "discovery mutual CHAP is not applied",
            _ISCSI),
    Ignored("allow_not_connected_copy", Level.DRIVER, "EXTENDED COPY is the handler's, "
            "between LUNs the initiator sees", frozenset({COPY_MANAGER_DRIVER})),
    # -- targets (/sys/kernel/scst_tgt/targets/D/T) -------------------------------------
    Ignored("rel_tgt_id", Level.TARGET, "LIO numbers relative ports itself (per LUN, indx)"),
    Ignored("comment", Level.TARGET, _NONE),
    Ignored("addr_method", Level.TARGET, "LIO reports LUNs with peripheral addressing"),
    Ignored("io_grouping_type", Level.TARGET, _AFFINITY),
    Ignored("cpu_mask", Level.TARGET, _AFFINITY),
    Ignored("black_hole", Level.TARGET, "no black-hole mode on LIO"),
    Ignored("forward_src", Level.TARGET, "no SCST cluster forwarding on LIO"),
    Ignored("forward_dst", Level.TARGET, "no SCST cluster forwarding on LIO"),
    Ignored("forwarding", Level.TARGET, "no SCST cluster forwarding on LIO"),
    Ignored("aen_disabled", Level.TARGET, "LIO sends no AENs"),
    Ignored("per_portal_acl", Level.TARGET, "LIO ACLs are per TPG, not per portal",
            _ISCSI),
    Ignored("QueuedCommands", Level.TARGET, "LIO's queue depth is per ACL (cmdsn_depth)",
            _ISCSI),
    Ignored("MaxSessions", Level.TARGET, _ISCSI_TIMERS, _ISCSI),
    Ignored("NopInInterval", Level.TARGET, _ISCSI_TIMERS, _ISCSI),
    Ignored("NopInTimeout", Level.TARGET, _ISCSI_TIMERS, _ISCSI),
    Ignored("RspTimeout", Level.TARGET, _ISCSI_TIMERS, _ISCSI),
    Ignored("redirect", Level.TARGET, "no login redirection on LIO", _ISCSI),
    Ignored("alias", Level.TARGET, "write TargetAlias to set LIO's alias",
            _ISCSI),
    Ignored("session_name", Level.TARGET, "tcm_loop names its one nexus itself (naa. WWN)",
            frozenset({"loopback"})),
    # -- initiator groups (/sys/kernel/scst_tgt/targets/D/T/ini_groups/G) -------------
    Ignored("addr_method", Level.GROUP, "LIO reports LUNs with peripheral addressing"),
    Ignored("io_grouping_type", Level.GROUP, _AFFINITY),
    Ignored("cpu_mask", Level.GROUP, _AFFINITY),
    Ignored("black_hole", Level.GROUP, "no black-hole mode on LIO"),
    Ignored("comment", Level.GROUP, _NONE),
    Ignored("per_sess_dedicated_tgt_threads", Level.GROUP, _AFFINITY, _ISCSI),
)
# fmt: on

_BY_KEY: dict[tuple[Level, str], Ignored] = {(a.level, a.name): a for a in _IGNORED}


def ignored(level: Level, name: str, driver: str | None = None) -> Ignored | None:
    """The catalogue entry if ``name`` is an SCST attribute without effect at ``level``.

    ``driver`` is the LIO fabric name (or :data:`COPY_MANAGER_DRIVER`), or the handler
    name for a DEVICE attribute; an entry limited to others does not apply.
    """
    entry = _BY_KEY.get((level, name))
    if entry is None or (entry.drivers and driver not in entry.drivers):
        return None
    return entry


def warning(entry: Ignored) -> str:
    """The one-line warning for a use of ``entry`` (the caller prefixes file:line)."""
    return f"{entry.name} has no effect here: {entry.reason}"


def entries() -> tuple[Ignored, ...]:
    """Every ignored attribute (for the man page and its test)."""
    return _IGNORED
