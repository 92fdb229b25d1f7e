"""The man pages say what the code does: every catalogue attribute, every iSCSI
parameter, every ``config`` action; and they are installed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tcmu_scst.kernel.handler_table import HANDLERS, Kind
from tcmu_scst.kernel.parameters import Param, ParamType
from tcmu_scst.scst import catalogue
from tcmu_scst.scst.cli import ACTIONS

ROOT = Path(__file__).parent.parent.parent
# From a checkout the pages are read where they are written; with the tests run
# against an installed wheel (CI's quick start copies tests/ out of the tree) they
# are read where setup.py's data_files put them, which tests the install too.
IN_TREE = (ROOT / "setup.py").is_file()


def _page(name: str, section: int) -> Path:
    if IN_TREE:
        return ROOT / "man" / name
    return Path(sys.prefix) / "share" / "man" / f"man{section}" / name


CONF5 = _page("tcmu-scst.conf.5", 5).read_text(encoding="utf-8")
CMD8 = _page("tcmu-scst.8", 8).read_text(encoding="utf-8")


def section(page: str, title: str) -> str:
    """The roff text of one ``.SS`` subsection (up to the next section or subsection)."""
    start = page.index(f'.SS "{title}"\n')
    end = min(i for i in (page.find("\n.SS ", start + 1), page.find("\n.SH ", start + 1), len(page))
              if i > 0)  # fmt: skip
    return page[start:end]


def test_every_attribute_without_effect_is_listed_at_its_level_with_its_reason() -> None:
    for entry in catalogue.entries():
        text = section(CONF5, entry.level.value)
        assert f".B {entry.name}\n{entry.reason}" in text, entry


def test_every_applied_iscsi_parameter_is_documented() -> None:
    for key in catalogue.ISCSI_PARAMS:
        assert re.search(rf"\b{key}\b", CONF5), key


def test_every_config_action_is_in_the_command_page() -> None:
    for action in ACTIONS:
        assert f'.BI "config {action} "' in CMD8, action


def test_the_pages_are_installed_and_shipped() -> None:
    if IN_TREE:
        setup = (ROOT / "setup.py").read_text(encoding="utf-8")
        assert '("share/man/man8", ["man/tcmu-scst.8"])' in setup
        assert '("share/man/man5", ["man/tcmu-scst.conf.5"])' in setup
        assert "graft man" in (ROOT / "MANIFEST.in").read_text(encoding="utf-8")
    for page in (CONF5, CMD8):
        assert page.count(".TH ") == 1


#: The man page's subsection of each handler kind's DEVICE parameters.
PARAMETER_SECTIONS = {
    Kind.VDISK: "vdisk_fileio, vdisk_blockio, vdisk_nullio, vdisk_rbd",
    Kind.VCDROM: "vcdrom",
    Kind.PASSTHROUGH: "pass-through: dev_disk, dev_tape, ...",
}


def _range(param: Param) -> str:
    if param.choices:
        return "one of " + ", ".join(map(str, param.choices))
    if param.type is ParamType.INT and param.maximum is not None:
        return f"{param.minimum or 0}..{param.maximum}"
    if param.type is ParamType.TEXT:
        return f"at most {param.maximum} printable ASCII characters without blanks"
    return param.type.value


def _default(value: bool | int | str) -> str:
    if isinstance(value, bool):
        return str(int(value))
    return str(value) if value != "" else "none"


def parameter_entries(kind: Kind) -> list[str]:
    """The roff entry of each parameter of ``kind``'s handlers, rendered from the table:
    name, what it does, its values, its default(s) and which handlers take it."""
    specs = [h for h in HANDLERS if h.kind is kind]
    entries = []
    for name in dict.fromkeys(n for h in specs for n in h.parameter_names):
        taking = [(h.name, p) for h in specs if (p := h.param(name)) is not None]
        param = taking[0][1]
        by_default: dict[str, list[str]] = {}
        for handler, p in taking:
            by_default.setdefault(_default(p.default), []).append(handler)
        if len(by_default) == 1:
            default = next(iter(by_default))
        else:
            default = ", ".join(f"{d} ({' '.join(hs)})" for d, hs in by_default.items())
        only = "" if len(taking) == len(specs) else f" ({', '.join(h for h, _ in taking)} only)"
        values = f"Values: {_range(param)}; default {default}."
        entries.append(f".TP\n.B {name}\n{param.doc}{only}. {values}")
    return entries


def test_every_handler_parameter_is_documented_with_its_range_and_default() -> None:
    for kind, title in PARAMETER_SECTIONS.items():
        text, entries = section(CONF5, title), parameter_entries(kind)
        for entry in entries:
            assert entry in text, entry
        assert text.count(".TP\n") == len(entries), title  # none the table lacks
    assert not [h for h in HANDLERS if h.parameters and h.kind not in PARAMETER_SECTIONS]
