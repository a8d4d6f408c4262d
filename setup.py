"""The compiled twins of the sidecar's hot codecs; everything else about the distribution is in pyproject.toml.

Each module in :data:`COMPILED` (``sidecar._accel.TWINS``) stays a Python module,
``sidecar/codecs/NAME.py``, and is also compiled by Cython into ``sidecar.codecs._c_NAME`` (C types,
where there are any, in ``sidecar/codecs/_c_NAME.pxd``). At import, the Python module takes over its
twin's globals unless ``DUBBOMESH_PURE_PYTHON=1`` (:mod:`sidecar._accel`).

The twins are optional: with ``DUBBOMESH_NO_EXTENSIONS=1``, without Cython, or when a twin does not
compile (no C compiler), the package installs pure Python and the build says so in a warning.
"""

from __future__ import annotations

import ast
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError


def _twins() -> tuple[str, ...]:
    """sidecar._accel.TWINS, read without importing the sidecar package (its dependencies may be absent)."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sidecar", "_accel.py")) as file:
        for node in ast.parse(file.read()).body:
            if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["TWINS"]:
                return ast.literal_eval(node.value)
    raise LookupError("TWINS not found in sidecar/_accel.py")


COMPILED = _twins()
NO_EXTENSIONS = "DUBBOMESH_NO_EXTENSIONS"
DIRECTIVES = {
    "language_level": 3,
    # Annotations are documentation here: the Python semantics of every argument stay as they are.
    "annotation_typing": False,
    "binding": True,
}


BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError)


def warn(message: str) -> None:
    banner = "*" * 78
    print(f"\n{banner}\nWARNING: {message}\nThe sidecar's codecs will run as pure Python.\n{banner}\n", file=sys.stderr)


def wanted(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def extensions() -> list[Extension]:
    if wanted(NO_EXTENSIONS):
        warn(f"{NO_EXTENSIONS}={os.environ[NO_EXTENSIONS]}: the compiled codecs are not built.")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        warn("Cython is not installed: the compiled codecs are not built.")
        return []
    from Cython.Compiler.Errors import CompileError

    modules = []
    for name in COMPILED:
        pxd = f"sidecar/codecs/_c_{name}.pxd"
        depends = [pxd] if os.path.exists(pxd) else []
        module = Extension(f"sidecar.codecs._c_{name}", [f"sidecar/codecs/{name}.py"], depends=depends)
        try:  # one at a time: a module Cython refuses stays pure Python, the others are still built
            modules += cythonize([module], compiler_directives=DIRECTIVES, build_dir="build/cython", quiet=True)
        except CompileError as exc:
            warn(f"sidecar.codecs.{name} could not be translated by Cython ({exc}).")
    return modules


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
            warn(f"the compiled codecs could not be built ({type(exc).__name__}: {exc}).")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as exc:
            warn(f"{ext.name} could not be compiled ({type(exc).__name__}: {exc}).")


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
