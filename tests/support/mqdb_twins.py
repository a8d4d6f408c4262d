"""mqdb's modules in both builds in one process: the one this process runs, and the other imported
afresh under the same name (``DUBBOMESH_PURE_PYTHON`` set or unset for the time of the import) and then
put aside, so that tests can feed both the same inputs. Used by the tests of mqdb's compiled twins."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

import mqdb
from mqdb import _accel


def load(pure: bool, name: str):
    """Module ``name`` imported afresh as one build, and the state it recorded; the process is left as it was."""
    saved = sys.modules.pop(name)
    states = dict(_accel.MODULES)
    environ = os.environ.get(_accel.PURE_PYTHON)
    if pure:
        os.environ[_accel.PURE_PYTHON] = "1"
    else:
        os.environ.pop(_accel.PURE_PYTHON, None)
    try:
        module = importlib.import_module(name)
        state = _accel.MODULES[name]
    finally:
        if environ is None:
            os.environ.pop(_accel.PURE_PYTHON, None)
        else:
            os.environ[_accel.PURE_PYTHON] = environ
        sys.modules[name] = saved
        setattr(mqdb, name.rpartition(".")[2], saved)
        _accel.MODULES.clear()
        _accel.MODULES.update(states)
    return module, state


def both(name: str):
    """(compiled, pure): module ``name`` of each build."""
    here = sys.modules[name]
    if _accel.pure_python_requested():
        compiled, state = load(False, name)
        pure = here
    else:
        compiled, state = here, _accel.MODULES[name]
        pure, _ = load(True, name)
    if state != _accel.COMPILED:
        pytest.skip(f"the compiled twin is not built ({state}): nothing to compare")
    assert pure.__file__.endswith(".py") and not compiled.__file__.endswith(".py")
    return compiled, pure
