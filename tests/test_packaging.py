"""The version, the Containerfile and the Kubernetes examples, checked as text.

No container runtime exists on the machines that run these tests, so the image is not built here:
the Containerfile is checked for the instructions the deployment relies on, and pod.yaml is parsed and
its sidecar configuration run through ``sidecar.ops.config``. The wheel itself is tested in test_wheel.py.
"""

import os
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from mqdb import _accel as mqdb_accel
from mqdb import cli as mqdb_cli
from sidecar import _accel
from sidecar import cli as sidecar_cli
from sidecar.ops import config

ROOT = Path(__file__).resolve().parents[1]
CONTAINER = ROOT / "packaging" / "container"


def test_the_version_lives_in_pyproject_only():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version("dubbomesh") == declared, "the installed metadata is stale: run `make test` (it reinstalls)"
    hard_coded = re.compile(r"""__version__\s*=\s*["']|version_option\(\s*["']""")
    for package in ("mqdb", "sidecar", "integrations"):
        for file in (ROOT / package).rglob("*.py"):
            for line in file.read_text(encoding="utf-8").splitlines():
                if hard_coded.search(line):
                    assert "0.0.0" in line, f"{file.relative_to(ROOT)}: a version written down: {line.strip()}"


def test_mqdb_version_says_which_build_of_the_core_runs():
    result = CliRunner().invoke(mqdb_cli.main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"mqdb, version {version('dubbomesh')}\ncore: {mqdb_accel.describe()}\n"
    if mqdb_accel.pure_python_requested():
        assert mqdb_accel.describe() == f"pure Python ({_accel.PURE_PYTHON}={os.environ[_accel.PURE_PYTHON]})"


def test_sidecar_version_says_which_build_of_the_codecs_runs():
    result = CliRunner().invoke(sidecar_cli.main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"sidecar, version {version('dubbomesh')}\ncore: {_accel.describe()}\n"
    if _accel.pure_python_requested():
        assert _accel.describe() == f"pure Python ({_accel.PURE_PYTHON}={os.environ[_accel.PURE_PYTHON]})"


# --- Containerfile ------------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


@pytest.fixture(scope="module")
def containerfile():
    return instructions((CONTAINER / "Containerfile").read_text())


def test_containerfile_is_two_stages_on_slim_python(containerfile):
    froms = [args for word, args in containerfile if word == "FROM"]
    assert len(froms) == 2
    assert all(args.split()[0] == "python:3.11-slim" for args in froms)
    assert froms[0].endswith(" AS build")
    final = containerfile[[w for w, _ in containerfile].index("FROM", 1) :]
    copies = [args for word, args in final if word == "COPY"]
    assert copies and all(args.startswith("--from=build ") for args in copies), "the final stage copies the wheel only"
    assert any(word == "RUN" and "build --wheel" in args for word, args in containerfile)
    assert any(word == "RUN" and "pip install" in args and ".whl" in args for word, args in final)


def test_containerfile_builds_the_compiled_codecs(containerfile):
    build = containerfile[: [w for w, _ in containerfile].index("FROM", 1)]
    copied = " ".join(args for word, args in build if word == "COPY").split()
    assert "setup.py" in copied and "pyproject.toml" in copied
    assert any(word == "RUN" and "apt-get install" in args and " gcc " in f"{args} " for word, args in build)


def test_containerfile_runs_the_sidecar_as_a_non_root_user(containerfile):
    users = [args for word, args in containerfile if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("ENTRYPOINT", '["sidecar"]') in containerfile
    assert ("CMD", '["consumer", "--config", "/etc/dubbomesh/consumer.toml"]') in containerfile
    exposed = " ".join(args for word, args in containerfile if word == "EXPOSE").split()
    assert sorted(exposed) == ["20000/tcp", "30000/udp"]


# --- pod.yaml -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests():
    yaml = pytest.importorskip("yaml")
    docs = [d for d in yaml.safe_load_all((CONTAINER / "pod.yaml").read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def pod_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def containers(doc: dict) -> dict:
    return {c["name"]: c for c in pod_spec(doc)["containers"]}


def config_file(manifests, doc: dict, tmp_path: Path, key: str) -> Path:
    """The ConfigMap file the sidecar container of ``doc`` reads, written to ``tmp_path``."""
    sidecar = containers(doc)["sidecar"]
    assert {"name": "config", "mountPath": "/etc/dubbomesh", "readOnly": True} in sidecar["volumeMounts"]
    (volume,) = [v for v in pod_spec(doc)["volumes"] if v["name"] == "config"]
    data = manifests["ConfigMap", volume["configMap"]["name"]]["data"]
    path = tmp_path / key
    path.write_text(data[key])
    return path


def test_consumer_sidecar_beside_the_application(manifests, tmp_path):
    pod = manifests["Pod", "hello-app"]
    sidecar = containers(pod)["sidecar"]
    assert sidecar["image"].startswith("dubbomesh:")
    assert "args" not in sidecar and "command" not in sidecar  # the image's CMD: consumer --config ...
    assert sidecar["ports"] == [{"name": "admin", "containerPort": 9000, "protocol": "TCP"}]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    app_env = {e["name"]: e["value"] for e in containers(pod)["app"]["env"]}
    assert "http://127.0.0.1:20000/" in app_env.values()

    settings = config.consumer_config(config_file(manifests, pod, tmp_path, "consumer.toml"))
    assert settings.listen == ("127.0.0.1", 20000)  # only the application in the pod calls it
    assert settings.admin == "0.0.0.0:9000"  # the kubelet probes the pod IP
    assert settings.tunnel_bind[0] == "0.0.0.0"  # the providers are on other pods
    assert [(p.host, p.port) for p in settings.providers] == [
        (f"hello-service-{i}.hello-service", 30000) for i in range(2)
    ]


def test_provider_sidecar_beside_the_dubbo_service(manifests, tmp_path):
    service = manifests["StatefulSet", "hello-service"]
    assert manifests["Service", "hello-service"]["spec"]["clusterIP"] == "None"
    assert manifests["Service", "hello-service"]["spec"]["ports"][0]["protocol"] == "UDP"
    assert service["spec"]["serviceName"] == "hello-service"
    sidecar = containers(service)["sidecar"]
    assert sidecar["args"] == ["provider", "--config", "/etc/dubbomesh/provider.toml"]
    assert sidecar["ports"] == [
        {"name": "tunnel", "containerPort": 30000, "protocol": "UDP"},
        {"name": "admin", "containerPort": 9000, "protocol": "TCP"},
    ]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert "dubbo" in containers(service)

    settings = config.provider_config(config_file(manifests, service, tmp_path, "provider.toml"))
    assert settings.listen == ("0.0.0.0", 30000) and settings.allow_remote
    assert settings.dubbo == ("127.0.0.1", 20880)
    assert settings.admin == "0.0.0.0:9000"


def test_both_sidecars_take_the_tunnel_key_from_one_secret(manifests):
    """Consumers and providers on different pods: without a shared key the provider accepts loopback only."""
    for doc in (manifests["Pod", "hello-app"], manifests["StatefulSet", "hello-service"]):
        env = {e["name"]: e for e in containers(doc)["sidecar"]["env"]}
        ref = env["SIDECAR_TUNNEL_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "dubbomesh-tunnel-key", "key": "key"}
