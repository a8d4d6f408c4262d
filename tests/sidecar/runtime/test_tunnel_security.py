"""Tunnel authentication on real loopback sockets, in this process on gevent: a keyed consumer sidecar
and a keyed provider sidecar in front of the demo Dubbo service (a real process), and raw UDP sockets
that send what an attacker would: no tag, a wrong key, a changed byte, an old timestamp, a replay."""

from __future__ import annotations

import time

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
from tests.sidecar.runtime.test_consumer import FORM_HEADERS, Client, FakeProvider, form
from tests.support.dubbo_peer import WAIT, hash_call, java_hash, start_provider

OLD = bytes(range(32))
NEW = bytes(range(100, 132))
WINDOW_MS = 30_000


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def service():
    process, port = start_provider("--latency-ms", "5", "--capacity", "5000")
    yield port
    assert process.stop() == 0, process.stderr


@pytest.fixture
def make_provider():
    made = []

    def make(port: int, **options) -> ProviderSidecar:
        sidecar = ProviderSidecar(("127.0.0.1", 0), ("127.0.0.1", port), pool_size=1, backoff=0.05, **options)
        sidecar.start()
        made.append(sidecar)
        assert sidecar.pool.wait_connected(WAIT)
        return sidecar

    yield make
    for sidecar in made:
        sidecar.stop(timeout=1)


@pytest.fixture
def make_consumer():
    made = []

    def make(provider: ProviderSidecar, keys=(), **options) -> ConsumerSidecar:
        entry = ProviderEntry(*provider.address, 100.0, None)
        config = ConsumerConfig(listen=("127.0.0.1", 0), providers=(entry,), **options)
        sidecar = ConsumerSidecar(config, consumer_id=7, keys=keys)
        sidecar.start()
        made.append(sidecar)
        return sidecar

    yield make
    for sidecar in made:
        sidecar.stop(timeout=1)


class RawConsumer:
    """A UDP socket that sends REQUEST datagrams, sealed or not, and reads what comes back."""

    def __init__(self, target):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.target = target
        self.ids = tunnel.RequestIds(9)

    def plain(self, text: str = "hello") -> tuple[int, bytes]:
        request_id = self.ids.next(int(time.monotonic() * 1000) & tunnel.STAMP_MASK)
        return request_id, tunnel.encode_request(request_id, dubbo.encode(hash_call(request_id, text)))

    def send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.target)

    def receive(self, timeout: float = WAIT) -> bytes | None:
        try:
            with gevent.Timeout(timeout):
                return self.sock.recvfrom(65535)[0]
        except gevent.Timeout:
            return None

    def close(self):
        self.sock.close()


@pytest.fixture
def raw():
    made = []

    def make(target) -> RawConsumer:
        consumer = RawConsumer(target)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()


def call(consumer: ConsumerSidecar, text: str = "hello"):
    client = Client(consumer.address)
    try:
        return client.request(form(text), headers=FORM_HEADERS)
    finally:
        client.close()


def answer_of(datagram: bytes, auth: TunnelAuth) -> Response:
    batch = tunnel.decode(auth.open(datagram, now_ms())[0])
    decoder = dubbo.DubboDecoder()
    decoder.receive_data(batch.replies[0].frame)
    return decoder.next_event()


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


def test_forged_and_damaged_requests_are_dropped_and_counted(service, make_provider, raw):
    provider = make_provider(service, keys=[OLD])
    attacker = raw(provider.address)
    good, wrong = TunnelAuth([OLD], window_ms=WINDOW_MS), TunnelAuth([NEW], window_ms=WINDOW_MS)
    _, plain = attacker.plain()
    tampered = bytearray(good.seal(plain, now_ms()))
    tampered[40] ^= 0x01
    _, plain_old = attacker.plain()
    _, plain_future = attacker.plain()
    for datagram in (
        plain,  # no tag
        wrong.seal(plain, now_ms()),  # unknown key
        bytes(tampered),  # bad tag
        good.seal(plain_old, now_ms() - WINDOW_MS - 5_000),  # stale
        good.seal(plain_future, now_ms() + WINDOW_MS + 5_000),  # stale, from the future
    ):
        attacker.send(datagram)
    assert attacker.receive(0.5) is None
    stats = provider.stats()
    assert stats["dropped"] == {"no tag": 1, "unknown key": 1, "bad tag": 1, "stale": 2}
    assert stats["forwarded"] == 0 and stats["datagrams_out"] == 0


def test_a_replayed_request_is_answered_once(service, make_provider, raw):
    provider = make_provider(service, keys=[OLD])
    attacker = raw(provider.address)
    auth = TunnelAuth([OLD], window_ms=WINDOW_MS)
    _, plain = attacker.plain("once")
    sealed = auth.seal(plain, now_ms())
    attacker.send(sealed)
    reply = attacker.receive()
    assert reply is not None and answer_of(reply, auth).value == java_hash("once")
    attacker.send(sealed)  # the same bytes again, well within the window
    attacker.send(auth.seal(plain, now_ms()))  # or freshly stamped: same request id
    assert attacker.receive(0.5) is None
    stats = provider.stats()
    assert stats["dropped"] == {"replayed": 2} and stats["forwarded"] == 1


def test_a_malformed_but_authentic_request_still_gets_bad_request(service, make_provider, raw):
    provider = make_provider(service, keys=[OLD])
    attacker = raw(provider.address)
    auth = TunnelAuth([OLD], window_ms=WINDOW_MS)
    request_id, plain = attacker.plain()
    broken = plain[:-1]  # the Dubbo frame is one byte short
    attacker.send(auth.seal(broken, now_ms()))
    reply = attacker.receive()
    assert reply is not None
    answer = answer_of(reply, auth)
    assert answer.request_id == request_id and answer.status == Status.BAD_REQUEST


# -- sources ------------------------------------------------------------------------------------


def test_without_a_key_only_loopback_is_accepted(service, make_provider, raw):
    provider = make_provider(service)
    assert provider.sources.allows("127.0.0.1") and not provider.sources.allows("192.0.2.10")
    before = provider.stats()["datagrams_in"]
    provider._on_datagram(b"anything", ("192.0.2.10", 4000))  # what the read loop does for that source
    provider._on_datagram(b"anything", ("::ffff:192.0.2.10", 4000, 0, 0))
    stats = provider.stats()
    assert stats["dropped"] == {"source not allowed": 2} and stats["datagrams_in"] == before + 2
    attacker = raw(provider.address)  # loopback, unkeyed: served as before
    _, plain = attacker.plain("local")
    attacker.send(plain)
    assert attacker.receive() is not None


def test_the_allowlist_is_exact(service, make_provider, raw):
    provider = make_provider(service, allow_sources=["192.0.2.0/24"])
    attacker = raw(provider.address)
    _, plain = attacker.plain()
    attacker.send(plain)  # from 127.0.0.1, not listed
    assert attacker.receive(0.5) is None
    assert provider.stats()["dropped"] == {"source not allowed": 1}
    assert provider.sources.allows("192.0.2.77") and not provider.sources.allows("198.51.100.1")


def test_the_allowlist_applies_to_keyed_datagrams_too(service, make_provider, raw):
    provider = make_provider(service, keys=[OLD], allow_sources=["127.0.0.2/32"])
    attacker = raw(provider.address)
    _, plain = attacker.plain()
    attacker.send(TunnelAuth([OLD], window_ms=WINDOW_MS).seal(plain, now_ms()))
    assert attacker.receive(0.5) is None
    assert provider.stats()["dropped"] == {"source not allowed": 1}


def test_the_consumer_takes_replies_only_from_the_provider_the_call_went_to():
    silent = FakeProvider(behave=lambda request: None)
    try:
        entry = silent.entry()
        config = ConsumerConfig(listen=("127.0.0.1", 0), providers=(entry,), call_timeout=0.5)
        consumer = ConsumerSidecar(config, consumer_id=7, keys=[OLD])
        consumer.start()
        try:
            result = gevent.spawn(call, consumer)
            gevent.sleep(0.1)
            request_id = next(iter(consumer.caller._pending))
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
