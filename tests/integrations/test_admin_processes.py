"""The admin endpoint of real sidecar processes: a demo Dubbo service, a provider sidecar and a
consumer sidecar (one process, or a supervisor with two workers whose stats it adds up), each started
with ``--admin 127.0.0.1:0``, asked over HTTP, and ``sidecar stats`` printing their tables."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.runtime.registry import parse_address
from sidecar.tools import demo, topology
from tests.support.dubbo_peer import ROOT, WAIT


class Sidecar:
    """``python -m sidecar ARGS`` with an admin port: waits for ``listening`` and ``admin`` lines."""

    def __init__(self, *args: str):
        env = {**os.environ, "SIDECAR_LOG_LEVEL": "warning"}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "sidecar", *args], cwd=ROOT, stdout=subprocess.PIPE, env=env
        )
        lines = self._lines(2)
        assert lines[0].startswith("listening ") and lines[1].startswith("admin "), lines
        self.address = parse_address(lines[0].split()[1])
        self.admin = "http://{}:{}".format(*parse_address(lines[1].split()[1]))

    def _lines(self, count: int) -> list[str]:
        data, end = b"", time.monotonic() + WAIT
        while data.count(b"\n") < count and time.monotonic() < end:
            readable, _, _ = select.select([self.popen.stdout], [], [], 0.2)
            if readable:
                chunk = os.read(self.popen.stdout.fileno(), 4096)
                if not chunk:
                    break
                data += chunk
        return data.decode().splitlines()

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.admin + path, timeout=WAIT) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_healthy(self) -> None:
        end = time.monotonic() + WAIT
        while self.get("/healthz") != (200, "ok\n"):
            assert time.monotonic() < end, self.get("/healthz")
            time.sleep(0.05)

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(WAIT)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()
            self.popen.stdout.close()


def stats_command(url: str) -> str:
    process = subprocess.run(
        [sys.executable, "-m", "sidecar", "stats", url], cwd=ROOT, capture_output=True, text=True, timeout=WAIT
    )
    assert process.returncode == 0, process.stderr
    return process.stdout


@pytest.fixture(scope="module")
def provider():
    service = topology.Process(
        "service",
        [sys.executable, "-m", "integrations.demo.demo_provider", "--port", "0", "--host", "127.0.0.1",
         "--latency-ms", "5", "--capacity", "64"],
    )  # fmt: skip
    sidecar = None
    try:
        host, port = service.address
        sidecar = Sidecar("provider", "--listen", "127.0.0.1:0", "--dubbo", f"{host}:{port}", "--admin", "127.0.0.1:0")
        sidecar.wait_healthy()
        yield sidecar
        assert sidecar.stop() == 0
    finally:
        if sidecar is not None:
            sidecar.stop()
        service.stop()


def test_many_concurrent_calls_through_a_batch_provider_all_get_their_own_answers(provider):
    key = "{}:{}".format(*provider.address)
    consumer = Sidecar(
        "consumer", "--listen", "127.0.0.1:0", "--provider", f"{key}=64/64+batch", "--admin", "127.0.0.1:0",
        "--no-access-log",
    )  # fmt: skip
    try:
        _, before = provider.get("/stats")
        result = demo.drive(consumer.address, 96, 1.5, seed=7)  # every answer checked against String.hashCode
        assert result.answered > 0 and result.errors == 0 and result.mismatches == 0, result.statuses
        stats = json.loads(consumer.get("/stats")[1])
        assert stats["calls"]["answered"] == result.answered and stats["providers"][key]["in_flight"] == 0
        tunnel = stats["tunnel"]
        assert tunnel["request_batches"] > 0 and tunnel["batched_calls"] >= 2 * tunnel["request_batches"]
        assert tunnel["datagrams_out"] < result.answered  # fewer datagrams than calls
        served = json.loads(provider.get("/stats")[1])
        assert served["request_batches"] - json.loads(before)["request_batches"] == tunnel["request_batches"]
        assert served["dropped"] == {}
        status, text = consumer.get("/metrics")
        assert f"dubbomesh_consumer_tunnel_request_batches_total {tunnel['request_batches']}" in text
    finally:
        assert consumer.stop() == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_consumer_admin_adds_up_its_workers(provider, workers):
    key = "{}:{}".format(*provider.address)
    consumer = Sidecar(
        "consumer", "--listen", "127.0.0.1:0", "--provider", f"{key}=64/64", "--workers", str(workers),
        "--admin", "127.0.0.1:0", "--no-access-log",
    )  # fmt: skip
    try:
        assert consumer.get("/healthz") == (200, "ok\n")  # every worker is ready once it announced
        result = demo.drive(consumer.address, 8, 1.0, seed=workers)
        assert result.answered > 0 and result.errors == 0, result.statuses
        sent = sum(result.statuses.values())

        status, body = consumer.get("/stats")
        stats = json.loads(body)
        assert status == 200 and stats["workers"] == workers
        assert stats["http"]["requests"] == sent  # the calls of every worker, added up
        assert stats["calls"]["answered"] == result.answered
        row = stats["providers"][key]
        assert row["answered"] == result.answered and row["in_flight"] == 0
        assert row["latency_ms"]["count"] == result.answered
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
        assert stats["tunnel"]["datagrams_out"] == result.answered

        status, text = consumer.get("/metrics")
        found = {family.name: family for family in text_string_to_metric_families(text)}
        assert found["dubbomesh_consumer_workers"].samples[0].value == workers
        assert found["dubbomesh_consumer_http_requests"].samples[0].value == sent
        (count,) = [
            s for s in found["dubbomesh_consumer_provider_latency_seconds"].samples if s.name.endswith("_count")
        ]
        assert count.labels == {"provider": key} and count.value == result.answered

        table = stats_command(consumer.admin)
        assert f"consumer: {workers} worker" in table
        header, row_line = [line for line in table.splitlines() if "p50 ms" in line or line.startswith(key)]
        assert header.split()[0] == "provider" and str(result.answered) in row_line.split()
        assert "datagrams in" in table and "requests" in table
    finally:
        assert consumer.stop() == 0


def test_provider_admin_and_stats_command(provider):
    status, body = provider.get("/stats")
    stats = json.loads(body)
    assert status == 200 and stats["role"] == "provider" and stats["pool"]["connections"] >= 1
    status, text = provider.get("/metrics")
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"dubbomesh_provider_calls_forwarded", "dubbomesh_provider_in_flight"} <= names
    table = stats_command(provider.admin.removeprefix("http://"))  # the scheme may be left out
    assert table.startswith("provider 127.0.0.1:") and "upstream" in table and "dropped" in table


def test_stats_command_names_a_port_that_does_not_answer():
    process = subprocess.run(
        [sys.executable, "-m", "sidecar", "stats", "http://127.0.0.1:9"], cwd=ROOT, capture_output=True, text=True
    )
    assert process.returncode == 1 and "cannot fetch http://127.0.0.1:9/stats" in process.stderr
