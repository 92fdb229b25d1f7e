"""Primitive access to the LIO configfs tree (``<root>/target``) with an injectable root.

Every path argument is relative to ``<root>/target`` (e.g. ``"core/user_0/disk1/enable"``).
The kernel creates objects on ``mkdir``, sets attributes on ``write`` and makes associations
with ``symlink``; this module adds nothing to those semantics, it only turns each OS error
into a :class:`~tcmu_scst.errors.ConfigfsError` that names the path, the errno and a hint.

The six filesystem primitives (``_do_*``) are the only places that touch the disk, so
:class:`tcmu_scst.testing.fake_configfs.FakeConfigfs` overrides just those to emulate the
kernel's rules on a temporary directory.
"""

from __future__ import annotations

import errno as errno_mod
import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

from tcmu_scst.errors import ConfigfsError
from tcmu_scst.kernel.fabric_table import FABRICS

DEFAULT_ROOT = Path("/sys/kernel/config")
PROC_FILESYSTEMS = Path("/proc/filesystems")

# Fabric directories the kernel auto-loads on mkdir (target_core_register_fabric); every
# other fabric module must be loaded beforehand or mkdir fails with EINVAL.
AUTOLOADED_FABRICS = frozenset(f.directory for f in FABRICS if f.autoloaded)

# configfs fabric directory -> kernel module that registers it.
FABRIC_MODULES: dict[str, str] = {f.directory: f.module for f in FABRICS}

# errno -> what the kernel usually means by it in the target tree, and what to do.
_HINTS: dict[int, str] = {
    errno_mod.EEXIST: "the object already exists (or a LUN already holds a device)",
    errno_mod.ENOENT: "no such object: create its parent first or check the name",
    errno_mod.EBUSY: "the object is in use (linked or exported): remove its LUNs/ACLs first",
    errno_mod.ENOTEMPTY: "the directory still has children: remove its LUNs/ACLs first",
    errno_mod.EINVAL: "value refused by the kernel (bad name, number or syntax; see dmesg)",
    errno_mod.ENODEV: "device not enabled: write 1 to its 'enable' first",
    errno_mod.EPERM: "operation not permitted here (kernel-made directory, or loopback "
    "nexus change while LUNs are linked)",
    errno_mod.EACCES: "attribute is read-only or write-only, or root is needed",
    errno_mod.EAGAIN: "netlink is blocked (target_core_user block_netlink=1)",
    errno_mod.EINTR: "the netlink request was reset (reset_netlink)",
    errno_mod.ENOSPC: "the kernel ran out of an index or slot",
    # Measured on 6.1: a LUN link to a non-device, or a mapped-LUN link to a non-LUN.
    errno_mod.EFAULT: "link target is the wrong kind of object (LUN -> core device, "
    "mapped LUN -> lun/lun_N of the same TPG)",
    errno_mod.ESRCH: "no TCM-USER daemon listening: start the tcmu-scst daemon first",
    errno_mod.ENOSYS: "this fabric does not support that object (portals are iSCSI only)",
}


def hint_for(err: int) -> str:
    """The hint shown for ``err`` in configfs errors (empty if none is known)."""
    return _HINTS.get(err, "")


def _clean(text: str) -> str:
    # Kernel show() routines end lines with '\n' and some (dynamic_sessions) add a NUL.
    return text.rstrip("\n\x00")


def _root_only(why: str) -> None:
    if os.geteuid() != 0:
        raise ConfigfsError(f"{why}; run with sudo", "", errno_mod.EACCES)


class Configfs:
    """The LIO tree under ``<root>/target``; all paths are relative to it."""

    def __init__(self, root: Path = DEFAULT_ROOT, *, system: bool | None = None) -> None:
        self.root = Path(root)
        self.target = self.root / "target"
        # The system's configfs: ensure_mounted may mount it and load target_core_mod.
        # (Tests pass system=True with a temporary root to see what a machine says.)
        self.system = self.root == DEFAULT_ROOT if system is None else system
        self.proc_filesystems = PROC_FILESYSTEMS

    # ---- path handling -------------------------------------------------------------

    def path(self, rel: str | PurePosixPath) -> Path:
        """The absolute path of ``rel``; refuses absolute paths and '..' escapes."""
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts:
            raise ConfigfsError(
                f"configfs path {str(rel)!r} must be relative to {self.target} without '..'",
                str(rel),
                errno_mod.EINVAL,
            )
        return self.target / pure

    def relative(self, absolute: Path | str) -> str:
        """``absolute`` expressed relative to ``<root>/target`` (for link targets)."""
        try:
            return PurePosixPath(os.path.normpath(absolute)).relative_to(self.target).as_posix()
        except ValueError:
            raise ConfigfsError(
                f"{absolute} lies outside {self.target}: not a LIO object",
                str(absolute),
                errno_mod.EINVAL,
            ) from None

    def _fail(self, op: str, rel: str | PurePosixPath, err: OSError) -> ConfigfsError:
        code = err.errno or 0
        name = errno_mod.errorcode.get(code, str(code))
        hint = hint_for(code)
        reason = err.strerror or str(err)
        message = f"configfs {op} {self.target / str(rel)} failed: {name} ({reason})"
        if hint:
            message += f"; {hint}"
        return ConfigfsError(message, str(rel), code)

    # ---- filesystem primitives (the fake overrides these) --------------------------

    def _do_read(self, path: Path) -> bytes:
        with open(path, "rb", buffering=0) as f:
            return f.read()

    def _do_write(self, path: Path, data: bytes) -> None:
        # One write(2) per value: configfs store() sees exactly one buffer per write.
        fd = os.open(path, os.O_WRONLY)
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno_mod.EIO, f"short write: {written} of {len(data)} bytes")
        finally:
            os.close(fd)

    def _do_mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def _do_rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def _do_symlink(self, target: Path, link: Path) -> None:
        os.symlink(target, link)

    def _do_unlink(self, path: Path) -> None:
        os.unlink(path)

    # ---- public API ----------------------------------------------------------------

    def read(self, rel: str) -> str:
        """The attribute's value with trailing newlines and NUL bytes stripped."""
        try:
            return _clean(self._do_read(self.path(rel)).decode("utf-8", "replace"))
        except OSError as err:
            raise self._fail("read", rel, err) from err

    def write(self, rel: str, value: str) -> None:
        """Write ``value`` exactly (no newline added) in a single write(2)."""
        try:
            self._do_write(self.path(rel), value.encode())
        except OSError as err:
            raise self._fail("write", rel, err) from err

    def mkdir(self, rel: str) -> None:
        try:
            self._do_mkdir(self.path(rel))
        except OSError as err:
            raise self._fail("mkdir", rel, err) from err

    def rmdir(self, rel: str) -> None:
        try:
            self._do_rmdir(self.path(rel))
        except OSError as err:
            raise self._fail("rmdir", rel, err) from err

    def symlink(self, target_rel: str, link_rel: str) -> None:
        """Create ``link_rel`` pointing at the absolute path of ``target_rel``."""
        try:
            self._do_symlink(self.path(target_rel), self.path(link_rel))
        except OSError as err:
            raise self._fail("symlink", link_rel, err) from err

    def unlink(self, rel: str) -> None:
        try:
            self._do_unlink(self.path(rel))
        except OSError as err:
            raise self._fail("unlink", rel, err) from err

    def readlink(self, rel: str) -> str:
        """The link's target relative to ``<root>/target``."""
        link = self.path(rel)
        try:
            dest = os.readlink(link)
        except OSError as err:
            raise self._fail("readlink", rel, err) from err
        return self.relative(link.parent / dest)

    def listdir(self, rel: str = "") -> list[str]:
        """Sorted names in the directory ``rel``."""
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError as err:
            raise self._fail("listdir", rel, err) from err

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def is_dir(self, rel: str) -> bool:
        path = self.path(rel)
        return path.is_dir() and not path.is_symlink()

    def is_link(self, rel: str) -> bool:
        return self.path(rel).is_symlink()

    # ---- mounting and modules --------------------------------------------------------

    def available(self) -> bool:
        """True when ``<root>/target`` exists (configfs mounted, target_core_mod loaded)."""
        return self.target.is_dir()

    def ensure_mounted(self) -> None:
        """Mount configfs and load target_core_mod if needed (system root only).

        Each failure says its real reason in one line: no configfs in this kernel, not
        root, or no LIO module (mount's own last line is only a pointer to dmesg).
        """
        if self.available():
            return
        if not self.system:
            raise ConfigfsError(
                f"{self.target} does not exist and {self.root} is not the real configfs root: "
                "create the tree (fake configfs) or use the default root",
                str(self.target),
                errno_mod.ENOENT,
            )
        if not os.path.ismount(self.root):
            self._require_configfs()
            _root_only(f"configfs is not mounted on {self.root} and only root can mount it")
            self._run(["mount", "-t", "configfs", "none", str(self.root)], "mount configfs")
        if not self.target.is_dir():
            _root_only(f"LIO is not loaded ({self.target} is missing) and only root can load it")
            try:
                self.modprobe("target_core_mod")
            except ConfigfsError as err:
                raise ConfigfsError(
                    f"{err}: this kernel has no LIO (CONFIG_TARGET_CORE)", "", err.errno
                ) from err
        if not self.target.is_dir():
            raise ConfigfsError(
                f"{self.target} is still missing after mounting configfs and loading "
                "target_core_mod: is the kernel built with CONFIG_TARGET_CORE?",
                str(self.target),
                errno_mod.ENOENT,
            )

    def _kernel_has_configfs(self) -> bool:
        try:
            listed = self.proc_filesystems.read_text(encoding="ascii", errors="replace")
        except OSError:
            return self.root.is_dir()  # no /proc: the mount point tells instead
        return any(line.split()[-1:] == ["configfs"] for line in listed.splitlines())

    def _require_configfs(self) -> None:
        """Refuse with the reason when the kernel has no configfs (loading its module first)."""
        if self._kernel_has_configfs():
            return
        detail = "not in /proc/filesystems"
        if os.geteuid() == 0:
            try:
                self.modprobe("configfs")
            except ConfigfsError as err:
                detail += f" and {err}"
        if not self._kernel_has_configfs():
            raise ConfigfsError(
                f"this kernel has no configfs ({detail}); LIO needs a kernel built with "
                "CONFIG_CONFIGFS_FS and CONFIG_TARGET_CORE ('tcmu-scst lab' boots one in a VM)",
                str(self.root),
                errno_mod.ENODEV,
            )

    def modprobe(self, module: str) -> None:
        """Load a kernel module (fabric modules other than iscsi/loopback need it)."""
        self._run(["modprobe", module], f"load kernel module {module}")

    def _run(self, argv: list[str], what: str) -> None:
        exe = shutil.which(argv[0]) or shutil.which(argv[0], path="/sbin:/usr/sbin")
        if exe is None:
            raise ConfigfsError(
                f"cannot {what}: {argv[0]} not found in PATH; install kmod/util-linux",
                "",
                errno_mod.ENOENT,
            )
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise self._command_failed(argv, what, proc.returncode, proc.stderr or proc.stdout)

    @staticmethod
    def _command_failed(argv: list[str], what: str, code: int, output: str) -> ConfigfsError:
        # mount(8) ends with "dmesg(1) may have more information...": the line before
        # says what went wrong.
        lines = [x.strip() for x in output.splitlines() if x.strip() and "dmesg(1)" not in x]
        detail = lines[-1] if lines else "no output"
        suffix = "; run as root" if os.geteuid() != 0 else ""
        return ConfigfsError(
            f"cannot {what}: {' '.join(argv)} exited {code} ({detail}){suffix}", "", 0
        )

    def ensure_fabric(self, fabric: str) -> None:
        """Create ``<fabric>/`` if missing, loading its module first when needed."""
        if self.exists(fabric):
            return
        module = FABRIC_MODULES.get(fabric)
        if fabric not in AUTOLOADED_FABRICS and module is not None:
            self.modprobe(module)
        try:
            self.mkdir(fabric)
        except ConfigfsError as err:
            if err.errno == errno_mod.EEXIST:
                return  # raced with another creator, which is fine
            if module is None or fabric in AUTOLOADED_FABRICS:
                raise
            raise ConfigfsError(
                f"fabric {fabric!r} not available after loading {module}: {err}",
                fabric,
                err.errno,
            ) from err
