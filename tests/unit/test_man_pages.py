"""The man pages say what the code does: every catalogue attribute, every iSCSI
parameter, every ``config`` action; and they are installed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

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
