"""sidecar._accel: which build of the codecs runs, and the swap of a module for its compiled twin."""

from __future__ import annotations

import ast
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mqdb import _accel as mqdb_accel
from sidecar import _accel

ROOT = Path(__file__).resolve().parents[2]
NOT_BUILT = "compiled twins not built at install"


@pytest.fixture
def modules(monkeypatch) -> dict[str, str]:
    """A fresh record of the builds, so that these tests leave the process's own alone."""
    record: dict[str, str] = {}
    monkeypatch.setattr(_accel, "MODULES", record)
    return record


def source_of(dotted: str) -> Path:
    return ROOT.joinpath(*dotted.split(".")).with_suffix(".py")


def last_statement(name: str) -> str:
    tree = ast.parse(source_of(name).read_text(encoding="utf-8"))
    return ast.unparse(tree.body[-1])


@pytest.mark.parametrize("name", _accel.TWINS)
def test_each_twinned_module_ends_by_calling_for_its_twin(name):
    assert last_statement(name) == f"import_c_accel(globals(), {_accel.twin_of(name)!r})"


def test_a_twin_sits_beside_its_module_with_the_prefix_c():
    assert _accel.twin_of("sidecar.codecs.http1") == "sidecar.codecs._c_http1"
    assert _accel.twin_of("mqdb.coding") == "mqdb._c_coding"


def test_no_other_module_calls_for_a_twin():
    twinned = {source_of(name) for name in _accel.TWINS}
    others = [p for p in (ROOT / "sidecar").rglob("*.py") if p not in twinned and p.name != "_accel.py"]
    assert [str(p) for p in others if "import_c_accel(" in p.read_text(encoding="utf-8")] == []


def test_setup_builds_the_twins_accel_names():
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    twins = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "_twins")
    namespace: dict = {"__file__": str(ROOT / "setup.py"), "ast": ast, "os": os}
    exec(compile(ast.Module([twins], []), "setup.py", "exec"), namespace)
    assert namespace["_twins"]() == _accel.TWINS + mqdb_accel.TWINS


@pytest.mark.parametrize(("value", "pure"), [(None, False), ("", False), ("0", False), ("1", True), ("yes", True)])
def test_pure_python_is_requested_by_any_value_but_empty_or_0(monkeypatch, value, pure):
    if value is None:
        monkeypatch.delenv(_accel.PURE_PYTHON, raising=False)
    else:
        monkeypatch.setenv(_accel.PURE_PYTHON, value)
    assert _accel.pure_python_requested() is pure


def test_the_twin_itself_keeps_its_globals(modules):
    globs = {"__name__": "pkg._c_mod", "x": 1}
    _accel.import_c_accel(globs, "pkg._c_mod")
    assert globs == {"__name__": "pkg._c_mod", "x": 1} and modules == {}


def test_a_built_twin_takes_over_the_module(monkeypatch, modules):
    monkeypatch.delenv(_accel.PURE_PYTHON, raising=False)
    twin = ModuleType("pkg._c_mod")
    twin.answer = 42
    monkeypatch.setitem(sys.modules, "pkg._c_mod", twin)
    globs = {"__name__": "pkg.mod", "answer": 41, "gone": True}
    _accel.import_c_accel(globs, "pkg._c_mod")
    assert globs["answer"] == 42 and globs["__name__"] == "pkg._c_mod" and "gone" not in globs
    assert modules == {"pkg.mod": _accel.COMPILED}


def test_pure_python_requested_keeps_the_module(monkeypatch, modules):
    monkeypatch.setenv(_accel.PURE_PYTHON, "1")
    monkeypatch.setitem(sys.modules, "pkg._c_mod", ModuleType("pkg._c_mod"))
    globs = {"__name__": "pkg.mod", "answer": 41}
    _accel.import_c_accel(globs, "pkg._c_mod")
    assert globs == {"__name__": "pkg.mod", "answer": 41}
    assert modules == {"pkg.mod": "DUBBOMESH_PURE_PYTHON=1"}


def test_a_twin_not_built_leaves_the_module_pure(monkeypatch, modules):
    monkeypatch.delenv(_accel.PURE_PYTHON, raising=False)
    globs = {"__name__": "sidecar.codecs.absent", "answer": 41}
    _accel.import_c_accel(globs, "sidecar.codecs._c_absent")
    assert globs == {"__name__": "sidecar.codecs.absent", "answer": 41}
    assert modules == {"sidecar.codecs.absent": NOT_BUILT}


def test_a_twin_that_needs_a_twin_not_built_leaves_the_module_pure(monkeypatch, modules):
    monkeypatch.delenv(_accel.PURE_PYTHON, raising=False)

    def missing(name, *args, **kwargs):
        raise ModuleNotFoundError(f"No module named {name!r}", name="sidecar.codecs._c_other")

    monkeypatch.setattr(importlib, "import_module", missing)
    globs = {"__name__": "sidecar.codecs.mod", "answer": 41}
    _accel.import_c_accel(globs, "sidecar.codecs._c_mod")
    assert globs == {"__name__": "sidecar.codecs.mod", "answer": 41}
    assert modules == {"sidecar.codecs.mod": NOT_BUILT}


def test_a_twin_that_fails_to_import_is_an_error_not_a_fallback(monkeypatch, modules):
    monkeypatch.delenv(_accel.PURE_PYTHON, raising=False)
    with pytest.raises(ModuleNotFoundError):
        _accel.import_c_accel({"__name__": "pkg.mod"}, "no_such_package_here._c_mod")
    assert modules == {}


def test_describe_says_compiled_partly_or_pure_and_why(modules):
    names = list(_accel.TWINS)
    assert _accel.describe() == "pure Python (not imported)"
    modules.update(dict.fromkeys(names, _accel.COMPILED))
    assert _accel.describe() == f"compiled ({len(names)} modules)"
    modules[names[0]] = NOT_BUILT
    assert _accel.describe() == f"partly compiled: {names[0].rpartition('.')[2]} as pure Python ({NOT_BUILT})"
    modules.update(dict.fromkeys(names, "DUBBOMESH_PURE_PYTHON=yes"))
    assert _accel.describe() == "pure Python (DUBBOMESH_PURE_PYTHON=yes)"


def test_this_process_runs_the_build_it_was_asked_for():
    loaded = {name: importlib.import_module(name) for name in _accel.TWINS}
    states = {_accel.MODULES[name] for name in _accel.TWINS}
    if _accel.pure_python_requested():
        assert states == {f"{_accel.PURE_PYTHON}={os.environ[_accel.PURE_PYTHON]}"}
        assert all(Path(module.__file__) == source_of(name) for name, module in loaded.items())
    elif states == {NOT_BUILT}:
        pytest.skip("the compiled twins are not built here (no compiler, or DUBBOMESH_NO_EXTENSIONS=1)")
    else:
        assert states == {_accel.COMPILED}, _accel.describe()
        for name, module in loaded.items():
            twin = Path(module.__file__)
            short = name.rpartition(".")[2]
            assert twin.name.startswith(f"_c_{short}.") and twin.suffix in (".so", ".pyd")
            source = source_of(name)
            if twin.parent == source.parent:  # built in place: not older than what it was built from
                sources = [source, *source.parent.glob(f"_c_{short}.pxd")]
                stale = [p.name for p in sources if p.stat().st_mtime > twin.stat().st_mtime]
                assert not stale, f"{twin.name} is older than {stale}: rebuild (make .venv/.installed)"


def test_a_twin_logs_under_the_name_of_its_module():
    assert _accel.module_name("sidecar.runtime._c_caller") == "sidecar.runtime.caller"
    assert _accel.module_name("sidecar.runtime.caller") == "sidecar.runtime.caller"
    from sidecar.runtime import caller

    assert caller.log.name == "sidecar.runtime.caller"
