"""The consumer's tunnel caller on loopback UDP, in this process on gevent, with a clock the test moves:
providers are UDP sockets that hand the test each call and answer only when told. The deadline sweep
runs on its timer as in production; only the clock it reads is the test's."""

from __future__ import annotations

import select

import gevent
import pytest
from gevent import socket

from sidecar.codecs import dubbo, tunnel
from sidecar.codecs.dubbo_messages import Request, Response
from sidecar.runtime.caller import CallError, TunnelCaller
from sidecar.runtime.registry import ProviderEntry
from tests.support.waiting import wait_until

SERVICE = "com.alibaba.dubbo.performance.demo.provider.IHelloService"
WAIT = 10.0  # seconds a test waits for something to happen before it fails: a bound, never a measurement


class FakeClock:
    """The caller's clock: stands still until the test moves it."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Provider:
    """A provider sidecar's UDP socket, driven by the test."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(WAIT)
        self.address = self.sock.getsockname()

    def entry(self, threshold: int | None = None) -> ProviderEntry:
        return ProviderEntry(*self.address, 1.0, threshold)

    @property
    def key(self) -> str:
        return self.entry().key

    def receive(self) -> tuple[int, tuple[str, int]]:
        """The request id of the next call that arrives, and the address it came from."""
        data, source = self.sock.recvfrom(65535)
        return tunnel.decode(data).request_id, source

    def answer(self, request_id: int, to: tuple[str, int], value: int = 1) -> None:
        frame = dubbo.encode(Response(request_id, value=value))
        self.sock.sendto(tunnel.encode_replies([(request_id, frame)]), to)

    def idle(self) -> bool:
        """No datagram is waiting to be received."""
        return not select.select([self.sock], [], [], 0)[0]

    def close(self) -> None:
        self.sock.close()


def hash_call(request_id: int) -> bytes:
    return dubbo.encode(Request(request_id, SERVICE, "hash", "Ljava/lang/String;", ["x"], {}))


def start_call(caller: TunnelCaller) -> gevent.Greenlet:
    """A greenlet making one call; its value is ``(frame, provider key)`` or the :class:`CallError`."""

    def call():
        try:
            return caller.call(hash_call)
        except CallError as error:
            return error

    return gevent.spawn(call)


def assert_nothing_left(caller: TunnelCaller) -> None:
    assert caller.pending == 0
    assert caller.balancer.in_flight == 0 and caller.balancer.queued == 0
    assert not caller._deadlines


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_caller(clock):
    made = []

    def make(**options) -> TunnelCaller:
        caller = TunnelCaller(consumer_id=7, clock=clock, **options)
        caller.start()
        made.append(caller)
        return caller

    yield make
    for caller in made:
        caller.stop()


@pytest.fixture
def provider():
    fake = Provider()
    yield fake
    fake.close()


def test_provider_host_names_are_resolved_by_the_hubs_resolver(make_caller, provider):
    hub = gevent.get_hub()
    real = hub.resolver
    asked = []

    class Resolver:
        def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
            asked.append((host, port))
            return real.getaddrinfo("127.0.0.1", port, family, type, proto, flags)

    caller = make_caller()
    hub.resolver = Resolver()
    try:
        caller.set_providers([ProviderEntry("provider.invalid", provider.address[1], 1.0)])
    finally:
        hub.resolver = real
    assert asked == [("provider.invalid", provider.address[1])]
    call = gevent.spawn(caller.call, hash_call)
    request_id, source = provider.receive()
    provider.answer(request_id, source, value=5)
    frame, key = call.get(timeout=WAIT)
    assert key == f"provider.invalid:{provider.address[1]}"
    assert frame == dubbo.encode(Response(request_id, value=5))


def test_a_host_name_that_does_not_resolve_costs_only_its_own_entry_and_is_tried_again(make_caller):
    hub = gevent.get_hub()
    real = hub.resolver
    broken = {"late.invalid", "known.invalid"}
    asked = []

    class Resolver:
        def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
            asked.append(host)
            if host in broken:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real.getaddrinfo("127.0.0.1", port, family, type, proto, flags)

    providers = [Provider() for _ in range(3)]
    try:
        caller = make_caller()
        caller.RESOLVE_RETRY = 0.05
        hub.resolver = Resolver()
        names = ("good.test", "known.invalid", "late.invalid")
        good, known, late = (ProviderEntry(name, p.address[1], 1.0) for name, p in zip(names, providers, strict=True))
        broken.discard("known.invalid")
        caller.set_providers([good, known])
        known_address = caller._addresses[known.key]
        broken.add("known.invalid")
        caller.set_providers([good, known, late])  # known keeps its address, late is left out
        assert caller._addresses == {good.key: caller._addresses[good.key], known.key: known_address}
        assert set(caller.balancer.providers) == {good.key, known.key}
        assert caller.counters["unresolved"] == 2
        broken.clear()
        wait_until(lambda: late.key in caller._addresses, "the left-out provider resolved again")
        assert set(caller.balancer.providers) == {good.key, known.key, late.key}
        tries = len(asked)
        gevent.sleep(0.2)  # every name resolves now: no more tries
        assert len(asked) == tries
    finally:
        hub.resolver = real
        for p in providers:
            p.close()


def test_a_removed_provider_leaves_the_address_table_and_its_call_in_flight_still_gets_the_reply(make_caller):
    leaving, staying = Provider(), Provider()
    try:
        caller = make_caller()
        caller.set_providers([leaving.entry()])
        call = gevent.spawn(caller.call, hash_call)
        request_id, source = leaving.receive()
        caller.set_providers([staying.entry()])
        assert caller._addresses == {staying.key: staying.address}
        assert caller.balancer.providers == (staying.key,)
        leaving.answer(request_id, source, value=9)
        assert call.get(timeout=WAIT) == (dubbo.encode(Response(request_id, value=9)), leaving.key)
        assert caller.dropped == {}
        assert caller.pending == 0 and caller.balancer.in_flight == 0
    finally:
        leaving.close()
        staying.close()


def test_the_address_table_follows_every_registry_update(make_caller):
    providers = [Provider() for _ in range(3)]
    try:
        caller = make_caller()
        caller.set_providers([p.entry() for p in providers])
        assert caller._addresses == {p.key: p.address for p in providers}
        caller.set_providers([providers[2].entry()])
        assert caller._addresses == {providers[2].key: providers[2].address}
        caller.set_providers([])
        assert caller._addresses == {}
    finally:
        for p in providers:
            p.close()


# -- the deadline sweep -------------------------------------------------------------------------------


def test_a_call_unanswered_at_its_deadline_gets_504(make_caller, provider, clock):
    caller = make_caller(call_timeout=3.0)
    caller.set_providers([provider.entry()])
    call = start_call(caller)
    request_id, _ = provider.receive()
    caller._sweep_once(clock() + 2.999)
    assert not call.ready() and caller.pending == 1
    clock.now += 3.0
    error = call.get(timeout=WAIT)
    assert isinstance(error, CallError)
    assert (error.status, error.headers) == (504, ())
    assert error.reason == f"no answer from provider {provider.key} within 3.000 s"
    assert (error.request_id, error.provider) == (request_id, provider.key)
    assert caller.counters["timeouts"] == 1
    assert caller.balancer.stats()[provider.key].timeouts == 1
    assert_nothing_left(caller)


def test_while_replies_come_the_reader_sweeps_and_the_sweepers_timer_is_not_needed(provider, clock):
    class Patient(TunnelCaller):
        TICK = 600.0  # its timer does not fire within this test: every sweep here is the reader's

    caller = Patient(consumer_id=7, clock=clock, call_timeout=3.0)
    caller.start()
    try:
        caller.set_providers([provider.entry()])
        lost = start_call(caller)
        provider.receive()  # never answered
        answered = start_call(caller)
        request_id, source = provider.receive()
        clock.now += 3.0  # the lost call's deadline
        provider.answer(request_id, source)
        assert answered.get(timeout=WAIT)[1] == provider.key
        assert lost.get(timeout=WAIT).status == 504  # swept in the turn of that reply
        lost = start_call(caller)
        provider.receive()
        answered = start_call(caller)
        request_id, source = provider.receive()
        clock.now += 3.0  # past its deadline, but half a TICK has not passed since the last sweep
        provider.answer(request_id, source)
        answered.get(timeout=WAIT)
        assert not lost.ready() and caller.pending == 1
        answered = start_call(caller)
        request_id, source = provider.receive()
        clock.now += Patient.TICK / 2
        provider.answer(request_id, source)
        answered.get(timeout=WAIT)
        assert lost.get(timeout=WAIT).status == 504
        assert_nothing_left(caller)
    finally:
        caller.stop()


def test_a_call_whose_deadline_passes_in_the_wait_queue_gets_503_with_retry_after(make_caller, provider, clock):
    caller = make_caller(call_timeout=3.0, retry_after=2)
    caller.set_providers([provider.entry(threshold=1)])
    first = start_call(caller)
    first_id, _ = provider.receive()
    clock.now += 1.0
    queued = start_call(caller)
    wait_until(lambda: caller.balancer.queued == 1, "the second call to queue")
    clock.now += 3.0  # past both deadlines: the queued call's first, then the first call's
    error = queued.get(timeout=WAIT)
    assert isinstance(error, CallError)
    assert (error.status, error.headers) == (503, (("Retry-After", "2"),))
    assert error.reason == "every provider stayed at its threshold for the whole call timeout (3 s)"
    assert error.provider is None and error.request_id not in (None, first_id)
    timed_out = first.get(timeout=WAIT)
    assert (timed_out.status, timed_out.request_id) == (504, first_id)
    assert provider.idle()  # the queued call never went out
    assert (caller.counters["queue_timeouts"], caller.counters["timeouts"]) == (1, 1)
    assert_nothing_left(caller)


def test_the_slot_of_a_call_that_timed_out_goes_to_the_queued_call(make_caller, provider, clock):
    caller = make_caller(call_timeout=3.0)
    caller.set_providers([provider.entry(threshold=1)])
    first = start_call(caller)
    provider.receive()
    clock.now += 1.0
    queued = start_call(caller)
    wait_until(lambda: caller.balancer.queued == 1, "the second call to queue")
    clock.now += 2.0  # the first call's deadline; the queued call has a second left
    assert first.get(timeout=WAIT).status == 504
    request_id, source = provider.receive()
    provider.answer(request_id, source, value=3)
    assert queued.get(timeout=WAIT) == (dubbo.encode(Response(request_id, value=3)), provider.key)
    clock.now += 1.0  # the answered call's deadline: the sweep finds nothing to end
    wait_until(lambda: not caller._deadlines, "the sweep to pass the answered call's deadline")
    assert (caller.counters["answered"], caller.counters["timeouts"], caller.counters["queue_timeouts"]) == (1, 1, 0)
    assert_nothing_left(caller)


def test_after_the_sweep_no_call_is_left_pending(make_caller, provider, clock):
    caller = make_caller(call_timeout=3.0, threshold=2, queue_size=8)
    caller.set_providers([provider.entry()])
    calls = [start_call(caller) for _ in range(6)]
    wait_until(lambda: caller.pending == 6, "six calls to start")
    assert caller.balancer.queued == 4
    answered_id, source = provider.receive()
    provider.receive()
    provider.answer(answered_id, source)  # its slot goes to the first queued call
    provider.receive()
    clock.now += 3.0
    outcomes = [call.get(timeout=WAIT) for call in calls]
    assert outcomes[0] == (dubbo.encode(Response(answered_id, value=1)), provider.key)
    assert [outcome.status for outcome in outcomes[1:]] == [504, 504, 503, 503, 503]
    counters = caller.counters
    assert (counters["calls"], counters["answered"], counters["timeouts"], counters["queue_timeouts"]) == (6, 1, 2, 3)
    assert provider.idle()
    assert_nothing_left(caller)


class _Full:
    """The caller's socket, whose buffer has no room for the first ``refusals`` sends."""

    def __init__(self, sock, refusals: int):
        self.sock, self.refusals = sock, refusals

    def sendto(self, data, address):
        if self.refusals:
            self.refusals -= 1
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return self.sock.sendto(data, address)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_datagrams_without_room_in_the_socket_buffer_wait_and_go_in_order(make_caller, provider):
    caller = make_caller()
    caller.set_providers([provider.entry()])
    caller._out.sock = _Full(caller._sock, refusals=1)
    calls = [start_call(caller) for _ in range(3)]
    wait_until(lambda: caller.pending == 3, "three calls")
    ids = [provider.receive() for _ in range(3)]
    assert [request_id for request_id, _ in ids] == sorted(request_id for request_id, _ in ids)  # in order
    for request_id, source in ids:
        provider.answer(request_id, source)
    assert all(not isinstance(call.get(timeout=WAIT), CallError) for call in calls)
    assert caller.counters["datagrams_out"] == 3 and caller.counters.get("send_errors", 0) == 0
    assert not caller._out.waiting and not caller._out._writer.active


def test_past_the_backlog_a_datagram_is_dropped_and_counted(make_caller, provider, clock):
    caller = make_caller()
    caller._out.limit = 1
    caller.set_providers([provider.entry()])
    caller._out.sock = _Full(caller._sock, refusals=1_000_000)
    calls = [start_call(caller) for _ in range(3)]
    wait_until(lambda: caller.pending == 3, "three calls")
    assert caller._out.waiting == 1 and caller.counters["send_errors"] == 2
    clock.now += caller.call_timeout
    assert all(call.get(timeout=WAIT).status == 504 for call in calls)  # the lost ones time out


# -- request batches ----------------------------------------------------------------------------------


def batch_entry(provider: Provider, threshold: int | None = None) -> ProviderEntry:
    return provider.entry(threshold)._replace(batch=True)


def submit_calls(caller: TunnelCaller, count: int) -> list:
    """``count`` calls submitted in this turn of the loop (no switch between them); their results
    land in the returned list as they come."""
    results = []
    for _ in range(count):
        caller.submit(hash_call, results.append)
    return results


def receive_calls(provider: Provider) -> tuple[list[int], tuple[str, int]]:
    """The request ids in the next datagram (a REQUEST or a REQUEST_BATCH) and where it came from."""
    data, source = provider.sock.recvfrom(65535)
    message = tunnel.decode(data)
    if isinstance(message, tunnel.Request):
        return [message.request_id], source
    return [request.request_id for request in message.requests], source


def answer_all(provider: Provider, request_ids: list[int], to: tuple[str, int]) -> None:
    frames = [(rid, dubbo.encode(Response(rid, value=index))) for index, rid in enumerate(request_ids)]
    provider.sock.sendto(tunnel.encode_replies(frames), to)


def test_calls_sent_in_one_turn_to_a_batch_provider_go_in_one_datagram(make_caller, provider):
    caller = make_caller()
    caller.set_providers([batch_entry(provider)])
    results = submit_calls(caller, 5)
    ids, source = receive_calls(provider)
    assert len(ids) == 5 and ids == sorted(ids)  # one datagram, the calls in the order they were made
    assert provider.idle()
    assert caller.balancer.in_flight == 5  # each call holds its own slot
    answer_all(provider, ids, source)
    wait_until(lambda: len(results) == 5, "five answers")
    assert sorted(results) == sorted((dubbo.encode(Response(rid, value=i)), provider.key) for i, rid in enumerate(ids))
    counters = caller.counters
    assert (counters["request_batches"], counters["batched_calls"], counters["datagrams_out"]) == (1, 5, 1)
    assert caller.balancer.stats()[provider.key].answered == 5
    assert caller.pending == 0 and caller.balancer.in_flight == 0


def test_a_provider_that_does_not_announce_batches_gets_one_request_per_call(make_caller, provider):
    caller = make_caller()
    caller.set_providers([provider.entry()])
    submit_calls(caller, 3)
    datagrams = [provider.sock.recvfrom(65535)[0] for _ in range(3)]
    assert all(type(tunnel.decode(datagram)) is tunnel.Request for datagram in datagrams)
    assert "request_batches" not in caller.counters and caller.counters["datagrams_out"] == 3


def test_a_call_alone_in_its_turn_goes_as_a_plain_request(make_caller, provider):
    caller = make_caller()
    caller.set_providers([batch_entry(provider)])
    call = start_call(caller)
    data, source = provider.sock.recvfrom(65535)
    request = tunnel.decode(data)
    assert type(request) is tunnel.Request
    provider.answer(request.request_id, source, value=4)
    assert call.get(timeout=WAIT)[1] == provider.key
    assert "request_batches" not in caller.counters


def test_deadlines_and_the_balancers_accounting_stay_per_call_in_a_batch(make_caller, provider, clock):
    caller = make_caller(call_timeout=3.0)
    caller.set_providers([batch_entry(provider)])
    results = submit_calls(caller, 3)
    ids, source = receive_calls(provider)
    assert len(ids) == 3
    answer_all(provider, ids[1:2], source)  # only the second call is answered
    wait_until(lambda: len(results) == 1, "the answer")
    clock.now += 3.0
    wait_until(lambda: len(results) == 3, "the other two to time out")
    errors = [result for result in results if isinstance(result, CallError)]
    assert sorted(error.request_id for error in errors) == [ids[0], ids[2]]
    assert all(error.status == 504 and error.provider == provider.key for error in errors)
    stats = caller.balancer.stats()[provider.key]
    assert (stats.answered, stats.timeouts) == (1, 2)
    assert_nothing_left(caller)


def test_a_batch_over_the_datagram_limit_is_split_in_order(make_caller, provider):
    size = len(tunnel.encode_request(0, hash_call(0)))
    caller = make_caller(datagram_limit=7 + 2 * (size - 1))  # two calls per batch, exactly
    caller.set_providers([batch_entry(provider)])
    results = submit_calls(caller, 5)
    received = [receive_calls(provider) for _ in range(3)]
    assert [len(ids) for ids, _ in received] == [2, 2, 1]
    all_ids = [rid for ids, _ in received for rid in ids]
    assert all_ids == sorted(all_ids)
    for ids, source in received:
        answer_all(provider, ids, source)
    wait_until(lambda: len(results) == 5, "five answers")
    assert (caller.counters["request_batches"], caller.counters["batched_calls"]) == (2, 4)
    assert caller.pending == 0 and caller.balancer.in_flight == 0


def test_calls_of_one_turn_to_two_providers_make_one_batch_each(make_caller):
    providers = [Provider(), Provider()]
    try:
        caller = make_caller()
        caller.set_providers([batch_entry(p) for p in providers])
        results = submit_calls(caller, 8)
        received = [receive_calls(p) for p in providers]
        assert sorted(len(ids) for ids, _ in received) == [4, 4]  # equal weights: the balancer alternates
        for (ids, source), p in zip(received, providers, strict=True):
            answer_all(p, ids, source)
        wait_until(lambda: len(results) == 8, "eight answers")
        assert {key for _, key in results} == {p.key for p in providers}
        assert (caller.counters["request_batches"], caller.counters["batched_calls"]) == (2, 8)
    finally:
        for p in providers:
            p.close()


def test_a_keyed_batch_is_tagged_as_a_whole(make_caller, provider):
    from sidecar.codecs.tunnel_auth import TunnelAuth

    key = bytes(range(32))
    wall = [1_700_000_000.0]
    caller = make_caller(keys=[key], wall_clock=lambda: wall[0])
    caller.set_providers([batch_entry(provider)])
    results = submit_calls(caller, 3)
    data, source = provider.sock.recvfrom(65535)
    auth = TunnelAuth([key], window_ms=30_000)
    plain, stamp = auth.open(data, now_ms=1_700_000_000_000)
    assert stamp == 1_700_000_000_000
    batch = tunnel.decode(plain)
    assert type(batch) is tunnel.RequestBatch and len(batch.requests) == 3
    damaged = bytearray(data)
    damaged[20] ^= 1  # one byte of one call: the whole batch fails its tag
    with pytest.raises(Exception, match="bad tag"):
        auth.open(bytes(damaged), now_ms=1_700_000_000_000)
    ids = [request.request_id for request in batch.requests]
    frames = [(rid, dubbo.encode(Response(rid, value=1))) for rid in ids]
    provider.sock.sendto(auth.seal(tunnel.encode_replies(frames), 1_700_000_000_000), source)
    wait_until(lambda: len(results) == 3, "three answers")
    assert not any(isinstance(result, CallError) for result in results)


def test_stopping_with_a_batch_not_yet_sent_fails_its_calls_and_sends_nothing(make_caller, provider):
    caller = make_caller()
    caller.set_providers([batch_entry(provider)])
    results = submit_calls(caller, 3)
    caller.stop()
    assert [result.status for result in results] == [503, 503, 503]
    gevent.sleep(0.05)  # the flush the loop had scheduled runs, and finds nothing
    assert provider.idle()
    assert caller.counters.get("send_errors", 0) == 0 and "request_batches" not in caller.counters


def test_calls_queued_for_slots_that_replies_free_go_out_before_those_replies_are_handed_over(make_caller, provider):
    caller = make_caller()
    caller.set_providers([batch_entry(provider, threshold=2)])
    sent_before_answer = []

    def done(result):  # runs in the reader: have the released calls left already?
        sent_before_answer.append(not provider.idle())

    for _ in range(4):
        caller.submit(hash_call, done)
    first, source = receive_calls(provider)
    assert len(first) == 2 and caller.balancer.queued == 2
    answer_all(provider, first, source)
    released, _ = receive_calls(provider)
    assert len(released) == 2  # the two freed slots, in one datagram
    wait_until(lambda: len(sent_before_answer) == 2, "both answers")
    assert sent_before_answer == [True, True]
    answer_all(provider, released, source)
    wait_until(lambda: len(sent_before_answer) == 4, "the released calls' answers")
    assert caller.pending == 0 and caller.balancer.in_flight == 0 and caller.balancer.queued == 0
