"""Which build of the sidecar's hot codecs runs: their compiled twins, or the Python source.

The Python module is the one implementation; the build compiles the same source with Cython into a
twin named ``sidecar.codecs._c_NAME`` (:func:`twin_of`; see ``setup.py``). The last lines of each such module call
:func:`import_c_accel`, which replaces the module's globals with its twin's, so that every importer
of ``sidecar.codecs.NAME`` gets the compiled functions and classes, unless

* ``DUBBOMESH_PURE_PYTHON`` is set to anything but ``""`` or ``"0"`` (the tests run both ways), or
* the twin was not built (installed without a compiler, or with ``DUBBOMESH_NO_EXTENSIONS=1``).

:data:`MODULES` records, per module, ``"compiled"`` or why it runs as Python; :func:`describe` says
it in one line (``sidecar --version`` prints it).

This module reads the environment, so it sits beside ``sidecar.errors`` below the codecs, not in them.
``mqdb._accel`` is its counterpart for mqdb's core (mqdb never imports the sidecar); ``setup.py``
builds the twins that both list.
"""

from __future__ import annotations

import importlib
import os

__all__ = [
    "PURE_PYTHON",
    "TWINS",
    "COMPILED",
    "MODULES",
    "pure_python_requested",
    "twin_of",
    "import_c_accel",
    "describe",
]

PURE_PYTHON = "DUBBOMESH_PURE_PYTHON"
# The modules that have a compiled twin, by dotted name (setup.py builds the same list).
TWINS = (
    "sidecar.codecs.http1_states",
    "sidecar.codecs.http1_wire",
    "sidecar.codecs.http1",
    "sidecar.codecs.calls",
    "sidecar.codecs.hessian2_decoder",
    "sidecar.codecs.hessian2",
    "sidecar.codecs.dubbo_messages",
    "sidecar.codecs.dubbo",
    "sidecar.codecs.tunnel",
    "sidecar.codecs.javahash",
)
COMPILED = "compiled"
MODULES: dict[str, str] = {}  # "sidecar.codecs.NAME" -> COMPILED, or the reason it runs as Python


def twin_of(module: str) -> str:
    """The dotted name of the compiled twin of ``module``: ``pkg.NAME`` -> ``pkg._c_NAME``."""
    package, _, name = module.rpartition(".")
    return f"{package}._c_{name}"


def pure_python_requested() -> bool:
    return os.environ.get(PURE_PYTHON, "") not in ("", "0")


def import_c_accel(globs: dict, twin: str) -> None:
    """Give the module whose globals are ``globs`` the globals of its compiled ``twin``, when it runs
    compiled (see the module docstring); in the twin itself, do nothing."""
    name = globs["__name__"]
    if name == twin:
        return
    if pure_python_requested():
        MODULES[name] = f"{PURE_PYTHON}={os.environ[PURE_PYTHON]}"
        return
    try:
        module = importlib.import_module(twin)
    except ModuleNotFoundError as exc:  # this twin, or one whose C types it uses, was not built
        if exc.name is None or not exc.name.startswith(twin.rpartition(".")[0] + "._c_"):  # twins of its package
            raise
        MODULES[name] = "compiled twins not built at install"
        return
    globs.clear()
    globs.update(module.__dict__)
    MODULES[name] = COMPILED


def describe() -> str:
    """One line on the modules of :data:`TWINS` imported so far: ``compiled (9 codec modules)`` when
    all run compiled, else which run as Python and why, such as ``pure Python (DUBBOMESH_PURE_PYTHON=1)``."""
    states = {name.rpartition(".")[2]: MODULES.get(name, "not imported") for name in TWINS}
    reasons = sorted(set(states.values()))
    if reasons == [COMPILED]:
        return f"compiled ({len(states)} codec modules)"
    pure = [name for name, state in states.items() if state != COMPILED]
    why = ", ".join(reason for reason in reasons if reason != COMPILED)
    if len(pure) == len(states):
        return f"pure Python ({why})"
    return f"partly compiled: {', '.join(pure)} as pure Python ({why})"
