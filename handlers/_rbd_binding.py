"""Ceph's Python binding (``rados``, ``rbd``): found, or a one-line reason why not.

There is no PyPI wheel of the binding; Debian ships it as ``python3-rados`` and
``python3-rbd``, two Cython extension modules in ``/usr/lib/python3/dist-packages``
built for Debian's ``/usr/bin/python3``. A venv made from another interpreter does
not have that directory on its path, and adding it whole would mix Debian's other
packages into the venv. So when a plain ``import rbd`` fails, this loads exactly those
two modules from there, and only when their file name carries an extension suffix
this interpreter accepts (``cpython-311-x86_64-linux-gnu``): CPython keeps its ABI
within a minor version, so Debian's 3.11.2 build serves a 3.11.7 interpreter; a
3.12 one gets the error instead of a crash.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tcmu_scst.errors import HandlerError

#: Where Debian installs the binding.
DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
INSTALL_HINT = "apt-get install python3-rados python3-rbd (Ceph's Python binding)"


def _from_dist_packages(name: str) -> ModuleType | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = DIST_PACKAGES / f"{name}{suffix}"
        if not path.is_file():
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # rbd imports rados by name
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    return None


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    try:
        module = _from_dist_packages(name)
    except ImportError as err:
        raise HandlerError(
            f"vdisk_rbd: Ceph's Python module {name!r} in {DIST_PACKAGES} does not load "
            f"in Python {sys.version.split()[0]} ({err}); use Debian's python3"
        ) from None
    if module is None:
        raise HandlerError(
            f"vdisk_rbd: Ceph's Python module {name!r} is missing for Python "
            f"{sys.version_info.major}.{sys.version_info.minor}: {INSTALL_HINT}"
        )
    return module


def load() -> tuple[ModuleType, ModuleType]:
    """``(rados, rbd)``; HandlerError (one line, naming what to install) when absent."""
    rados = _load("rados")
    return rados, _load("rbd")
