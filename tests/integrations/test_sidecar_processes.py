"""The whole data path as real processes on 127.0.0.1 with free ports: demo Dubbo services, provider
sidecars and a consumer sidecar started by ``sidecar.tools.topology`` (the code ``sidecar demo`` uses) and by
the ``sidecar`` command itself, stopped by PID."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from sidecar.tools import demo, topology
from sidecar.tools.wrk_run import find_wrk
from tests.support.dubbo_peer import ROOT, WAIT
from tests.support.waiting import wait_until

SMALL = topology.Scenario("test", (4, 8, 12), 20.0, (16,))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1].split()[0] != "Z"


def test_calls_flow_through_every_hop_and_share_by_capacity():
    with topology.Topology.start(SMALL, provider_header=True) as topo:
        result = demo.drive(topo.consumer_address, 24, 1.5, seed=1)
        names = topo.provider_names()
        pids = topo.pids()
    assert result.answered > 0
    assert result.errors == 0, result.statuses
    assert result.mismatches == 0
    assert set(result.providers) == set(names)  # every provider served calls
    # 24 connections fill the 4 + 8 + 12 slots: the shares follow the capacities
    by_name = {names[key]: count for key, count in result.providers.items()}
    assert by_name["small"] < by_name["medium"] < by_name["large"]
    for pid in sum(pids.values(), []):
        assert not _alive(pid)


def test_capacity_bound_overload_waits_instead_of_failing():
    # 48 connections against 24 slots: half the calls wait in the consumer's queue, none fails
    with topology.Topology.start(SMALL) as topo:
        result = demo.drive(topo.consumer_address, 48, 1.5, seed=2)
    assert result.answered > 0 and result.errors == 0, result.statuses


def test_workers_share_the_port():
    with topology.Topology.start(SMALL, consumer_workers=2) as topo:
        consumer = topo.pids()["consumer"]
        assert len(consumer) == 3  # the supervisor and two workers
        result = demo.drive(topo.consumer_address, 16, 1.0, seed=3)
        worker = consumer[1]
        os.kill(worker, signal.SIGKILL)  # the supervisor starts another
        wait_until(
            lambda: len(topo.pids()["consumer"]) >= 3 and worker not in topo.pids()["consumer"],
            "the supervisor to replace the worker",
        )
        assert len(topo.pids()["consumer"]) == 3
        again = demo.drive(topo.consumer_address, 8, 0.5, seed=4)
    assert result.errors == 0 and again.errors == 0


def _sidecar(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_demo_hold_prints_the_topology_and_stops_on_sigint():
    process = _sidecar("demo", "--hold")
    try:
        line = process.stdout.readline()
        described = json.loads(line)
        assert described["consumer"].startswith("http://127.0.0.1:")
        assert described["latency_ms"] == 50
        pids = described["pids"]
        assert len(pids["provider_sidecars"]) == 3 and len(pids["services"]) == 3 and pids["consumer"]
        for pid in sum(pids.values(), []):
            assert _alive(pid)
        process.send_signal(signal.SIGINT)
        assert process.wait(WAIT) == 0
        for pid in sum(pids.values(), []):
            assert not _alive(pid)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_demo_command_reports_qps_latency_and_shares():
    process = _sidecar("demo", "--duration", "1", "--connections", "32")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "QPS" in out and "p99" in out and "errors           0" in out
    assert out.count("127.0.0.1:") >= 3  # the share of each provider
    lines = out.splitlines()
    generator = "wrk" if find_wrk() else "python -m sidecar.tools.demo"
    assert lines[1].startswith("calls answered") and lines[1].endswith(f"over 32 connections (load: {generator})")
    cpu = lines[lines.index("CPU us per call  (each process's CPU time over the calls answered)") + 1 :]
    assert [re.sub(r"\s*\d+", " N", line) for line in cpu] == [
        "  consumer sidecar N  (main N)",
        "  provider sidecars N  (small N  medium N  large N)",
        "  services N  (small N  medium N  large N)",
    ]


def test_consumer_without_providers_is_a_usage_error():
    process = _sidecar("consumer", "--listen", "127.0.0.1:0")
    out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 2 and "no providers" in err


@pytest.mark.parametrize("flag", ["--provider=nowhere", "--listen=1.2.3.4"])
def test_bad_flags_are_named(flag):
    process = _sidecar("consumer", flag)
    out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 2 and "HOST:PORT" in err


def _http_status(address: str, text: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}/", demo.form_body(text), timeout=WAIT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_tunnel_key_files_authenticate_real_processes(tmp_path):
    from tests.support.dubbo_peer import Process, java_hash, start_provider

    key = tmp_path / "tunnel.key"
    key.write_text(os.urandom(32).hex() + "\n")
    key.chmod(0o600)
    service, port = start_provider()
    started = [service]
    try:
        provider = Process([sys.executable, "-m", "sidecar", "provider", "--listen", "127.0.0.1:0",
                            "--dubbo", f"127.0.0.1:{port}", "--tunnel-key-file", str(key)])  # fmt: skip
        started.append(provider)
        tunnel_address = provider.wait_for_line(r"^listening (\S+)$").group(1)
        addresses = []
        for keyed in (True, False):
            args = ["consumer", "--listen", "127.0.0.1:0", "--provider", f"{tunnel_address}=100", "--call-timeout", "1"]
            consumer = Process([sys.executable, "-m", "sidecar", *args, *(["--tunnel-key-file", str(key)] * keyed)])
            started.append(consumer)
            addresses.append(consumer.wait_for_line(r"^listening (\S+)$").group(1))
        keyed_address, plain_address = addresses
        assert _http_status(keyed_address, "hello") == (200, str(java_hash("hello")))
        assert _http_status(plain_address, "hello")[0] == 504  # dropped at the provider: no tag
        assert _http_status(keyed_address, "again ✓") == (200, str(java_hash("again ✓")))
    finally:
        codes = [process.stop() for process in reversed(started)]
    assert codes == [0, 0, 0, 0], [process.stderr for process in started]
    assert any("accepting tagged tunnel datagrams from any source" in line for line in provider.stderr)
