"""The targets ``sidecar bench`` holds the sidecars to, from levels built by hand (no processes)."""

from __future__ import annotations

import pytest

from sidecar.tools.bench import BenchError, Level, run, targets
from sidecar.tools.topology import SCENARIOS
from sidecar.tools.wrk import WrkResult


def level(target, scenario, connections, *, qps, p99, cpu, errors=0, build="", round=0):
    wrk = WrkResult(requests=int(qps * 10), duration_s=10.0, qps=qps, p50_ms=p99 / 2, p99_ms=p99, errors=errors,
                    mismatches=0, statuses={200: int(qps * 10)})  # fmt: skip
    seconds = {role: us * wrk.requests / 1e6 for role, us in cpu.items()}
    ideal = SCENARIOS[scenario].ideal_qps(connections)
    return Level(target, scenario, connections, ideal, wrk, seconds, build, round)


def hops(consumer, provider):
    return {"consumer": consumer, "provider_sidecars": provider}


def test_each_sidecar_hop_is_held_to_nginx_s_one_hop_and_the_first_level_to_its_qps_and_p99():
    nginx = [level("nginx", "latency-bound", c, qps=2400.0, p99=60.0, cpu={"nginx": 80.0}) for c in (128, 256)]
    sidecar = [
        level("sidecar", "latency-bound", 128, qps=2300.0, p99=95.0, cpu=hops(150.0, 130.0), build="compiled"),
        level("sidecar", "latency-bound", 256, qps=2000.0, p99=80.0, cpu=hops(170.0, 100.0), build="compiled"),
    ]
    goals = {(g["connections"], g["what"]): (round(g["value"], 4), g["met"]) for g in targets(sidecar, nginx)}
    assert goals == {
        (128, "consumer CPU / nginx hop"): (1.875, True),
        (128, "provider CPU / nginx hop"): (1.625, False),
        (128, "QPS / nginx QPS"): (round(2300 / 2400, 4), True),
        (128, "p99 / nginx p99"): (round(95 / 60, 4), False),
        (256, "consumer CPU / nginx hop"): (2.125, False),
        (256, "provider CPU / nginx hop"): (1.25, True),
    }
    assert {g["label"] for g in targets(sidecar, nginx)} == {"sidecar compiled"}


def test_with_rounds_each_ratio_is_taken_within_a_round_and_the_median_is_held_to_the_bound():
    # nginx's hop costs 40, 50 and 60 µs in rounds 0, 1 and 2; the consumer 100, 90 and 150: its
    # ratios are 2.5, 1.8 and 2.5 round by round, median 2.5. Pooled over the rounds instead (the
    # consumer's median 100 over nginx's 50) it would have read 2.0.
    nginx = [level("nginx", "latency-bound", 128, qps=2400.0, p99=60.0, cpu={"nginx": hop}, round=r)
             for r, hop in enumerate((40.0, 50.0, 60.0))]  # fmt: skip
    sidecar = [
        level("sidecar", "latency-bound", 128, qps=qps, p99=70.0, cpu=hops(consumer, 20.0), round=r)
        for r, (consumer, qps) in enumerate(((100.0, 2280.0), (90.0, 2300.0), (150.0, 2160.0)))
    ]
    goals = {g["what"]: g for g in targets(sidecar, nginx)}
    consumer = goals["consumer CPU / nginx hop"]
    assert [round(v, 4) for v in consumer["values"]] == [2.5, 1.8, 2.5]
    assert round(consumer["value"], 4) == 2.5 and not consumer["met"]
    qps = goals["QPS / nginx QPS"]
    assert [round(v, 4) for v in qps["values"]] == [0.95, round(2300 / 2400, 4), 0.9]
    assert round(qps["value"], 4) == 0.95 and qps["met"]


def test_capacity_bound_is_held_to_zero_errors_and_nine_tenths_of_the_ideal_without_nginx():
    ideal = SCENARIOS["capacity-bound"].ideal_qps(512)  # 384 slots over 50 ms
    sidecar = [
        level("sidecar", "capacity-bound", 512, qps=0.92 * ideal, p99=200.0, cpu={"consumer": 1.0}),
        level("sidecar", "capacity-bound", 1024, qps=0.80 * ideal, p99=400.0, cpu={"consumer": 1.0}, errors=3),
    ]
    goals = [(g["connections"], g["what"], g["met"]) for g in targets(sidecar, [])]
    assert goals == [
        (512, "errors", True),
        (512, "QPS / ideal (capacity / L)", True),
        (1024, "errors", False),
        (1024, "QPS / ideal (capacity / L)", False),
    ]


def test_an_unknown_build_is_refused_before_anything_starts():
    with pytest.raises(BenchError, match="unknown build 'fast'"):
        next(run(["latency-bound"], builds=("fast",)))


def test_no_request_batch_introduces_the_providers_to_the_consumer_without_batch(monkeypatch):
    from sidecar.tools import topology

    started = []

    class Recorded:
        """A process that is not started: its command is kept and it gets a made-up address."""

        def __init__(self, name, command, *, env=None):
            self.name, self.command, self.address = name, command, ("127.0.0.1", 40000 + len(started))
            started.append(self)

        def stop(self):
            pass

    monkeypatch.setattr(topology, "Process", Recorded)
    for request_batch, suffix in ((True, "+batch"), (False, "")):
        started.clear()
        topology.Topology.start(SCENARIOS["latency-bound"], request_batch=request_batch)
        consumer = started[-1].command
        providers = [consumer[i + 1] for i, arg in enumerate(consumer) if arg == "--provider"]
        assert providers == [f"127.0.0.1:{40003 + i}={c}/{c}{suffix}" for i, c in enumerate((200, 400, 600))]


def test_the_topologies_take_their_levels_in_turns_and_all_stop(monkeypatch):
    """Each topology measures the first level, then each the next: a ratio compares neighbours in time.
    Every topology started is stopped at the end of the scenario, also when a level fails."""
    from sidecar.tools import bench

    events = []

    def topology_of(name):
        def measure(scenario, levels, duration, **options):
            events.append(("start", name))
            try:
                for connections in levels:
                    if name == "pure" and connections == fail_at[0]:
                        raise BenchError("a level failed")
                    events.append((name, connections))
                    target = "nginx" if name == "nginx" else "sidecar"
                    build = "" if name == "nginx" else name
                    cpu = {"nginx": 40.0} if name == "nginx" else hops(60.0, 20.0)
                    yield level(target, scenario.name, connections, qps=2400.0, p99=60.0, cpu=cpu, build=build)
            finally:
                events.append(("stop", name))

        return measure

    monkeypatch.setattr(bench, "codec_lines", lambda as_json: iter(()))
    monkeypatch.setattr(bench, "find_wrk", lambda: "/usr/bin/wrk")
    monkeypatch.setattr(bench, "find_nginx", lambda: "/usr/sbin/nginx")
    monkeypatch.setattr(bench, "load_build", lambda pure: ({}, {bench.COMPILED}))
    monkeypatch.setattr(bench, "measure_nginx", topology_of("nginx"))
    monkeypatch.setattr(
        bench, "measure_sidecar", lambda scenario, levels, duration, build, **o: topology_of(build)(scenario, levels, 1)
    )
    fail_at = [None]
    lines = list(run(["latency-bound"], levels=(128, 256), builds=("compiled", "pure")))
    assert events == [
        ("start", "compiled"), ("compiled", 128), ("start", "pure"), ("pure", 128), ("start", "nginx"), ("nginx", 128),
        ("compiled", 256), ("pure", 256), ("nginx", 256),
        ("stop", "nginx"), ("stop", "pure"), ("stop", "compiled"),
    ]  # fmt: skip
    ratios = [line.split()[:3] for line in lines if line.startswith("ratio")]
    assert ratios == [["ratio", "compiled", "128"], ["ratio", "compiled", "256"], ["ratio", "pure", "128"],
                      ["ratio", "pure", "256"]]  # fmt: skip
    events.clear()
    lines = list(run(["latency-bound"], levels=(128, 256), builds=("compiled",), rounds=2))
    assert [e for e in events if e[0] not in ("start", "stop")] == [
        ("compiled", 128), ("nginx", 128), ("compiled", 128), ("nginx", 128),
        ("compiled", 256), ("nginx", 256), ("compiled", 256), ("nginx", 256),
    ]  # fmt: skip
    assert [line.split()[:3] for line in lines if line.startswith("sidecar compiled")] == [
        ["sidecar", "compiled", "#1"], ["sidecar", "compiled", "#2"], ["sidecar", "compiled", "#1"],
        ["sidecar", "compiled", "#2"],
    ]  # fmt: skip
    assert all("medians of 2 rounds" in line for line in lines if line.startswith("ratio"))
    assert any("rounds 1.50 1.50" in line for line in lines if "consumer CPU" in line)
    with pytest.raises(BenchError, match="rounds is at least 1"):
        next(run(["latency-bound"], rounds=0))
    events.clear()
    fail_at[0] = 256
    with pytest.raises(BenchError, match="a level failed"):
        list(run(["latency-bound"], levels=(128, 256), builds=("compiled", "pure")))
    assert sorted(event for event in events if event[0] == "stop") == [
        ("stop", "compiled"), ("stop", "nginx"), ("stop", "pure")
    ]  # fmt: skip
