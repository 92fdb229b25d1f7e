"""Host tools the lab shells out to, with errors that name the Debian package to install."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from tcmu_scst.errors import LabError

# tool -> Debian package that provides it
DEBIAN_PACKAGE: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "depmod": "kmod",
    "zstd": "zstd",
}

# depmod and friends live in sbin, which a non-login PATH may lack.
_EXTRA_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


def find_tool(name: str) -> str:
    """Absolute path of ``name`` or LabError telling which package to install."""
    found = shutil.which(name)
    if found is None:
        for directory in _EXTRA_DIRS:
            found = shutil.which(name, path=directory)
            if found:
                break
    if found is None:
        package = DEBIAN_PACKAGE.get(name, name)
        raise LabError(f"{name} not found on this host; install it: apt-get install {package}")
    return found


def run_tool(argv: Sequence[str], what: str, *, cwd: str | None = None) -> str:
    """Run a host tool, return its stdout; LabError with its stderr tail when it fails."""
    tool = find_tool(argv[0])
    try:
        proc = subprocess.run(
            [tool, *argv[1:]], cwd=cwd, capture_output=True, text=True, check=False
        )
    except OSError as err:
        raise LabError(f"cannot {what}: running {argv[0]} failed: {err}") from err
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise LabError(f"cannot {what}: {argv[0]} exited {proc.returncode}: {tail}")
    return proc.stdout
