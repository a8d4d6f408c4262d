"""Which build of the sidecar's hot path runs: its compiled twins, or the Python source.

The hot path is the codecs (HTTP, forms, Hessian2, Dubbo, the tunnel), the policies a call passes
(balancer, connection limits, histograms) and the runtime around them (HTTP server, tunnel caller,
the consumer's handler, the datagram sender; the provider and its Dubbo pool). Each such Python
module is the one implementation; the build compiles the same source with Cython into a twin beside it,
``PACKAGE._c_NAME`` (:func:`twin_of`; see ``setup.py``), with C types, where there are any, in
``_c_NAME.pxd``. The last line of each module calls :func:`import_c_accel`, which replaces the
module's globals with its twin's, so that every importer of ``PACKAGE.NAME`` gets the compiled
functions and classes, unless

* ``DUBBOMESH_PURE_PYTHON`` is set to anything but ``""`` or ``"0"`` (the tests run both ways), or
* the twin was not built (installed without a compiler, or with ``DUBBOMESH_NO_EXTENSIONS=1``).

A module's globals then include its twin's ``__name__`` and ``__file__``: a twinned module names its
logger with :func:`module_name`, and code that reads a module's source finds it by path.

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
    "module_name",
    "import_c_accel",
    "describe",
]

PURE_PYTHON = "DUBBOMESH_PURE_PYTHON"
# The modules that have a compiled twin, by dotted name (setup.py builds the same list).
TWINS = (
    "sidecar.codecs.memo",
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
    "sidecar.runtime.http_server",
    "sidecar.runtime.caller",
    "sidecar.runtime.consumer",
    "sidecar.runtime.datagrams",
    "sidecar.runtime.upstream",
    "sidecar.runtime.provider",
    "sidecar.policies.balancer",
    "sidecar.policies.connections",
    "sidecar.policies.histogram",
)
COMPILED = "compiled"
MODULES: dict[str, str] = {}  # "sidecar.PACKAGE.NAME" -> COMPILED, or the reason it runs as Python


def twin_of(module: str) -> str:
    """The dotted name of the compiled twin of ``module``: ``pkg.NAME`` -> ``pkg._c_NAME``."""
    package, _, name = module.rpartition(".")
    return f"{package}._c_{name}"


def module_name(name: str) -> str:
    """The dotted name of the Python module whose code runs as ``name``, a module or its compiled twin
    (``pkg._c_NAME`` -> ``pkg.NAME``): the name a twinned module logs under, in either build."""
    package, _, short = name.rpartition(".")
    return f"{package}.{short[3:]}" if short.startswith("_c_") else name


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
        missing = exc.name or ""
        if not missing.startswith("sidecar.") or module_name(missing) == missing:  # not a twin: a real error
            raise
        MODULES[name] = "compiled twins not built at install"
        return
    globs.clear()
    globs.update(module.__dict__)
    MODULES[name] = COMPILED


def describe() -> str:
    """One line on the modules of :data:`TWINS` imported so far: ``compiled (19 modules)`` when
    all run compiled, else which run as Python and why, such as ``pure Python (DUBBOMESH_PURE_PYTHON=1)``."""
    states = {name.rpartition(".")[2]: MODULES.get(name, "not imported") for name in TWINS}
    reasons = sorted(set(states.values()))
    if reasons == [COMPILED]:
        return f"compiled ({len(states)} modules)"
    pure = [name for name, state in states.items() if state != COMPILED]
    why = ", ".join(reason for reason in reasons if reason != COMPILED)
    if len(pure) == len(states):
        return f"pure Python ({why})"
    return f"partly compiled: {', '.join(pure)} as pure Python ({why})"
