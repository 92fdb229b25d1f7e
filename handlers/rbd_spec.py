"""The ``rbd:`` file name of a vdisk_rbd device, in the spelling QEMU and libvirt use.

``rbd:POOL/IMAGE[:conf=PATH][:id=USER][:KEY=VALUE...]``: ``conf`` is the ceph.conf to
read (default: librados' own search, ``/etc/ceph/ceph.conf``), ``id`` the client
name without ``client.`` (default ``admin``); any other ``KEY=VALUE`` is a Ceph
option set on the connection (``rados_osd_op_timeout=10``, say). As in QEMU, ``\\:``
is a colon inside a value. Snapshots (``@snap``) and namespaces are not supported.

This module is pure parsing: it needs no Ceph binding, so ``config check`` can
refuse a malformed name on a machine without Ceph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tcmu_scst.errors import HandlerError

PREFIX = "rbd:"
#: Ceph's pool and image names: no '/', '@' or blanks (we refuse what librbd would).
_NAME = re.compile(r"[A-Za-z0-9_.+-]+\Z")
_OPTION = re.compile(r"[a-z][a-z0-9_ ]*\Z")
#: When the cluster stops answering, an I/O fails after this long (librados'
#: ``rados_osd_op_timeout``; 0, its default, waits forever: the tcmu-runner lesson).
#: Below the kernel's 30 s TCMU command timeout, so we answer before it aborts.
DEFAULT_OSD_OP_TIMEOUT = "20"
DEFAULT_MON_OP_TIMEOUT = "20"


@dataclass(frozen=True, slots=True)
class RbdSpec:
    """One parsed ``rbd:`` file name."""

    pool: str
    image: str
    conf: str = ""  # empty: librados' default search
    user: str = ""  # empty: client.admin
    options: tuple[tuple[str, str], ...] = field(default=())

    @property
    def rados_options(self) -> dict[str, str]:
        """The options set on the cluster handle: the bounded time-outs unless given."""
        opts = {"rados_osd_op_timeout": DEFAULT_OSD_OP_TIMEOUT,
                "rados_mon_op_timeout": DEFAULT_MON_OP_TIMEOUT,
                "client_mount_timeout": DEFAULT_MON_OP_TIMEOUT}
        opts.update(self.options)
        return opts

    def __str__(self) -> str:
        return f"{self.pool}/{self.image}"


def is_rbd(filename: str) -> bool:
    return filename.startswith(PREFIX)


def _split(text: str) -> list[str]:
    """Split on ':' not preceded by a backslash; ``\\:`` becomes ':'."""
    parts, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] == ":":
            cur.append(":")
            i += 2
            continue
        if ch == ":":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def parse(filename: str, who: str = "vdisk_rbd") -> RbdSpec:
    """Parse ``rbd:POOL/IMAGE[:k=v...]``; a HandlerError says what is wrong, in one line."""
    usage = "give rbd:POOL/IMAGE[:conf=PATH][:id=USER]"
    if not is_rbd(filename):
        raise HandlerError(f"{who}: {filename!r} is no RBD image name; {usage}")
    head, *opts = _split(filename[len(PREFIX):])
    pool, slash, image = head.partition("/")
    if not slash or not _NAME.match(pool) or not _NAME.match(image):
        raise HandlerError(
            f"{who}: {filename!r}: the image must be POOL/IMAGE with letters, digits, "
            f"'_', '.', '+' or '-' (no snapshots, no namespaces); {usage}"
        )
    conf = user = ""
    extra: list[tuple[str, str]] = []
    for opt in opts:
        key, eq, value = opt.partition("=")
        if not eq or not value:
            raise HandlerError(f"{who}: {filename!r}: option {opt!r} is not KEY=VALUE; {usage}")
        if key == "conf":
            if not value.startswith("/"):
                raise HandlerError(f"{who}: conf={value!r} is not an absolute path")
            conf = value
        elif key == "id":
            user = value.removeprefix("client.")
        elif _OPTION.match(key):
            extra.append((key, value))
        else:
            raise HandlerError(f"{who}: {filename!r}: {key!r} is no Ceph option name")
    return RbdSpec(pool, image, conf, user, tuple(extra))
