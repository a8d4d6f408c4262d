"""Fixtures for the sidecar's tests in this process on gevent: sidecars that stop at the end of the
test, fake tunnel peers, and the demo Dubbo service as a real process."""

from __future__ import annotations

import pytest

from sidecar.ops.config import ConsumerConfig
from sidecar.runtime.consumer import ConsumerSidecar
from sidecar.runtime.provider import ProviderSidecar
from tests.support.dubbo_peer import start_provider
from tests.support.fakes import FakeConsumer, FakeProvider


@pytest.fixture
def start():
    """``start(providers, keys=(), **options)``: a started consumer sidecar (id 7) on a free port in
    front of ``providers`` (registry entries), with ``options`` for its config."""
    started = []

    def start(providers, keys=(), **options) -> ConsumerSidecar:
        config = ConsumerConfig(listen=("127.0.0.1", 0), providers=tuple(providers), **options)
        sidecar = ConsumerSidecar(config, consumer_id=7, keys=keys)
        sidecar.start()
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        sidecar.stop(timeout=1)


@pytest.fixture
def provider_sidecars():
    """``provider_sidecars(dubbo_port, **options)``: a started provider sidecar on a free port in front
    of the Dubbo service on ``dubbo_port``; it reconnects quickly unless ``options`` say otherwise."""
    made = []

    def make(dubbo_port: int, **options) -> ProviderSidecar:
        options.setdefault("backoff", 0.05)
        options.setdefault("max_backoff", 0.2)
        sidecar = ProviderSidecar(("127.0.0.1", 0), ("127.0.0.1", dubbo_port), **options)
        sidecar.start()
        made.append(sidecar)
        return sidecar

    yield make
    for sidecar in made:
        sidecar.stop(timeout=1)


@pytest.fixture(scope="module")
def service():
    """The demo Dubbo service as a real process (20 ms a call, 5000 at once), for a whole module: its port."""
    process, port = start_provider("--latency-ms", "20", "--capacity", "5000")
    yield port
    assert process.stop() == 0, process.stderr


@pytest.fixture
def provider():
    """A fake provider sidecar that answers every call at once."""
    fake = FakeProvider()
    yield fake
    fake.close()


@pytest.fixture
def consumers():
    """``consumers(address, consumer_id=7)``: a fake consumer sending to the provider sidecar at ``address``."""
    made = []

    def make(address, consumer_id: int = 7) -> FakeConsumer:
        consumer = FakeConsumer(address, consumer_id)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()
