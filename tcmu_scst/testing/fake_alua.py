"""The kernel's rules for a backstore's ALUA target port groups, for the fake configfs.

What 6.1's target_core_configfs.c / target_core_alua.c do (read from the source; the
kernel test ``tests/kernel/test_scst_alua.py`` checks the parts the product relies on):

- every device has ``alua/default_tg_pt_gp`` (id 0, a default group: rmdir is EPERM);
  ``mkdir alua/NAME`` makes a group with no valid id: ``tg_pt_gp_id`` reads empty;
- ``tg_pt_gp_id``: > 0xffff is EINVAL; accepted once (a second write is EINVAL, "already
  has a valid ID"); an id another group of the device has is EINVAL; 0 picks a free id;
- ``alua_access_state``: EINVAL without a valid id, ENODEV while the device is not
  enabled, EINVAL unless ``alua_access_type`` has the implicit bit, EINVAL for a state
  the group does not support (lba_dependent by default) or an unknown one;
- ``alua_access_type`` 0..3 (shown as words), ``preferred`` 0/1, ``alua_support_*``
  0/1 (EINVAL without a valid id);
- a LUN joins ``default_tg_pt_gp`` when its device is linked; writing a group name to
  ``lun_N/alua_tg_pt_gp`` moves it (ENODEV for a name with no group or no valid id),
  ``NULL`` moves it back to the default group; reading shows "TG Port Alias: NAME" and
  the group's id and state;
- removing a group moves its LUNs back to the default group.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcmu_scst.testing.fake_configfs import FakeConfigfs

DEFAULT_TG = "default_tg_pt_gp"
_ACCESS_TYPES = {0: "None", 1: "Implicit", 2: "Explicit", 3: "Implicit and Explicit"}
_STATE_NAMES = {
    0: "Active/Optimized",
    1: "Active/NonOptimized",
    2: "Standby",
    3: "Unavailable",
    4: "LBA Dependent",
    0xE: "Offline",
    0xF: "Transitioning",
}
# alua_support_<name> file -> state; all but lba_dependent are supported by default.
_SUPPORT = {
    "transitioning": 0xF,
    "offline": 0xE,
    "lba_dependent": 4,
    "unavailable": 3,
    "standby": 2,
    "active_optimized": 0,
    "active_nonoptimized": 1,
}
_VALUE_FILES = (
    "alua_access_status",
    "alua_write_metadata",
    "nonop_delay_msecs",
    "trans_delay_msecs",
    "implicit_trans_secs",
)


def _fail(code: int, why: str) -> OSError:
    return OSError(code, f"{os.strerror(code)} [fake kernel: {why}]")


def _number(value: str, what: str) -> int:
    try:
        return int(value.strip(), 0)
    except ValueError:
        raise _fail(errno.EINVAL, f"{what}: {value.strip()!r} is not a number") from None


class FakeAlua:
    """Target port groups and LUN memberships of one :class:`FakeConfigfs`."""

    def __init__(self, fake: FakeConfigfs) -> None:
        self.fake = fake
        self.ids: dict[str, int] = {}  # group rel -> valid id
        self.members: dict[str, str] = {}  # LUN rel -> group rel

    # ---- groups -----------------------------------------------------------------------

    def make_group(self, rel: str, default: bool = False) -> None:
        fake = self.fake
        if default:
            fake._kdir(rel)
            self.ids[rel] = 0
        else:
            fake._user_dir(rel)
        fake._kfile(f"{rel}/tg_pt_gp_id", "0" if default else "", "rw")
        fake._kfile(f"{rel}/alua_access_state", "0", "rw")
        fake._kfile(f"{rel}/alua_access_type", _ACCESS_TYPES[3], "rw")
        fake._kfile(f"{rel}/preferred", "0", "rw")
        fake._kfile(f"{rel}/members", "", "ro")
        for name, state in _SUPPORT.items():
            fake._kfile(f"{rel}/alua_support_{name}", "0" if state == 4 else "1", "rw")
        fake._kfile(f"{rel}/alua_access_status", "None", "rw")
        for name in _VALUE_FILES[1:]:
            fake._kfile(f"{rel}/{name}", "0", "rw")

    @staticmethod
    def is_group(parts: list[str]) -> bool:
        return len(parts) == 5 and parts[0] == "core" and parts[3] == "alua"

    def drop_group(self, rel: str) -> None:
        device_rel = rel.rsplit("/alua/", 1)[0]
        for lun, group in list(self.members.items()):
            if group == rel:
                self.members[lun] = f"{device_rel}/alua/{DEFAULT_TG}"
        self.ids.pop(rel, None)

    def store_group(self, rel: str, leaf: str, value: str) -> None:
        fake = self.fake
        path = f"{rel}/{leaf}"
        if leaf == "tg_pt_gp_id":
            self._set_id(rel, _number(value, leaf))
        elif leaf == "alua_access_state":
            self._set_state(rel, _number(value, leaf))
        elif leaf == "alua_access_type":
            number = _number(value, leaf)
            if number not in _ACCESS_TYPES:
                raise _fail(errno.EINVAL, "alua_access_type takes 0..3")
            fake._set(path, _ACCESS_TYPES[number])
        elif leaf == "preferred" or leaf.startswith("alua_support_"):
            if leaf != "preferred" and rel not in self.ids:
                raise _fail(errno.EINVAL, f"{leaf} needs a valid tg_pt_gp_id")
            number = _number(value, leaf)
            if number not in (0, 1):
                raise _fail(errno.EINVAL, f"{leaf} takes 0 or 1")
            fake._set(path, str(number))
        elif leaf == "members":
            raise _fail(errno.EACCES, "members is read-only")
        else:
            fake._set(path, str(_number(value, leaf)))

    def _set_id(self, rel: str, number: int) -> None:
        if number > 0xFFFF:
            raise _fail(errno.EINVAL, "tg_pt_gp_id exceeds 0xffff")
        if rel in self.ids:
            raise _fail(errno.EINVAL, "ALUA TG PT Group already has a valid ID")
        device_rel = rel.rsplit("/alua/", 1)[0]
        taken = {v for k, v in self.ids.items() if k.startswith(f"{device_rel}/alua/")}
        if number == 0:
            number = min(set(range(1, 0x10000)) - taken)
        elif number in taken:
            raise _fail(errno.EINVAL, f"ALUA Target Port Group ID {number} already exists")
        self.ids[rel] = number
        self.fake._set(f"{rel}/tg_pt_gp_id", str(number))

    def _set_state(self, rel: str, state: int) -> None:
        fake = self.fake
        if rel not in self.ids:
            raise _fail(errno.EINVAL, "implicit ALUA on an invalid tg_pt_gp ID")
        device_rel = rel.rsplit("/alua/", 1)[0]
        if not fake.is_enabled(device_rel):
            raise _fail(errno.ENODEV, "alua_access_state while the device is not configured")
        if "Implicit" not in fake._get(f"{rel}/alua_access_type"):
            raise _fail(errno.EINVAL, "implicit transition while TPGS_IMPLICIT_ALUA is off")
        supported = {s for n, s in _SUPPORT.items() if fake._get(f"{rel}/alua_support_{n}") == "1"}
        if state not in _STATE_NAMES or state not in supported:
            raise _fail(errno.EINVAL, f"ALUA access state {state:#x} not supported")
        fake._set(f"{rel}/alua_access_state", str(state))
        fake._set(f"{rel}/alua_access_status", "Altered by Implicit ALUA")

    # ---- LUN memberships --------------------------------------------------------------

    def lun_linked(self, lun_rel: str, device_rel: str) -> None:
        self.members[lun_rel] = f"{device_rel}/alua/{DEFAULT_TG}"

    def lun_unlinked(self, lun_rel: str) -> None:
        self.members.pop(lun_rel, None)

    def store_lun_group(self, lun_rel: str, value: str) -> None:
        group = self.members.get(lun_rel)
        if group is None:
            raise _fail(errno.ENODEV, f"{lun_rel} holds no device")
        name = value.strip()
        device_rel = group.rsplit("/alua/", 1)[0]
        if name == "NULL":
            name = DEFAULT_TG
        wanted = f"{device_rel}/alua/{name}"
        if wanted not in self.ids:
            raise _fail(errno.ENODEV, f"no ALUA target port group {name!r} with a valid id")
        self.members[lun_rel] = wanted

    def render(self, rel: str) -> bytes | None:
        """The text the kernel shows for a LUN's ``alua_tg_pt_gp`` or a group's members."""
        if rel.endswith("/alua_tg_pt_gp"):
            group = self.members.get(rel.rsplit("/", 1)[0])
            if group is None:
                return b""
            state = int(self.fake._get(f"{group}/alua_access_state"))
            status = self.fake._get(f"{group}/alua_access_status")
            return (
                f"TG Port Alias: {group.rsplit('/', 1)[1]}\n"
                f"TG Port Group ID: {self.ids.get(group, 0)}\n"
                f"TG Port Primary Access State: {_STATE_NAMES[state]}\n"
                f"TG Port Primary Access Status: {status}\n"
                "TG Port Secondary Access State: None\n"
                "TG Port Secondary Access Status: None\n"
            ).encode()
        if rel.endswith("/members") and "/alua/" in rel:
            group = rel.rsplit("/", 1)[0]
            lines = [lun for lun, g in sorted(self.members.items()) if g == group]
            return "".join(f"{lun.replace('/lun/', '/')}\n" for lun in lines).encode()
        return None
