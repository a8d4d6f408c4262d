"""The hub's loop collecting I/O events (sidecar.runtime.collect): what it takes, where it applies,
that a busy loop then handles several events per turn instead of one, and that the consumer collects
only while enough calls are in flight (a light load waits for nothing)."""

from __future__ import annotations

import math
import socket
import threading
import time

import gevent
import pytest
from gevent.event import Event
from gevent.hub import get_hub

from sidecar.codecs.dubbo_messages import Response
from sidecar.runtime.collect import Collector, collect_io
from sidecar.runtime.consumer import ConsumerSidecar
from sidecar.runtime.settings import ConsumerConfig
from tests.support.dubbo_peer import java_hash
from tests.support.fakes import FakeProvider
from tests.support.http_clients import FORM_HEADERS, Client, form
from tests.support.waiting import wait_until


@pytest.fixture
def loop():
    """This process's hub loop, its collect interval put back to libev's default (0) afterwards."""
    hub_loop = get_hub().loop
    yield hub_loop
    collect_io(hub_loop, 0)


@pytest.mark.parametrize("interval", [-0.001, math.nan, math.inf, "0.1", None])
def test_an_interval_is_a_finite_number_of_seconds_at_least_zero(loop, interval):
    with pytest.raises(ValueError, match="I/O collect interval"):
        collect_io(loop, interval)


def test_a_loop_other_than_gevents_libev_loop_is_left_alone():
    class OtherLoop:
        ptr = 12345  # an address that must never be called with

    assert collect_io(OtherLoop(), 0.001) is False


def turns_for_datagrams(loop, interval: float | None, count: int = 20, spacing: float = 0.002) -> tuple[int, int]:
    """(loop turns, datagrams received) while a thread sends ``count`` datagrams ``spacing`` seconds
    apart to a socket the hub watches, with the loop collecting for ``interval`` seconds (None: as
    it is set now)."""
    if interval is not None:
        assert collect_io(loop, interval)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got = []
    turns = set()
    done = Event()

    def readable():
        turns.add(loop.iteration)
        while True:
            try:
                got.append(receiver.recv(64))
            except BlockingIOError:
                break
        if len(got) == count:
            done.set()

    def send():  # a real thread: the loop sleeps in libev (the GIL released) while it sends
        for index in range(count):
            sender.sendto(b"%d" % index, receiver.getsockname())
            time.sleep(spacing)

    watcher = loop.io(receiver.fileno(), 1)
    watcher.start(readable)
    thread = threading.Thread(target=send)
    try:
        thread.start()
        assert done.wait(timeout=10), f"{len(got)} of {count} datagrams"
    finally:
        thread.join()
        watcher.stop()
        receiver.close()
        sender.close()
    return len(turns), len(got)


def test_a_busy_loop_collects_events_into_fewer_turns(loop):
    # 20 datagrams over about 40 ms: one turn each when the loop polls at once, a few turns when it
    # collects for 50 ms (no datagram is lost either way)
    alone, received = turns_for_datagrams(loop, 0)
    assert received == 20 and alone >= 10
    collected, received = turns_for_datagrams(loop, 0.05)
    assert received == 20 and collected <= 4


def test_a_collector_collects_only_while_its_owner_is_busy(loop):
    busy = [False]
    collector = Collector(loop, 0.05, lambda: busy[0])
    assert collector.start()
    try:
        idle, received = turns_for_datagrams(loop, None)
        assert received == 20 and idle >= 10 and not collector.collecting and collector.busy_turns == 0
        busy[0] = True
        collected, received = turns_for_datagrams(loop, None)
        assert received == 20 and collected <= 4 and collector.collecting
        assert 0 < collector.busy_turns < collector.turns
    finally:
        collector.stop()
    assert not collector.collecting
    after, received = turns_for_datagrams(loop, None)  # stopped: the loop polls at once again
    assert received == 20 and after >= 10


def test_a_collector_takes_a_valid_interval_and_leaves_other_loops_alone(loop):
    with pytest.raises(ValueError, match="I/O collect interval"):
        Collector(loop, -1.0, lambda: True)

    class OtherLoop:
        ptr = 12345

    assert Collector(OtherLoop(), 0.001, lambda: True).start() is False


def test_the_consumer_collects_only_while_enough_calls_are_in_flight(start, loop):
    # The provider holds every answer until told, so the calls in flight are exactly the clients'.
    release = Event()

    def held(request):
        release.wait()
        return Response(request.request_id, value=java_hash(request.arguments[0]))

    provider = FakeProvider(behave=held)
    try:
        sidecar = start([provider.entry()], io_collect=0.0003, io_collect_calls=3)
        clients = [gevent.spawn(Client(sidecar.address).request, form(str(i)), "/", FORM_HEADERS) for i in range(2)]
        wait_until(lambda: sidecar.caller.pending == 2, "two calls in flight")
        turns = sidecar.stats()["io_collect"]["turns"]
        wait_until(lambda: sidecar.stats()["io_collect"]["turns"] > turns + 2, "a few more polls")
        stats = sidecar.stats()["io_collect"]
        assert stats["busy_turns"] == 0 and not stats["collecting"]  # two calls: it polls at once
        clients.append(gevent.spawn(Client(sidecar.address).request, form("2"), "/", FORM_HEADERS))
        wait_until(lambda: sidecar.stats()["io_collect"]["collecting"], "collecting with three calls in flight")
        release.set()
        assert all(client.get(timeout=5).status == 200 for client in clients)
        wait_until(lambda: not sidecar.stats()["io_collect"]["collecting"], "polling at once with none in flight")
        assert sidecar.stats()["io_collect"]["interval"] == 0.0003
    finally:
        provider.close()


def test_the_consumer_sets_its_hubs_interval_from_its_config(loop):
    for interval in (0.0, 0.0003, ConsumerConfig().io_collect):
        config = ConsumerConfig(listen=("127.0.0.1", 0), tunnel_bind=("127.0.0.1", 0), io_collect=interval)
        sidecar = ConsumerSidecar(config, consumer_id=3)
        assert sidecar.io_collect == 0.0  # not yet started
        sidecar.start()
        try:
            assert sidecar.io_collect == interval
        finally:
            sidecar.stop(1)
        assert sidecar.io_collect == 0.0  # the hub polls at once again
