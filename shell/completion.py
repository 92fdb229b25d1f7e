"""Completion helpers for configshell's ``ui_complete_*`` methods."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable


def matches(candidates: Iterable[str], text: str) -> list[str]:
    """Candidates starting with ``text``; a single match gets the closing blank."""
    found = sorted({c for c in candidates if c.startswith(text)})
    if len(found) == 1:
        return [found[0] + " "]
    return found


def files(text: str) -> list[str]:
    """File names completing ``text`` (directories end in '/', no closing blank)."""
    pattern = os.path.expanduser(text or "") + "*"
    found = []
    for path in sorted(glob.glob(pattern)):
        found.append(path + "/" if os.path.isdir(path) else path)
    if len(found) == 1 and not found[0].endswith("/"):
        return [found[0] + " "]
    return found
