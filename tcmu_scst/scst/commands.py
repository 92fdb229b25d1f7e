"""The work behind ``tcmu-scst config``: load, check, apply, save (printing results)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TextIO

from tcmu_scst.errors import ConfigError, ErrorCollector, TcmuScstError
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.dbroot import default_kernel_root, ensure_metadata_dirs
from tcmu_scst.kernel.handler_table import ASSIGNED_HANDLERS
from tcmu_scst.scst import conf, hotplug_rules, importer, legacy_conf
from tcmu_scst.scst.apply import apply_config, plan
from tcmu_scst.scst.devconfig import check_device_files
from tcmu_scst.scst.live import read_live
from tcmu_scst.scst.mapping import map_config
from tcmu_scst.scst.model import ScstConfig
from tcmu_scst.scst.ownership import load_ownership, write_atomically
from tcmu_scst.scst.running import DEFAULT_RUNNING, RunningStore
from tcmu_scst.scst.save import live_config


def load(path: Path, fmt: str = "auto") -> ScstConfig:
    """Parse and validate ``path`` in the modern or 0.9.6 format."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(
            "config file not found; create it or name another file", str(path)
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file: {err}", str(path)) from err
    legacy = fmt == "legacy" or (fmt == "auto" and legacy_conf.looks_legacy(text))
    if legacy:
        # Pass-through devices are applied only while present (hot-plug, issue 7).
        return hotplug_rules.resolve(legacy_conf.parse_legacy(text, str(path))).config
    # Modern files may name pass-through devices by identity (hotplug_rules).
    try:
        return hotplug_rules.load_resolved(text, str(path)).config
    except ConfigError as err:
        # All errors in one run: the backing files of the devices that did parse are
        # checked too, so a missing image is not news only after the syntax is fixed.
        errors = ErrorCollector()
        errors.add(err)
        _check_files(conf.read(text, str(path), ErrorCollector()), errors)
        errors.raise_if_any()
        raise


def _check_files(config: ScstConfig, errors: ErrorCollector) -> None:
    """Backing-file checks of each device whose own line has no error yet."""
    bad_lines = {(err.source, err.line) for err in errors.errors}
    for device in config.devices:
        if (device.where.source, device.where.line) in bad_lines:
            continue
        if device.handler in ASSIGNED_HANDLERS:
            continue  # named by address or label: hot-plug decides when it is present
        with errors.guard():
            check_device_files(device, config.setup_id or 0)


def check_system(config: ScstConfig) -> list[str]:
    """Checks that look at the system (backing files...); returns mapping warnings.

    Every device is checked before anything is raised: all its errors in one run.
    """
    errors = ErrorCollector()
    for device in config.devices:
        with errors.guard():
            check_device_files(device, config.setup_id or 0)
    errors.raise_if_any()
    return map_config(config).warnings


def _usable(cfs: Configfs) -> bool:
    return cfs.available() and (not cfs.system or cfs.exists("core"))


def check(path: Path, fmt: str, cfs: Configfs, state_file: Path, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = load(path, fmt)
    warnings = [*config.warnings, *check_system(config)]
    for warning in warnings:
        print(f"warning: {warning}", file=out)
    summary = f"{path}: OK ({len(config.devices)} devices, {len(config.targets)} targets)"
    if _usable(cfs):
        try:
            ownership = load_ownership(state_file)
            live = read_live(cfs, ownership)
            desired = map_config(config, hints=live.index_hints())
            changes = len(plan(desired, live))
            summary += f"; apply would make {changes} change(s)"
        except (ConfigError, OSError) as err:
            summary += f"; live state not compared ({err})"
    print(summary, file=out)
    return 0


def apply(
    path: Path,
    fmt: str,
    cfs: Configfs,
    state_file: Path,
    *,
    nl_reply_supported: int = 0,
    dry_run: bool = False,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    config = load(path, fmt)
    check_system(config)
    if cfs.system:
        cfs.ensure_mounted()
    elif not cfs.available():
        raise ConfigError(f"{cfs.target} does not exist; point --configfs-root at a LIO tree")
    # The applied file becomes the shell's running model (kept beside the state file):
    # rebuilt from LIO instead, 0.9.6 global groups would turn into per-target LUNs.
    running = RunningStore(cfs, state_file.with_name(DEFAULT_RUNNING.name), state_file)
    with contextlib.nullcontext() if dry_run else running.locked():
        result = apply_config(
            cfs, config, state_file, nl_reply_supported=nl_reply_supported, dry_run=dry_run
        )
        if not dry_run:
            running.store(config)
    for warning in [*config.warnings, *result.warnings]:
        print(f"warning: {warning}", file=out)
    if not dry_run:
        _ensure_metadata_dirs(cfs, out)
    for step in result.steps:
        print(("would " if dry_run else "") + step.description, file=out)
    if not result.steps:
        print("nothing to change", file=out)
    elif not dry_run:
        print(f"applied {len(result.steps)} step(s), {result.operations} configfs change(s)",
              file=out)  # fmt: skip
    return 0


def _ensure_metadata_dirs(cfs: Configfs, out: TextIO) -> None:
    """The kernel's PR/ALUA directories (kernel.dbroot): without them every PERSISTENT
    RESERVE OUT fails. A warning, not an error: the rest of the setup is fine."""
    try:
        ensure_metadata_dirs(cfs, default_kernel_root(cfs))
    except TcmuScstError as err:
        print(f"warning: {err}", file=out)


def save(path: Path, cfs: Configfs, state_file: Path, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if not cfs.available():
        raise ConfigError(f"{cfs.target} does not exist: is configfs mounted and LIO loaded?")
    config = live_config(cfs, load_ownership(state_file))
    # 0600: the file may hold CHAP secrets.
    write_atomically(path, conf.write(config), mode=0o600)
    print(f"saved {len(config.devices)} devices, {len(config.targets)} targets to {path}",
          file=out)  # fmt: skip
    return 0


def import_saveconfig(path: Path, output: Path | None, out: TextIO | None = None) -> int:
    """targetcli's save file as scst.conf, on stdout or atomically into ``output``."""
    out = out or sys.stdout
    config = importer.import_saveconfig(path)
    text = f"# Imported from {path} by tcmu-scst config import.\n" + conf.write(config)
    if output is None:
        out.write(text)
    else:
        write_atomically(output, text, mode=0o600)  # CHAP secrets
        print(f"imported {len(config.devices)} devices, {len(config.targets)} targets "
              f"to {output}", file=out)  # fmt: skip
    return 0
