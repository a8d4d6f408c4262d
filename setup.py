"""The compiled twins of the sidecar's hot path and of mqdb's per-message core; everything else about
the distribution is in pyproject.toml.

Each module in :data:`COMPILED` (``sidecar._accel.TWINS`` and ``mqdb._accel.TWINS``, dotted names)
stays a Python module, such as ``sidecar/codecs/NAME.py``, ``sidecar/runtime/NAME.py`` or
``mqdb/NAME.py``, and is also compiled by Cython into its twin beside it, ``sidecar.codecs._c_NAME``,
``sidecar.runtime._c_NAME`` or ``mqdb._c_NAME`` (C types, where there are any, in ``_c_NAME.pxd``
beside the module). At import, the Python module takes over its twin's
globals unless ``DUBBOMESH_PURE_PYTHON=1`` (:mod:`sidecar._accel`, :mod:`mqdb._accel`).

The twins are optional: with ``DUBBOMESH_NO_EXTENSIONS=1``, without Cython, or when a twin does not
compile (no C compiler), the package installs pure Python and the build says so in a warning.
"""

from __future__ import annotations

import ast
import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError


def _twins() -> tuple[str, ...]:
    """sidecar._accel.TWINS + mqdb._accel.TWINS, read without importing the packages (their
    dependencies may be absent)."""
    twins: tuple[str, ...] = ()
    for package in ("sidecar", "mqdb"):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), package, "_accel.py")
        with open(path) as file:
            found = [
                ast.literal_eval(node.value)
                for node in ast.parse(file.read()).body
                if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["TWINS"]
            ]
        if not found:
            raise LookupError(f"TWINS not found in {package}/_accel.py")
        twins += found[0]
    return twins


COMPILED = _twins()
NO_EXTENSIONS = "DUBBOMESH_NO_EXTENSIONS"
BUILD_DIR = "build/cython"  # where Cython writes the C of each twin
DIRECTIVES = {
    "language_level": 3,
    # Annotations are documentation here: the Python semantics of every argument stay as they are.
    "annotation_typing": False,
    "binding": True,
}


BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError)


def warn(message: str) -> None:
    banner = "*" * 78
    print(
        f"\n{banner}\nWARNING: {message}\nThe sidecar's codecs and mqdb's core will run as pure Python.\n{banner}\n",
        file=sys.stderr,
    )


def wanted(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def extensions() -> list[Extension]:
    if wanted(NO_EXTENSIONS):
        warn(f"{NO_EXTENSIONS}={os.environ[NO_EXTENSIONS]}: the compiled twins are not built.")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        warn("Cython is not installed: the compiled twins are not built.")
        return []
    from Cython.Compiler.Errors import CompileError

    modules = []
    # every .pxd of the twins: a twin may cimport types from another package (the sidecar's runtime
    # from its codecs), so a change to any of them translates every twin with a .pxd again
    pxds = [path for package in ("sidecar", "mqdb") for path in glob.glob(f"{package}/**/_c_*.pxd", recursive=True)]
    for name in COMPILED:
        folder, _, short = name.replace(".", "/").rpartition("/")
        pxd = f"{folder}/_c_{short}.pxd"
        depends = [pxd] if os.path.exists(pxd) else []
        module = Extension(f"{name.rpartition('.')[0]}._c_{short}", [f"{folder}/{short}.py"], depends=depends)
        # Cython looks for the C types of NAME.py in NAME.pxd when it decides what is stale, not in the
        # twin's _c_NAME.pxd: a changed .pxd (its own, or any it may cimport, whose types' layout it
        # compiles in) forces the translation again itself.
        c_file = f"{BUILD_DIR}/{folder}/{short}.c"
        force = bool(depends) and any(_newer(other, c_file) for other in pxds)
        try:  # one at a time: a module Cython refuses stays pure Python, the others are still built
            modules += cythonize([module], compiler_directives=DIRECTIVES, build_dir=BUILD_DIR, quiet=True, force=force)
        except CompileError as exc:
            warn(f"{name} could not be translated by Cython ({exc}).")
    return modules


def _newer(source: str, target: str) -> bool:
    """Whether ``source`` changed after ``target`` was made (or ``target`` is not there)."""
    try:
        return os.path.getmtime(source) > os.path.getmtime(target)
    except FileNotFoundError:
        return True


class OptionalBuildExt(build_ext):
    """build_ext that leaves out, with a warning, a twin that does not compile; one job per CPU."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except BUILD_ERRORS as exc:  # no compiler at all: raised before any twin is built
            warn(f"the compiled twins could not be built ({type(exc).__name__}: {exc}).")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as exc:
            warn(f"{ext.name} could not be compiled ({type(exc).__name__}: {exc}).")


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
