"""Which build of mqdb's per-message core runs: its compiled twin, or the Python source.

The same convention as the sidecar's codecs (``sidecar._accel``; mqdb never imports the sidecar, so
this is its own small copy): each module of :data:`TWINS` stays the implementation, ``setup.py``
compiles the same source with Cython into ``mqdb._c_NAME`` (C types in ``mqdb/_c_NAME.pxd``), and the
module's last line, ``import_c_accel(globals(), "mqdb._c_NAME")``, swaps in the twin's globals unless

* ``DUBBOMESH_PURE_PYTHON`` is set to anything but ``""`` or ``"0"`` (the tests run both ways), or
* the twin was not built (installed without a compiler, or with ``DUBBOMESH_NO_EXTENSIONS=1``).

:data:`MODULES` records, per module, ``"compiled"`` or why it runs as Python; :func:`describe` says it
in one line (``mqdb --version`` prints it).
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
    "mqdb.coding",
    "mqdb.columns",
    "mqdb.db",
    "mqdb.directory",
    "mqdb.hashing",
    "mqdb.locks",
    "mqdb.reads",
    "mqdb.shard",
    "mqdb.stage",
)
COMPILED = "compiled"
NOT_BUILT = "compiled twins not built at install"
MODULES: dict[str, str] = {}  # "mqdb.NAME" -> COMPILED, or the reason it runs as Python


def twin_of(module: str) -> str:
    """The dotted name of the compiled twin of ``module``: ``mqdb.NAME`` -> ``mqdb._c_NAME``."""
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
        if exc.name is None or not exc.name.startswith(twin.rpartition(".")[0] + "._c_"):
            raise
        MODULES[name] = NOT_BUILT
        return
    globs.clear()
    globs.update(module.__dict__)
    MODULES[name] = COMPILED


def describe() -> str:
    """One line on the modules of :data:`TWINS` imported so far: ``compiled (1 core module)`` when all
    run compiled, else which run as Python and why, such as ``pure Python (DUBBOMESH_PURE_PYTHON=1)``."""
    states = {name.rpartition(".")[2]: MODULES.get(name, "not imported") for name in TWINS}
    reasons = sorted(set(states.values()))
    if reasons == [COMPILED]:
        return f"compiled ({len(states)} core module{'' if len(states) == 1 else 's'})"
    pure = [name for name, state in states.items() if state != COMPILED]
    why = ", ".join(reason for reason in reasons if reason != COMPILED)
    if len(pure) == len(states):
        return f"pure Python ({why})"
    return f"partly compiled: {', '.join(pure)} as pure Python ({why})"
