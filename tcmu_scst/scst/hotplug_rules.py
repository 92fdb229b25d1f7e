"""Pass-through devices that follow the hardware: identity rules and presence.

A model extension for hot-plug (issue 7). SCST names a pass-through device by its
local address (``HANDLER dev_disk { DEVICE 1:0:1:0 }``), which changes across reboots
and rescans. Here a pass-through device may instead carry a **label** and the
identity it stands for::

    HANDLER dev_disk {
        DEVICE backup0 {
            vendor  "SEAGATE"
            serial  "Z1Z0ABCD"          # VPD 80h
            wwn     naa.5000c500a1b2c3d4 # or the bare hex; VPD 83h / sysfs wwid
            timeout 30                  # the handler's own attributes stay
        }
    }
    TARGET_DRIVER iscsi { TARGET iqn.2024-01.org.example:t { LUN 0 backup0 } }

:func:`resolve` turns a config into the one to apply *now*: a labelled device that
matches exactly one present SCSI device becomes that address (LUNs follow it); an
address or a label with no present device is left out together with its LUNs, so
the declarative apply removes its backstore and LUNs (LIO then queues REPORTED LUNS
DATA HAS CHANGED for the initiators' other LUNs). A label that matches several
devices is left out too (never export a guessed disk) with a warning.

Only the modern scst.conf can hold labels; a 0.9.6 file still goes through
:func:`resolve` for the presence rule.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tcmu_scst.errors import ConfigError, ErrorCollector
from tcmu_scst.kernel import handler_table, parameters, scsi_sysfs
from tcmu_scst.kernel.handler_table import ASSIGNED_HANDLERS
from tcmu_scst.scst import conf
from tcmu_scst.scst.model import Device, ScstConfig, check

log = logging.getLogger(__name__)

SYSFS = Path("/sys")
IDENTITY_KEYS = ("vendor", "model", "serial", "wwn")
_HCTL = re.compile(r"^\d+:\d+:\d+:\d+$")
# Only for validating a labelled device as a plain SCST device (names, LUN rules).
_STAND_IN_HANDLER = "vdisk_nullio"
LOOPBACK_PROC_NAME = "tcm_loopback"  # tcm_loop's SCSI host template


@dataclass(frozen=True)
class Identity:
    """What a labelled device must match; ``None`` fields are not compared."""

    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    wwn: str | None = None

    def describe(self) -> str:
        return " ".join(f"{k}={v!r}" for k, v in vars(self).items() if v is not None)


@dataclass(frozen=True)
class Rule:
    """One pass-through device of the config, by address or by label + identity."""

    name: str
    handler: str
    identity: Identity | None  # None: named by address

    @property
    def is_label(self) -> bool:
        return self.identity is not None


@dataclass
class Resolution:
    """The config to apply now and what was decided on the way."""

    config: ScstConfig
    present: dict[str, str] = field(default_factory=dict)  # rule name -> H:C:I:L
    absent: list[str] = field(default_factory=list)  # rule names left out
    warnings: list[str] = field(default_factory=list)

    @property
    def passthrough_addresses(self) -> frozenset[str]:
        return frozenset(self.present.values())


# A lookup answers "which present SCSI devices match this identity" (addresses) and
# "is there a SCSI device at this address"; the default reads sysfs.
FindByIdentity = Callable[[Identity], list[str]]
IsPresent = Callable[[str], bool]


def rule_of(device: Device) -> Rule | None:
    """The hot-plug rule a device stands for (None for non-pass-through devices)."""
    if device.handler not in ASSIGNED_HANDLERS:
        return None
    given = {k: device.params[k] for k in IDENTITY_KEYS if k in device.params}
    if _HCTL.match(device.name):
        if given:
            raise device.where.error(
                f"pass-through device {device.name} is named by its address and also has "
                f"{', '.join(given)}; name it by a label instead to match by identity"
            )
        return Rule(device.name, device.handler, None)
    if not given:
        raise device.where.error(
            f"pass-through device {device.name!r} is neither an address H:C:I:L nor a "
            "label with an identity; add serial, wwn, vendor and/or model to its section"
        )
    empty = [k for k, v in given.items() if not v.strip()]
    if empty:
        raise device.where.error(f"device {device.name}: {empty[0]} is empty")
    return Rule(device.name, device.handler, Identity(**given))


def _is_label(device: Device) -> bool:
    rule = rule_of(device)
    return rule is not None and rule.is_label


def rules_of(config: ScstConfig) -> list[Rule]:
    return [r for r in (rule_of(d) for d in config.devices) if r is not None]


def _check_assigned_attributes(dev: Device, errors: ErrorCollector) -> None:
    """A pass-through or perf device's attributes are the catalogue's (and the identity
    keys of a label), each value parsed and range-checked by the handler table as the
    codec does, whether or not the device is present now: a misspelt attribute or a bad
    timeout of a device that is plugged in later must not wait until then to be found
    (rules between values are checked when the device is encoded)."""
    spec = handler_table.by_name(dev.handler)
    if spec is None or not spec.assigned:
        return
    for key, value in dev.params.items():
        param = spec.param(key)
        who = f"{dev.handler} {dev.name}"
        if param is None and key not in IDENTITY_KEYS:
            listed = ", ".join(spec.parameter_names) or "none"
            errors.add(dev.where.error(
                f"{who}: {key}={value!r}: unknown attribute for {dev.handler}; known: {listed}"
            ))  # fmt: skip
        elif param is not None:
            try:
                problem = parameters.value_error(
                    param, parameters.parse(param, f"{who}: {key}={value!r}", value)
                )
            except ConfigError as err:
                errors.add(dev.where.error(str(err)))
                continue
            if problem is not None:
                errors.add(dev.where.error(f"{who}: {problem}"))


def _check_as_scst(config: ScstConfig, errors: ErrorCollector | None = None) -> None:
    """SCST's rules (names, LUN 0, duplicates) with labels standing in as devices.

    With ``errors``, an identity error is recorded there (once, with its line) and the
    rest of the file still checked; without, every error is raised at once.
    """
    collector = errors if errors is not None else ErrorCollector()
    stand_in = copy.deepcopy(config)
    for dev in stand_in.devices:
        _check_assigned_attributes(dev, collector)
        try:
            rule = rule_of(dev)
        except ConfigError as err:
            collector.add(err)
            rule = Rule(dev.name, dev.handler, Identity())  # reported; checked as a label
        if rule is not None and rule.is_label:
            dev.handler = _STAND_IN_HANDLER
    check(stand_in, collector)
    if errors is None:
        collector.raise_if_any()


def sysfs_lookup(sysfs: Path = SYSFS) -> tuple[FindByIdentity, IsPresent]:
    """Lookups over ``<sysfs>/class/scsi_device`` (the pass-through handlers' reader)."""

    def find(identity: Identity) -> list[str]:
        infos = scsi_sysfs.find_by_identity(
            vendor=identity.vendor,
            model=identity.model,
            serial=identity.serial,
            wwn=identity.wwn,
            sysfs=sysfs,
        )
        return [info.hctl for info in infos if not _is_loopback(info.hctl)]

    def _is_loopback(hctl: str) -> bool:
        # A LUN we export through tcm_loop shows the same identity (INQUIRY and VPD pass
        # through): matching it would make the rule ambiguous or export a loop.
        host = sysfs / "class/scsi_host" / f"host{hctl.split(':', 1)[0]}" / "proc_name"
        try:
            return host.read_text().strip() == LOOPBACK_PROC_NAME
        except OSError:
            return False

    def present(hctl: str) -> bool:
        return (sysfs / "class/scsi_device" / hctl / "device").is_dir()

    return find, present


def _rename_luns(config: ScstConfig, renames: Mapping[str, str], drop: set[str]) -> None:
    lun_lists = [g.luns for g in config.groups]
    for tgt in config.targets:
        lun_lists.append(tgt.luns)
        lun_lists += [g.luns for g in tgt.groups]
    for luns in lun_lists:
        luns[:] = [lun for lun in luns if lun.device not in drop]
        for lun in luns:
            lun.device = renames.get(lun.device, lun.device)


def resolve(
    config: ScstConfig,
    find: FindByIdentity | None = None,
    present: IsPresent | None = None,
) -> Resolution:
    """The config to apply with the SCSI devices present now (see the module doc).

    ``config`` may hold labelled pass-through devices (from :func:`parse`); it is not
    changed. The result is a plain validated-model config (addresses only).
    """
    if find is None or present is None:
        default_find, default_present = sysfs_lookup()
        find = find or default_find
        present = present or default_present
    result = copy.deepcopy(config)
    resolution = Resolution(result)
    renames: dict[str, str] = {}
    drop: set[str] = set()
    # Names of devices not found by identity: an address named outright wins over a
    # label that resolves to it (and a label never takes a vdisk's name).
    taken = {d.name for d in config.devices if not _is_label(d)}
    kept: list[Device] = []
    for dev in result.devices:
        rule = rule_of(dev)
        if rule is None:
            kept.append(dev)
            continue
        address = _address_of(rule, find, present, resolution)
        if rule.is_label and address is not None and address in taken:
            resolution.warnings.append(
                f"pass-through device {rule.name} resolves to {address}, which another "
                "device of the config already names; left out"
            )
            address = None
        if address is None:
            resolution.absent.append(rule.name)
            drop.add(rule.name)
            continue
        taken.add(address)
        resolution.present[rule.name] = address
        if rule.is_label:
            renames[rule.name] = address
            params = {k: v for k, v in dev.params.items() if k not in IDENTITY_KEYS}
            dev = Device(address, dev.handler, params, dev.where)
        kept.append(dev)
    result.devices = kept
    _rename_luns(result, renames, drop)
    return resolution


def _address_of(
    rule: Rule, find: FindByIdentity, present: IsPresent, resolution: Resolution
) -> str | None:
    if rule.identity is None:
        return rule.name if present(rule.name) else None
    matches = sorted(set(find(rule.identity)))
    if len(matches) > 1:
        resolution.warnings.append(
            f"pass-through device {rule.name} ({rule.identity.describe()}) matches "
            f"{len(matches)} SCSI devices ({', '.join(matches)}); left out: add serial or "
            "wwn to tell them apart"
        )
        return None
    return matches[0] if matches else None


def parse(text: str, source: str = "<string>") -> ScstConfig:
    """A modern scst.conf that may hold labelled pass-through devices, checked.

    Without labels this is exactly :func:`tcmu_scst.scst.conf.parse`.
    """
    # conf.parse validates at once, which refuses labels; read first, check after.
    errors = ErrorCollector()
    config = conf.read(text, source, errors)
    _check_as_scst(config, errors)
    errors.raise_if_any()
    return config


def has_labels(config: ScstConfig) -> bool:
    return any(rule.is_label for rule in rules_of(config))


def load_resolved(
    text: str,
    source: str,
    find: FindByIdentity | None = None,
    present: IsPresent | None = None,
) -> Resolution:
    """:func:`parse` + :func:`resolve`, warnings logged (for ``config check/apply``)."""
    resolution = resolve(parse(text, source), find, present)
    for warning in resolution.warnings:
        log.warning("%s: %s", source, warning)
    return resolution
