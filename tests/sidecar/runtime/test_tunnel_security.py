"""Tunnel authentication on real loopback sockets, in this process on gevent: a keyed consumer sidecar
and a keyed provider sidecar in front of the demo Dubbo service (a real process), and raw UDP sockets
that send what an attacker would: no tag, a wrong key, a changed byte, an old timestamp, a replay."""

from __future__ import annotations

import gevent
import pytest
from gevent import socket

from sidecar.codecs import dubbo, tunnel
from sidecar.codecs.dubbo_messages import Response, Status
from sidecar.codecs.tunnel_auth import TunnelAuth
from sidecar.ops.config import ConsumerConfig
from sidecar.runtime.consumer import ConsumerSidecar
from sidecar.runtime.provider import ProviderSidecar
from sidecar.runtime.registry import ProviderEntry
from tests.support.dubbo_peer import WAIT, java_hash
from tests.support.fakes import FakeProvider, now_ms, parse
from tests.support.http_clients import FORM_HEADERS, Client, form
from tests.support.waiting import wait_until

OLD = bytes(range(32))
NEW = bytes(range(100, 132))
WINDOW_MS = 30_000


@pytest.fixture
def make_provider(provider_sidecars):
    def make(port: int, **options) -> ProviderSidecar:
        sidecar = provider_sidecars(port, pool_size=1, **options)
        assert sidecar.pool.wait_connected(WAIT)
        return sidecar

    return make


@pytest.fixture
def make_consumer(start):
    def make(provider: ProviderSidecar, keys=(), **options) -> ConsumerSidecar:
        return start([ProviderEntry(*provider.address, 100.0, None)], keys=keys, **options)

    return make


def call(consumer: ConsumerSidecar, text: str = "hello"):
    client = Client(consumer.address)
    try:
        return client.request(form(text), headers=FORM_HEADERS)
    finally:
        client.close()


def answer_of(datagram: bytes, auth: TunnelAuth) -> Response:
    batch = tunnel.decode(auth.open(datagram, now_ms())[0])
    return parse(batch.replies[0].frame)


# -- both directions ----------------------------------------------------------------------------


def test_keyed_calls_flow_both_ways(service, make_provider, make_consumer):
    provider = make_provider(service, keys=[OLD])
    consumer = make_consumer(provider, keys=[OLD])
    for text in ("hello", "tagged ✓"):
        reply = call(consumer, text)
        assert reply.status == 200 and int(reply.body) == java_hash(text)
    assert provider.stats()["dropped"] == {} and consumer.caller.dropped == {}
    assert provider.stats()["answered"] == 2


def test_a_consumer_without_the_key_gets_504(service, make_provider, make_consumer):
    provider = make_provider(service, keys=[OLD])
    consumer = make_consumer(provider, call_timeout=0.5)
    assert call(consumer).status == 504
    assert provider.stats()["dropped"] == {"no tag": 1} and provider.stats()["forwarded"] == 0


def test_a_consumer_with_another_key_gets_504(service, make_provider, make_consumer):
    provider = make_provider(service, keys=[OLD])
    consumer = make_consumer(provider, keys=[NEW], call_timeout=0.5)
    assert call(consumer).status == 504
    assert provider.stats()["dropped"] == {"unknown key": 1}


def test_a_keyed_consumer_drops_untagged_and_stale_replies():
    """A provider that reads the tagged request but answers without a tag, then with an old stamp."""
    auth = TunnelAuth([OLD], window_ms=WINDOW_MS)
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.bind(("127.0.0.1", 0))

    def serve():
        for stamp in (None, now_ms() - WINDOW_MS - 1_000):
            data, source = fake.recvfrom(65535)
            request = tunnel.decode(auth.open(data, now_ms())[0])
            answer = dubbo.encode(Response(request.request_id, value=1))
            reply = tunnel.encode_replies([(request.request_id, answer)])
            fake.sendto(reply if stamp is None else auth.seal(reply, stamp), source)

    server = gevent.spawn(serve)
    config = ConsumerConfig(
        listen=("127.0.0.1", 0), providers=(ProviderEntry(*fake.getsockname(), 1.0, None),), call_timeout=0.5
    )
    consumer = ConsumerSidecar(config, consumer_id=7, keys=[OLD])
    consumer.start()
    try:
        assert call(consumer).status == 504
        assert call(consumer).status == 504
        assert consumer.caller.dropped == {"no tag": 1, "stale": 1}
        assert consumer.caller.counters["answered"] == 0
    finally:
        consumer.stop(timeout=1)
        server.kill()
        fake.close()


# Every pair of nodes that can meet during a rotation done as documented (add the new key second
# everywhere, swap the order everywhere, remove the old one everywhere) answers; skipping step 1 does not.
ROTATION = [
    ([OLD], [OLD], True),  # before
    ([OLD], [OLD, NEW], True),  # step 1 under way
    ([OLD, NEW], [OLD], True),
    ([OLD, NEW], [OLD, NEW], True),
    ([OLD, NEW], [NEW, OLD], True),  # step 2 under way
    ([NEW, OLD], [OLD, NEW], True),
    ([NEW, OLD], [NEW, OLD], True),
    ([NEW, OLD], [NEW], True),  # step 3 under way
    ([NEW], [NEW, OLD], True),
    ([NEW], [NEW], True),  # after
    ([OLD], [NEW, OLD], False),  # a consumer swapped before the provider had the new key
    ([NEW, OLD], [OLD], False),  # a provider swapped before the consumer had the new key
]


@pytest.mark.parametrize(("provider_keys", "consumer_keys", "answers"), ROTATION)
def test_rotation_keeps_calls_flowing(service, make_provider, make_consumer, provider_keys, consumer_keys, answers):
    provider = make_provider(service, keys=provider_keys)
    consumer = make_consumer(provider, keys=consumer_keys, call_timeout=0.5)
    reply = call(consumer)
    assert reply.status == (200 if answers else 504)
    if answers:
        assert provider.stats()["dropped"] == {} and consumer.caller.dropped == {}
    else:
        dropped = {**provider.stats()["dropped"], **consumer.caller.dropped}
        assert dropped == {"unknown key": 1}


# -- what an attacker sends to the provider -----------------------------------------------------


def test_forged_and_damaged_requests_are_dropped_and_counted(service, make_provider, consumers):
    provider = make_provider(service, keys=[OLD])
    attacker = consumers(provider.address, 9)
    good, wrong = TunnelAuth([OLD], window_ms=WINDOW_MS), TunnelAuth([NEW], window_ms=WINDOW_MS)
    _, plain = attacker.new_request()
    tampered = bytearray(good.seal(plain, now_ms()))
    tampered[40] ^= 0x01
    _, plain_old = attacker.new_request()
    _, plain_future = attacker.new_request()
    for datagram in (
        plain,  # no tag
        wrong.seal(plain, now_ms()),  # unknown key
        bytes(tampered),  # bad tag
        good.seal(plain_old, now_ms() - WINDOW_MS - 5_000),  # stale
        good.seal(plain_future, now_ms() + WINDOW_MS + 5_000),  # stale, from the future
    ):
        attacker.send_raw(datagram)
    assert attacker.receive_datagram(0.5) is None
    stats = provider.stats()
    assert stats["dropped"] == {"no tag": 1, "unknown key": 1, "bad tag": 1, "stale": 2}
    assert stats["forwarded"] == 0 and stats["datagrams_out"] == 0


def test_a_replayed_request_is_answered_once(service, make_provider, consumers):
    provider = make_provider(service, keys=[OLD])
    attacker = consumers(provider.address, 9)
    auth = TunnelAuth([OLD], window_ms=WINDOW_MS)
    _, plain = attacker.new_request("once")
    sealed = auth.seal(plain, now_ms())
    attacker.send_raw(sealed)
    reply = attacker.receive_datagram()
    assert reply is not None and answer_of(reply, auth).value == java_hash("once")
    attacker.send_raw(sealed)  # the same bytes again, well within the window
    attacker.send_raw(auth.seal(plain, now_ms()))  # or freshly stamped: same request id
    assert attacker.receive_datagram(0.5) is None
    stats = provider.stats()
    assert stats["dropped"] == {"replayed": 2} and stats["forwarded"] == 1


def test_a_call_replayed_inside_a_request_batch_is_answered_once(service, make_provider, consumers):
    provider = make_provider(service, keys=[OLD])
    attacker = consumers(provider.address, 9)
    auth = TunnelAuth([OLD], window_ms=WINDOW_MS)
    (first_id, first), (second_id, second) = attacker.new_request("one"), attacker.new_request("two")
    attacker.send_raw(auth.seal(first, now_ms()))
    reply = attacker.receive_datagram()
    assert reply is not None and answer_of(reply, auth).request_id == first_id
    attacker.send_raw(auth.seal(tunnel.join_requests([first, second]), now_ms()))  # the first call again, batched
    reply = attacker.receive_datagram()
    assert reply is not None and answer_of(reply, auth).request_id == second_id
    attacker.send_raw(auth.seal(tunnel.join_requests([second, first]), now_ms()))  # both seen: nothing served
    attacker.send_raw(tunnel.join_requests([attacker.new_request("three")[1]] * 2))  # untagged
    assert attacker.receive_datagram(0.5) is None
    stats = provider.stats()
    assert stats["dropped"] == {"replayed": 3, "no tag": 1} and stats["forwarded"] == 2


def test_a_malformed_but_authentic_request_still_gets_bad_request(service, make_provider, consumers):
    provider = make_provider(service, keys=[OLD])
    attacker = consumers(provider.address, 9)
    auth = TunnelAuth([OLD], window_ms=WINDOW_MS)
    request_id, plain = attacker.new_request()
    broken = plain[:-1]  # the Dubbo frame is one byte short
    attacker.send_raw(auth.seal(broken, now_ms()))
    reply = attacker.receive_datagram()
    assert reply is not None
    answer = answer_of(reply, auth)
    assert answer.request_id == request_id and answer.status == Status.BAD_REQUEST


# -- sources ------------------------------------------------------------------------------------


def test_without_a_key_only_loopback_is_accepted(service, make_provider, consumers):
    provider = make_provider(service)
    assert provider.sources.allows("127.0.0.1") and not provider.sources.allows("192.0.2.10")
    before = provider.stats()["datagrams_in"]
    provider._on_datagram(b"anything", ("192.0.2.10", 4000))  # what the read loop does for that source
    provider._on_datagram(b"anything", ("::ffff:192.0.2.10", 4000, 0, 0))
    stats = provider.stats()
    assert stats["dropped"] == {"source not allowed": 2} and stats["datagrams_in"] == before + 2
    attacker = consumers(provider.address, 9)  # loopback, unkeyed: served as before
    _, plain = attacker.new_request("local")
    attacker.send_raw(plain)
    assert attacker.receive_datagram() is not None


def test_the_allowlist_is_exact(service, make_provider, consumers):
    provider = make_provider(service, allow_sources=["192.0.2.0/24"])
    attacker = consumers(provider.address, 9)
    _, plain = attacker.new_request()
    attacker.send_raw(plain)  # from 127.0.0.1, not listed
    assert attacker.receive_datagram(0.5) is None
    assert provider.stats()["dropped"] == {"source not allowed": 1}
    assert provider.sources.allows("192.0.2.77") and not provider.sources.allows("198.51.100.1")


def test_the_allowlist_applies_to_keyed_datagrams_too(service, make_provider, consumers):
    provider = make_provider(service, keys=[OLD], allow_sources=["127.0.0.2/32"])
    attacker = consumers(provider.address, 9)
    _, plain = attacker.new_request()
    attacker.send_raw(TunnelAuth([OLD], window_ms=WINDOW_MS).seal(plain, now_ms()))
    assert attacker.receive_datagram(0.5) is None
    assert provider.stats()["dropped"] == {"source not allowed": 1}


def test_the_consumer_takes_replies_only_from_the_provider_the_call_went_to():
    silent = FakeProvider(behave=lambda request: None, auth=TunnelAuth([OLD], window_ms=WINDOW_MS))
    try:
        entry = silent.entry()
        config = ConsumerConfig(listen=("127.0.0.1", 0), providers=(entry,), call_timeout=0.5)
        consumer = ConsumerSidecar(config, consumer_id=7, keys=[OLD])
        consumer.start()
        try:
            result = gevent.spawn(call, consumer)
            request_id = wait_until(lambda: silent.received, "the call to reach the provider")[0].request_id
            forged = tunnel.encode_replies([(request_id, dubbo.encode(Response(request_id, value=1)))])
            other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            other.sendto(TunnelAuth([OLD], window_ms=WINDOW_MS).seal(forged, now_ms()), consumer.caller.address)
            other.close()
            assert result.get(timeout=5).status == 504  # even with the right key
            assert consumer.caller.dropped == {"wrong source": 1}
        finally:
            consumer.stop(timeout=1)
    finally:
        silent.close()
