"""A :class:`Configfs` that remembers how to undo what it did: all-or-nothing apply.

Every change goes to the wrapped tree and leaves an inverse in the journal:

* ``mkdir X`` -> ``rmdir X`` (writes below X need no inverse: the rmdir undoes them;
  objects made and removed again in the same transaction leave nothing to undo);
* ``symlink`` -> ``unlink``; ``unlink`` -> ``symlink`` to the old target, then the
  mapped LUN's ``write_protect`` again (the kernel applies it to the linked entry);
* ``write`` of an existing object's attribute -> write of the value read before (for a
  LUN's ``alua_tg_pt_gp``: the group name that text shows);
* ``rmdir X`` -> ``mkdir X`` plus the attributes this tool manages, read before the
  rmdir (device ``control`` keys, serial and ``enable``; TPG ``attrib/ param/ auth/``;
  ACL ``tag``, ``auth/``, ``cmdsn_depth``; ALUA group ``tg_pt_gp_id``, ``preferred``,
  ``alua_access_state``, in that order: the kernel takes the state only with an id).

:meth:`Journal.rollback` runs the inverses newest first. Reads are not journaled.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable

from tcmu_scst.errors import ConfigfsError
from tcmu_scst.kernel.alua import alias_of
from tcmu_scst.kernel.configfs import Configfs

_AUTH = ("userid", "password", "userid_mutual", "password_mutual")
_DEVICE = re.compile(r"^core/user_\d+/[^/]+$")
_TPG = re.compile(r"^[^/]+/[^/]+/tpgt_\d+$")
_ACL = re.compile(r"^[^/]+/[^/]+/tpgt_\d+/acls/[^/]+$")
_ALUA_GROUP = re.compile(r"^core/user_\d+/[^/]+/alua/[^/]+$")
_MAPPED_LINK = re.compile(r"^([^/]+/[^/]+/tpgt_\d+/acls/[^/]+/lun_\d+)/[^/]+$")
_SERIAL_PREFIX = "T10 VPD Unit Serial Number:"
# TCMU control keys restored from attrib/ when a deleted device is put back.
_CONTROL_KEYS = ("dev_config", "dev_size", "hw_block_size", "hw_max_sectors",
                 "max_data_area_mb", "nl_reply_supported")  # fmt: skip
_DEVICE_ATTRS = ("cmd_time_out", "qfull_time_out", "emulate_write_cache")

Undo = Callable[[], None]


class Journal(Configfs):
    """Wraps ``inner``; same API; :meth:`rollback` undoes every change made through it."""

    def __init__(self, inner: Configfs) -> None:
        super().__init__(inner.root)
        self.inner = inner
        self.undo: list[tuple[str, Undo]] = []  # (path, inverse), oldest first
        self.created: set[str] = set()
        self.operations = 0

    # ---- reads pass through --------------------------------------------------------

    def read(self, rel: str) -> str:
        return self.inner.read(rel)

    def readlink(self, rel: str) -> str:
        return self.inner.readlink(rel)

    def listdir(self, rel: str = "") -> list[str]:
        return self.inner.listdir(rel)

    def exists(self, rel: str) -> bool:
        return self.inner.exists(rel)

    def is_dir(self, rel: str) -> bool:
        return self.inner.is_dir(rel)

    def is_link(self, rel: str) -> bool:
        return self.inner.is_link(rel)

    def modprobe(self, module: str) -> None:
        self.inner.modprobe(module)

    # ---- changes ----------------------------------------------------------------------

    def _inside_created(self, rel: str) -> bool:
        return any(rel == c or rel.startswith(c + "/") for c in self.created)

    def _try_read(self, rel: str) -> str | None:
        try:
            return self.inner.read(rel)
        except ConfigfsError:
            return None

    def write(self, rel: str, value: str) -> None:
        old = None if self._inside_created(rel) else self._try_read(rel)
        if old is not None and rel.endswith("/alua_tg_pt_gp"):
            old = alias_of(old) or "NULL"  # the kernel shows a report, takes a name
        if rel.endswith("/nexus") and not self._inside_created(rel):
            old = self._try_read(rel) or "NULL"
        self.inner.write(rel, value)
        self.operations += 1
        if old is not None and old != value:
            # Clearing an auth or tag file takes "NULL"; an empty write may be refused.
            restore = old or ("NULL" if rel.rsplit("/", 1)[-1] in (*_AUTH, "tag") else old)
            self.undo.append((rel, lambda: self.inner.write(rel, restore)))

    def mkdir(self, rel: str) -> None:
        # Always journaled, also inside a new directory: configfs only removes a
        # directory once every user-made child is gone, so undo removes them one by one.
        self.inner.mkdir(rel)
        self.operations += 1
        self.created.add(rel)
        self.undo.append((rel, lambda: self.inner.rmdir(rel)))

    def symlink(self, target_rel: str, link_rel: str) -> None:
        self.inner.symlink(target_rel, link_rel)
        self.operations += 1
        self.created.add(link_rel)
        self.undo.append((link_rel, lambda: self.inner.unlink(link_rel)))

    def _forget(self, rel: str) -> None:
        """``rel`` was made and removed in this transaction: nothing to undo for it."""
        self.created.discard(rel)
        self.undo = [(p, u) for p, u in self.undo if p != rel and not p.startswith(rel + "/")]

    def unlink(self, rel: str) -> None:
        if rel in self.created:
            self.inner.unlink(rel)
            self.operations += 1
            self._forget(rel)
            return
        target = self.inner.readlink(rel)
        mapped = _MAPPED_LINK.match(rel)
        protect = self._try_read(f"{mapped.group(1)}/write_protect") if mapped else None
        self.inner.unlink(rel)
        self.operations += 1

        def relink() -> None:
            self.inner.symlink(target, rel)
            if mapped and protect not in (None, "0"):
                self.inner.write(f"{mapped.group(1)}/write_protect", str(protect))

        self.undo.append((rel, relink))

    def rmdir(self, rel: str) -> None:
        if rel in self.created:
            self.inner.rmdir(rel)
            self.operations += 1
            self._forget(rel)
            return
        restore = self._snapshot(rel)
        self.inner.rmdir(rel)
        self.operations += 1
        self.undo.append((rel, restore))

    # ---- snapshots of what rmdir loses -------------------------------------------------

    def _values(self, rel: str, names: list[str]) -> dict[str, str]:
        values: dict[str, str] = {}
        for name in names:
            value = self._try_read(f"{rel}/{name}")
            if value is not None:
                values[name] = value
        return values

    def _listing(self, rel: str) -> list[str]:
        try:
            return self.inner.listdir(rel)
        except ConfigfsError:
            return []

    def _snapshot(self, rel: str) -> Undo:
        if _DEVICE.match(rel):
            return self._device_snapshot(rel)
        names: list[str] = []
        if _TPG.match(rel):
            names = [f"attrib/{n}" for n in self._listing(f"{rel}/attrib")]
            names += [f"param/{n}" for n in self._listing(f"{rel}/param")]
            names += [f"auth/{n}" for n in _AUTH]
        elif _ACL.match(rel):
            names = ["tag", "cmdsn_depth", *(f"auth/{n}" for n in _AUTH)]
        elif _ALUA_GROUP.match(rel):
            names = ["tg_pt_gp_id", "preferred", "alua_access_state"]
        before = self._values(rel, names)

        def restore() -> None:
            self.inner.mkdir(rel)
            for name, value in before.items():
                if self._try_read(f"{rel}/{name}") != value:
                    self.inner.write(f"{rel}/{name}", value or "NULL")

        return restore

    def _device_snapshot(self, rel: str) -> Undo:
        attrs = self._values(f"{rel}/attrib", [*_CONTROL_KEYS, *_DEVICE_ATTRS])
        serial = (self._try_read(f"{rel}/wwn/vpd_unit_serial") or "").removeprefix(_SERIAL_PREFIX)
        enabled = self._try_read(f"{rel}/enable") == "1"

        def restore() -> None:
            self.inner.mkdir(rel)
            for key in _CONTROL_KEYS:
                if attrs.get(key):
                    self.inner.write(f"{rel}/control", f"{key}={attrs[key]}")
            if serial.strip():
                self.inner.write(f"{rel}/wwn/vpd_unit_serial", serial.strip())
            if enabled:
                self.inner.write(f"{rel}/enable", "1")
            for key in _DEVICE_ATTRS:
                current = self._try_read(f"{rel}/attrib/{key}")
                if key in attrs and current != attrs[key]:
                    with contextlib.suppress(ConfigfsError):
                        self.inner.write(f"{rel}/attrib/{key}", attrs[key])

        return restore

    def rollback(self) -> list[str]:
        """Undo everything, newest first; returns the problems met (empty if clean)."""
        problems: list[str] = []
        while self.undo:
            path, inverse = self.undo.pop()
            try:
                inverse()
            except ConfigfsError as err:
                problems.append(f"{path}: {err}")
        self.created.clear()
        return problems
