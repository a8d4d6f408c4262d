"""The provider sidecar on real loopback sockets, in this process on gevent (no monkey patching), in
front of the demo Dubbo service as a real process, called by fake consumers: UDP sockets that send
tunnel REQUEST datagrams and read the REPLY_BATCH datagrams that come back."""

from __future__ import annotations

import signal

import gevent
import pytest

from sidecar.codecs import dubbo, tunnel
from sidecar.codecs.dubbo_messages import Response, Status
from sidecar.runtime.provider import CallTable, ProviderSidecar, rewrite_id
from tests.support.dubbo_peer import WAIT, hash_call, java_hash, start_provider
from tests.support.fakes import parse
from tests.support.ports import free_port
from tests.support.waiting import wait_until


@pytest.fixture
def sidecar(service, provider_sidecars):
    sidecar = provider_sidecars(service, pool_size=2)
    assert sidecar.pool.wait_connected(WAIT)
    return sidecar


def test_many_calls_all_answered_and_batched(sidecar, consumers):
    consumer = consumers(sidecar.address)
    texts = {consumer.new_id(): f"call {i} ✓" for i in range(800)}
    for request_id, text in texts.items():
        consumer.send_call(request_id, text)
    replies = consumer.receive(len(texts))
    for request_id, text in texts.items():
        assert replies[request_id].status == Status.OK
        assert replies[request_id].value == java_hash(text)
    assert max(consumer.batch_sizes) > 1  # replies ready together shared a datagram
    stats = sidecar.stats()
    assert stats["forwarded"] == stats["answered"] == stats["datagrams_in"] == len(texts)
    assert stats["datagrams_out"] == len(consumer.batch_sizes) < len(texts)
    assert stats["in_flight"] == 0 and stats["dropped"] == {}


def test_two_consumers_with_the_same_request_ids_each_get_their_own_answers(sidecar, consumers):
    first, second = consumers(sidecar.address, 5), consumers(sidecar.address, 5)
    ids = [first.new_id() for _ in range(200)]
    for request_id in ids:
        first.send_call(request_id, f"first {request_id}")
        second.send_call(request_id, f"second {request_id}")
    for consumer, name in ((first, "first"), (second, "second")):
        replies = consumer.receive(len(ids))
        assert {rid: r.value for rid, r in replies.items()} == {rid: java_hash(f"{name} {rid}") for rid in ids}


def test_bad_datagrams_are_dropped_and_counted_and_serving_goes_on(sidecar, consumers):
    consumer = consumers(sidecar.address)
    request_id = consumer.new_id()
    frame = dubbo.encode(hash_call(request_id, "x"))
    consumer.send_raw(b"hello, is anyone there?")
    consumer.send_raw(b"")
    consumer.send_raw(frame)  # a bare Dubbo frame, no tunnel header
    consumer.send_raw(tunnel.encode_replies([(request_id, dubbo.encode(Response(request_id, value=1)))]))
    truncated = tunnel.encode_request(request_id, frame)[:-5]
    consumer.send_raw(truncated)
    event = dubbo.encode(dubbo.heartbeat(request_id))
    consumer.send_raw(tunnel.REQUEST_HEADER.pack(tunnel.MAGIC, tunnel.VERSION, 1, 0, request_id) + event)
    # the truncated request's id was readable: it is answered at once with BAD_REQUEST
    refusal = consumer.receive(1)[request_id]
    assert refusal.status == Status.BAD_REQUEST and "declares a body" in refusal.error_message
    good = consumer.new_id()
    consumer.send_call(good, "still here")
    assert consumer.receive(1)[good].value == java_hash("still here")
    stats = sidecar.stats()
    assert stats["dropped"] == {"malformed": 3, "reply batch": 1, "malformed request": 1, "event": 1}
    assert stats["datagrams_in"] == 7 and stats["rejected"] == 1 and stats["answered"] == 1


class FailsOnce:
    """A source policy that raises the first time it is asked (a bug), then answers as ``policy``."""

    def __init__(self, policy):
        self.policy, self.failed = policy, False

    def allows(self, host: str) -> bool:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in the source policy")
        return self.policy.allows(host)


def test_the_reader_goes_on_after_a_datagram_whose_handling_fails(sidecar, consumers):
    """A bug met while handling one datagram is logged and counted; that datagram's call is lost (it
    ends at the consumer's deadline), the datagrams after it are served, in this turn and the next."""
    sidecar.sources = FailsOnce(sidecar.sources)
    consumer = consumers(sidecar.address)
    lost, kept = consumer.new_id(), consumer.new_id()
    consumer.send_call(lost, "lost")
    consumer.send_call(kept, "kept")
    replies = consumer.receive(1)
    assert list(replies) == [kept] and replies[kept].value == java_hash("kept")
    later = consumer.new_id()
    consumer.send_call(later, "later")
    assert consumer.receive(1)[later].value == java_hash("later")
    stats = sidecar.stats()
    assert stats["dropped"] == {"internal error": 1}
    assert stats["datagrams_in"] == 3 and stats["answered"] == 2


def test_the_calls_of_a_request_batch_are_each_served_as_if_they_came_alone(sidecar, consumers):
    consumer = consumers(sidecar.address)
    texts = {consumer.new_id(): f"batched {i}" for i in range(300)}
    singles = [consumer.request(request_id, text) for request_id, text in texts.items()]
    datagrams = tunnel.batch_requests(singles, limit=1472)  # about ten calls per datagram
    assert all(datagram[3] == tunnel.Kind.REQUEST_BATCH for datagram in datagrams[:-1])
    for datagram in datagrams:
        consumer.send_raw(datagram)
    replies = consumer.receive(len(texts))
    assert {rid: reply.value for rid, reply in replies.items()} == {rid: java_hash(t) for rid, t in texts.items()}
    stats = sidecar.stats()
    batches = sum(1 for datagram in datagrams if datagram[3] == tunnel.Kind.REQUEST_BATCH)
    assert stats["datagrams_in"] == len(datagrams) and stats["request_batches"] == batches
    assert stats["forwarded"] == stats["answered"] == len(texts)
    assert stats["batched_calls"] == len(texts) - (len(datagrams) - batches)
    assert stats["in_flight"] == 0 and stats["dropped"] == {}


def test_a_malformed_request_batch_is_dropped_whole_and_counted(sidecar, consumers):
    consumer = consumers(sidecar.address)
    first, second = consumer.new_request("a"), consumer.new_request("b")
    joined = tunnel.join_requests([first[1], second[1]])
    consumer.send_raw(joined[:-1])  # the second call's frame is one byte short: the first is not served either
    consumer.send_raw(joined[:7])  # a count of 2 and no entry
    consumer.send_raw(joined[:5] + b"\x00\x00")  # no calls at all
    consumer.send_raw(joined[:5] + b"\x00\x01" + joined[7:])  # a count of 1, then the second call as garbage
    assert consumer.receive_datagram(0.5) is None  # nothing half served, nothing answered
    stats = sidecar.stats()
    assert stats["dropped"] == {"malformed request batch": 4}
    assert stats["forwarded"] == 0 and stats.get("request_batches") == 0
    consumer.send_raw(joined)  # the same calls, well formed, are served
    assert {rid: r.value for rid, r in consumer.receive(2).items()} == {
        first[0]: java_hash("a"),
        second[0]: java_hash("b"),
    }


def test_service_down_calls_get_service_error_at_once(provider_sidecars, consumers):
    sidecar = provider_sidecars(free_port(), pool_size=1)
    consumer = consumers(sidecar.address)
    ids = [consumer.new_id() for _ in range(20)]
    for request_id in ids:
        consumer.send_call(request_id, "x")
    replies = consumer.receive(len(ids))
    for request_id in ids:
        assert replies[request_id].status == Status.SERVICE_ERROR
        assert "unavailable" in replies[request_id].error_message
    stats = sidecar.stats()
    assert stats["upstream_errors"] == len(ids) and stats["forwarded"] == 0 and stats["in_flight"] == 0


def test_calls_in_flight_when_the_service_dies_get_service_error(provider_sidecars, consumers):
    process, port = start_provider("--latency-ms", "60000")
    try:
        sidecar = provider_sidecars(port, pool_size=2)
        assert sidecar.pool.wait_connected(WAIT)
        consumer = consumers(sidecar.address)
        ids = [consumer.new_id() for _ in range(30)]
        for request_id in ids:
            consumer.send_call(request_id, "x")
        wait_until(lambda: sidecar.stats()["forwarded"] == len(ids), "the calls to go out")
        wait_until(lambda: sidecar.stats()["pool"]["in_flight"] == len(ids), "the calls to be in flight")
    finally:
        process.stop(signal.SIGKILL)
    replies = consumer.receive(len(ids))
    for request_id in ids:
        assert replies[request_id].status == Status.SERVICE_ERROR
        assert "lost with the call in flight" in replies[request_id].error_message
    assert sidecar.stats()["in_flight"] == 0


def test_calls_never_answered_are_forgotten_after_the_timeout(provider_sidecars, consumers):
    process, port = start_provider("--latency-ms", "1500")
    try:
        sidecar = provider_sidecars(port, pool_size=1, call_timeout=0.2)
        assert sidecar.pool.wait_connected(WAIT)
        consumer = consumers(sidecar.address)
        for _ in range(10):
            consumer.send_call(consumer.new_id(), "slow")
        wait_until(lambda: sidecar.stats()["timeouts"] == 10, "the calls to be forgotten")
        stats = sidecar.stats()
        assert stats["in_flight"] == 0 and stats["pool"]["in_flight"] == 0
        # the service's late answers find no call and are dropped, not sent
        wait_until(lambda: sidecar.stats()["dropped"].get("late or unknown reply") == 10, "the late replies")
        assert sidecar.stats()["datagrams_out"] == 0
    finally:
        assert process.stop() == 0


def test_stop_waits_for_calls_in_flight(service, provider_sidecars, consumers):
    sidecar = provider_sidecars(service, pool_size=1)
    assert sidecar.pool.wait_connected(WAIT)
    consumer = consumers(sidecar.address)
    ids = [consumer.new_id() for _ in range(50)]
    for request_id in ids:
        consumer.send_call(request_id, "bye")
    wait_until(lambda: sidecar.stats()["forwarded"] == len(ids), "the calls to go out")
    sidecar.stop(timeout=WAIT)
    replies = consumer.receive(len(ids))
    assert all(reply.value == java_hash("bye") for reply in replies.values())
    sidecar.stop()  # twice is harmless


def test_stop_answers_what_the_service_did_not_in_time(provider_sidecars, consumers):
    process, port = start_provider("--latency-ms", "60000")
    try:
        sidecar = provider_sidecars(port, pool_size=1)
        assert sidecar.pool.wait_connected(WAIT)
        consumer = consumers(sidecar.address)
        request_id = consumer.new_id()
        consumer.send_call(request_id, "x")
        wait_until(lambda: sidecar.stats()["forwarded"] == 1, "the call to go out")
        sidecar.stop(timeout=0.05)
        reply = consumer.receive(1)[request_id]
        assert reply.status == Status.SERVICE_ERROR and "stopped" in reply.error_message
    finally:
        assert process.stop() == 0


def test_serve_forever_returns_after_stop(service, provider_sidecars):
    sidecar = provider_sidecars(service)
    server = gevent.spawn(sidecar.serve_forever)
    gevent.idle()  # serve_forever runs until it waits
    sidecar.stop(timeout=1)
    assert server.join(WAIT) is None and server.dead


def test_call_table_ids_and_expiry():
    table = CallTable(timeout=1.0)
    first = table.add(("a", 1), 10, 0.0, 0xC2)
    second = table.add(("b", 2), 10, 0.5, 0xC2)
    assert first != second and len(table) == 2
    assert table.expire(1.2) == [(first, (("a", 1), 10, 0.0, 0xC2))]
    assert table.pop(second).address == ("b", 2) and len(table) == 0


def test_rewrite_id_changes_only_the_id():
    frame = dubbo.encode(hash_call(0x0007_0001_E240_0001, "hello"))
    moved = rewrite_id(frame, 42)
    assert len(moved) == len(frame) and moved[:4] == frame[:4] and moved[12:] == frame[12:]
    assert parse(moved).request_id == 42 and rewrite_id(moved, 0x0007_0001_E240_0001) == frame


def test_address_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="not started"):
        _ = ProviderSidecar(("127.0.0.1", 0)).address
    with pytest.raises(ValueError):
        ProviderSidecar(call_timeout=0)


def test_docstring_examples():
    import doctest

    from sidecar.runtime import provider

    assert doctest.testmod(provider).failed == 0


class _FullOnce:
    """A UDP socket whose first ``sendto`` finds the kernel's buffer full."""

    def __init__(self, sock):
        self.sock, self.full = sock, True

    def sendto(self, data, address):
        if self.full:
            self.full = False
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return self.sock.sendto(data, address)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_a_reply_the_socket_does_not_take_at_once_waits_and_is_sent(sidecar, consumers):
    consumer = consumers(sidecar.address)
    real = sidecar._out.sock
    sidecar._out.sock = full = _FullOnce(real)
    try:
        ids = [consumer.new_id() for _ in range(3)]
        for request_id in ids:
            consumer.send_call(request_id, f"wait {request_id}")
        replies = consumer.receive(len(ids))
        assert not full.full  # the first reply did wait in the backlog
    finally:
        sidecar._out.sock = real
    assert {rid: r.value for rid, r in replies.items()} == {rid: java_hash(f"wait {rid}") for rid in ids}
    assert sidecar.stats()["datagrams_out"] == len(consumer.batch_sizes) and sidecar.stats()["dropped"] == {}


def test_regression_stop_left_requests_already_received_unanswered(service, provider_sidecars, consumers):
    # stop() killed the reader and closed the socket: requests that had arrived before the stop but
    # were still in the socket's buffer never got an answer, and their consumers answered 504
    sidecar = provider_sidecars(service, pool_size=1)
    assert sidecar.pool.wait_connected(WAIT)
    consumer = consumers(sidecar.address)
    ids = [consumer.new_id() for _ in range(3)]
    for request_id in ids:
        consumer.send_call(request_id, "just in time")  # no switch to the reader before the stop
    sidecar.stop(timeout=WAIT)
    replies = consumer.receive(len(ids))
    assert all(reply.value == java_hash("just in time") for reply in replies.values())
