"""The shell tree: SCST 0.9.6's /proc/scsi_tgt, one node per /proc file.

A file's node takes, as commands, the strings once echoed to the file (``open``,
``add``, ``add_group``...), and ``show`` prints what reading the file printed. Every
changing command goes through :meth:`ShellContext.change` (model edit, validation,
all-or-nothing LIO apply, running model stored).

As targetcli users expect, what a file lists is a node too, to ``ls`` and ``cd``
into: each device under its handler (``/vdisk/disk1``), each LUN under
``groups/G/devices`` and each name under ``groups/G/names``; their ``show`` prints
their row in the listing file's SCST columns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configshell_fb import ConfigNode, ExecutionError

from tcmu_scst.errors import ConfigError, TcmuScstError
from tcmu_scst.kernel import handler_table
from tcmu_scst.kernel.fabric_table import has
from tcmu_scst.kernel.handler_table import (
    ASSIGNED_HANDLERS,
    HANDLER_TYPES,
    TYPE_DESCRIPTIONS,
    TYPE_DISK,
    VCDROM,
    Kind,
)
from tcmu_scst.kernel.lio import UserBackstore
from tcmu_scst.scst import conf, devconfig
from tcmu_scst.scst.model import (
    DEFAULT_GROUP,
    FABRIC_DRIVERS,
    Device,
    Group,
    ScstConfig,
    threads_error,
)
from tcmu_scst.scst.ownership import write_atomically

from . import completion, edits, trace, views

if TYPE_CHECKING:
    from .context import ShellContext

BLOCK_SIZES = tuple(str(size) for size in handler_table.BLOCKSIZE.choices)
# The handlers behind /vdisk/vdisk (vcdrom has its own node).
VDISK_HANDLERS = frozenset(handler_table.names(Kind.VDISK))
VCDROM_HANDLERS = frozenset(handler_table.names(Kind.VCDROM))
PROC_HELP = """\
Usage (SCST 0.9.6 /proc/scsi_tgt; each file is a node of the same name here):
  /                   assign H:C:I:L HANDLER_NAME | add_group GROUP | del_group GROUP
  /groups/GROUP/devices  add H:C:I:L|V_NAME lun [READ_ONLY] | del H:C:I:L|V_NAME | clear
  /groups/GROUP/names    add NAME | del NAME | clear
  /threads            set DEC|0xHEX|0OCT
  /[HANDLER/]trace_level  all|none|default | value DEC|0xHEX|0OCT | set|add|del TOKEN
  /vdisk              open|close NAME [FILE_NAME [BLOCK_SIZE] [WRITE_THROUGH READ_ONLY
                      O_DIRECT NULLIO NV_CACHE BLOCKIO REMOVABLE]] | resync_size NAME
  /vcdrom             open|change|close NAME [FILE_NAME]
  /targets/FABRIC     create NAME | delete NAME   (tcmu-scst: LIO targets)
  /device_groups      add|del DG   (SCST 3.x ALUA: DG/devices add|del DEVICE,
                      DG/target_groups add TG ID | del TG, DG/target_groups/TG
                      state STATE | preferred 0|1 | group_id N | add|del TARGET)
  /                   saveconfig [FILE] | restoreconfig [FILE]
'show' prints what reading the file printed; 'help COMMAND' explains a command."""


class UsageErrors(ConfigNode):  # type: ignore[misc]
    """Arity errors that name the command and show its usage."""

    def assert_params(self, method: Any, pparams: list[str], kparams: dict[str, str]) -> None:
        try:
            super().assert_params(method, pparams, kparams)
        except ExecutionError as err:
            command = method.__name__.removeprefix("ui_command_")
            given = " ".join([*pparams, *(f"{k}={v}" for k, v in kparams.items())])
            usage = self.get_command_syntax(command)[0].strip()
            reason = str(err).replace("positionnal", "positional").rstrip(".")
            raise ExecutionError(
                f"{command} {given}: {reason[:1].lower()}{reason[1:]}; usage: {usage}"
            ) from None


class Node(UsageErrors):
    """Base: access to the context, output, and the SCST read form via ``show``."""

    def __init__(self, name: str, parent: Node) -> None:
        super().__init__(name, parent)

    @property
    def ctx(self) -> ShellContext:
        root: Root = self.get_root()
        return root.ctx

    @property
    def config(self) -> ScstConfig:
        return self.ctx.config

    def say(self, text: str) -> None:
        self.shell.con.display(text)

    def read(self) -> str:
        return ""

    def summary(self) -> tuple[str, bool | None]:
        return "", None

    def ui_command_show(self) -> None:
        """Print what reading this /proc/scsi_tgt file printed under SCST."""
        self.say(self.read())

    def change(self, edit: Callable[[ScstConfig], None]) -> None:
        self.ctx.change(edit)
        root: Root = self.get_root()
        root.refresh()


def _device_names(config: ScstConfig, handlers: frozenset[str] | None = None) -> list[str]:
    return [d.name for d in config.devices if handlers is None or d.handler in handlers]


# ---- groups -------------------------------------------------------------------------------


class Item(Node):
    """One device, LUN or name shown as a node (``ls``, ``cd``); ``show`` prints its
    row in the columns of the file it is listed in."""

    def __init__(self, name: str, parent: Node, row: Callable[[], str], summary: str) -> None:
        super().__init__(name, parent)
        self._row = row
        self._summary = summary

    def read(self) -> str:
        return self._row()

    def summary(self) -> tuple[str, bool | None]:
        return self._summary, None


def _set_items(parent: Node, items: list[tuple[str, Callable[[], str], str]]) -> None:
    """Replace ``parent``'s Item children; a name its fixed files use is left out."""
    for child in list(parent.children):
        if isinstance(child, Item):
            parent.remove_child(child)
    taken = {child.name for child in parent.children}
    for name, row, summary in items:
        if name not in taken:
            Item(name, parent, row, summary)
            taken.add(name)


class GroupDevices(Node):
    """groups/GROUP/devices: one node per LUN, named by its device."""

    def __init__(self, parent: GroupNode) -> None:
        super().__init__("devices", parent)
        self.group = parent.name
        grp = self.config.group(self.group)
        luns = sorted(grp.luns, key=lambda x: x.number) if grp else []
        _set_items(self, [
            (lun.device, _bind(views.group_devices, Group(self.group, luns=[lun])),
             f"LUN {lun.number}{' RO' if lun.read_only else ''}")
            for lun in luns
        ])  # fmt: skip

    def read(self) -> str:
        return views.group_devices(edits.group_or_fail(_copy(self.config), self.group))

    def summary(self) -> tuple[str, bool | None]:
        grp = self.config.group(self.group)
        return f"LUNs: {len(grp.luns) if grp else 0}", None

    def ui_command_add(self, device: str, lun: str, read_only: str | None = None) -> None:
        """add DEVICE LUN [READ_ONLY]: export DEVICE (V_NAME or H:C:I:L) as LUN in this group.

        There must be LUN 0 in each group. In 0.9.6 a group is global: it applies on
        every target (Default to initiators no other group names)."""
        if read_only not in (None, "READ_ONLY"):
            raise ConfigError(f"unexpected {read_only!r}; the only option is READ_ONLY")
        number = edits.parse_lun(lun)
        self.change(lambda c: edits.add_lun(c, self.group, device, number, read_only is not None))

    def ui_complete_add(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        if current == "device":
            return completion.matches(_device_names(self.config), text)
        if current == "read_only":
            return completion.matches(["READ_ONLY"], text)
        return []

    def ui_command_del(self, device: str, lun: str | None = None) -> None:
        """del DEVICE: stop exporting DEVICE in this group (a trailing LUN is accepted)."""
        grp = self.config.group(self.group)
        if lun is not None and grp is not None:
            number = edits.parse_lun(lun)
            if not any(x.device == device and x.number == number for x in grp.luns):
                raise ConfigError(f"device {device} is not LUN {number} in group {self.group}")
        self.change(lambda c: edits.del_lun(c, self.group, device))

    def ui_complete_del(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        grp = self.config.group(self.group)
        if current == "device" and grp is not None:
            return completion.matches([x.device for x in grp.luns], text)
        return []

    def ui_command_clear(self) -> None:
        """clear: remove every device of this group."""
        self.change(lambda c: edits.clear_luns(c, self.group))


class GroupNames(Node):
    """groups/GROUP/names: one node per initiator name."""

    def __init__(self, parent: GroupNode) -> None:
        super().__init__("names", parent)
        self.group = parent.name
        grp = self.config.group(self.group)
        names = grp.initiators if grp else []
        _set_items(self, [(name, _bind(str, name), "initiator") for name in names])

    def read(self) -> str:
        return views.group_names(edits.group_or_fail(_copy(self.config), self.group))

    def summary(self) -> tuple[str, bool | None]:
        grp = self.config.group(self.group)
        return f"names: {len(grp.initiators) if grp else 0}", None

    def ui_command_add(self, name: str) -> None:
        """add NAME: sessions of initiator NAME use this group (from their next login)."""
        self.change(lambda c: edits.add_name(c, self.group, name))

    def ui_command_del(self, name: str) -> None:
        """del NAME: NAME no longer selects this group."""
        self.change(lambda c: edits.del_name(c, self.group, name))

    def ui_complete_del(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        grp = self.config.group(self.group)
        return completion.matches(grp.initiators if grp else [], text)

    def ui_command_clear(self) -> None:
        """clear: remove every name of this group."""
        self.change(lambda c: edits.clear_names(c, self.group))


class GroupNode(Node):
    def __init__(self, name: str, parent: Groups) -> None:
        super().__init__(name, parent)
        GroupDevices(self)
        GroupNames(self)


class Groups(Node):
    """groups/: one directory per security group (Default always exists)."""

    def __init__(self, parent: Root) -> None:
        super().__init__("groups", parent)

    def refresh(self) -> None:
        for child in list(self.children):
            self.remove_child(child)
        names = [DEFAULT_GROUP, *(g.name for g in self.config.groups if g.name != DEFAULT_GROUP)]
        for name in names:
            GroupNode(name, self)


# ---- handlers -------------------------------------------------------------------------------


class TypeFile(Node):
    def __init__(self, parent: Node, scsi_type: int) -> None:
        super().__init__("type", parent)
        self.scsi_type = scsi_type

    def read(self) -> str:
        return f"{self.scsi_type} - {TYPE_DESCRIPTIONS[self.scsi_type]}"


class TextFile(Node):
    def __init__(self, name: str, parent: Node, text: str) -> None:
        super().__init__(name, parent)
        self.text = text

    def read(self) -> str:
        return self.text


class TraceLevel(Node):
    """trace_level: the SCST tracing mask (stored, and sent to the daemon when it runs)."""

    def __init__(self, parent: Node, owner: str) -> None:
        super().__init__("trace_level", parent)
        self.owner = owner

    def read(self) -> str:
        return trace.render(self.owner, self.ctx.traces.get(self.owner))

    def _write(self, words: list[str]) -> None:
        mask = trace.apply_write(self.owner, self.ctx.traces.get(self.owner), words)
        self.ctx.traces.set(self.owner, mask)
        if self.ctx.daemon_running():
            try:
                self.ctx.daemon.set_trace_level(self.owner, mask)
            except TcmuScstError as err:
                self.say(f"warning: stored, but the daemon did not take it: {err}")

    def ui_command_all(self) -> None:
        """all: trace everything."""
        self._write(["all"])

    def ui_command_none(self) -> None:
        """none: trace nothing."""
        self._write(["none"])

    def ui_command_default(self) -> None:
        """default: back to the default mask."""
        self._write(["default"])

    def ui_command_value(self, number: str) -> None:
        """value DEC|0xHEX|0OCT: set the raw mask."""
        self._write(["value", number])

    def ui_command_set(self, token: str) -> None:
        """set TOKEN: trace only TOKEN."""
        self._write(["set", token])

    def ui_command_add(self, token: str) -> None:
        """add TOKEN: also trace TOKEN."""
        self._write(["add", token])

    def ui_command_del(self, token: str) -> None:
        """del TOKEN: stop tracing TOKEN."""
        self._write(["del", token])

    def _complete_token(self, text: str) -> list[str]:
        return completion.matches(trace.tokens_for(self.owner), text)

    def ui_complete_set(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        return self._complete_token(text)

    def ui_complete_add(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        return self._complete_token(text)

    def ui_complete_del(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        return self._complete_token(text)


class HandlerNode(Node):
    """A dev handler directory: trace_level, type, help, and a node per device."""

    def __init__(self, name: str, parent: Root, scsi_type: int, help_text: str) -> None:
        super().__init__(name, parent)
        self.handler = name
        TraceLevel(self, name)
        TypeFile(self, scsi_type)
        TextFile("help", self, help_text)

    def handles(self, device: Device) -> bool:
        return device.handler == self.handler

    def table(self, config: ScstConfig) -> str:
        return views.devices_and_handlers(config)

    def device_summary(self, device: Device) -> str:
        return device.handler

    def read(self) -> str:
        return self.table(ScstConfig(devices=[d for d in self.config.devices if self.handles(d)]))

    def refresh(self) -> None:
        _set_items(self, [
            (dev.name, _bind(self.table, ScstConfig(devices=[dev])), self.device_summary(dev))
            for dev in self.config.devices
            if self.handles(dev)
        ])  # fmt: skip


class VdiskNode(HandlerNode):
    """vdisk/vdisk: open, close, resync_size of virtual disks."""

    HELP = (
        'echo "open|close NAME [FILE_NAME [BLOCK_SIZE] [WRITE_THROUGH READ_ONLY O_DIRECT '
        'NULLIO NV_CACHE BLOCKIO]]" >/proc/scsi_tgt/vdisk/vdisk'
    )

    def __init__(self, parent: Root) -> None:
        super().__init__("vdisk", parent, TYPE_DISK, self.HELP)

    def handles(self, device: Device) -> bool:
        return device.handler in VDISK_HANDLERS

    def table(self, config: ScstConfig) -> str:
        return views.vdisk_table(config)

    def device_summary(self, device: Device) -> str:
        return device.params.get("filename") or device.handler.removeprefix("vdisk_").upper()

    def summary(self) -> tuple[str, bool | None]:
        return f"devices: {len(_device_names(self.config, VDISK_HANDLERS))}", None

    def ui_command_open(self, name: str, path: str | None = None, *flags: str) -> None:
        """open NAME [PATH] [BLOCK_SIZE] [FLAGS...]: open PATH as virtual disk NAME.

        FLAGS: WRITE_THROUGH READ_ONLY O_DIRECT NULLIO NV_CACHE BLOCKIO REMOVABLE.
        PATH may be left out only with NULLIO; rbd:POOL/IMAGE[:conf=PATH][:id=USER] opens a
        Ceph RBD image (vdisk_rbd). BLOCK_SIZE is 512, 1024, 2048 or 4096."""
        from tcmu_scst.handlers import vdisk_params

        words = ["open", name, *([path] if path is not None else []), *flags]
        cmd = vdisk_params.parse_proc_command(" ".join(words), setup_id=self.config.setup_id or 0)
        assert cmd.params is not None
        handler, attrs = vdisk_params.to_attributes(cmd.params)
        device = Device(name, handler, attrs)
        devconfig.check_device_files(device, self.config.setup_id or 0)
        self.change(lambda c: edits.add_device(c, device))

    def ui_complete_open(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        from tcmu_scst.handlers import vdisk_params

        flags = list(vdisk_params.PROC_FLAGS)
        if current == "path":
            return completion.files(text) + completion.matches(flags, text)
        if current == "*":
            return completion.matches([*BLOCK_SIZES, *flags], text) if text else []
        return []

    def ui_command_close(self, name: str) -> None:
        """close NAME: close virtual disk NAME (its LUNs in every group go too)."""
        self.change(lambda c: _remove(c, name, VDISK_HANDLERS))

    def ui_complete_close(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        return completion.matches(_device_names(self.config, VDISK_HANDLERS), text)

    def ui_command_resync_size(self, name: str) -> None:
        """resync_size NAME: tell initiators the new size after the backing file grew."""
        device = self.config.device(name)
        if device is None or device.handler not in VDISK_HANDLERS:
            raise ConfigError(f"no virtual disk {name}; see 'show'")
        backstore = _backstore(self.ctx, name)
        backstore.set_dev_size(devconfig.size_of(device))

    def ui_complete_resync_size(
        self, parameters: dict[str, str], text: str, current: str
    ) -> list[str]:
        return self.ui_complete_close(parameters, text, current)


class VcdromNode(HandlerNode):
    """vcdrom/vcdrom: virtual CD-ROMs over ISO images."""

    HELP = 'echo "open|change|close NAME [FILE_NAME]" >/proc/scsi_tgt/vcdrom/vcdrom'

    def __init__(self, parent: Root) -> None:
        super().__init__(VCDROM, parent, HANDLER_TYPES[VCDROM], self.HELP)

    def handles(self, device: Device) -> bool:
        return device.handler == VCDROM

    def table(self, config: ScstConfig) -> str:
        return views.vcdrom_table(config)

    def device_summary(self, device: Device) -> str:
        return device.params.get("filename") or "no medium"

    def summary(self) -> tuple[str, bool | None]:
        return f"devices: {len(_device_names(self.config, frozenset({'vcdrom'})))}", None

    @staticmethod
    def _device(name: str, path: str | None) -> Device:
        from tcmu_scst.handlers import vcdrom_params

        # The handler's own rules: 0.9.6 name length, absolute image path...
        command = vcdrom_params.parse_proc_command(f"open {name} {path or ''}")
        handler, attrs = vcdrom_params.to_attributes(command.params())
        device = Device(name, handler, attrs)
        devconfig.check_device_files(device)
        return device

    def ui_command_open(self, name: str, path: str | None = None) -> None:
        """open NAME [PATH]: a virtual CD-ROM NAME holding the image PATH (empty without)."""
        device = self._device(name, path)
        self.change(lambda c: edits.add_device(c, device))

    def ui_complete_open(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        return completion.files(text) if current == "path" else []

    def ui_command_change(self, name: str, path: str | None = None) -> None:
        """change NAME [PATH]: swap the medium of NAME (no PATH: eject)."""
        current = self.config.device(name)
        if current is None or current.handler != VCDROM:
            raise ConfigError(f"no virtual CD-ROM {name}; open it first")
        device = self._device(name, path)
        new = _copy(self.config)
        new_device = new.device(name)
        assert new_device is not None
        new_device.params = dict(device.params)
        # Written to the live backstore: the kernel sends the daemon a RECONFIG with
        # the new dev_config and the handler swaps the medium; re-creating the
        # backstore (what apply would do) would drop the initiators' LUNs.
        backstore = _backstore(self.ctx, name)
        backstore.set_dev_config(devconfig.encode_dev_config(new_device, new.setup_id or 0))
        self.ctx.record(new)

    def ui_complete_change(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        if current == "name":
            return self.ui_complete_close(parameters, text, current)
        return completion.files(text) if current == "path" else []

    def ui_command_close(self, name: str) -> None:
        """close NAME: remove virtual CD-ROM NAME (its LUNs in every group go too)."""
        self.change(lambda c: _remove(c, name, VCDROM_HANDLERS))

    def ui_complete_close(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        return completion.matches(_device_names(self.config, VCDROM_HANDLERS), text)


def _remove(config: ScstConfig, name: str, handlers: frozenset[str]) -> None:
    edits.remove_device(config, name, handlers)


def _backstore(ctx: ShellContext, name: str) -> UserBackstore:
    backstore = UserBackstore.find(ctx.cfs, name)
    if backstore is None:
        raise ConfigError(
            f"device {name} has no live backstore; run 'restoreconfig' or 'config apply' first"
        )
    return backstore


def _bind(render: Callable[[Any], str], value: Any) -> Callable[[], str]:
    """``render(value)`` later: an Item's row, computed when it is shown."""
    return lambda: render(value)


def _copy(config: ScstConfig) -> ScstConfig:
    import copy

    return copy.deepcopy(config)


# ---- read-mostly files --------------------------------------------------------------------------


class Sessions(Node):
    def __init__(self, parent: Root) -> None:
        super().__init__("sessions", parent)

    def read(self) -> str:
        return views.sessions_table(views.sessions(self.ctx.cfs, self.ctx.ownership()))


class Sgv(Node):
    def __init__(self, parent: Root) -> None:
        super().__init__("sgv", parent)

    def read(self) -> str:
        return views.sgv_table(self.ctx.daemon.status().devices)


class Version(Node):
    def __init__(self, parent: Root) -> None:
        super().__init__("version", parent)

    def read(self) -> str:
        return views.version_text()


class Threads(Node):
    """threads: the daemon's per-device worker threads."""

    def __init__(self, parent: Root) -> None:
        super().__init__("threads", parent)

    def read(self) -> str:
        if self.ctx.daemon_running():
            return str(self.ctx.daemon.status().threads)
        saved = self.config.threads
        return f"{saved if saved is not None else '-'} (daemon not running: configured value)"

    def ui_command_set(self, number: str) -> None:
        """set DEC|0xHEX|0OCT: worker threads per device (every device, at once)."""
        value = trace.parse_number(number)
        problem = threads_error(value)  # the config file's rule, one declaration
        if problem is not None:
            raise ConfigError(problem)

        def edit(config: ScstConfig) -> None:
            config.threads = value

        self.change(edit)
        if self.ctx.daemon_running():
            self.ctx.daemon.set_threads(value)
        else:
            self.say("warning: daemon not running; the value is kept for its next start")


# ---- targets (not in SCST 0.9.6) ---------------------------------------------------------------


class TargetNode(Node):
    def __init__(self, name: str, parent: FabricNode) -> None:
        super().__init__(name, parent)
        self.fabric = parent.name

    def _edit(self, action: Any) -> None:
        def edit(config: ScstConfig) -> None:
            action(edits.target_or_fail(config, self.fabric, self.name))

        self.change(edit)

    def read(self) -> str:
        tgt = edits.target_or_fail(self.config, self.fabric, self.name)
        lines = [f"{self.fabric} target {tgt.name}: {'enabled' if tgt.enabled else 'disabled'}"]
        if has(self.fabric, "chap_and_portals"):
            lines.append(f"portals: {' '.join(tgt.portals) or '0.0.0.0:3260 (default)'}")
            chap = f"user {tgt.incoming_users[0][0]}" if tgt.incoming_users else "off"
            lines.append(f"CHAP: {chap}")
        lines += [f"LUN {x.number} {x.device}{' RO' if x.read_only else ''}" for x in tgt.luns]
        lines += [f"group {g.name} (per target): {len(g.luns)} LUN(s)" for g in tgt.groups]
        lines.append("0.9.6 groups under /groups apply here too")
        return "\n".join(lines)

    def summary(self) -> tuple[str, bool | None]:
        tgt = self.config.target(self.fabric, self.name)
        enabled = bool(tgt and tgt.enabled)
        return ("enabled" if enabled else "disabled"), enabled

    def ui_command_enable(self) -> None:
        """enable: let initiators log in (configure groups first, as SCST advises)."""
        self._edit(lambda t: setattr(t, "enabled", True))

    def ui_command_disable(self) -> None:
        """disable: refuse new logins."""
        self._edit(lambda t: setattr(t, "enabled", False))

    def ui_command_add_portal(self, address: str) -> None:
        """add_portal IP[:PORT]: listen on this address (iSCSI; default 0.0.0.0:3260)."""
        self._iscsi_only()
        self._edit(lambda t: edits.add_portal(t, address))

    def ui_command_del_portal(self, address: str) -> None:
        """del_portal IP[:PORT]: stop listening on this address."""
        self._iscsi_only()
        self._edit(lambda t: edits.del_portal(t, address))

    def ui_command_set_chap(self, user: str, secret: str) -> None:
        """set_chap USER SECRET: initiators must log in with this CHAP account (iSCSI)."""
        self._iscsi_only()
        account = edits.check_secret(user, secret)
        self._edit(lambda t: setattr(t, "incoming_users", [account]))

    def ui_command_set_mutual_chap(self, user: str, secret: str) -> None:
        """set_mutual_chap USER SECRET: the target proves itself with this account (iSCSI)."""
        self._iscsi_only()
        account = edits.check_secret(user, secret)
        self._edit(lambda t: setattr(t, "outgoing_user", account))

    def ui_command_clear_chap(self) -> None:
        """clear_chap: no CHAP on this target."""
        self._iscsi_only()

        def clear(tgt: Any) -> None:
            tgt.incoming_users = []
            tgt.outgoing_user = None

        self._edit(clear)

    def _iscsi_only(self) -> None:
        if not has(self.fabric, "chap_and_portals"):
            raise ConfigError(f"portals and CHAP exist only on iSCSI, not on {self.fabric}")


class FabricNode(Node):
    """targets/FABRIC: create and delete LIO targets of one fabric."""

    def __init__(self, name: str, parent: TargetsNode) -> None:
        super().__init__(name, parent)

    def refresh(self) -> None:
        for child in list(self.children):
            self.remove_child(child)
        for tgt in self.config.targets:
            if tgt.fabric == self.name:
                TargetNode(tgt.name, self)

    def read(self) -> str:
        return "\n".join(
            f"{t.name} {'enabled' if t.enabled else 'disabled'}"
            for t in self.config.targets
            if t.fabric == self.name
        )

    def ui_command_create(self, name: str) -> None:
        """create NAME: a new target (disabled; 'enable' it once access control is set).

        iSCSI: an IQN; qla2xxx/tcm_fc: the port WWPN; loopback: any name. Every 0.9.6
        group (/groups) is exported on it at once."""
        self.change(lambda c: edits.create_target(c, self.name, name))

    def ui_command_delete(self, name: str) -> None:
        """delete NAME: remove the target (its sessions are dropped)."""
        self.change(lambda c: edits.delete_target(c, self.name, name))

    def ui_complete_delete(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        names = [t.name for t in self.config.targets if t.fabric == self.name]
        return completion.matches(names, text)


class TargetsNode(Node):
    def __init__(self, parent: Root) -> None:
        super().__init__("targets", parent)
        for fabric in FABRIC_DRIVERS:
            FabricNode(fabric, self)

    def refresh(self) -> None:
        for child in self.children:
            child.refresh()


# ---- root ----------------------------------------------------------------------------------------


class Root(UsageErrors):
    """/proc/scsi_tgt/scsi_tgt (and the directory holding everything)."""

    def __init__(self, shell: Any, ctx: ShellContext) -> None:
        super().__init__("/", shell=shell)
        self.ctx = ctx
        self.groups = Groups(self)
        self.targets = TargetsNode(self)
        Sessions(self)
        Sgv(self)
        Threads(self)
        Version(self)
        TraceLevel(self, trace.ROOT)
        TextFile("help", self, PROC_HELP)
        self.handlers: list[HandlerNode] = [VdiskNode(self), VcdromNode(self)]
        for handler in sorted(ASSIGNED_HANDLERS):
            help_text = f"assign H:C:I:L {handler}"
            self.handlers.append(HandlerNode(handler, self, HANDLER_TYPES[handler], help_text))
        from .alua_nodes import DeviceGroups  # its nodes build on this module's Node

        self.device_groups = DeviceGroups(self)
        self.refresh()

    def refresh(self) -> None:
        self.groups.refresh()
        self.targets.refresh()
        self.device_groups.refresh()
        for handler in self.handlers:
            handler.refresh()

    def summary(self) -> tuple[str, bool | None]:
        return f"devices: {len(self.ctx.config.devices)}", None

    def say(self, text: str) -> None:
        self.shell.con.display(text)

    def ui_command_show(self) -> None:
        """Print the devices and their handlers (reading /proc/scsi_tgt/scsi_tgt)."""
        self.say(views.devices_and_handlers(self.ctx.config))

    def _change(self, edit: Any) -> None:
        self.ctx.change(edit)
        self.refresh()

    def ui_command_assign(self, hctl: str, handler: str) -> None:
        """assign H:C:I:L HANDLER: serve local SCSI device H:C:I:L with pass-through HANDLER."""
        if not (self.ctx.sysfs / "class/scsi_device" / hctl).exists():
            raise ConfigError(f"no local SCSI device {hctl} (see lsscsi); check the address")
        self._change(lambda c: edits.assign(c, hctl, handler))

    def ui_complete_assign(self, parameters: dict[str, str], text: str, current: str) -> list[str]:
        if current == "handler":
            return completion.matches(ASSIGNED_HANDLERS, text)
        try:
            present = [p.name for p in (self.ctx.sysfs / "class/scsi_device").iterdir()]
        except OSError:
            present = []
        return completion.matches(present, text)

    def ui_command_add_group(self, group: str) -> None:
        """add_group GROUP: a new (global, 0.9.6) security group."""
        self._change(lambda c: edits.add_group(c, group))

    def ui_command_del_group(self, group: str) -> None:
        """del_group GROUP: delete a security group (Default cannot be deleted)."""
        self._change(lambda c: edits.del_group(c, group))

    def ui_complete_del_group(
        self, parameters: dict[str, str], text: str, current: str
    ) -> list[str]:
        return completion.matches([g.name for g in self.ctx.config.groups], text)

    def ui_command_saveconfig(self, file: str | None = None) -> None:
        """saveconfig [FILE]: write the running setup in scst.conf syntax (default
        /etc/tcmu-scst/scst.conf)."""
        from .context import DEFAULT_SAVE

        path = Path(file) if file else DEFAULT_SAVE
        write_atomically(path, conf.write(self.ctx.config), mode=0o600)
        self.say(f"saved to {path}")

    def ui_complete_saveconfig(
        self, parameters: dict[str, str], text: str, current: str
    ) -> list[str]:
        return completion.files(text)

    def ui_command_restoreconfig(self, file: str | None = None) -> None:
        """restoreconfig [FILE]: make the setup match FILE (modern or 0.9.6 format);
        all-or-nothing."""
        from tcmu_scst.scst.commands import load

        from .context import DEFAULT_SAVE

        path = Path(file) if file else DEFAULT_SAVE
        config = load(path)
        for device in config.devices:
            devconfig.check_device_files(device, config.setup_id or 0)
        self._change(lambda c: _overwrite(c, config))
        self.say(f"restored {path}")

    def ui_complete_restoreconfig(
        self, parameters: dict[str, str], text: str, current: str
    ) -> list[str]:
        return completion.files(text)


def _overwrite(model: ScstConfig, new: ScstConfig) -> None:
    import copy

    model.__dict__.update(copy.deepcopy(new).__dict__)


def execution_error(err: TcmuScstError) -> ExecutionError:
    return ExecutionError(views.error_text(err))
