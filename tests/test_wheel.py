"""The wheel, built and installed in a fresh virtual environment, runs both commands.

Slow (a build, a venv, dependencies from PyPI): marked ``slow`` so ``-m 'not slow'`` leaves it out;
``make test`` runs it. The commands run with a temporary working directory and without PYTHONPATH, so
nothing is imported from the source tree.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_FILES = ("sidecar/PROTOCOLS.md", "sidecar/tools/bench_wrk.lua", "mqdb/FORMAT.md", "mqdb/CLUSTER.md")
# What never goes into the copy of the tree the wheel is built from (build/ and *.egg-info would be
# written into the working tree by setuptools, and others may be building at the same time).
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "node_modules", ".*_cache", ".hypothesis"
)

pytestmark = pytest.mark.slow


def run(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    run(sys.executable, "-m", "build", "--wheel", "--outdir", tmp / "dist", source, cwd=tmp)
    (built,) = (tmp / "dist").glob("*.whl")
    return built


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
    assert wheel.name == f"dubbomesh-{version('dubbomesh')}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
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
    assert run(venv / "sidecar", "--version", cwd=cwd).stdout == f"sidecar, version {expected}\n"
    assert run(venv / "mqdb", "--version", cwd=cwd).stdout == f"mqdb, version {expected}\n"


def test_installed_sidecar_demo_runs(venv, cwd):
    result = run(venv / "sidecar", "demo", "--duration", "1", "--no-progress", cwd=cwd, timeout=120)
    out = result.stdout
    assert "QPS" in out
    (errors,) = [line for line in out.splitlines() if line.startswith("errors")]
    assert errors.split() == ["errors", "0"], f"{out}\n{result.stderr[-3000:]}"


def test_installed_mqdb_bench_runs(venv, cwd):
    out = run(venv / "mqdb", "bench", "--size", "tiny", cwd=cwd, timeout=120).stdout
    assert out.startswith("mqdb bench: 10,000 queues")
