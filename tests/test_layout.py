"""The import directions of the design, checked on the source with ``ast``.

- ``mqdb`` never imports ``sidecar``, ``integrations`` or ``gevent``; ``sidecar`` never imports ``mqdb``.
- ``click`` is imported only by ``cli.py`` / ``__main__.py`` modules or inside a ``cli`` package.
- The codecs and policies of the sidecar are pure: no sockets, no event loops, no clocks.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mqdb", "sidecar", "integrations")
PURE_MODULES = (
    "hessian2.py", "hessian2_decoder.py", "dubbo.py", "dubbo_messages.py", "fastjson.py", "javatypes.py",
    "http1.py", "http1_states.py", "http1_wire.py", "tunnel.py", "tunnel_auth.py", "balancer.py", "calls.py", "wrk.py",
    "histogram.py", "metrics.py", "stats_table.py",
)  # fmt: skip
IMPURE_IMPORTS = {"gevent", "socket", "selectors", "asyncio", "time"}
CLOCK_READS = {"now", "utcnow", "today"}


def module_path(file: Path) -> list[str]:
    parts = list(file.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_modules(source: str, module: list[str], is_package: bool, filename: str = "<source>"):
    """Yield (dotted module name, line) for every import in ``source``, relative ones resolved.

    ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (``c`` may be a submodule); calls of
    ``importlib.import_module`` and ``__import__`` with a literal name count too.
    """
    package = module if is_package else module[:-1]
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                keep = len(package) - (node.level - 1)
                base = package[: max(keep, 0)]
                parts = base + (node.module.split(".") if node.module else [])
            else:
                parts = node.module.split(".")
            if parts:
                yield ".".join(parts), node.lineno
            for alias in node.names:
                if alias.name != "*":
                    yield ".".join(parts + [alias.name]), node.lineno
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield arg.value, node.lineno


def source_files(*packages: str) -> list[Path]:
    files = []
    for package in packages:
        top = ROOT / package
        if top.is_dir():
            files += sorted(p for p in top.rglob("*.py") if "__pycache__" not in p.parts)
    return files


def imports_of(file: Path) -> list[tuple[str, int]]:
    source = file.read_text(encoding="utf-8")
    return list(imported_modules(source, module_path(file), file.name == "__init__.py", str(file)))


def tops(file: Path) -> list[tuple[str, int]]:
    return [(name.split(".")[0], line) for name, line in imports_of(file)]


def violations(files, banned) -> list[str]:
    found = []
    for file in files:
        for top, line in tops(file):
            if top in banned:
                found.append(f"{file.relative_to(ROOT)}:{line} imports {top}")
    return sorted(set(found))


def pure_files() -> list[Path]:
    side = ROOT / "sidecar"
    files = [side / name for name in PURE_MODULES if (side / name).is_file()]
    for p in sorted(side.glob("policy*")) if side.is_dir() else []:
        if p.is_file() and p.suffix == ".py":
            files.append(p)
        elif p.is_dir():
            files += sorted(q for q in p.rglob("*.py") if "__pycache__" not in q.parts)
    return files


def test_every_source_file_parses():
    files = source_files(*PACKAGES)
    assert any(f.parent.name == "mqdb" for f in files)
    for file in files:
        imports_of(file)


def test_mqdb_imports_neither_sidecar_nor_integrations_nor_gevent():
    assert violations(source_files("mqdb"), {"sidecar", "integrations", "gevent"}) == []


def test_sidecar_does_not_import_mqdb():
    assert violations(source_files("sidecar"), {"mqdb"}) == []


def test_click_only_in_cli_modules():
    def is_cli(file: Path) -> bool:
        rel = file.relative_to(ROOT).parts
        return file.name in ("cli.py", "__main__.py") or "cli" in rel[:-1]

    others = [f for f in source_files(*PACKAGES) if not is_cli(f)]
    assert violations(others, {"click"}) == []


def test_codecs_and_policies_import_no_sockets_loops_or_clocks():
    assert violations(pure_files(), IMPURE_IMPORTS) == []


def test_codecs_and_policies_do_not_read_the_wall_clock():
    found = []
    for file in pure_files():
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), filename=str(file))):
            if isinstance(node, ast.Attribute) and node.attr in CLOCK_READS:
                owner = ast.unparse(node.value)
                if owner.split(".")[-1] in ("datetime", "date"):
                    found.append(f"{file.relative_to(ROOT)}:{node.lineno} reads {owner}.{node.attr}()")
    assert found == []


@pytest.mark.parametrize(
    ("source", "module", "is_package", "expected"),
    [
        ("import gevent.socket", ["mqdb", "db"], False, {"gevent"}),
        ("from ..sidecar import dubbo", ["mqdb", "db"], False, {"sidecar"}),
        ("from .. import sidecar", ["mqdb", "db"], False, {"sidecar"}),
        ("from . import format", ["mqdb", "db"], False, {"mqdb"}),
        ("from .shard import Shard", ["mqdb"], True, {"mqdb"}),
        ("from ...mqdb import db", ["sidecar", "policy", "retry"], False, {"mqdb"}),
        ("import importlib\nimportlib.import_module('click')", ["sidecar", "x"], False, {"importlib", "click"}),
        ("from time import monotonic as now", ["sidecar", "tunnel"], False, {"time"}),
    ],
)
def test_import_resolution(source, module, is_package, expected):
    found = {name.split(".")[0] for name, _ in imported_modules(source, module, is_package)}
    assert found == expected
