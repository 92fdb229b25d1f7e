"""The native config file: SCST's modern ``/etc/scst.conf`` syntax (scst.conf(5)).

Syntax: one ``name value...`` item per line; a line ending in ``{`` opens a section
named by the words before it, a line holding only ``}`` closes it; ``#`` starts a
comment, ``\\#`` is a literal ``#``; double quotes keep blanks (``\\"`` and ``\\\\``
escape inside them). Every item keeps its line number for error messages.

Accepted sections and items::

    setup_id 0x1234                      # top level (kept; the handlers derive ids)
    threads 4                            # top level: SCST's thread count (daemon hint)
    HANDLER vdisk_fileio {               # any handler of kernel.handler_table
        DEVICE disk1 {                   # or "DEVICE disk1" with no parameters
            filename /srv/disk1.img      # vdisk parameters as in scst_vdisk (§5.4)
        }
    }
    TARGET_DRIVER iscsi {                # iscsi, scst_local, qla2x00t, fcst or the LIO
        enabled 1                        #   names loopback, qla2xxx, tcm_fc; "enabled 0"
        TARGET iqn.2024-01.org.x:t1 {    #   disables every target of the driver
            enabled 1                    # targets are disabled unless "enabled 1"
            portal 192.0.2.1:3260        # iSCSI portal to listen on (repeatable; default
            allowed_portal 192.0.2.2     #   0.0.0.0:3260); allowed_portal = portal on
            IncomingUser "joe secret12"  #   port 3260, no wildcards; CHAP (one account)
            OutgoingUser "tgt secret34"  # mutual CHAP
            HeaderDigest CRC32C,None     # iSCSI parameters go to the TPG's param/
            LUN 0 disk1                  # the target's default LUN set
            LUN 1 disk2 {
                read_only 1
            }
            GROUP g1 {                   # per-target security group (modern SCST)
                LUN 0 disk2
                INITIATOR iqn.1991-05.com.microsoft:host1
                IncomingUser "host1 secret5678"   # extension: CHAP for this group only
            }
        }
    }
    GROUP g2 {                           # extension: a global 0.9.6 group (every target);
        LUN 0 disk1                      #   "GROUP Default" and "GROUP Default_<target>"
        INITIATOR iqn.1993-08.org.debian:01:abc   # are 0.9.6's default groups
    }

    DEVICE_GROUP dg1 {                   # ALUA (SCST 3.x): devices sharing port groups
        DEVICE disk1
        TARGET_GROUP west {              # one LIO alua/west group per device
            group_id 1                   # 1..65535, unique in the device group
            state active                 # active, nonoptimized, standby, unavailable,
            preferred 1                  #   offline, transitioning; "preferred" alone = 1
            TARGET iqn.2024-01.org.x:t1  # the LUNs of these targets' ports join the group
            TARGET iqn.2024-01.org.x:t2 {
                rel_tgt_id 2             # kept for scstadmin; LIO numbers ports itself
            }
        }
    }

The other attributes SCST 3.x writes (``max_tasklet_cmd``, ``threads_num``,
``NopInInterval``, ``cpu_mask``..., and the ``TARGET_DRIVER copy_manager`` section) are
accepted with one ``FILE:LINE`` warning each saying why they have no effect on LIO
(:mod:`tcmu_scst.scst.catalogue` lists them). Everything else is refused with the line
and the fix (unknown attributes). :func:`write` produces the same syntax, so
``parse(write(config)) == config``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tcmu_scst.ascii import is_decimal
from tcmu_scst.errors import ConfigError, ErrorCollector
from tcmu_scst.kernel.fabric_table import has
from tcmu_scst.kernel.fabrics import normalize_wwpn, portal_name
from tcmu_scst.scst.catalogue import (
    COPY_MANAGER_DRIVER,
    ISCSI_PARAMS,
    UNAPPLIED_DRIVERS,
    Level,
    ignored,
    iscsi_param_error,
    warning,
)
from tcmu_scst.scst.model import (
    ALUA_STATES,
    FABRIC_DRIVERS,
    FC_FABRICS,
    Device,
    DeviceGroup,
    Group,
    Lun,
    ScstConfig,
    Target,
    TargetGroup,
    TargetGroupMember,
    Where,
    fabric_of,
    is_pattern,
    validate,
)

DEFAULT_ISCSI_PORT = 3260


@dataclass
class Node:
    """One parsed item: keyword, arguments, children (None for a plain item), line."""

    keyword: str
    args: list[str]
    line: int
    children: list[Node] | None = None
    closed_at: int = 0

    def section(self) -> list[Node]:
        return self.children if self.children is not None else []


@dataclass
class _Frame:
    node: Node
    items: list[Node] = field(default_factory=list)


# A bare brace token; a quoted "{" or "}" is an ordinary value.
OPEN, CLOSE = object(), object()


def _tokenize(text: str, source: str, line: int) -> list[str | object]:
    tokens: list[str | object] = []
    quoted = False
    current: list[str] = []
    have = False  # a token is in progress (also true for an empty "" token)
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in '#"\\':
            current.append(text[i + 1])
            have = True
            i += 2
            continue
        if ch == "#":
            break
        if ch == '"':
            end = i + 1
            chunk: list[str] = []
            while end < len(text) and text[end] != '"':
                if text[end] == "\\" and end + 1 < len(text) and text[end + 1] in '"\\#':
                    end += 1
                chunk.append(text[end])
                end += 1
            if end >= len(text):
                raise ConfigError("unterminated double quote; close it with '\"'", source, line)
            current.extend(chunk)
            have = quoted = True
            i = end + 1
            continue
        if ch.isspace():
            if have:
                tokens.append(_token(current, quoted))
                current, have, quoted = [], False, False
            i += 1
            continue
        current.append(ch)
        have = True
        i += 1
    if have:
        tokens.append(_token(current, quoted))
    return tokens


def _token(chars: list[str], quoted: bool) -> str | object:
    text = "".join(chars)
    if not quoted and text == "{":
        return OPEN
    if not quoted and text == "}":
        return CLOSE
    return text


def parse_tree(text: str, source: str = "", errors: ErrorCollector | None = None) -> list[Node]:
    """Split the file into nested :class:`Node` items (syntax only, no meaning).

    With ``errors``, a faulty line is recorded there and skipped, so every syntax error
    of the file is found in one pass; without, the first one is raised.
    """
    collector = errors if errors is not None else ErrorCollector()
    root = _Frame(Node("", [], 0))
    stack = [root]
    for number, raw in enumerate(text.splitlines(), start=1):
        with collector.guard():
            _tree_line(stack, raw, source, number)
    while len(stack) > 1:
        frame = stack.pop()
        open_node = frame.node
        open_node.children = frame.items  # still read, so its own errors are found too
        collector.add(
            ConfigError(
                f"section {open_node.keyword} {' '.join(open_node.args)} is never closed; add '}}'",
                source,
                open_node.line,
            )
        )
    if errors is None:
        collector.raise_if_any()
    return root.items


def _tree_line(stack: list[_Frame], raw: str, source: str, number: int) -> None:
    tokens = _tokenize(raw, source, number)
    if not tokens:
        return
    if tokens == [CLOSE]:
        if len(stack) == 1:
            raise ConfigError("'}' closes no section; remove it", source, number)
        frame = stack.pop()
        frame.node.children = frame.items
        frame.node.closed_at = number
        return
    if OPEN in tokens[:-1] or CLOSE in tokens:
        raise ConfigError(
            "'{' must end a line and '}' must stand alone on its line", source, number
        )
    words = [t for t in tokens if isinstance(t, str)]
    if tokens[-1] is OPEN:
        if not words:
            raise ConfigError("a section needs a name before '{'", source, number)
        node = Node(words[0], words[1:], number, [])
        stack[-1].items.append(node)
        stack.append(_Frame(node))
        return
    stack[-1].items.append(Node(words[0], words[1:], number))


class _Reader:
    """Turns the item tree into an :class:`ScstConfig`."""

    def __init__(self, source: str, errors: ErrorCollector | None = None) -> None:
        self.source = source
        self.config = ScstConfig()
        self.errors = errors if errors is not None else ErrorCollector()
        # Targets of UNAPPLIED_DRIVERS: name -> (driver, line of its TARGET_DRIVER).
        self.unapplied: dict[str, tuple[str, int]] = {}

    def each(self, nodes: list[Node], read: Callable[[Node], None]) -> None:
        """``read`` every node; a node's error is recorded and the next node read."""
        for node in nodes:
            with self.errors.guard():
                read(node)

    def where(self, node: Node) -> Where:
        return Where(self.source, node.line)

    def fail(self, node: Node, message: str) -> ConfigError:
        return ConfigError(message, self.source, node.line)

    def args(self, node: Node, count: int, usage: str) -> list[str]:
        if len(node.args) != count:
            raise self.fail(node, f"{node.keyword} takes {usage}")
        return node.args

    def plain(self, node: Node) -> None:
        if node.children is not None:
            raise self.fail(node, f"{node.keyword} is not a section; remove the braces")

    def flag(self, node: Node) -> bool:
        self.plain(node)
        value = self.args(node, 1, "0 or 1")[0]
        if value not in ("0", "1"):
            raise self.fail(node, f"{node.keyword} must be 0 or 1, not {value!r}")
        return value == "1"

    def number(self, node: Node, text: str, what: str) -> int:
        try:
            return int(text, 0)
        except ValueError:
            raise self.fail(node, f"{what} {text!r} is not a number") from None

    def scalar(self, node: Node) -> int:
        self.plain(node)
        return self.number(node, self.args(node, 1, "one number")[0], node.keyword)

    def read(self, nodes: list[Node]) -> ScstConfig:
        """The config of ``nodes``; errors go to the collector (raised by the caller)."""
        self.each(nodes, self.top_item)
        self.drop_unapplied_members()
        return self.config

    def drop_unapplied_members(self) -> None:
        """ALUA TARGET lines naming targets of an unapplied driver: warned and dropped
        (after the whole file is read: a DEVICE_GROUP may come before its drivers)."""
        defined = {t.name for t in self.config.targets}
        for dg in self.config.device_groups:
            for tg in dg.target_groups:
                kept = []
                for member in tg.targets:
                    if member.name in defined or member.name not in self.unapplied:
                        kept.append(member)
                        continue
                    driver, line = self.unapplied[member.name]
                    self.config.warnings.append(
                        f"{self.source}:{member.where.line}: TARGET {member.name} of target "
                        f"group {tg.name} (device group {dg.name}) is not applied: its "
                        f"TARGET_DRIVER {driver} (line {line}) is not; the group gets no "
                        "port from it"
                    )
                tg.targets = kept

    def top_item(self, node: Node) -> None:
        if node.keyword == "HANDLER":
            self.handler(node)
        elif node.keyword == "TARGET_DRIVER":
            self.driver(node)
        elif node.keyword == "GROUP":
            self.config.groups.append(self.group(node, None))
        elif node.keyword == "DEVICE_GROUP":
            self.config.device_groups.append(self.device_group(node))
        elif node.keyword == "setup_id":
            self.config.setup_id = self.scalar(node)
        elif node.keyword == "threads":
            self.config.threads = self.scalar(node)
            self.config.threads_where = self.where(node)
        elif not self.ignore(node, Level.GLOBAL):
            raise self.unknown(
                node,
                "top level",
                "HANDLER, TARGET_DRIVER, GROUP, DEVICE_GROUP, setup_id, threads",
            )

    def ignore(self, node: Node, level: Level, driver: str | None = None) -> str | None:
        """An SCST attribute without effect here: warn (file:line) and return its value;
        None when the catalogue does not know ``node`` at ``level``."""
        entry = ignored(level, node.keyword, driver)
        if entry is None:
            return None
        self.plain(node)
        if not node.args:
            raise self.fail(node, f"{node.keyword} needs a value")
        self.config.warnings.append(f"{self.source}:{node.line}: {warning(entry)}")
        return " ".join(node.args)

    def unknown(self, node: Node, place: str, allowed: str) -> ConfigError:
        return self.fail(node, f"unknown keyword {node.keyword!r} at {place}; expected {allowed}")

    def device_group(self, node: Node) -> DeviceGroup:
        name = self.args(node, 1, "a device group name, e.g. DEVICE_GROUP dg1 {")[0]
        if node.children is None:
            raise self.fail(node, f"DEVICE_GROUP {name} needs a section: DEVICE_GROUP {name} {{")
        dg = DeviceGroup(name, where=self.where(node))
        for item in node.section():
            if item.keyword == "DEVICE":
                self.plain(item)
                dg.devices.append(self.args(item, 1, "one device name")[0])
                dg.device_lines.append(self.where(item))
            elif item.keyword == "TARGET_GROUP":
                dg.target_groups.append(self.target_group(item))
            else:
                raise self.unknown(item, f"DEVICE_GROUP {name}", "DEVICE, TARGET_GROUP")
        return dg

    def target_group(self, node: Node) -> TargetGroup:
        name = self.args(node, 1, "a target group name, e.g. TARGET_GROUP west {")[0]
        tg = TargetGroup(name, where=self.where(node))
        seen: set[str] = set()
        for item in node.section():
            key = item.keyword
            if key in seen and key != "TARGET":
                raise self.fail(item, f"{key} of target group {name} is set twice; keep one")
            seen.add(key)
            if key == "group_id":
                self.plain(item)
                text = self.args(item, 1, "one number 1..65535")[0]
                if not is_decimal(text):
                    raise self.fail(item, f"group_id {text!r} is not a decimal number")
                tg.group_id = int(text)
            elif key == "state":
                self.plain(item)
                state = self.args(item, 1, f"one of {', '.join(ALUA_STATES)}")[0]
                if state not in ALUA_STATES:
                    raise self.fail(
                        item, f"state {state!r} is not one of {', '.join(ALUA_STATES)}"
                    )
                tg.state = state
            elif key == "preferred":
                # SCST writes "preferred 0|1"; a bare "preferred" means 1.
                tg.preferred = self.flag(item) if item.args else True
                self.plain(item)
            elif key == "TARGET":
                tg.targets.append(self.tg_member(item, name))
            else:
                raise self.unknown(
                    item, f"TARGET_GROUP {name}", "group_id, state, preferred, TARGET"
                )
        return tg

    def tg_member(self, node: Node, group: str) -> TargetGroupMember:
        member = TargetGroupMember(
            self.args(node, 1, "one target name")[0], where=self.where(node)
        )
        for attr in node.section():
            if attr.keyword != "rel_tgt_id":
                raise self.unknown(attr, f"TARGET {member.name} of {group}", "rel_tgt_id")
            self.plain(attr)
            text = self.args(attr, 1, "one number 1..65535")[0]
            if not is_decimal(text):
                raise self.fail(attr, f"rel_tgt_id {text!r} is not a decimal number")
            member.rel_tgt_id = int(text)
        return member

    def handler(self, node: Node) -> None:
        name = self.args(node, 1, "a handler name, e.g. HANDLER vdisk_fileio {")[0]
        if node.children is None:
            raise self.fail(node, f"HANDLER {name} needs a section: HANDLER {name} {{ ... }}")
        self.each(node.section(), lambda item: self.device(name, item))

    def device(self, handler: str, item: Node) -> None:
        if item.keyword != "DEVICE":
            if self.ignore(item, Level.HANDLER) is None:
                raise self.unknown(item, f"HANDLER {handler}", "DEVICE")
            return
        dev_name = self.args(item, 1, "a device name")[0]
        params: dict[str, str] = {}
        # Added before its attributes are read: a faulty attribute is one error, not
        # one more "unknown device" error at each of its LUNs.
        self.config.devices.append(Device(dev_name, handler, params, self.where(item)))

        def attribute(attr: Node) -> None:
            if self.ignore(attr, Level.DEVICE, handler) is not None:
                return  # not a handler parameter: never reaches the handler's codec
            self.plain(attr)
            if not attr.args:
                raise self.fail(attr, f"device attribute {attr.keyword} needs a value")
            if attr.keyword in params:
                raise self.fail(attr, f"attribute {attr.keyword} of {dev_name} is set twice")
            params[attr.keyword] = " ".join(attr.args)

        self.each(item.section(), attribute)

    def driver(self, node: Node) -> None:
        name = self.args(node, 1, "a driver name, e.g. TARGET_DRIVER iscsi {")[0]
        if name == COPY_MANAGER_DRIVER:
            self.copy_manager(node)
            return
        if name in UNAPPLIED_DRIVERS:
            self.unapplied_driver(node, name)
            return
        fabric = fabric_of(name, self.where(node))

        def item_of(item: Node) -> None:
            if item.keyword == "TARGET":
                self.config.targets.append(self.target(item, fabric))
            elif item.keyword == "enabled":
                attrs = self.config.drivers.setdefault(fabric, {})
                attrs["enabled"] = "1" if self.flag(item) else "0"
            elif self.ignore(item, Level.DRIVER, fabric) is None:
                raise self.unknown(item, f"TARGET_DRIVER {name}", "TARGET, enabled")

        self.each(node.section(), item_of)

    def unapplied_driver(self, node: Node, driver: str) -> None:
        """A driver of :data:`UNAPPLIED_DRIVERS`: its LUN, GROUP and ``enabled`` lines
        are read (so their errors show), the rest is covered by the one warning."""
        targets: list[str] = []

        def target_item(item: Node) -> None:
            if item.keyword == "LUN":
                self.lun(item)
            elif item.keyword == "GROUP":
                self.group(item, None)
            elif item.keyword == "enabled":
                self.flag(item)

        def item_of(item: Node) -> None:
            if item.keyword == "TARGET":
                target = self.args(item, 1, "a target name")[0]
                targets.append(target)
                self.unapplied.setdefault(target, (driver, node.line))
                self.each(item.section(), target_item)
            elif item.keyword == "enabled":
                self.flag(item)

        self.each(node.section(), item_of)
        made = f"its targets {', '.join(targets)} are not created" if targets else "no target"
        self.config.warnings.append(
            f"{self.source}:{node.line}: TARGET_DRIVER {driver} is not applied: "
            f"{UNAPPLIED_DRIVERS[driver]}; {made}"
        )

    def copy_manager(self, node: Node) -> None:
        """SCST's internal EXTENDED COPY target: read (so its errors show), then dropped.

        scstadmin writes it with a LUN per device; here EXTENDED COPY is served by each
        device's handler between LUNs the initiator sees, so the section has no effect.
        """
        self.config.warnings.append(
            f"{self.source}:{node.line}: TARGET_DRIVER {COPY_MANAGER_DRIVER} has no effect "
            "here: EXTENDED COPY is served by the tcmu-scst handler between the LUNs an "
            "initiator sees"
        )

        def target_item(target: str, item: Node) -> None:
            if item.keyword == "LUN":
                self.lun(item)
            elif self.ignore(item, Level.TARGET) is None:
                raise self.unknown(item, f"TARGET {target}", "LUN")

        def item_of(item: Node) -> None:
            if item.keyword == "TARGET":
                target = self.args(item, 1, "a target name")[0]
                self.each(item.section(), lambda attr: target_item(target, attr))
            elif item.keyword != "enabled" and self.ignore(
                item, Level.DRIVER, COPY_MANAGER_DRIVER
            ) is None:
                raise self.unknown(
                    item, f"TARGET_DRIVER {COPY_MANAGER_DRIVER}", "TARGET, allow_not_connected_copy"
                )

        self.each(node.section(), item_of)

    def lun(self, node: Node) -> Lun:
        number, device = self.args(node, 2, "a LUN number and a device name: LUN 0 disk1")
        if not is_decimal(number):
            raise self.fail(node, f"LUN number {number!r} is not a decimal number")
        lun = Lun(int(number), device, False, self.where(node))

        def attribute(attr: Node) -> None:
            if attr.keyword != "read_only":
                raise self.unknown(attr, f"LUN {number}", "read_only")
            lun.read_only = self.flag(attr)

        self.each(node.section(), attribute)
        return lun

    def account(self, node: Node) -> tuple[str, str]:
        self.plain(node)
        words = " ".join(node.args).split()
        if len(words) != 2:
            raise self.fail(node, f'{node.keyword} takes "user secret" (quoted, two words)')
        return words[0], words[1]

    def incoming_user(self, node: Node, users: list[tuple[str, str]], owner: str) -> None:
        """SCST takes several CHAP accounts per target or group, LIO's iSCSI one per ACL
        (or per TPG in demo mode): the first is applied, each further one warned about.
        Those accounts' logins then fail authentication; nothing is opened wider."""
        account = self.account(node)
        if not users:
            users.append(account)
            return
        self.config.warnings.append(
            f"{self.source}:{node.line}: IncomingUser {account[0]} of {owner} is not "
            f"applied: LIO's iSCSI keeps one CHAP account per initiator, {users[0][0]} "
            f"(the first); initiators logging in as {account[0]} will fail CHAP"
        )

    def group(self, node: Node, fabric: str | None) -> Group:
        name = self.args(node, 1, "a group name")[0]
        grp = Group(name, where=self.where(node))

        def item_of(item: Node) -> None:
            if item.keyword == "LUN":
                grp.luns.append(self.lun(item))
            elif item.keyword == "INITIATOR":
                self.plain(item)
                name_arg = self.args(item, 1, "one initiator name")[0]
                grp.initiators.append(self.wwpn(item, name_arg, fabric))
                grp.initiator_lines.append(self.where(item))
            elif item.keyword == "IncomingUser":
                self.incoming_user(item, grp.incoming_users, f"group {name}")
            elif self.ignore(item, Level.GROUP, fabric) is None:
                raise self.unknown(item, f"GROUP {name}", "LUN, INITIATOR, IncomingUser")

        self.each(node.section(), item_of)
        return grp

    def wwpn(self, node: Node, name: str, fabric: str | None) -> str:
        """FC names in the kernel's form (lower-case colon WWPN); others unchanged."""
        if fabric not in FC_FABRICS:
            return name
        if is_pattern(name):
            return name.lower()  # matched against the kernel's lower-case WWPNs
        try:
            return normalize_wwpn(name)
        except ConfigError:
            return name  # validate() explains what an FC name must look like

    def target(self, node: Node, fabric: str) -> Target:
        name = self.wwpn(node, self.args(node, 1, "a target name")[0], fabric)
        tgt = Target(fabric, name, enabled=has(fabric, "nexus"), where=self.where(node))
        self.each(node.section(), lambda item: self.target_item(tgt, item))
        return tgt

    def target_item(self, tgt: Target, item: Node) -> None:
        name, fabric = tgt.name, tgt.fabric
        key = item.keyword
        if key == "LUN":
            tgt.luns.append(self.lun(item))
        elif key == "GROUP":
            tgt.groups.append(self.group(item, fabric))
        elif key == "enabled":
            tgt.enabled = self.flag(item)
        elif key == "IncomingUser":
            self.incoming_user(item, tgt.incoming_users, f"target {name}")
        elif key == "OutgoingUser":
            account = self.account(item)
            if tgt.outgoing_user is not None:
                raise self.fail(item, f"OutgoingUser of target {name} is set twice; keep one "
                                "(mutual CHAP has one target account)")
            tgt.outgoing_user = account
        elif key in ("portal", "allowed_portal"):
            self.plain(item)
            tgt.portals.append(self.portal(item, self.args(item, 1, "one address")[0]))
        elif key in ISCSI_PARAMS and has(fabric, "iscsi_login"):
            self.plain(item)
            if not item.args:
                raise self.fail(item, f"{key} needs a value")
            param = " ".join(item.args)
            problem = iscsi_param_error(key, param)
            if problem is not None:
                raise self.fail(item, problem)  # never written to the kernel unchecked
            tgt.attributes[key] = param
        elif (value := self.ignore(item, Level.TARGET, fabric)) is not None:
            tgt.attributes[key] = value  # kept, so "config save" writes it back
        else:
            raise self.unknown(
                item,
                f"TARGET {name}",
                "LUN, GROUP, enabled, IncomingUser, OutgoingUser, "
                "portal, allowed_portal or an iSCSI parameter",
            )

    def portal(self, node: Node, text: str) -> str:
        if any(ch in text for ch in "*?!"):
            raise self.fail(
                node,
                f"portal pattern {text!r}: LIO listens on exact addresses; "
                "write one 'portal IP:PORT' line per address",
            )
        return normalize_portal(text, self.source, node.line)


def normalize_portal(text: str, source: str = "", line: int = 0) -> str:
    """``ip[:port]`` or ``[ipv6][:port]`` -> LIO's np name ``ip:port`` / ``[ipv6]:port``."""
    host, port = text, str(DEFAULT_ISCSI_PORT)
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ConfigError(f"portal {text!r}: missing ']' after the IPv6 address", source, line)
        host, rest = text[: close + 1], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"portal {text!r}: expected ':PORT' after ']'", source, line)
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:
        host = f"[{text}]"  # bare IPv6 address
    if not is_decimal(port) or not 0 < int(port) < 65536 or host in ("", "[]"):
        raise ConfigError(f"portal {text!r} is not IP:PORT with a port 1..65535", source, line)
    try:
        # The kernel helper's spelling (compressed IPv6), so live np/ names compare equal.
        return portal_name(host, int(port))
    except ConfigError as err:
        raise ConfigError(f"portal {text!r}: {err.reason}", source, line) from None


def read(text: str, source: str, errors: ErrorCollector) -> ScstConfig:
    """The config of ``text`` (not validated); every error goes to ``errors``."""
    return _Reader(source, errors).read(parse_tree(text, source, errors))


def parse(text: str, source: str = "<string>") -> ScstConfig:
    """Parse and validate a modern scst.conf text; errors name ``source`` and the line.

    Every error of the file is raised at once (:class:`ConfigErrors`, one per line).
    """
    errors = ErrorCollector()
    config = read(text, source, errors)
    with errors.guard():
        validate(config)
    errors.raise_if_any()
    return config


def load(path: Path | str) -> ScstConfig:
    """Read, parse and validate the file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file: {err}", str(path)) from err
    return parse(text, str(path))


# ---- writer ----------------------------------------------------------------------


def quote(value: str) -> str:
    """``value`` as one token: quoted when it holds blanks, '#', quotes or braces."""
    if value and not any(ch.isspace() or ch in '#"\\{}' for ch in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _lun_lines(luns: list[Lun], indent: str) -> Iterator[str]:
    for lun in luns:
        if lun.read_only:
            yield f"{indent}LUN {lun.number} {quote(lun.device)} {{"
            yield f"{indent}    read_only 1"
            yield f"{indent}}}"
        else:
            yield f"{indent}LUN {lun.number} {quote(lun.device)}"


def _group_lines(grp: Group, indent: str) -> Iterator[str]:
    yield f"{indent}GROUP {quote(grp.name)} {{"
    yield from _lun_lines(grp.luns, indent + "    ")
    for name in grp.initiators:
        yield f"{indent}    INITIATOR {quote(name)}"
    for user, secret in grp.incoming_users:
        yield f"{indent}    IncomingUser {quote(f'{user} {secret}')}"
    yield f"{indent}}}"


def _target_lines(tgt: Target) -> Iterator[str]:
    yield f"    TARGET {quote(tgt.name)} {{"
    inner = "        "
    for portal in tgt.portals:
        yield f"{inner}portal {quote(portal)}"
    for user, secret in tgt.incoming_users:
        yield f"{inner}IncomingUser {quote(f'{user} {secret}')}"
    if tgt.outgoing_user is not None:
        yield f"{inner}OutgoingUser {quote(' '.join(tgt.outgoing_user))}"
    for key, value in tgt.attributes.items():
        yield f"{inner}{key} {quote(value)}"
    yield from _lun_lines(tgt.luns, inner)
    for grp in tgt.groups:
        yield from _group_lines(grp, inner)
    # Written last, as scstadmin does: configure everything before enabling.
    yield f"{inner}enabled {int(tgt.enabled)}"
    yield "    }"


def write(config: ScstConfig) -> str:
    """The config in scst.conf syntax (what :func:`parse` reads back unchanged)."""
    lines: list[str] = ["# Written by tcmu-scst (SCST scst.conf syntax)."]
    if config.setup_id is not None:
        lines.append(f"setup_id {config.setup_id:#x}")
    if config.threads is not None:
        lines.append(f"threads {config.threads}")
    handlers: dict[str, list[Device]] = {}
    for dev in config.devices:
        handlers.setdefault(dev.handler, []).append(dev)
    for handler, devices in handlers.items():
        lines += ["", f"HANDLER {handler} {{"]
        for dev in devices:
            if not dev.params:
                lines.append(f"    DEVICE {quote(dev.name)}")
                continue
            lines.append(f"    DEVICE {quote(dev.name)} {{")
            lines += [f"        {key} {quote(value)}" for key, value in dev.params.items()]
            lines.append("    }")
        lines.append("}")
    fabrics = list(dict.fromkeys([*config.drivers, *(t.fabric for t in config.targets)]))
    for fabric in fabrics:
        lines += ["", f"TARGET_DRIVER {FABRIC_DRIVERS[fabric]} {{"]
        for key, value in config.drivers.get(fabric, {}).items():
            lines.append(f"    {key} {quote(value)}")
        for tgt in config.targets:
            if tgt.fabric == fabric:
                lines += list(_target_lines(tgt))
        lines.append("}")
    for grp in config.groups:
        lines.append("")
        lines += list(_group_lines(grp, ""))
    for dg in config.device_groups:
        lines.append("")
        lines += list(device_group_lines(dg))
    return "\n".join(lines) + "\n"


def device_group_lines(dg: DeviceGroup) -> Iterator[str]:
    """One DEVICE_GROUP section (also what the shell shows for it)."""
    yield f"DEVICE_GROUP {quote(dg.name)} {{"
    for device in dg.devices:
        yield f"    DEVICE {quote(device)}"
    for tg in dg.target_groups:
        yield from target_group_lines(tg, "    ")
    yield "}"


def target_group_lines(tg: TargetGroup, indent: str = "") -> Iterator[str]:
    yield f"{indent}TARGET_GROUP {quote(tg.name)} {{"
    yield f"{indent}    group_id {tg.group_id}"
    yield f"{indent}    state {tg.state}"
    yield f"{indent}    preferred {int(tg.preferred)}"
    for member in tg.targets:
        if member.rel_tgt_id is None:
            yield f"{indent}    TARGET {quote(member.name)}"
        else:
            yield f"{indent}    TARGET {quote(member.name)} {{"
            yield f"{indent}        rel_tgt_id {member.rel_tgt_id}"
            yield f"{indent}    }}"
    yield f"{indent}}}"
