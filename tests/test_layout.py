"""The layers of the design, checked on the source with ``ast``.

- Folder rules: nothing under ``sidecar/codecs/`` or ``sidecar/policies/`` (nor the few pure modules
  elsewhere) imports sockets, event loops, clocks or the OS: bytes and values in, values out.
- Layer order inside the sidecar: ``errors``, ``_accel`` < ``codecs``, ``policies`` < ``runtime`` < ``ops`` <
  ``app`` < ``tools`` < ``cli``; a module imports its own layer or lower ones only. ``_accel`` (which
  build of the codecs runs) reads the environment, so it is not in the pure ``codecs`` folder: it sits
  beside ``errors``, below the codecs that call it at their end.
- ``integrations`` (connectors) use the sidecar below ``ops``; ``integrations/demo`` only its codecs.
  The sidecar reaches ``integrations`` from ``app`` and ``tools`` only.
- ``mqdb``'s engine imports neither ``mqdb.tools`` nor ``mqdb.cli``; ``mqdb.tools`` not ``mqdb.cli``.
- ``mqdb`` never imports ``sidecar``, ``integrations`` or ``gevent``; ``sidecar`` never imports ``mqdb``.
- ``click`` is imported only by ``cli.py`` / ``__main__.py`` modules or inside a ``cli`` package.
- No test module imports another: shared fakes and helpers live in ``tests/support/``, shared fixtures
  in ``conftest.py`` files.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mqdb", "sidecar", "integrations")
PURE_FOLDERS = ("sidecar/codecs", "sidecar/policies")
# Pure modules that live with their users: wrk's output parser, the metrics and stats-table formatters.
PURE_ELSEWHERE = ("sidecar/tools/wrk.py", "sidecar/ops/metrics.py", "sidecar/ops/stats_table.py")
IMPURE_IMPORTS = {"gevent", "socket", "select", "selectors", "asyncio", "time", "os", "threading", "subprocess"}
CLOCK_READS = {"now", "utcnow", "today"}
# The sidecar's layers, lowest first: a module may import from its own layer and the ones below.
SIDECAR_LAYERS = (
    ("sidecar.errors", "sidecar._accel"),
    ("sidecar.codecs", "sidecar.policies"),
    ("sidecar.runtime",),
    ("sidecar.ops",),
    ("sidecar.app",),
    ("sidecar.tools",),
    ("sidecar.cli", "sidecar.__main__"),
)


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


def tops_named(file: Path, top: str) -> list[tuple[str, int]]:
    return [(name, line) for name, line in imports_of(file) if name.split(".")[0] == top]


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
    files = [f for folder in PURE_FOLDERS for f in source_files(folder)]
    return files + [ROOT / name for name in PURE_ELSEWHERE]


def dotted(file: Path) -> str:
    return ".".join(module_path(file))


def layer_of(name: str) -> int | None:
    """The index in :data:`SIDECAR_LAYERS` of a dotted ``sidecar`` module name (None: the package root)."""
    for index, prefixes in enumerate(SIDECAR_LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def own_imports(file: Path, top: str) -> list[tuple[str, int]]:
    """The imports of modules of the package ``top`` (the package itself excluded)."""
    return [(name, line) for name, line in imports_of(file) if name.startswith(top + ".")]


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


def test_every_sidecar_module_has_a_layer():
    unplaced = [dotted(f) for f in source_files("sidecar") if dotted(f) != "sidecar" and layer_of(dotted(f)) is None]
    assert unplaced == []


def test_sidecar_imports_point_down_the_layers():
    found = []
    for file in source_files("sidecar"):
        mine = layer_of(dotted(file))
        for name, line in own_imports(file, "sidecar"):
            theirs = layer_of(name)
            if mine is not None and theirs is not None and theirs > mine:
                found.append(f"{file.relative_to(ROOT)}:{line} imports {name} from a higher layer")
    assert found == []


def test_integrations_use_the_sidecar_below_ops_and_demo_only_its_codecs():
    ops = layer_of("sidecar.ops")
    found = []
    for file in source_files("integrations"):
        demo = dotted(file).startswith("integrations.demo")
        for name, line in own_imports(file, "sidecar"):
            layer = layer_of(name)
            allowed = layer is not None and (layer <= 1 if demo else layer < ops)
            if not allowed:
                found.append(f"{file.relative_to(ROOT)}:{line} imports {name}")
    assert found == []


def test_sidecar_reaches_integrations_from_app_and_tools_only():
    found = []
    for file in source_files("sidecar"):
        if layer_of(dotted(file)) in (layer_of("sidecar.app"), layer_of("sidecar.tools")):
            continue
        found += [f"{file.relative_to(ROOT)}:{line} imports {name}" for name, line in tops_named(file, "integrations")]
    assert found == []


def test_mqdb_engine_imports_neither_its_tools_nor_its_cli():
    found = []
    for file in source_files("mqdb"):
        name = dotted(file)
        if name.startswith(("mqdb.tools", "mqdb.cli", "mqdb.__main__")):
            banned = ("mqdb.cli",) if name.startswith("mqdb.tools") else ()
        else:
            banned = ("mqdb.tools", "mqdb.cli")
        for imported, line in own_imports(file, "mqdb"):
            if imported.startswith(banned):
                found.append(f"{file.relative_to(ROOT)}:{line} imports {imported}")
    assert found == []


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


def enclosing_test_module(name: str) -> str | None:
    """The test module (``test_*``) that the dotted ``name`` is or lies inside, else None."""
    parts = name.split(".")
    for index, part in enumerate(parts):
        if part.startswith("test_"):
            return ".".join(parts[: index + 1])
    return None


def test_no_test_module_imports_another():
    found = set()
    for file in (ROOT / "tests").rglob("*.py"):
        for name, line in imports_of(file):
            if (module := enclosing_test_module(name)) is not None:
                found.add(f"{file.relative_to(ROOT)}:{line} imports {module}")
    assert sorted(found) == []


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
