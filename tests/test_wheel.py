"""The wheel, built and installed in a fresh virtual environment, runs both commands.

Slow (a build, a venv, dependencies from PyPI): marked ``slow`` so ``-m 'not slow'`` leaves it out;
``make test`` runs it. The commands run with a temporary working directory and without PYTHONPATH, so
nothing is imported from the source tree, and without ``DUBBOMESH_PURE_PYTHON``: the installed build is
what is checked. A second wheel is built with a C compiler that always fails (``CC=false``): it must
still build, with a warning, and run pure Python.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from mqdb._accel import TWINS as CORE_TWINS
from sidecar._accel import TWINS

ROOT = Path(__file__).resolve().parents[1]
DATA_FILES = ("sidecar/PROTOCOLS.md", "sidecar/tools/bench_wrk.lua", "mqdb/FORMAT.md", "mqdb/CLUSTER.md")
# What never goes into the copy of the tree the wheel is built from (build/ and *.egg-info would be
# written into the working tree by setuptools, and others may be building at the same time).
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "node_modules", ".*_cache", ".hypothesis", "*.so"
)
COMPILED = f"core: compiled ({len(TWINS)} modules)\n"
CORE = f"core: compiled ({len(CORE_TWINS)} core module{'s' if len(CORE_TWINS) > 1 else ''})\n"

pytestmark = pytest.mark.slow


def run(*args, cwd: Path, timeout: float = 600, **extra: str) -> subprocess.CompletedProcess:
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DUBBOMESH_PURE_PYTHON", "DUBBOMESH_NO_EXTENSIONS")
    env = {k: v for k, v in os.environ.items() if k not in dropped} | extra
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(tmp: Path, **env: str) -> tuple[Path, str]:
    """A wheel built from a copy of the source tree, and what the build printed."""
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    result = run(sys.executable, "-m", "build", "--wheel", "--outdir", tmp / "dist", source, cwd=tmp, **env)
    (built,) = (tmp / "dist").glob("*.whl")
    return built, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("venv") / "env"
    run(sys.executable, "-m", "venv", env, cwd=env.parent)
    run(env / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel, cwd=env.parent)
    return env / "bin"


@pytest.fixture
def cwd(tmp_path) -> Path:
    return tmp_path


def test_wheel_holds_the_packages_and_their_documents_but_no_tests(wheel):
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert wheel.name.startswith(f"dubbomesh-{version('dubbomesh')}-{python}-{python}-")
    names = zipfile.ZipFile(wheel).namelist()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for name in TWINS + CORE_TWINS:  # each module as Python and as its compiled twin, without the generated C
        package, _, short = name.replace(".", "/").rpartition("/")
        assert f"{package}/{short}.py" in names and f"{package}/_c_{short}{suffix}" in names
    assert not [n for n in names if n.endswith((".c", ".pxd"))]
    for name in DATA_FILES + ("mqdb/__init__.py", "sidecar/__init__.py", "integrations/demo/demo_provider.py"):
        assert name in names
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n]
    assert not [n for n in names if n.endswith(".pyc")]


def test_installed_packages_come_from_the_venv(venv, cwd):
    script = "import mqdb, sidecar, integrations; print(mqdb.__file__, sidecar.__file__, integrations.__file__)"
    out = run(venv / "python", "-c", script, cwd=cwd)
    site = venv.parent / "lib"
    assert all(Path(p).is_relative_to(site) for p in out.stdout.split())


def test_installed_commands_print_the_version(venv, cwd):
    expected = version("dubbomesh")
    assert run(venv / "sidecar", "--version", cwd=cwd).stdout == f"sidecar, version {expected}\n{COMPILED}"
    assert run(venv / "mqdb", "--version", cwd=cwd).stdout == f"mqdb, version {expected}\n{CORE}"
    pure = run(venv / "sidecar", "--version", cwd=cwd, DUBBOMESH_PURE_PYTHON="1").stdout
    assert pure == f"sidecar, version {expected}\ncore: pure Python (DUBBOMESH_PURE_PYTHON=1)\n"


def test_without_a_compiler_the_wheel_builds_pure_python_with_a_warning(venv, tmp_path_factory, cwd):
    built, output = build_wheel(tmp_path_factory.mktemp("pure-wheel"), CC="false")
    assert re.search(r"WARNING: sidecar\.codecs\._c_\w+ could not be compiled", output), output[-3000:]
    assert "The sidecar's codecs and mqdb's core will run as pure Python." in output
    names = zipfile.ZipFile(built).namelist()
    assert "sidecar/codecs/http1.py" in names and not [n for n in names if n.endswith((".so", ".pyd", ".c"))]
    # Installed on its own beside the first venv's dependencies, it runs the codecs as Python.
    target = tmp_path_factory.mktemp("pure-install")
    run(venv / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--target", target, built, cwd=cwd)
    result = run(venv / "python", "-m", "sidecar", "--version", cwd=cwd, PYTHONPATH=str(target))
    assert result.stdout.endswith("core: pure Python (compiled twins not built at install)\n")
    script = (
        "from sidecar.codecs import calls, http1, tunnel; "
        "call = calls.parse_call('POST', '/', [], b'interface=S&method=hash&parameterTypesString=I&parameter=7'); "
        "rid = tunnel.make_request_id(1, 2, 3); frame = calls.encode_call(call, rid); "
        "print(http1.__file__, tunnel.decode(tunnel.encode_request(rid, frame)).frame == frame)"
    )
    where, decoded = run(venv / "python", "-c", script, cwd=cwd, PYTHONPATH=str(target)).stdout.split()
    assert Path(where).is_relative_to(target) and where.endswith("http1.py") and decoded == "True"


def test_installed_sidecar_demo_runs(venv, cwd):
    result = run(venv / "sidecar", "demo", "--duration", "1", "--no-progress", cwd=cwd, timeout=120)
    out = result.stdout
    assert "QPS" in out
    (errors,) = [line for line in out.splitlines() if line.startswith("errors")]
    assert errors.split() == ["errors", "0"], f"{out}\n{result.stderr[-3000:]}"


def test_installed_mqdb_bench_runs(venv, cwd):
    out = run(venv / "mqdb", "bench", "--size", "tiny", cwd=cwd, timeout=120).stdout
    assert out.startswith("mqdb bench: 10,000 queues")
