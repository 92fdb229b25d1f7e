"""The compiled path for tests: the built module, or one built now from the tree.

Tests run both paths whatever the install: a plain checkout has no built extension,
so it is compiled here with the interpreter's own compiler settings (sysconfig), the
same way setup.py builds it. No compiler is an error naming what is missing, not a
skip: the compiled path is part of the product.
"""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sysconfig
from pathlib import Path
from types import ModuleType

from tcmu_scst.kernel import fastpath

SOURCE = Path(fastpath.__file__).with_name("_fastring.c")
MODULE = "tcmu_scst.kernel._fastring"


class BuildError(RuntimeError):
    """The compiled path could not be built for the tests."""


def accelerator(build_dir: Path) -> ModuleType:
    """The compiled module: as installed (even when the environment switches it off
    for the product: the tests want it), else compiled into ``build_dir`` and loaded."""
    try:
        from tcmu_scst.kernel import _fastring
    except ImportError:
        pass
    else:
        return _fastring
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    target = build_dir / f"_fastring{suffix}"
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    command = [*cc, "-O2", "-shared", "-fPIC", "-Wall", "-Werror",
               f"-I{sysconfig.get_path('include')}", "-o", str(target), str(SOURCE)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as err:
        raise BuildError(f"cannot build {SOURCE.name}: {command[0]}: {err.strerror} "
                         "(install gcc and python3-dev)") from err
    if done.returncode:
        raise BuildError(f"cannot build {SOURCE.name} (install gcc and python3-dev):\n"
                         f"{done.stderr.strip()}")
    spec = importlib.util.spec_from_file_location(MODULE, target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
