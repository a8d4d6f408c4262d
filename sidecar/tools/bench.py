"""``sidecar bench``: the data path under wrk, side by side with nginx proxying the same load.

For each scenario (:data:`sidecar.tools.topology.SCENARIOS`) and each connection level, in one run:

1. the sidecar topology (three demo Dubbo services, three provider sidecars, one consumer) under wrk
   with :file:`bench_wrk.lua`, the benchmark's form call with a parameter of 0 to 1023 random
   alphanumeric characters, every answer checked against ``String.hashCode``;
2. nginx with one worker in front of three plain HTTP backends (:mod:`integrations.demo.http_backend`) with
   the same latency, capacities and weights, under the same wrk load.

The topologies of a scenario are all started (each once, at its first level) and kept up until the
scenario ends, and are measured level by level in turns: the sidecars (once per build) at the first
level, then nginx at it, then each at the next level. The two figures a ratio compares are then taken
a few seconds apart rather than a few minutes, so that the drift of a shared machine weighs on both
alike; an idle topology costs the other next to nothing (its processes wait in ``epoll``). With
``rounds`` (``--rounds N``) each level is measured N times that way, every topology in turn each time;
each ratio is taken within a round, and the ratios and targets report the median of the rounds, with
each round's figure beside it. On a shared machine one level's figure can move by a fifth from one run
to the next; the median of paired rounds moves less, and the rounds show how far they spread.

Per level it reports QPS, QPS over the ideal (C / L, or capacity / L once C exceeds the capacity), p50
and p99 latency, errors (socket errors, non-2xx answers, wrong hashes), and CPU microseconds per call
of each role read from ``/proc`` around the wrk run: the consumer sidecar (its workers included), the
provider sidecars together, and the services; for nginx its worker and the backends. Then the
sidecar's figures as ratios to nginx's, measured in the same run because this machine is shared and
absolute figures drift: QPS, p99, and the CPU of the two sidecar hops against nginx's one hop.

With ``builds`` (``sidecar bench --build compiled --build pure``) the sidecar topology is measured once
per build of the codecs, every process of it started with ``DUBBOMESH_PURE_PYTHON`` set accordingly,
and the rows and ratios say which build they are; without, the sidecars run the build this process
runs. With ``request_batch`` False (``--no-request-batch``) the consumer sends one datagram per call
instead of a REQUEST_BATCH per provider per turn of its loop: the A/B of that batching. Each scenario
ends with the targets the sidecars are held to (:func:`targets`): per hop, the
consumer's CPU per call at most 2.0x nginx's and the provider's at most 1.5x; latency-bound at the
first level, QPS at least 0.95x nginx's and p99 at most 1.5x; capacity-bound, zero errors and at least
0.90 of the ideal QPS.

Each topology gets a short warm-up run (not reported, at most one level's duration) before its first
level. The run begins with the build of the codecs that the sidecars run and, from
:func:`sidecar.tools.bench_codec.paths`, the CPU per call of the codec work on the request and reply
paths in the compiled and the pure build.
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field

from sidecar._accel import COMPILED, PURE_PYTHON
from sidecar.tools import bench_codec, topology
from sidecar.tools.builds import load_build
from sidecar.tools.nginx_baseline import Nginx, find_nginx
from sidecar.tools.procstat import cpu_by_role
from sidecar.tools.wrk import WrkResult
from sidecar.tools.wrk_run import find_wrk, run_wrk

__all__ = ["BenchError", "Level", "BUILDS", "run", "measure_sidecar", "measure_nginx", "targets"]

WARMUP = 2.0  # seconds of load before a topology's first measured level (at most one level's duration)
WRK_THREADS = 2
WRK_TIMEOUT = 5.0  # seconds before wrk counts a request as timed out
BUILDS = {"compiled": "0", "pure": "1"}  # a build of the codecs -> the DUBBOMESH_PURE_PYTHON that picks it


class BenchError(RuntimeError):
    """The bench cannot run (wrk or nginx missing, a process that did not start)."""


@dataclass
class Level:
    """One target at one connection level."""

    target: str  # "sidecar" or "nginx"
    scenario: str
    connections: int
    ideal_qps: float
    wrk: WrkResult
    cpu: dict[str, float] = field(default_factory=dict)  # role -> CPU seconds during the run
    build: str = ""  # of the sidecars' codecs, when the bench picked one ("compiled" or "pure")
    round: int = 0  # which measurement of this level, with ``rounds`` > 1 (from 0)

    @property
    def label(self) -> str:
        return f"{self.target} {self.build}" if self.build else self.target

    @property
    def calls(self) -> int:
        return max(self.wrk.requests, 1)

    def cpu_us(self, role: str) -> float:
        """CPU microseconds per call of ``role``."""
        return self.cpu.get(role, 0.0) / self.calls * 1e6

    @property
    def proxy_cpu_us(self) -> float:
        """CPU per call of the proxy hops: consumer plus provider sidecars, or the nginx worker."""
        if self.target == "nginx":
            return self.cpu_us("nginx")
        return self.cpu_us("consumer") + self.cpu_us("provider_sidecars")

    def as_dict(self) -> dict:
        return {
            "target": self.target,
            **({"build": self.build} if self.build else {}),
            "scenario": self.scenario,
            "connections": self.connections,
            "round": self.round,
            "qps": self.wrk.ok_qps,
            "qps_over_ideal": self.wrk.ok_qps / self.ideal_qps,
            "p50_ms": self.wrk.p50_ms,
            "p99_ms": self.wrk.p99_ms,
            "errors": self.wrk.errors,
            "mismatches": self.wrk.mismatches,
            "requests": self.wrk.requests,
            "cpu_us_per_call": {role: self.cpu_us(role) for role in self.cpu},
            "wrk": asdict(self.wrk),
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wrk(url: str, connections: int, duration: float) -> WrkResult:
    result, _ = run_wrk(url, connections, duration, WRK_THREADS, timeout_s=WRK_TIMEOUT)
    return result


def _measure(url: str, roles: dict[str, list[int]], connections: int, duration: float) -> tuple[WrkResult, dict]:
    result, cpu = cpu_by_role(roles, lambda: _wrk(url, connections, duration))
    return result, {role: sum(used.values()) for role, used in cpu.items()}


def measure_sidecar(
    scenario: topology.Scenario,
    levels: tuple[int, ...],
    duration: float,
    *,
    workers: int = 1,
    build: str = "",
    request_batch: bool = True,
) -> Iterator[Level]:
    """Start the sidecar topology (its codecs in ``build``, a key of :data:`BUILDS`, or this process's
    build when empty; calls batched per provider unless ``request_batch`` is False) and measure it at
    each level."""
    env = {PURE_PYTHON: BUILDS[build]} if build else None
    with topology.Topology.start(scenario, consumer_workers=workers, env=env, request_batch=request_batch) as topo:
        _wrk(topo.consumer_url, levels[0], min(WARMUP, duration))
        for connections in levels:
            roles = topo.pids()
            result, cpu = _measure(topo.consumer_url, roles, connections, duration)
            ideal = scenario.ideal_qps(connections)
            yield Level("sidecar", scenario.name, connections, ideal, result, cpu, build)


def measure_nginx(scenario: topology.Scenario, levels: tuple[int, ...], duration: float) -> Iterator[Level]:
    """Start plain HTTP backends behind nginx (one worker) and measure it at each level."""
    python = sys.executable
    backends: list[topology.Process] = []
    try:
        for name, capacity in zip(topology.SERVICE_NAMES, scenario.capacities, strict=True):
            backends.append(
                topology.Process(
                    f"{name} HTTP backend",
                    [
                        python,
                        "-m",
                        "integrations.demo.http_backend",
                        "--port",
                        "0",
                        "--latency-ms",
                        f"{scenario.latency_ms:g}",
                        "--capacity",
                        str(capacity),
                    ],
                )  # fmt: skip
            )
        upstreams = [(*b.address, c) for b, c in zip(backends, scenario.capacities, strict=True)]
        with tempfile.TemporaryDirectory(prefix="sidecar-bench-nginx-") as workdir:
            port = _free_port()
            with Nginx(port, upstreams, workdir) as nginx:
                url = f"http://127.0.0.1:{port}/"
                roles = {"nginx": [nginx.worker_pid], "services": [b.pid for b in backends]}
                _wrk(url, levels[0], min(WARMUP, duration))
                for connections in levels:
                    result, cpu = _measure(url, roles, connections, duration)
                    yield Level("nginx", scenario.name, connections, scenario.ideal_qps(connections), result, cpu)
    finally:
        for backend in backends:
            backend.stop()


def run(
    scenarios,
    *,
    duration: float = 10.0,
    levels: tuple[int, ...] = (),
    workers: int = 1,
    nginx: bool = True,
    as_json: bool = False,
    builds: tuple[str, ...] = (),
    request_batch: bool = True,
    rounds: int = 1,
) -> Iterator[str]:
    """Run the bench and yield the lines to print: a table per scenario, or one JSON object per level
    and per target. ``builds``: measure the sidecars once per build of their codecs (keys of
    :data:`BUILDS`); empty, in the build this process runs. ``request_batch``: see the module docstring.
    ``rounds``: measure each level that many times, every topology in turn each time; a ratio or a
    target is then the median of its rounds, each round's sidecar figure over nginx's of that round."""
    if rounds < 1:
        raise BenchError(f"rounds is at least 1, not {rounds}")
    for build in builds:
        if build not in BUILDS:
            raise BenchError(f"unknown build {build!r}: the builds are {', '.join(BUILDS)}")
    if "compiled" in builds and load_build(False)[1] != {COMPILED}:
        raise BenchError("the compiled codecs are not built (a C compiler and Cython are needed at install)")
    if find_wrk() is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    if nginx and find_nginx() is None:
        raise BenchError("nginx is not installed (Debian: apt-get install nginx), or run with --no-nginx")
    yield from codec_lines(as_json)
    for name in scenarios:
        scenario = topology.SCENARIOS[name]
        chosen = tuple(levels) or scenario.connections
        schedule = tuple(connections for connections in chosen for _ in range(rounds))  # each level, rounds times
        if not as_json:
            caps = "/".join(str(c) for c in scenario.capacities)
            batching = "several calls per datagram" if request_batch else "one datagram per call"
            repeated = f", {rounds} rounds of each" if rounds > 1 else ""
            yield (
                f"{scenario.name}: capacities {caps}, latency {scenario.latency_ms:g} ms, {duration:g} s per level"
                f"{repeated}, {batching} toward each provider"
            )
            yield HEADER
        sidecar_levels: list[Level] = []
        nginx_levels: list[Level] = []
        with ExitStack() as stack:  # every topology stays up until the scenario ends, or fails
            turns = []
            for build in builds or ("",):
                measured = measure_sidecar(
                    scenario, schedule, duration, workers=workers, build=build, request_batch=request_batch
                )
                turns.append((stack.enter_context(closing(measured)), sidecar_levels))
            if nginx:
                turns.append((stack.enter_context(closing(measure_nginx(scenario, schedule, duration))), nginx_levels))
            for index in range(len(schedule)):  # one level of each topology in turn: a ratio compares neighbours
                for measured, found in turns:
                    level = next(measured)
                    level.round = index % rounds
                    found.append(level)
                    if not as_json:
                        yield _row(level, rounds > 1)
                    elif level.target == "sidecar":
                        yield json.dumps({**level.as_dict(), "request_batch": request_batch})
                    else:
                        yield json.dumps(level.as_dict())
        sidecar_levels.sort(key=lambda level: builds.index(level.build) if builds else 0)  # by build, as listed
        goals = targets(sidecar_levels, nginx_levels)
        if as_json:
            yield from (json.dumps({"target": "goal", "scenario": scenario.name, **goal}) for goal in goals)
            continue
        if nginx_levels:
            yield from _ratios(sidecar_levels, nginx_levels)
        if goals:
            yield "targets:"
            for goal in goals:
                verdict = "met" if goal["met"] else "MISSED"
                where = f"{goal['label']:<16} {goal['connections']:>5}"
                each = "  rounds " + " ".join(f"{v:.2f}" for v in goal["values"]) if len(goal["values"]) > 1 else ""
                yield f"  {where} {goal['what']:<34} {goal['value']:>6.2f} (bound {goal['bound']:g})  {verdict}{each}"
        yield ""


HEADER = (
    f"{'target':<19} {'conns':>5} {'QPS':>8} {'QPS/ideal':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    "  CPU µs per call"
)


def _row(level: Level, numbered: bool = False) -> str:
    w = level.wrk
    cpu = "  ".join(f"{role.replace('_', ' ')} {level.cpu_us(role):.0f}" for role in level.cpu)
    p50 = f"{w.p50_ms:.1f}" if w.p50_ms is not None else "-"
    p99 = f"{w.p99_ms:.1f}" if w.p99_ms is not None else "-"
    qps = w.ok_qps
    label = f"{level.label} #{level.round + 1}" if numbered else level.label
    return (
        f"{label:<19} {level.connections:>5} {qps:>8.0f} {qps / level.ideal_qps:>9.2f} {p50:>7} {p99:>7} "
        f"{w.errors:>6}  {cpu}"
    )


def _over(a: float | None, b: float | None) -> float:
    return a / b if a and b else float("nan")


def _ratios(sidecar: list[Level], nginx: list[Level]) -> Iterator[str]:
    """Per build and level, the sidecar's figures over nginx's of the same round; with several rounds,
    the median of each ratio and the range of the two the targets are most sensitive to."""
    bases = {(level.connections, level.round): level for level in nginx}
    yield (
        "sidecar / nginx: QPS, p99, CPU per call of the proxy hops (consumer + provider sidecar over nginx's one "
        "hop), and of each sidecar over nginx's hop"
    )
    rows: dict[tuple[str, int], list[tuple[float, ...]]] = {}
    for level in sidecar:
        base = bases.get((level.connections, level.round))
        if base is None:
            continue
        hop = base.proxy_cpu_us
        rows.setdefault((f"ratio {level.build}".strip(), level.connections), []).append((
            _over(level.wrk.ok_qps, base.wrk.ok_qps),
            _over(level.wrk.p99_ms, base.wrk.p99_ms),
            _over(level.proxy_cpu_us, hop),
            _over(level.cpu_us("consumer"), hop),
            _over(level.cpu_us("provider_sidecars"), hop),
        ))  # fmt: skip
    for (label, connections), figures in rows.items():
        qps, p99, cpu, consumer, provider = (statistics.median(column) for column in zip(*figures, strict=True))
        line = (
            f"{label:<16} {connections:>5} QPS {qps:.2f}x  p99 {p99:.2f}x  CPU {cpu:.2f}x  "
            f"consumer {consumer:.2f}x  provider {provider:.2f}x"
        )
        if len(figures) > 1:
            qps_range = f"{min(f[0] for f in figures):.2f}-{max(f[0] for f in figures):.2f}x"
            consumer_range = f"{min(f[3] for f in figures):.2f}-{max(f[3] for f in figures):.2f}x"
            line += f"  (medians of {len(figures)} rounds; QPS {qps_range}, consumer {consumer_range})"
        yield line


# What the sidecars are held to against nginx in the same run: (scenario, which levels, what, bound,
# at least?). "first" is the scenario's first level measured; "all" every level.
TARGETS = (
    ("latency-bound", "all", "consumer CPU / nginx hop", 2.0, False),
    ("latency-bound", "all", "provider CPU / nginx hop", 1.5, False),
    ("latency-bound", "first", "QPS / nginx QPS", 0.95, True),
    ("latency-bound", "first", "p99 / nginx p99", 1.5, False),
    ("capacity-bound", "all", "errors", 0, False),
    ("capacity-bound", "all", "QPS / ideal (capacity / L)", 0.90, True),
)


def targets(sidecar: list[Level], nginx: list[Level]) -> list[dict]:
    """The sidecar levels held to :data:`TARGETS`, each as ``{"label", "build", "connections", "what",
    "bound", "value", "values", "met"}``: ``values`` has one figure per round (each sidecar level over
    nginx's of the same level and round), ``value`` is their median and is what is held to the bound.
    A target that needs nginx's figure is left out without it."""
    bases = {(level.connections, level.round): level for level in nginx}
    first = min((level.connections for level in sidecar), default=None)
    found: dict[tuple, list[float]] = {}
    for level in sidecar:
        base = bases.get((level.connections, level.round))
        for scenario, which, what, bound, at_least in TARGETS:
            if scenario != level.scenario or (which == "first" and level.connections != first):
                continue
            if what == "errors":
                value = float(level.wrk.errors)
            elif what.startswith("QPS / ideal"):
                value = level.wrk.ok_qps / level.ideal_qps
            elif base is None:
                continue
            elif what.startswith("consumer"):
                value = _over(level.cpu_us("consumer"), base.proxy_cpu_us)
            elif what.startswith("provider"):
                value = _over(level.cpu_us("provider_sidecars"), base.proxy_cpu_us)
            elif what.startswith("QPS"):
                value = _over(level.wrk.ok_qps, base.wrk.ok_qps)
            else:
                value = _over(level.wrk.p99_ms, base.wrk.p99_ms)
            found.setdefault((level.label, level.build, level.connections, what, bound, at_least), []).append(value)
    out = []
    for (label, build, connections, what, bound, at_least), values in found.items():
        value = statistics.median(values)
        met = value >= bound if at_least else value <= bound
        out.append({"label": label, "build": build, "connections": connections, "what": what, "bound": bound,
                    "value": value, "values": values, "met": met})  # fmt: skip
    return out


def codec_lines(as_json: bool = False, calls: int = 2048) -> Iterator[str]:
    """The build of the codecs that the sidecars run, the codec CPU per call of each hop in both
    builds (:func:`sidecar.tools.bench_codec.paths`) and the time to parse one HTTP request by ours in
    each build and by llhttp when httptools is installed (:func:`sidecar.tools.bench_codec.parsing`),
    as lines of text or one JSON object."""
    figures = bench_codec.paths(calls)
    parse = bench_codec.parsing(min(calls, 1024), rounds=3)
    build = bench_codec.build()
    if as_json:
        yield json.dumps({"target": "codecs", "build": build, "cpu_us_per_call": figures, "parse_us": parse})
        return
    yield f"core: {build}"
    for name in ("compiled", "pure"):
        if name in figures:
            hops = "  ".join(f"{hop} {figures[name][hop]:.1f}" for hop in bench_codec.PATHS)
            yield f"codec CPU µs per call, {name} build: {hops}"
    if "ratio" in figures:
        hops = "  ".join(f"{hop} {figures['ratio'][hop]:.2f}x" for hop in bench_codec.PATHS)
        yield f"codec CPU per call, compiled / pure: {hops}"
    parsers = "  ".join(f"{name} {parse[name]:.1f}" for name in bench_codec.PARSERS if name in parse)
    mine = parse.get("compiled", parse["pure"])
    if "llhttp" in parse:
        parsers += f"  (llhttp / ours {parse['llhttp'] / mine:.2f}x)"
    yield f"HTTP request parse µs: {parsers}"
    yield ""
