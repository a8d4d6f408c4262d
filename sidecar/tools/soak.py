"""``sidecar bench --soak MINUTES``: the sidecar topology under steady wrk load for minutes, watching
every process for leaks.

One scenario (:data:`sidecar.tools.topology.SCENARIOS`) at one connection level: a warm-up run (a tenth of
the soak, 2 to 30 s, not counted), then wrk runs of ``SLICE`` seconds back to back until the soak's
length is reached, with :file:`bench_wrk.lua` checking every answer against ``String.hashCode``.

Before the first run and after each one (``SETTLE`` seconds after wrk exits, so the processes have
seen its connections close) every process is sampled from ``/proc``: resident memory, open file
descriptors and CPU seconds. The processes are the consumer sidecar (``consumer``, or ``consumer
supervisor`` and ``consumer worker N`` with ``--workers``), each provider sidecar and each demo
service. The first sample is the start, the last the end.

**Growth beyond noise.** A process's RSS grew when the end exceeds the start by more than
``RSS_NOISE_MIB`` *and* by more than ``RSS_NOISE_PCT`` % of the start: allocators and Python's
free lists move a few MiB either way after warm-up, and a leak of even 100 bytes per call passes both
within minutes (2,500 calls/s for 10 minutes is 150 MB). Its descriptors grew when the end count is
above the start: both are taken with no load, so a steady process has the same count. Each process gets
a verdict line (``steady``, ``grew: ...`` or ``gone``); the verdict informs and never fails the command.
The samples in between show the trend.

Also reported: QPS of right answers, errors and mismatches over the whole soak, and the load average
(the machine may be shared). Lines come from :func:`run`; ``as_json`` gives one JSON object per line
(``"kind"``: ``start``, ``sample`` after each run, then ``soak`` with the whole report).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator

from sidecar.tools import topology
from sidecar.tools.bench import WRK_THREADS, WRK_TIMEOUT, BenchError
from sidecar.tools.procstat import cpu_seconds, open_fds, rss_bytes
from sidecar.tools.wrk import SOCKET_ERRORS, WrkResult
from sidecar.tools.wrk_run import find_wrk, run_wrk

__all__ = ["RSS_NOISE_MIB", "RSS_NOISE_PCT", "SLICE", "run", "soak", "verdict"]

SLICE = 60.0  # seconds of one wrk run; a sample follows each
SETTLE = 1.0  # seconds between wrk's exit and a sample
WARMUP_SHARE, WARMUP_MIN, WARMUP_MAX = 0.1, 2.0, 30.0
RSS_NOISE_MIB = 8.0
RSS_NOISE_PCT = 10.0
TREND_POINTS = 13  # samples shown per process in the text report (the JSON has all)
MIB = 1024 * 1024


def processes(topo: topology.Topology) -> dict[str, int]:
    """Every process of the topology by a readable name -> pid."""
    roles = topo.pids()
    named: dict[str, int] = {}
    consumer = roles["consumer"]
    if len(consumer) == 1:
        named["consumer"] = consumer[0]
    elif consumer:
        named["consumer supervisor"] = consumer[0]
        for i, pid in enumerate(consumer[1:], 1):
            named[f"consumer worker {i}"] = pid
    for name, pid in zip(topology.SERVICE_NAMES, roles["provider_sidecars"], strict=False):
        named[f"{name} provider sidecar"] = pid
    for name, pid in zip(topology.SERVICE_NAMES, roles["services"], strict=False):
        named[f"{name} service"] = pid
    return named


def _read(fn, pid: int):
    try:
        return fn(pid)
    except ProcessLookupError:
        return None


def sample(named: dict[str, int]) -> dict[str, dict]:
    """RSS bytes, open fds and CPU seconds of each process (None for one that is gone)."""
    return {
        name: {"rss_bytes": _read(rss_bytes, pid), "fds": _read(open_fds, pid), "cpu_s": _read(cpu_seconds, pid)}
        for name, pid in named.items()
    }


def verdict(start: dict, end: dict) -> str:
    """``steady``, ``gone``, or ``grew: ...`` naming what grew beyond noise (see the module's doc)."""
    if None in (start["rss_bytes"], start["fds"], end["rss_bytes"], end["fds"]):
        return "gone"
    grown = []
    rss = end["rss_bytes"] - start["rss_bytes"]
    if rss > RSS_NOISE_MIB * MIB and rss > start["rss_bytes"] * RSS_NOISE_PCT / 100:
        grown.append(f"RSS {_mib_pct(rss, start['rss_bytes'])}")
    if end["fds"] > start["fds"]:
        grown.append(f"fds +{end['fds'] - start['fds']}")
    return "grew: " + ", ".join(grown) if grown else "steady"


def _mib_pct(growth: int, start: int) -> str:
    pct = growth / start * 100 if start else float("nan")
    return f"{growth / MIB:+.1f} MiB {pct:+.1f}%"


def _slice_dict(result: WrkResult) -> dict:
    return {
        "requests": result.requests,
        "duration_s": result.duration_s,
        "qps": result.ok_qps,
        "errors": result.errors,
        "mismatches": result.mismatches,
        "non_2xx": result.non_2xx,
        "socket_errors": dict(result.socket_errors),
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "checked": result.checked,
    }


def _totals(slices: list[WrkResult]) -> dict:
    duration = sum(r.duration_s for r in slices)
    ok = sum(r.requests - r.non_2xx - r.mismatches for r in slices)
    sockets = {kind: sum(r.socket_errors.get(kind, 0) for r in slices) for kind in SOCKET_ERRORS}
    p99s = [r.p99_ms for r in slices if r.p99_ms is not None]
    return {
        "requests": sum(r.requests for r in slices),
        "duration_s": duration,
        "qps": ok / duration if duration else 0.0,
        "errors": sum(r.errors for r in slices),
        "mismatches": sum(r.mismatches for r in slices),
        "non_2xx": sum(r.non_2xx for r in slices),
        "socket_errors": sockets,
        "p99_ms_worst": max(p99s) if p99s else None,
        "checked": all(r.checked for r in slices),
    }


def soak(scenario: topology.Scenario, minutes: float, connections: int, *, workers: int = 1) -> Iterator[dict]:
    """Start the topology, soak it, and yield the ``start`` event, a ``sample`` after each wrk run,
    then the ``soak`` report (the events :func:`run` prints)."""
    total = minutes * 60.0
    warmup = min(max(total * WARMUP_SHARE, WARMUP_MIN), WARMUP_MAX)
    with topology.Topology.start(scenario, consumer_workers=workers) as topo:
        url = topo.consumer_url
        run_wrk(url, connections, warmup, WRK_THREADS, timeout_s=WRK_TIMEOUT)
        time.sleep(SETTLE)
        named = processes(topo)
        began = time.monotonic()
        samples = [{"elapsed_s": 0.0, "load_average": list(os.getloadavg()), "processes": sample(named)}]
        yield {
            "kind": "start",
            "scenario": scenario.name,
            "connections": connections,
            "minutes": minutes,
            "warmup_s": warmup,
            "slice_s": SLICE,
            "pids": named,
            **samples[0],
        }
        slices: list[WrkResult] = []
        left = total
        while left > 0:
            length = math.ceil(min(SLICE, left))  # wrk takes whole seconds
            result, _ = run_wrk(url, connections, length, WRK_THREADS, timeout_s=WRK_TIMEOUT)
            slices.append(result)
            left -= length
            time.sleep(SETTLE)
            point = {
                "elapsed_s": time.monotonic() - began,
                "load_average": list(os.getloadavg()),
                "processes": sample(named),
            }
            samples.append(point)
            yield {"kind": "sample", "wrk": _slice_dict(result), **point}
        now = processes(topo)
    first, last = samples[0]["processes"], samples[-1]["processes"]
    report = {}
    for name, pid in named.items():
        start, end = first[name], last[name]
        report[name] = {
            "pid": pid,
            "rss_start": start["rss_bytes"],
            "rss_end": end["rss_bytes"],
            "fds_start": start["fds"],
            "fds_end": end["fds"],
            "verdict": verdict(start, end),
        }
    yield {
        "kind": "soak",
        "scenario": scenario.name,
        "connections": connections,
        "minutes": minutes,
        "warmup_s": warmup,
        "totals": _totals(slices),
        "processes": report,
        "new_processes": {name: pid for name, pid in now.items() if named.get(name) != pid},
        "noise": {"rss_mib": RSS_NOISE_MIB, "rss_pct": RSS_NOISE_PCT, "fds": 0},
        "load_average_start": samples[0]["load_average"],
        "load_average_end": samples[-1]["load_average"],
        "samples": samples,
    }


def run(
    scenario: str = "latency-bound",
    minutes: float = 10.0,
    *,
    connections: int | None = None,
    workers: int = 1,
    as_json: bool = False,
) -> Iterator[str]:
    """Soak and yield the lines to print: progress, then the report (or the events as JSON lines)."""
    if find_wrk() is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    chosen = topology.SCENARIOS[scenario]
    conns = connections or chosen.connections[0]
    for event in soak(chosen, minutes, conns, workers=workers):
        if as_json:
            yield json.dumps(event)
        elif event["kind"] == "start":
            yield from _start_lines(event)
        elif event["kind"] == "sample":
            yield _sample_line(event)
        else:
            yield from _report_lines(event)


def _load(values) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _start_lines(event: dict) -> Iterator[str]:
    yield (
        f"soak: {event['scenario']}, {event['connections']} connections, {event['minutes']:g} min of load in wrk "
        f"runs of up to {event['slice_s']:g} s after a {event['warmup_s']:g} s warm-up; "
        f"{len(event['pids'])} processes; load average {_load(event['load_average'])}"
    )
    yield f"{'time':>6} {'requests':>9} {'QPS':>8} {'errors':>6} {'mismatches':>10} {'p99 ms':>7}  load average"


def _sample_line(event: dict) -> str:
    w = event["wrk"]
    p99 = f"{w['p99_ms']:.1f}" if w["p99_ms"] is not None else "-"
    return (
        f"{_clock(event['elapsed_s']):>6} {w['requests']:>9} {w['qps']:>8.0f} {w['errors']:>6} {w['mismatches']:>10} "
        f"{p99:>7}  {_load(event['load_average'])}"
    )


def _report_lines(report: dict) -> Iterator[str]:
    t = report["totals"]
    sockets = sum(t["socket_errors"].values())
    p99 = f"{t['p99_ms_worst']:.1f} ms" if t["p99_ms_worst"] is not None else "-"
    yield (
        f"whole soak: {t['requests']} requests in {t['duration_s']:.0f} s, QPS {t['qps']:.0f}, errors {t['errors']} "
        f"(socket {sockets}, non-2xx {t['non_2xx']}), mismatches {t['mismatches']}, worst p99 {p99}"
    )
    width = max(len(name) for name in report["processes"])
    yield (
        f"{'process':<{width}} {'pid':>7} {'RSS start':>10} {'end':>10} {'growth':>18} {'fds start':>9} {'end':>5}"
        "  verdict"
    )
    for name, p in report["processes"].items():
        rss = [f"{v / MIB:.1f} MiB" if v is not None else "-" for v in (p["rss_start"], p["rss_end"])]
        growth = (
            _mib_pct(p["rss_end"] - p["rss_start"], p["rss_start"])
            if None not in (p["rss_start"], p["rss_end"])
            else "-"
        )
        fds = [str(v) if v is not None else "-" for v in (p["fds_start"], p["fds_end"])]
        yield (
            f"{name:<{width}} {p['pid']:>7} {rss[0]:>10} {rss[1]:>10} {growth:>18} {fds[0]:>9} {fds[1]:>5}"
            f"  {p['verdict']}"
        )
    samples = _spread(report["samples"], TREND_POINTS)
    times = " ".join(f"{_clock(s['elapsed_s']):>6}" for s in samples)
    which = "each sample" if len(samples) == len(report["samples"]) else f"{len(samples)} of the samples"
    for title, key, unit in (("RSS MiB", "rss_bytes", MIB), ("open fds", "fds", 1)):
        yield f"{title} at {which}:"
        yield f"{'':<{width}} {times}"
        for name in report["processes"]:
            yield f"{name:<{width}} " + " ".join(_cell(s["processes"][name][key], unit) for s in samples)
    if report["new_processes"]:
        yield f"processes replaced during the soak: {report['new_processes']}"
    noise = report["noise"]
    yield (
        f"growth beyond noise: RSS up more than {noise['rss_mib']:g} MiB and more than {noise['rss_pct']:g}% of the "
        f"start, or more open fds (both sampled with no load); verdicts never fail the command"
    )
    yield f"load average at the end: {_load(report['load_average_end'])}"


def _cell(value, unit: int) -> str:
    if value is None:
        return f"{'-':>6}"
    return f"{value / unit:>6.1f}" if unit > 1 else f"{value:>6}"


def _spread(items: list, count: int) -> list:
    """At most ``count`` of ``items``, evenly spaced, first and last included."""
    if len(items) <= count:
        return items
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]
