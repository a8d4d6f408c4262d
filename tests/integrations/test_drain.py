"""SIGTERM under load, with real processes: a stopping sidecar finishes every call that was in flight
at the signal (200 with the right answer), takes no new connection, and exits 0. The service takes
300 ms per call, so calls are always in flight when the signal comes."""

from __future__ import annotations

import signal
import time

import gevent
import pytest
from gevent import socket

from tests.support.sidecar_load import (
    WAIT,
    Load,
    admin_address,
    admin_stats,
    consumer_sidecar,
    provider_sidecar,
    service,
    wait_exit,
    wait_until,
)

SLOW_MS = 300


@pytest.fixture
def processes():
    """Processes to stop (by PID) when the test ends, whatever happened."""
    started = []
    yield started
    for process in reversed(started):
        process.stop()


def _refused_while(address: tuple[str, int], draining) -> bool:
    """Connect to ``address`` until the connection is refused; whether ``draining()`` still held then.
    A connection accepted meanwhile (the signal is still on its way) is closed unused; one caught in
    the listener's backlog as the listener closes is reset, which is a refusal too."""
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        try:
            sock = socket.create_connection(address, timeout=WAIT)
        except (ConnectionRefusedError, ConnectionResetError):
            return draining()
        sock.close()
        gevent.sleep(0.005)
    raise AssertionError(f"{address} still accepts connections")


def _passed_on(admin: tuple[str, int], written: int) -> bool:
    """Whether the consumer has read ``written`` calls and holds none in its queue: each went to a provider."""
    stats = admin_stats(admin)
    return stats["http"]["requests"] == written and stats["queued"] == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_consumer_sigterm_finishes_every_call_in_flight_and_refuses_new_connections(processes, workers):
    dubbo, port = service(SLOW_MS)
    processes.append(dubbo)
    provider, key = provider_sidecar(port)
    processes.append(provider)
    consumer, address = consumer_sidecar([f"{key}=1"], "--workers", str(workers))
    processes.append(consumer)
    load = Load(address, 8)
    try:
        wait_until(lambda: load.answered() >= 8 and len(load.outstanding()) >= 4, "calls in flight")
        in_flight = load.signal(consumer.pid, signal.SIGTERM)
        refused_while_draining = _refused_while(address, lambda: consumer.popen.poll() is None)
        assert wait_exit(consumer) == 0, "".join(consumer.stderr)
    finally:
        load.stop()
    assert in_flight and all(call.right for call in in_flight), [c for c in in_flight if not c.right]
    assert refused_while_draining
    # after the signal the consumer closed every connection once its reply was out: none waits forever
    assert all(call.done for call in load.calls)


def test_provider_sigterm_finishes_every_call_in_flight_and_the_other_provider_takes_over(processes):
    dubbo, port = service(SLOW_MS)
    processes.append(dubbo)
    stopping, stopping_key = provider_sidecar(port)
    processes.append(stopping)
    staying, staying_key = provider_sidecar(port)
    processes.append(staying)
    options = ("--call-timeout", "1", "--provider-header", "--admin", "127.0.0.1:0")
    consumer, address = consumer_sidecar([f"{stopping_key}=1", f"{staying_key}=1"], *options)
    processes.append(consumer)
    admin = admin_address(consumer)
    load = Load(address, 8)
    try:
        wait_until(lambda: load.answered(lambda c: c.provider == stopping_key) >= 4, "calls to the stopping provider")
        wait_until(lambda: len(load.outstanding()) >= 6, "calls in flight")
        # A call is in flight at the provider sidecar once the consumer has passed it on: the clients
        # hold their next calls until the consumer has read every call written and queues none, so
        # that every call written is there when the signal comes.
        load.held = True
        wait_until(lambda: _passed_on(admin, len(load.calls)), "the consumer to pass every call on")
        in_flight = load.signal(stopping.pid, signal.SIGTERM)
        load.held = False
        assert wait_exit(stopping) == 0, "".join(stopping.stderr)
        after_exit = len(load.calls)
        wait_until(lambda: sum(c.right for c in load.calls[after_exit:]) >= 16, "calls answered after the exit")
    finally:
        load.stop()
    assert in_flight and all(call.right for call in in_flight), [c for c in in_flight if not c.right]
    assert stopping_key in {call.provider for call in in_flight}
    # calls sent to the stopping provider after the signal time out; nothing else fails
    failed = [call for call in load.calls if call.status != 200]
    assert all(call.status == 504 and stopping_key.encode() in call.body for call in failed), failed
    assert all(call.right for call in load.calls if call.status == 200)
