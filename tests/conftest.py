"""Make the source tree importable as installed when it is not installed.

setup.py installs handlers/ and shell/ as ``tcmu_scst.handlers`` and
``tcmu_scst.shell``. Run from a plain checkout (no ``pip install -e .``), those
names do not exist; adding the repository root to ``tcmu_scst.__path__`` lets
``import tcmu_scst.handlers.vdisk`` find ``handlers/vdisk.py`` all the same.
An installed package is left untouched.
"""

from __future__ import annotations

import importlib.util
import os

import tcmu_scst

if importlib.util.find_spec("tcmu_scst.handlers") is None:
    tcmu_scst.__path__.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
