"""``sidecar bench`` end to end, short: the real topology and nginx under real wrk, every answer checked.
Figures are printed, never asserted (a benchmark, not a test); what is asserted is that both targets
ran, every answer was the right hash, and the capacity-bound overload queued instead of failing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sidecar.tools.nginx_baseline import find_nginx
from sidecar.tools.wrk_run import find_wrk
from tests.support.dubbo_peer import ROOT

pytestmark = pytest.mark.skipif(
    find_wrk() is None or find_nginx() is None, reason="wrk and nginx are needed (.ci/run installs them)"
)


def test_bench_measures_sidecar_and_nginx_with_checked_answers():
    command = [sys.executable, "-m", "sidecar", "bench", "--scenario", "capacity-bound", "--duration", "1",
               "--connections", "480", "--json"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    codecs, *levels = [json.loads(line) for line in done.stdout.splitlines()]
    assert codecs["target"] == "codecs" and codecs["build"].startswith(("compiled", "pure Python"))  # either build
    assert set(codecs["cpu_us_per_call"]["ratio"]) == {"request", "provider", "reply", "service"}
    goals = [level for level in levels if level["target"] == "goal"]
    levels = [level for level in levels if level["target"] != "goal"]
    assert [(g["connections"], g["what"]) for g in goals] == [(480, "errors"), (480, "QPS / ideal (capacity / L)")]
    assert [level["target"] for level in levels] == ["sidecar", "nginx"]
    sidecar, nginx = levels
    for level in levels:
        assert level["requests"] > 0 and level["mismatches"] == 0
        assert level["wrk"]["checked"]
    # 480 connections on 384 slots: the sidecar's wait queue absorbs the overload
    assert sidecar["errors"] == 0 and sidecar["request_batch"] is True and "request_batch" not in nginx
    assert set(sidecar["cpu_us_per_call"]) == {"consumer", "provider_sidecars", "services"}
    assert set(nginx["cpu_us_per_call"]) == {"nginx", "services"}


def test_bench_table_has_ratios():
    command = [sys.executable, "-m", "sidecar", "bench", "--scenario", "latency-bound", "--duration", "1",
               "--connections", "32"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("core: ") and lines[3].startswith("codec CPU per call, compiled / pure: request ")
    assert any(
        line.startswith("latency-bound: capacities 200/400/600")
        and line.endswith("several calls per datagram toward each provider")
        for line in lines
    )
    assert any(line.startswith("sidecar") for line in lines) and any(line.startswith("nginx") for line in lines)
    assert any(line.split()[:3] == ["ratio", "32", "QPS"] for line in lines)
    assert "targets:" in lines


def test_bench_measures_both_builds_of_the_sidecars_side_by_side():
    command = [sys.executable, "-m", "sidecar", "bench", "--scenario", "latency-bound", "--duration", "1",
               "--connections", "32", "--build", "compiled", "--build", "pure", "--json"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if "the compiled codecs are not built" in done.stderr:
        pytest.skip("installed without the compiled twins")
    assert done.returncode == 0, done.stderr
    levels = [json.loads(line) for line in done.stdout.splitlines()][1:]
    sidecars = [level for level in levels if level["target"] == "sidecar"]
    assert [level["build"] for level in sidecars] == ["compiled", "pure"]
    for level in sidecars:
        assert level["requests"] > 0 and level["mismatches"] == 0 and level["errors"] == 0
    goals = {(g["build"], g["what"]) for g in levels if g["target"] == "goal"}
    assert ("pure", "consumer CPU / nginx hop") in goals and ("compiled", "p99 / nginx p99") in goals


def test_soak_reports_rss_and_fds_of_every_process():
    command = [sys.executable, "-m", "sidecar", "bench", "--soak", "0.25", "--connections", "32", "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "soak" and set(kinds[1:-1]) == {"sample"}
    report = events[-1]
    roles = ("provider sidecar", "service")
    names = {"consumer"} | {f"{size} {role}" for size in ("small", "medium", "large") for role in roles}
    assert set(report["processes"]) == names == set(events[0]["pids"])
    for process in report["processes"].values():
        for key in ("rss_start", "rss_end", "fds_start", "fds_end"):
            assert process[key] > 0, (key, process)
        assert process["verdict"] != "gone"
    totals = report["totals"]
    assert totals["requests"] > 0 and totals["mismatches"] == 0 and totals["checked"]
    assert len(report["samples"]) == len(events) - 1  # the start and one per wrk run
