"""``sidecar demo``'s load and report: the load from a process of its own (wrk, or ``python -m
sidecar.tools.demo``) against a real HTTP backend, and the report's lines, exact."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sidecar.tools import demo
from sidecar.tools.demo import LoadError, LoadResult, report, run_load
from sidecar.tools.topology import SCENARIOS
from sidecar.tools.wrk import parse_wrk_output
from sidecar.tools.wrk_run import find_wrk
from tests.support.ports import free_port

RESULT = LoadResult(
    generator="wrk",
    connections=128,
    duration=5.0,
    statuses={200: 12000, 503: 3},
    providers={"127.0.0.1:30001": 2000, "127.0.0.1:30002": 4000, "127.0.0.1:30003": 6000},
    mismatches=0,
    socket_errors=1,
    p50_ms=51.25,
    p90_ms=52.5,
    p99_ms=60.0,
    max_ms=75.5,
)
NAMES = {"127.0.0.1:30001": "small", "127.0.0.1:30002": "medium", "127.0.0.1:30003": "large"}


def test_report_lines():
    cpu = {"consumer": {10: 1.2}, "provider_sidecars": {11: 0.3, 12: 0.36, 13: 0.42}, "services": {14: 0.12}}
    labels = {10: "main", 11: "small", 12: "medium", 13: "large", 14: "small"}
    lines = report(RESULT, SCENARIOS["latency-bound"], 128, NAMES, cpu, labels).splitlines()
    assert lines == [
        "calls answered   12000 in 5.0 s over 128 connections (load: wrk)",
        "QPS              2,400  (0.94 of the ideal 2,560 = C / L)",
        "latency ms       p50 51.2  p90 52.5  p99 60.0  max 75.5",
        "errors           4  (HTTP 503: 3, socket: 1)",
        "provider share   (weights 200/400/600)",
        "  127.0.0.1:30001        small       2000   16.7%",
        "  127.0.0.1:30002        medium      4000   33.3%",
        "  127.0.0.1:30003        large       6000   50.0%",
        "CPU us per call  (each process's CPU time over the calls answered)",
        "  consumer sidecar      100  (main 100)",
        "  provider sidecars      90  (small 25  medium 30  large 35)",
        "  services               10  (small 10)",
    ]


def test_report_without_latencies_or_cpu():
    quiet = LoadResult("python", 4, 1.0, {}, {}, 0, 0, None, None, None, None)
    lines = report(quiet, SCENARIOS["latency-bound"], 4, {}).splitlines()
    assert lines[0] == "calls answered   0 in 1.0 s over 4 connections (load: python -m sidecar.tools.demo)"
    assert lines[2:] == ["latency ms       p50 -  p90 -  p99 -  max -", "errors           0"]


def test_a_load_result_survives_its_json_line():
    assert LoadResult.from_json(RESULT.to_json()) == RESULT


def test_a_load_result_from_wrk():
    text = """\
  2519 requests in 1.00s, 284.44KB read
Requests/sec:   2513.31
BENCH_WRK_RESULT {"requests":2519,"duration_us":1002263,"sent":2535,"responses":2519,"mismatches":0,"echoed":0,\
"outstanding":16,"statuses":{"200":2518,"503":1},"providers":{"127.0.0.1:1":2518},\
"socket_errors":{"connect":0,"read":2,"write":0,"timeout":1},\
"p50_us":6085,"p90_us":7466,"p99_us":9192,"mean_us":6302.4,"max_us":10369}
"""
    result = LoadResult.from_wrk(parse_wrk_output(text), 16)
    assert result == LoadResult(
        "wrk", 16, 1.002263, {200: 2518, 503: 1}, {"127.0.0.1:1": 2518}, 0, 3, 6.085, 7.466, 9.192, 10.369
    )
    assert (result.answered, result.errors) == (2518, 4)


@pytest.fixture(scope="module")
def backend():
    """A plain HTTP backend process (5 ms latency): it answers the demo's form call as the consumer does."""
    from tests.support.dubbo_peer import start_backend

    process, port = start_backend("--latency-ms", "5")
    yield ("127.0.0.1", port)
    assert process.stop() == 0


GENERATORS = [
    pytest.param(False, id="python"),
    pytest.param(True, id="wrk", marks=pytest.mark.skipif(find_wrk() is None, reason="wrk is not installed")),
]


@pytest.mark.parametrize("use_wrk", GENERATORS)
def test_the_load_runs_in_a_process_of_its_own_and_every_answer_checks_out(backend, use_wrk):
    ticks = []
    result = run_load(backend, 8, 1.0, use_wrk=use_wrk, on_tick=lambda: ticks.append(1))
    assert result.generator == ("wrk" if use_wrk else "python")
    assert result.answered > 100 and result.errors == 0, result
    assert result.providers == {}  # the backend names no provider
    assert result.p50_ms >= 5.0
    assert len(ticks) >= 5


def test_the_load_process_prints_one_json_line(backend):
    host, port = backend
    done = subprocess.run(
        [sys.executable, "-m", "sidecar.tools.demo", f"{host}:{port}", "2", "0.5", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = done.stdout.splitlines()
    result = LoadResult.from_json(line)
    assert (result.generator, result.connections, result.errors) == ("python", 2, 0)
    assert result.answered > 10


def test_a_failed_load_process_is_a_load_error():
    with pytest.raises(LoadError, match="exited with status 2"):
        run_load(("127.0.0.1", free_port()), 0, 1.0, use_wrk=False)


def test_the_load_process_refuses_bad_arguments(capsys):
    assert demo.main(["127.0.0.1:1", "0", "1"]) == 2
    assert "connections must be at least 1" in capsys.readouterr().err
