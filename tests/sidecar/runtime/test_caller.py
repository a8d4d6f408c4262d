"""The consumer's tunnel caller on loopback UDP, in this process on gevent, with a clock the test moves:
providers are UDP sockets that hand the test each call and answer only when told."""

from __future__ import annotations

import gevent
import pytest
from gevent import socket

from sidecar.codecs import dubbo, tunnel
from sidecar.codecs.dubbo_messages import Request, Response
from sidecar.runtime.caller import TunnelCaller
from sidecar.runtime.registry import ProviderEntry

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

    def close(self) -> None:
        self.sock.close()


def hash_call(request_id: int) -> bytes:
    return dubbo.encode(Request(request_id, SERVICE, "hash", "Ljava/lang/String;", ["x"], {}))


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
