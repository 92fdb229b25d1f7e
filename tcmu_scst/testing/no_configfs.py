"""The system configfs root of a machine whose kernel has no configfs (or no LIO).

:class:`NoConfigfsKernel` is a :class:`~tcmu_scst.kernel.configfs.Configfs` that takes
itself for the system's ``/sys/kernel/config`` (so it tries to mount and load
modules) on a temporary root, reads a stand-in for ``/proc/filesystems``, and runs no
command: ``mount`` and ``modprobe`` are recorded in :attr:`ran` and fail with the
output they give on such a machine (mount's last line is the dmesg pointer).
"""

from __future__ import annotations

from pathlib import Path

from tcmu_scst.kernel.configfs import Configfs

MOUNT_STDERR = (
    "mount: /sys/kernel/config: mount point does not exist.\n"
    "       dmesg(1) may have more information after failed mount system call."
)


class NoConfigfsKernel(Configfs):
    def __init__(self, tmp: Path, filesystems: str = "nodev\tsysfs\nnodev\tproc\n") -> None:
        super().__init__(tmp / "sys/kernel/config", system=True)
        self.proc_filesystems = tmp / "filesystems"
        self.proc_filesystems.write_text(filesystems)
        self.ran: list[str] = []

    def _run(self, argv: list[str], what: str) -> None:
        self.ran.append(" ".join(argv))
        output = MOUNT_STDERR
        if argv[0] == "modprobe":
            output = f"modprobe: FATAL: Module {argv[1]} not found in directory /lib/modules/x"
        raise self._command_failed(argv, what, 32 if argv[0] == "mount" else 1, output)
