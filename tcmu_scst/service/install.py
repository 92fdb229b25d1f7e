"""``tcmu-scst install``: put the udev rule and the systemd units in place (or remove them).

Files (templates in the source tree's ``udev/``, installed as data under
``share/tcmu-scst/udev``):

* ``60-tcmu-scst.rules`` -> ``etc/udev/rules.d`` (``--vendor``: ``usr/lib/udev/rules.d``)
* ``tcmu-scst.service``, ``tcmu-scst-restore.service`` -> ``etc/systemd/system``
  (``--vendor``: ``usr/lib/systemd/system``)
* the man pages ``tcmu-scst.8`` and ``tcmu-scst.conf.5`` (source tree's ``man/``,
  installed as data under ``share/man``) -> ``usr/local/share/man/man8`` and ``man5``
  (``--vendor``: ``usr/share/man``), where man(1) looks without configuration

``@BIN@``, ``@PYTHON@``, ``@CONFIG@``, ``@FLOCK@`` and ``@LOCK@`` in the templates are
replaced by this installation's paths. Every installed file starts with a marker line;
``--uninstall`` removes only files that still carry it (an admin's own edit stays).
``--root DIR`` works under DIR (packagers, tests) and never reloads udev or systemd.
``--enable`` links both units into ``multi-user.target.wants`` like ``systemctl enable``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tcmu_scst.errors import ConfigError

MARKER = "# Installed by 'tcmu-scst install'."
MAN_MARKER = ".\\\" Installed by 'tcmu-scst install'."  # a roff comment line
# Man page -> its section directory (man(7)'s layout).
MAN_PAGES = {"tcmu-scst.8": "man8", "tcmu-scst.conf.5": "man5"}
RULES = "60-tcmu-scst.rules"
DAEMON_UNIT = "tcmu-scst.service"
RESTORE_UNIT = "tcmu-scst-restore.service"
UNITS = (DAEMON_UNIT, RESTORE_UNIT)
WANTS_DIR = "etc/systemd/system/multi-user.target.wants"
DEFAULT_CONFIG = Path("/etc/tcmu-scst/scst.conf")
DEFAULT_LOCK = Path("/run/tcmu-scst/apply.lock")
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="install under this directory (packagers, tests); default /",
    )
    parser.add_argument(
        "--uninstall", action="store_true", help="remove the rule and units installed here"
    )
    parser.add_argument(
        "--vendor",
        action="store_true",
        help="use /usr/lib/udev and /usr/lib/systemd (distribution packages), not /etc",
    )
    parser.add_argument(
        "--enable", action="store_true", help="start both units at boot (like systemctl enable)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="the config the boot unit restores and hot-plug follows (default: %(default)s)",
    )
    parser.add_argument(
        "--bin",
        default=None,
        help="the tcmu-scst command the units run (default: found in PATH, else this "
        "Python with -m tcmu_scst.cli)",
    )
    parser.add_argument(
        "--no-reload",
        action="store_true",
        help="do not run 'udevadm control --reload' and 'systemctl daemon-reload'",
    )


@dataclass(frozen=True)
class Layout:
    """Where the files go, relative to the root."""

    rules_dir: str
    unit_dir: str
    man_dir: str

    @classmethod
    def of(cls, vendor: bool) -> Layout:
        if vendor:
            return cls("usr/lib/udev/rules.d", "usr/lib/systemd/system", "usr/share/man")
        return cls("etc/udev/rules.d", "etc/systemd/system", "usr/local/share/man")

    def man_targets(self) -> dict[str, str]:
        """Man page name -> path relative to the root."""
        return {page: f"{self.man_dir}/{sub}/{page}" for page, sub in MAN_PAGES.items()}

    def targets(self) -> dict[str, str]:
        """Template name -> path relative to the root."""
        out = {RULES: f"{self.rules_dir}/{RULES}"}
        out.update({unit: f"{self.unit_dir}/{unit}" for unit in UNITS})
        return out


def template_dirs() -> list[Path]:
    """Where the templates may be: source tree first, then installed data files."""
    source_tree = Path(__file__).resolve().parents[2] / "udev"
    prefixes = [Path(sys.prefix), Path("/usr/local"), Path("/usr")]
    return [source_tree, *(p / "share/tcmu-scst/udev" for p in prefixes)]


def find_templates(dirs: list[Path] | None = None) -> Path:
    for directory in dirs if dirs is not None else template_dirs():
        if all((directory / name).is_file() for name in (RULES, *UNITS)):
            return directory
    raise ConfigError(
        "udev/systemd templates not found (looked in "
        f"{', '.join(str(d) for d in (dirs or template_dirs()))}); reinstall tcmu-scst"
    )


def man_sources() -> dict[str, list[Path]]:
    """Where each man page may be: source tree first, then installed data files."""
    source_tree = Path(__file__).resolve().parents[2] / "man"
    prefixes = [Path(sys.prefix), Path("/usr/local"), Path("/usr")]
    return {
        page: [source_tree / page, *(p / "share/man" / sub / page for p in prefixes)]
        for page, sub in MAN_PAGES.items()
    }


def find_man_pages(candidates: dict[str, list[Path]] | None = None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for page, paths in (candidates if candidates is not None else man_sources()).items():
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            raise ConfigError(
                f"man page {page} not found (looked in {', '.join(map(str, paths))}); "
                "reinstall tcmu-scst"
            )
        found[page] = path
    return found


def default_bin() -> str:
    found = shutil.which("tcmu-scst")
    return str(Path(found).resolve()) if found else f"{sys.executable} -m tcmu_scst.cli"


def render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = _PLACEHOLDER.search(text)
    if leftover:
        raise ConfigError(
            f"template placeholder {leftover.group()} has no value; reinstall tcmu-scst"
        )
    if not text.startswith(MARKER):
        text = f"{MARKER}\n{text}"
    return text


def values_for(args: argparse.Namespace) -> dict[str, str]:
    return {
        "BIN": args.bin or default_bin(),
        "PYTHON": sys.executable,
        "CONFIG": str(args.config),
        "FLOCK": shutil.which("flock") or "/usr/bin/flock",
        "LOCK": str(DEFAULT_LOCK),
    }


def _under(root: Path, rel: str) -> Path:
    return root / rel.lstrip("/")


def install(
    root: Path,
    layout: Layout,
    values: dict[str, str],
    *,
    enable: bool = False,
    templates: Path | None = None,
    man_pages: dict[str, Path] | None = None,
    out: TextIO | None = None,
) -> list[Path]:
    """Write the rendered files and the man pages (atomically, 0644); returns the paths
    written. Nothing is written when one target is a file tcmu-scst did not install."""
    out = out or sys.stdout
    source = templates or find_templates()
    pages = man_pages if man_pages is not None else find_man_pages()
    files: list[tuple[Path, str, str]] = [
        (_under(root, rel), render((source / name).read_text(encoding="utf-8"), values),
         MARKER)
        for name, rel in layout.targets().items()
    ]  # fmt: skip
    files += [
        (_under(root, rel), f"{MAN_MARKER}\n" + pages[page].read_text(encoding="utf-8"),
         MAN_MARKER)
        for page, rel in layout.man_targets().items()
    ]  # fmt: skip
    for path, _, marker in files:
        if path.exists() and not path.read_text(encoding="utf-8").startswith(marker):
            raise ConfigError(
                f"{path} exists and was not installed by tcmu-scst; move it away first"
            )
    written: list[Path] = []
    for path, text, _ in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, path)
        written.append(path)
        print(f"installed {path}", file=out)
    if enable:
        for unit in UNITS:
            link = _under(root, f"{WANTS_DIR}/{unit}")
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(Path("/") / layout.unit_dir / unit)
            print(f"enabled {unit} ({link})", file=out)
    return written


def uninstall(root: Path, out: TextIO | None = None) -> list[Path]:
    """Remove what :func:`install` put under either layout; returns the paths removed."""
    out = out or sys.stdout
    removed: list[Path] = []
    for unit in UNITS:
        link = _under(root, f"{WANTS_DIR}/{unit}")
        if link.is_symlink():
            link.unlink()
            removed.append(link)
            print(f"disabled {unit}", file=out)
    for layout in (Layout.of(False), Layout.of(True)):
        owned = [(rel, MARKER) for rel in layout.targets().values()]
        owned += [(rel, MAN_MARKER) for rel in layout.man_targets().values()]
        for rel, marker in owned:
            path = _under(root, rel)
            if not path.is_file():
                continue
            if not path.read_text(encoding="utf-8", errors="replace").startswith(marker):
                print(f"kept {path}: changed or not ours", file=out)
                continue
            path.unlink()
            removed.append(path)
            print(f"removed {path}", file=out)
    return removed


def reload_services(out: TextIO) -> None:
    """Tell udevd and systemd about the changed files, where they run."""
    commands = [["udevadm", "control", "--reload"]]
    if Path("/run/systemd/system").is_dir():
        commands.append(["systemctl", "daemon-reload"])
    for command in commands:
        if shutil.which(command[0]) is None:
            continue
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as err:
            print(f"warning: {' '.join(command)} failed: {err}", file=out)


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    system_root = root.resolve() == Path("/")
    if system_root and os.geteuid() != 0:
        raise ConfigError("installing into / needs root; run with sudo or use --root DIR")
    if args.uninstall:
        if not uninstall(root):
            print("nothing to remove")
    else:
        install(root, Layout.of(args.vendor), values_for(args), enable=args.enable)
    if system_root and not args.no_reload:
        reload_services(sys.stdout)
    return 0
