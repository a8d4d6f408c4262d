"""The balancer policy, driven by a simulated clock: a small discrete-event simulation of the I/O
layer with simulated providers (a fixed latency and a capacity each), and hand-stepped cases for
admission, the FIFO queue, deadlines, ejection and registry changes. Nothing sleeps."""

from __future__ import annotations

import heapq
import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.policies import balancer
from sidecar.policies.balancer import (
    ALL_EJECTED,
    DEFAULT_OPTIONS,
    NO_PROVIDER,
    QUEUE_FULL,
    Balancer,
    Outcome,
    ProviderStats,
)


class Simulation:
    """The I/O layer around a :class:`Balancer`, on simulated time.

    Each provider serves at most ``capacity`` calls at once, each for ``latency``; a call beyond its
    capacity is refused at once (an error reply, like Dubbo's thread pool exhausted), and a dead
    provider never answers. A call sent gets a timer at its deadline; whichever of reply and timer
    comes first completes the call (with ``patience`` set, the timer runs that long from the send
    instead: the deadline then bounds only the wait in the queue). Queued calls are released by
    completions and by ticks at :meth:`Balancer.wakeup_time`, where expired ones are taken out.
    """

    def __init__(self, policy: Balancer, providers: dict[str, tuple[float, float, int]], patience: float | None = None):
        self.policy = policy
        self.patience = patience
        self.latency, self.capacity = {}, {}
        for key, (weight, latency, capacity) in providers.items():
            policy.add_provider(key, weight)
            self.latency[key], self.capacity[key] = latency, capacity
        self.now = 0.0
        self.events: list = []
        self.order = itertools.count()
        self.busy: Counter = Counter()
        self.dead: set[str] = set()
        self.deadlines: dict[int, float] = {}
        self.pending: dict[int, str] = {}  # call -> provider, sent and not completed
        self.outcomes: dict[int, str] = {}  # call -> ok / error / timeout / expired / reject: reason
        self.sent_to: dict[int, str] = {}
        self.released: list[int] = []  # calls that left the queue for a provider, in that order
        self.queued: list[int] = []  # calls that had to queue, in that order
        self.most_busy: Counter = Counter()

    def at(self, time: float, action, *args) -> None:
        heapq.heappush(self.events, (time, next(self.order), action, args))

    def run(self, until: float) -> None:
        while self.events and self.events[0][0] <= until:
            self.now, _, action, args = heapq.heappop(self.events)
            action(*args)
        self.now = until

    def arrivals(self, count: int, every: float, timeout: float, start: float = 0.0, first_id: int = 0) -> None:
        for i in range(count):
            self.at(start + i * every, self.arrive, first_id + i, timeout)

    def arrive(self, call: int, timeout: float) -> None:
        self.deadlines[call] = self.now + timeout
        decision = self.policy.submit(call, self.now + timeout, self.now)
        if decision[0] == "send":
            self.dispatch(call, decision[1])
        elif decision[0] == "queued":
            self.queued.append(call)
            self.schedule_tick()
        else:
            self.outcomes[call] = f"reject: {decision[1]}"

    def dispatch(self, call: int, key: str) -> None:
        self.pending[call] = key
        self.sent_to[call] = key
        self.at(self.deadlines[call] if self.patience is None else self.now + self.patience, self.timer, call)
        if key in self.dead:
            return
        if self.busy[key] >= self.capacity[key]:
            self.at(self.now, self.reply, call, key, "error", False)
            return
        self.busy[key] += 1
        self.most_busy[key] = max(self.most_busy[key], self.busy[key])
        self.at(self.now + self.latency[key], self.reply, call, key, "ok", True)

    def reply(self, call: int, key: str, outcome: str, served: bool) -> None:
        if served:
            self.busy[key] -= 1
        if self.pending.get(call) == key:
            self.finish(call, key, outcome)

    def timer(self, call: int) -> None:
        if call in self.pending:
            self.finish(call, self.pending[call], "timeout")

    def finish(self, call: int, key: str, outcome: str) -> None:
        del self.pending[call]
        self.outcomes[call] = outcome
        self.take(self.policy.complete(call, key, self.now, outcome))

    def take(self, released: list) -> None:
        for call, key in released:
            self.released.append(call)
            self.dispatch(call, key)

    def tick(self) -> None:
        for call in self.policy.expire(self.now):
            self.outcomes[call] = "expired"
        self.take(self.policy.release(self.now))
        self.schedule_tick()

    def schedule_tick(self) -> None:
        wakeup = self.policy.wakeup_time(self.now)
        if wakeup is not None:
            self.at(max(wakeup, self.now), self.tick)

    def shares(self, calls) -> dict[str, float]:
        counts = Counter(self.sent_to[call] for call in calls if call in self.sent_to)
        total = sum(counts.values())
        return {key: counts[key] / total for key in sorted(counts)}


WEIGHTED = {"a:1": (1, 0.05, 1000), "b:2": (2, 0.05, 1000), "c:3": (3, 0.05, 1000)}
CAPACITIES = {"small:1": (1, 0.05, 5), "medium:2": (2, 0.05, 10), "large:3": (3, 0.05, 15)}


# -- the simulation -----------------------------------------------------------------------------


def test_calls_are_shared_by_weight():
    sim = Simulation(Balancer(), WEIGHTED)
    sim.arrivals(10_000, every=0.001, timeout=1.0)
    sim.run(until=20.0)
    assert set(sim.outcomes.values()) == {"ok"} and len(sim.outcomes) == 10_000
    shares = sim.shares(range(10_000))
    for key, weight in zip(sorted(WEIGHTED), (1, 2, 3), strict=True):
        # the + 1 of (in_flight + 1) / weight leans a little to the heavier providers at ~50 in flight
        assert shares[key] == pytest.approx(weight / 6, abs=0.015)


def test_providers_with_thresholds_at_their_capacity_are_never_overrun():
    policy = Balancer(queue_size=1000)
    sim = Simulation(policy, CAPACITIES)
    for key, (weight, _, capacity) in CAPACITIES.items():
        policy.add_provider(key, weight, threshold=capacity)
    sim.arrivals(5000, every=0.002, timeout=1.0)  # 500 calls/s against a capacity of 600/s
    sim.run(until=20.0)
    assert Counter(sim.outcomes.values()) == {"ok": 5000}
    shares = sim.shares(range(5000))
    for key, weight in zip(("small:1", "medium:2", "large:3"), (1, 2, 3), strict=True):
        assert shares[key] == pytest.approx(weight / 6, abs=0.02)
        assert sim.most_busy[key] <= CAPACITIES[key][2]


def test_overload_queues_releases_fifo_rejects_when_full_and_expires_the_late():
    policy = Balancer(queue_size=40)
    sim = Simulation(policy, CAPACITIES, patience=1.0)
    for key, (weight, _, capacity) in CAPACITIES.items():
        policy.add_provider(key, weight, threshold=capacity)
    sim.arrivals(4000, every=0.001, timeout=0.06)  # 1000 calls/s against 600/s; 40 queued wait ~67 ms
    sim.run(until=10.0)
    outcomes = Counter(sim.outcomes.values())
    assert len(sim.outcomes) == 4000  # every call ended, none hangs
    assert set(outcomes) == {"ok", f"reject: {QUEUE_FULL}", "expired"}
    assert outcomes["ok"] > 2000 and outcomes[f"reject: {QUEUE_FULL}"] > 100 and outcomes["expired"] > 100
    assert sim.released == sorted(sim.released)  # the queue is first in, first out
    assert set(sim.released) | {c for c, o in sim.outcomes.items() if o == "expired"} == set(sim.queued)
    assert all(sim.most_busy[key] <= CAPACITIES[key][2] for key in CAPACITIES)
    assert policy.in_flight == policy.queued == 0 and not sim.pending


def test_a_dead_provider_is_ejected_and_the_others_carry_the_load():
    policy = Balancer()
    sim = Simulation(policy, WEIGHTED)
    sim.dead.add("c:3")
    sim.arrivals(2000, every=0.001, timeout=0.1)
    sim.run(until=10.0)
    timeouts = [call for call, outcome in sim.outcomes.items() if outcome == "timeout"]
    assert {sim.sent_to[call] for call in timeouts} == {"c:3"}
    stats = policy.stats()["c:3"]
    assert stats.ejections >= 2 and stats.answered == 0  # ejected, probed, ejected again for longer
    late = [call for call in range(1000, 2000) if sim.sent_to.get(call) == "c:3"]
    assert len(late) <= 1  # while ejected it gets at most its probe call
    shares = sim.shares(range(1000, 2000))
    assert shares["a:1"] == pytest.approx(1 / 3, abs=0.02) and shares["b:2"] == pytest.approx(2 / 3, abs=0.02)


# -- choice -------------------------------------------------------------------------------------


def test_choose_is_argmin_of_in_flight_plus_one_over_weight():
    policy = Balancer()
    assert policy.choose(0) is None
    policy.add_provider("a", 1)
    policy.add_provider("b", 3)
    sends = [policy.submit(i, 10, 0)[1] for i in range(8)]
    # b: 1/3 2/3 1 4/3 ...; a: 1 2 ...; ties go to the larger weight
    assert sends == ["b", "b", "b", "a", "b", "b", "b", "a"]
    assert policy.choose(0) == "b"


def test_ties_are_broken_by_weight_then_key():
    policy = Balancer()
    for key in ("z", "m", "a"):
        policy.add_provider(key, 2)
    assert [policy.submit(i, 10, 0)[1] for i in range(4)] == ["a", "m", "z", "a"]
    other = Balancer()
    other.add_provider("x", 1)
    other.add_provider("y", 2)
    other.submit("first", 10, 0)  # y: 2/2, x: 1/1 -> tie, larger weight wins
    assert other.stats()["y"].in_flight == 1 and other.choose(0) == "y"


def test_choose_changes_nothing():
    policy = Balancer()
    policy.add_provider("a", 1, threshold=1)
    assert policy.choose(0) == policy.choose(0) == "a"
    assert policy.in_flight == 0


# -- admission and the queue --------------------------------------------------------------------


def saturated(queue_size: int = 3) -> Balancer:
    policy = Balancer(queue_size=queue_size)
    policy.add_provider("p", 1, threshold=1)
    policy.add_provider("q", 1, threshold=1)
    assert policy.submit("s1", 10, 0) == ("send", "p")
    assert policy.submit("s2", 10, 0) == ("send", "q")
    return policy


def test_every_provider_at_its_threshold_queues_and_completions_release_fifo():
    policy = saturated()
    assert [policy.submit(c, 10, 1) for c in ("w1", "w2", "w3")] == [("queued",)] * 3
    assert policy.queued == 3 and policy.choose(1) is None
    assert policy.complete("s2", "q", 2, "ok") == [("w1", "q")]
    assert policy.complete("s1", "p", 2, Outcome.ERROR) == [("w2", "p")]
    assert policy.complete("w1", "q", 3, "ok") == [("w3", "q")]
    assert policy.queued == 0 and policy.in_flight == 2


def test_queued_calls_go_before_new_ones():
    policy = saturated()
    assert policy.submit("w1", 10, 1) == ("queued",)
    policy.add_provider("r", 1, threshold=1)  # a free slot appears, yet w1 is still first in line
    assert policy.submit("new", 10, 1) == ("queued",)
    assert policy.release(1) == [("w1", "r")]
    assert policy.complete("s1", "p", 2, "ok") == [("new", "p")]


def test_queue_full_is_rejected_and_a_zero_queue_rejects_at_once():
    policy = saturated(queue_size=2)
    assert policy.submit("w1", 10, 0) == policy.submit("w2", 10, 0) == ("queued",)
    assert policy.submit("w3", 10, 0) == ("reject", QUEUE_FULL)
    assert saturated(queue_size=0).submit("w", 10, 0) == ("reject", QUEUE_FULL)


def test_no_provider_is_rejected():
    policy = Balancer()
    assert policy.submit("c", 10, 0) == ("reject", NO_PROVIDER)
    policy.add_provider("p", 1)
    policy.remove_provider("p")
    assert policy.submit("c", 10, 0) == ("reject", NO_PROVIDER)


def test_deadlines_expire_in_the_queue_oldest_first():
    policy = saturated(queue_size=5)
    for call, deadline in (("w1", 5), ("w2", 3), ("w3", 9), ("w4", 4)):
        assert policy.submit(call, deadline, 1) == ("queued",)
    assert policy.wakeup_time(1) == 3
    assert policy.expire(2.9) == []
    assert policy.expire(4) == ["w2", "w4"]  # a deadline equal to now has passed
    assert policy.wakeup_time(4) == 5 and policy.queued == 2
    assert policy.complete("s1", "p", 6, "ok") == [("w3", "p")]  # w1 (deadline 5) is not sent late
    assert policy.queued == 1 and policy.wakeup_time(6) == 5
    assert policy.expire(6) == ["w1"]
    assert policy.queued == 0 and policy.wakeup_time(6) is None


def test_a_call_expired_while_releasing_still_holds_its_place_in_the_bound():
    policy = saturated(queue_size=2)
    policy.submit("w1", 2, 0)
    policy.submit("w2", 2, 0)
    assert policy.complete("s1", "p", 3, "ok") == []  # both are late; p stays free
    assert policy.queued == 2
    assert policy.submit("new", 10, 3) == ("send", "p")
    assert policy.expire(3) == ["w1", "w2"]


def test_cancel_a_queued_call():
    policy = saturated()
    policy.submit("w1", 10, 0)
    policy.submit("w2", 10, 0)
    assert policy.cancel("w1") and not policy.cancel("w1") and not policy.cancel("s1")
    assert policy.complete("s1", "p", 1, "ok") == [("w2", "p")]
    policy.submit("late", 2, 1)
    assert policy.complete("s2", "q", 3, "ok") == []
    assert policy.cancel("late") and policy.expire(3) == []


def test_completing_twice_or_an_unknown_call_does_nothing():
    policy = saturated()
    policy.submit("w1", 10, 0)
    assert policy.complete("s1", "p", 1, "timeout") == [("w1", "p")]
    assert policy.complete("s1", "p", 2, "ok") == []
    assert policy.complete("nobody", "p", 2, "ok") == []
    assert policy.stats()["p"].timeouts == 1 and policy.stats()["p"].answered == 0


def test_misuse_is_reported():
    policy = saturated()
    with pytest.raises(ValueError, match="already in flight"):
        policy.submit("s1", 10, 0)
    policy.submit("w1", 10, 0)
    with pytest.raises(ValueError, match="already in flight or queued"):
        policy.submit("w1", 10, 0)
    with pytest.raises(ValueError, match="went to 'p', not 'q'"):
        policy.complete("s1", "q", 1, "ok")
    with pytest.raises(ValueError):
        policy.complete("s1", "p", 1, "maybe")
    for bad in (0, -1, True, "2"):
        with pytest.raises(ValueError, match="weight"):
            policy.add_provider("x", bad)
    with pytest.raises(ValueError, match="threshold"):
        policy.add_provider("x", 1, threshold=0)
    for options in ({"queue_size": -1}, {"threshold": 0}, {"eject_after": 0}, {"backoff": 5, "max_backoff": 1}):
        with pytest.raises(ValueError):
            Balancer(**options)


# -- ejection -----------------------------------------------------------------------------------


def time_out(policy: Balancer, key: str, count: int, now: float, prefix: str = "t") -> None:
    for i in range(count):
        call = f"{prefix}{now}-{i}"
        assert policy.submit(call, now + 1, now) == ("send", key)
        policy.complete(call, key, now, "timeout")


def one_provider(**options) -> Balancer:
    policy = Balancer(**options)
    policy.add_provider("p", 1)
    return policy


def test_consecutive_timeouts_eject_and_a_reply_breaks_the_run():
    policy = one_provider()
    time_out(policy, "p", 4, now=0)
    policy.submit("ok", 1, 0)
    policy.complete("ok", "p", 0, "error")  # an error reply is still a reply
    time_out(policy, "p", 4, now=0, prefix="u")
    assert policy.stats()["p"].ejected_until is None
    time_out(policy, "p", 1, now=0, prefix="v")
    assert policy.stats()["p"].ejected_until == 1.0 and policy.stats()["p"].ejections == 1
    assert policy.choose(0.5) is None
    assert policy.submit("c", 5, 0.5) == ("reject", ALL_EJECTED)


def test_refusal_says_what_a_call_submitted_now_would_meet_and_changes_nothing():
    assert Balancer().refusal(0) == NO_PROVIDER
    policy = one_provider(threshold=1, queue_size=1)
    assert policy.refusal(0) is None  # it would be sent
    policy.submit("a", 5, 0)
    assert policy.refusal(0) is None  # it would queue
    policy.submit("b", 5, 0)
    assert policy.refusal(0) == QUEUE_FULL and policy.submit("c", 5, 0) == ("reject", QUEUE_FULL)
    assert (policy.in_flight, policy.queued) == (1, 1)
    policy = one_provider(eject_after=1, backoff=1.0)
    time_out(policy, "p", 1, now=0)
    assert policy.refusal(0.5) == ALL_EJECTED and policy.submit("d", 5, 0.5) == ("reject", ALL_EJECTED)
    assert policy.refusal(1.0) is None  # the half-open probe may go


def test_backoff_doubles_up_to_the_maximum_then_a_success_resets_it():
    policy = one_provider(eject_after=2, backoff=1.0, max_backoff=30.0)
    time_out(policy, "p", 2, now=0)
    now, lengths = 0.0, []
    for _ in range(7):  # each probe times out: ejected again for twice as long
        until = policy.stats()["p"].ejected_until
        lengths.append(until - now)
        assert policy.choose(until - 0.001) is None
        now = until
        assert policy.submit(f"probe{now}", now + 1, now) == ("send", "p")
        assert policy.choose(now) is None  # half-open: one probe at a time
        assert policy.submit("other", now + 1, now) == ("reject", ALL_EJECTED)
        policy.complete(f"probe{now}", "p", now, "timeout")
    assert lengths == [1, 2, 4, 8, 16, 30, 30]
    now = policy.stats()["p"].ejected_until
    assert policy.submit("good", now + 1, now) == ("send", "p")
    policy.complete("good", "p", now, "ok")
    assert policy.stats()["p"].ejected_until is None and policy.choose(now) == "p"
    time_out(policy, "p", 2, now=now)
    assert policy.stats()["p"].ejected_until == now + 1  # back to the first length


def test_a_probe_answered_with_an_error_closes_the_circuit_but_keeps_the_backoff():
    policy = one_provider(eject_after=1)
    time_out(policy, "p", 1, now=0)
    policy.submit("probe", 3, 1)
    policy.complete("probe", "p", 1, "error")
    assert policy.stats()["p"].ejected_until is None
    time_out(policy, "p", 1, now=2)
    assert policy.stats()["p"].ejected_until == 4  # 2 s: the doubling went on


def test_late_ends_of_calls_sent_before_the_ejection_do_not_decide_the_probe():
    policy = one_provider(eject_after=2)
    for call in ("old1", "old2", "old3"):
        policy.submit(call, 5, 0)
    time_out(policy, "p", 2, now=0)  # ejected until 1
    policy.complete("old1", "p", 0.5, "timeout")
    assert policy.stats()["p"].ejected_until == 1.0
    policy.submit("probe", 5, 1)
    policy.complete("old2", "p", 1.1, "ok")  # not the probe: the circuit stays half-open
    assert policy.choose(1.1) is None
    policy.complete("old3", "p", 1.2, "timeout")
    policy.complete("probe", "p", 1.3, "ok")
    assert policy.stats()["p"].ejected_until is None and policy.choose(1.3) == "p"


def test_calls_queue_behind_a_saturated_provider_while_another_is_ejected():
    policy = Balancer(eject_after=1)
    policy.add_provider("bad", 1)
    policy.add_provider("full", 1, threshold=1)
    time_out(policy, "bad", 1, now=0)
    assert policy.submit("a", 9, 0) == ("send", "full")
    assert policy.submit("b", 9, 0) == ("queued",)
    assert policy.wakeup_time(0) == 1.0  # the ejection ends before b's deadline
    assert policy.release(0.5) == []
    assert policy.release(1.0) == [("b", "bad")]  # the probe call
    assert policy.wakeup_time(1.0) is None


# -- registry changes ---------------------------------------------------------------------------


def test_remove_while_running_keeps_in_flight_accounting():
    policy = Balancer()
    policy.add_provider("a", 1, threshold=2)
    policy.add_provider("b", 1, threshold=2)
    sends = {call: policy.submit(call, 9, 0)[1] for call in range(4)}
    assert policy.remove_provider("a") and not policy.remove_provider("a")
    assert policy.providers == ("b",) and policy.in_flight == 4 and "draining=1" in repr(policy)
    assert policy.submit("w", 9, 0) == ("queued",)  # b is full; a is gone
    a_calls = [call for call, key in sends.items() if key == "a"]
    assert policy.complete(a_calls[0], "a", 1, "ok") == []  # frees nothing a caller may use
    assert policy.complete(a_calls[1], "a", 1, "timeout") == []
    assert policy.in_flight == 2 and "draining=0" in repr(policy)
    b_call = next(call for call, key in sends.items() if key == "b")
    assert policy.complete(b_call, "b", 2, "ok") == [("w", "b")]


def test_calls_queued_stay_queued_when_every_provider_goes_and_leave_when_one_comes():
    policy = saturated()
    policy.submit("w1", 9, 0)
    policy.remove_provider("p")
    policy.remove_provider("q")
    assert policy.complete("s1", "p", 1, "ok") == []
    assert policy.queued == 1 and policy.submit("new", 9, 1) == ("reject", NO_PROVIDER)
    policy.add_provider("r", 2)
    assert policy.release(2) == [("w1", "r")]


def test_a_provider_back_before_its_calls_ended_keeps_them():
    policy = Balancer()
    policy.add_provider("a", 1, threshold=2)
    policy.submit(1, 9, 0)
    policy.submit(2, 9, 0)
    policy.remove_provider("a")
    policy.add_provider("a", 3, threshold=3)
    assert policy.stats()["a"] == ProviderStats("a", 3, 3, 2, 0, 0, 0, 0, None)
    assert policy.submit(3, 9, 0) == ("send", "a")
    assert policy.submit(4, 9, 0) == ("queued",)
    assert policy.complete(1, "a", 1, "ok") == [(4, "a")]


def test_add_provider_updates_weight_and_threshold():
    policy = Balancer(threshold=7)
    policy.add_provider("a", 1)
    assert policy.stats()["a"].threshold == 7
    policy.add_provider("a", 2.5, threshold=9)
    assert (policy.stats()["a"].weight, policy.stats()["a"].threshold) == (2.5, 9)


def test_stats_count_answers_errors_and_timeouts():
    policy = one_provider()
    for call, outcome in enumerate(["ok", "ok", "error", "timeout"]):
        policy.submit(call, 9, 0)
        policy.complete(call, "p", 1, outcome)
    policy.submit("open", 9, 1)
    assert policy.stats() == {"p": ProviderStats("p", 1, 200, 1, 3, 1, 1, 0, None)}


def test_the_policy_is_pure():
    import ast
    from pathlib import Path

    source = Path(__file__).resolve().parents[3] / "sidecar" / "policies" / "balancer.py"  # __file__ may be its twin's
    tree = ast.parse(source.read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported.isdisjoint({"time", "socket", "gevent", "asyncio", "selectors", "datetime"})


def test_defaults_and_docstring_examples():
    import doctest

    assert DEFAULT_OPTIONS == {
        "threshold": 200,
        "queue_size": 1024,
        "eject_after": 5,
        "backoff": 1.0,
        "max_backoff": 30.0,
    }
    assert doctest.testmod(balancer).failed == 0


# -- any sequence of operations keeps the books straight ----------------------------------------


operations = st.lists(
    st.tuples(
        st.sampled_from(["submit", "complete", "expire", "release", "add", "remove", "cancel"]),
        st.integers(0, 5),
        st.sampled_from(list(Outcome)),
        st.integers(0, 3),
    ),
    max_size=80,
)


@settings(max_examples=300)
@given(operations, st.integers(0, 4))
def test_random_operations_keep_the_books(ops, queue_size):
    policy = Balancer(queue_size=queue_size, eject_after=2, backoff=2.0, max_backoff=8.0)
    flying: dict[int, str] = {}
    waiting: list[int] = []
    ended: set[int] = set()
    deadlines: dict[int, float] = {}
    now, next_call = 0.0, 0

    def live():  # queued calls whose deadline has not passed: only these may still be sent
        return [call for call in waiting if deadlines[call] > now]

    def sent(released):
        for call, key in released:
            assert call == min(live())  # FIFO
            waiting.remove(call)
            flying[call] = key

    for op, n, outcome, weight in ops:
        now += 0.5
        if op == "submit":
            call, next_call = next_call, next_call + 1
            deadlines[call] = now + n
            decision = policy.submit(call, now + n, now)
            if decision[0] == "send":
                assert not live()  # queued calls go first
                flying[call] = decision[1]
            elif decision[0] == "queued":
                waiting.append(call)
            else:
                ended.add(call)
        elif op == "complete" and flying:
            call = sorted(flying)[n % len(flying)]
            sent(policy.complete(call, flying.pop(call), now, outcome))
            ended.add(call)
        elif op == "expire":
            for call in policy.expire(now):
                assert deadlines[call] <= now
                waiting.remove(call)
                ended.add(call)
        elif op == "release":
            sent(policy.release(now))
        elif op == "add":
            policy.add_provider(f"p{n % 3}", weight + 1, threshold=n % 3 + 1)
        elif op == "remove":
            policy.remove_provider(f"p{n % 3}")
        elif op == "cancel" and waiting:
            call = waiting[n % len(waiting)]
            assert policy.cancel(call)
            waiting.remove(call)
            ended.add(call)
        assert policy.in_flight == len(flying) and policy.queued == len(waiting) <= queue_size
        stats = policy.stats()
        assert all(s.in_flight <= s.threshold for s in stats.values())
        assert sum(s.in_flight for s in stats.values()) == sum(1 for key in flying.values() if key in stats)
    assert len(ended) + len(flying) + len(waiting) == next_call
    for call in policy.expire(float("inf")):  # no queued call waits forever
        waiting.remove(call)
    assert not waiting and policy.queued == 0
