"""Both builds of the sidecar's codecs in one process, side by side (see :mod:`sidecar._accel`): the
property test compares them, :mod:`sidecar.tools.bench_codec` times them."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from sidecar._accel import MODULES, PURE_PYTHON, TWINS

__all__ = ["load_build"]


def load_build(pure: bool) -> tuple[dict[str, ModuleType], set[str]]:
    """The modules of ``sidecar._accel.TWINS`` imported afresh as one build (``pure``: the Python source;
    else the compiled twins where they were built), by short name, and the states they recorded in
    ``sidecar._accel.MODULES``.

    The process is left as it was: its own modules, the attributes of their packages (``sidecar.codecs`` ...), the
    recorded states and the environment are restored, so the two builds can run side by side. The modules
    without a twin (``javatypes``, ``fastjson``, ``sidecar.errors``) are shared by both builds."""
    short = {name: name.rpartition(".")[2] for name in TWINS}
    packages = {name: importlib.import_module(name.rpartition(".")[0]) for name in TWINS}
    saved = {name: sys.modules.pop(name) for name in TWINS if name in sys.modules}
    attributes = {name: vars(packages[name]).pop(short[name]) for name in TWINS if short[name] in vars(packages[name])}
    states = dict(MODULES)
    environ = os.environ.get(PURE_PYTHON)
    if pure:
        os.environ[PURE_PYTHON] = "1"
    else:
        os.environ.pop(PURE_PYTHON, None)
    try:
        modules = {short[name]: importlib.import_module(name) for name in TWINS}
        loaded = {MODULES[name] for name in TWINS}
    finally:
        if environ is None:
            os.environ.pop(PURE_PYTHON, None)
        else:
            os.environ[PURE_PYTHON] = environ
        for name in TWINS:
            sys.modules.pop(name, None)
            vars(packages[name]).pop(short[name], None)
        sys.modules.update(saved)
        for name, module in attributes.items():
            setattr(packages[name], short[name], module)
        MODULES.clear()
        MODULES.update(states)
    return modules, loaded
