"""Failures with real processes under load: a provider sidecar killed and started again on its port,
the Dubbo service behind a provider killed and started again, malformed HTTP from clients, and
garbage or forged datagrams on both ends of the tunnel. Every wait is bounded; nothing is timed."""

from __future__ import annotations

import signal
from collections import Counter

import gevent
import pytest
from gevent import socket

from integrations.demo.hello_service import java_string_hash
from sidecar.codecs import dubbo, tunnel
from sidecar.codecs.dubbo_messages import Response
from tests.support.sidecar_load import (
    WAIT,
    Load,
    consumer_sidecar,
    provider_sidecar,
    service,
    wait_exit,
    wait_until,
)


@pytest.fixture
def processes():
    """Processes to stop (by PID) when the test ends, whatever happened."""
    started = []
    yield started
    for process in reversed(started):
        process.stop()


def _started(processes: list, started: tuple):
    processes.append(started[0])
    return started


def test_killed_provider_sidecar_fails_only_its_calls_and_rejoins_on_the_same_port(processes):
    _, port = _started(processes, service(50))
    killed, killed_key = _started(processes, provider_sidecar(port))
    others = [_started(processes, provider_sidecar(port))[1] for _ in range(2)]
    providers = [f"{key}=1/4" for key in (killed_key, *others)]
    _, address = _started(processes, consumer_sidecar(providers, "--call-timeout", "1", "--provider-header"))
    load = Load(address, 10)
    try:
        wait_until(lambda: load.answered(lambda c: c.provider == killed_key) >= 4, "calls to every provider")
        load.signal(killed.pid, signal.SIGKILL)
        assert wait_exit(killed) == -signal.SIGKILL
        wait_until(lambda: any(c.status == 504 for c in load.calls), "the calls in flight to time out")
        ejected = len(load.calls)
        wait_until(lambda: load.answered(lambda c: c in load.calls[ejected:]) >= 40, "calls after the ejection")
        after_ejection = load.calls[ejected:]
        _, key = _started(processes, provider_sidecar(port, listen=killed_key))
        assert key == killed_key
        rejoined = len(load.calls)
        wait_until(lambda: any(c.provider == killed_key for c in load.calls[rejoined:]), "the provider to rejoin")
    finally:
        load.stop()
    failed = [call for call in load.calls if call.status != 200]
    assert failed and all(c.status == 504 and killed_key.encode() in c.body for c in failed), failed
    assert all(call.right for call in load.calls if call.status == 200)
    # once ejected, the killed provider got no call but its probes: the other providers answered the rest
    assert sum(call.right for call in after_ejection) >= 40
    assert {call.provider for call in after_ejection if call.right} <= set(others)


def test_restarted_dubbo_service_fails_calls_in_flight_at_once_and_the_pool_reconnects(processes):
    dubbo_service, port = _started(processes, service(300))
    _, key = _started(processes, provider_sidecar(port))
    _, address = _started(processes, consumer_sidecar([f"{key}=1"], "--call-timeout", "2"))
    load = Load(address, 6)
    try:
        wait_until(lambda: load.answered() >= 6 and len(load.outstanding()) >= 3, "calls in flight")
        in_flight = load.signal(dubbo_service.pid, signal.SIGKILL)
        wait_exit(dubbo_service)
        wait_until(lambda: all(call.done for call in in_flight), "the calls in flight to end")
        _started(processes, service(300, port=port))
        restarted = len(load.calls)
        wait_until(lambda: load.answered(lambda c: c in load.calls[restarted:]) >= 6, "calls after the restart")
    finally:
        load.stop()
    assert all(call.status in (502, 504) for call in in_flight), in_flight
    assert any(b"SERVICE_ERROR" in call.body for call in in_flight if call.status == 502)
    failed = [call for call in load.calls if call.status != 200]
    assert all(call.status in (502, 504) for call in failed), failed
    assert all(call.right for call in load.calls if call.status == 200)


def _raw(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    sock = socket.create_connection(address, timeout=WAIT)
    try:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out
    except ConnectionResetError:
        return out
    finally:
        sock.close()


MALFORMED = {
    "bad request line": (b"GARBAGE\r\n\r\n", 400),
    "bad header": (b"POST / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400),
    "oversized header": (b"POST / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n", 431),
    "oversized body": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", 413),
    "head never finished": (b"POST / HTTP/1.1\r\nHost: a\r\n", 408),
    "nothing sent": (b"", None),  # closed after the idle timeout, no reply
}


def test_malformed_http_gets_its_status_or_a_close_while_other_clients_are_served(processes):
    _, port = _started(processes, service(20))
    _, key = _started(processes, provider_sidecar(port))
    options = ("--header-timeout", "0.5", "--idle-timeout", "1")
    _, address = _started(processes, consumer_sidecar([f"{key}=1"], *options))
    load = Load(address, 2)
    try:
        wait_until(lambda: load.answered() >= 2, "calls before")
        before = len(load.calls)
        clients = {name: gevent.spawn(_raw, address, data) for name, (data, _) in MALFORMED.items()}
        gevent.joinall(list(clients.values()), timeout=WAIT, raise_error=True)
        served_meanwhile = len(load.calls) - before
    finally:
        load.stop()
    for name, (_, status) in MALFORMED.items():
        reply = clients[name].value
        if status is None:
            assert reply == b"", name
        else:
            assert reply.startswith(b"HTTP/1.1 %d " % status), (name, reply[:200])
            assert b"connection: close" in reply.lower(), name
    assert served_meanwhile > 0
    assert load.calls and all(call.right for call in load.calls), [c for c in load.calls if not c.right]


class ForgingRelay:
    """What the consumer takes for its provider sidecar: a UDP socket that passes requests on to the
    real one and its replies back. For each request it passes on it first forges, from another socket
    (another source address), a reply with the request's id and a wrong answer, plus garbage, a
    request and a truncated batch; from its own address, a reply with an id the consumer never used.
    To the provider sidecar it sends garbage, a reply batch, a replay of the request and the request
    with a broken frame: the provider answers those to the forger, never to the consumer."""

    def __init__(self, provider: tuple[str, int]):
        self.provider = provider
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.forger.bind(("127.0.0.1", 0))
        self.key = "{}:{}".format(*self.sock.getsockname())
        self.sent = Counter()
        self.forger_received = Counter()
        self._greenlets = [gevent.spawn(self._relay), gevent.spawn(self._read_forger)]

    def _relay(self) -> None:
        while True:
            data, source = self.sock.recvfrom(65535)
            if source[:2] == self.provider:
                self.sock.sendto(data, self.consumer)
                self.sent["relayed replies"] += 1
                continue
            self.consumer = source[:2]
            self._forge(data)
            self.sock.sendto(data, self.provider)
            self.sent["relayed requests"] += 1

    def _forge(self, datagram: bytes) -> None:
        request = tunnel.decode(datagram)
        decoder = dubbo.DubboDecoder()
        decoder.receive_data(request.frame)
        call = decoder.next_event()
        rid = request.request_id
        wrong = dubbo.encode(Response(rid, value=java_string_hash(call.arguments[0]) ^ 1))
        to_consumer = {
            "reply from another address": (self.forger, tunnel.encode_replies([(rid, wrong)])),
            "garbage": (self.forger, b"\x00garbage"),
            "request": (self.forger, datagram),
            "truncated batch": (self.forger, tunnel.encode_replies([(rid, wrong)])[:-3]),
            # the top bit is the consumer id's: an id this consumer never issued
            "unknown id": (self.sock, tunnel.encode_replies([(rid ^ 1 << 63, wrong)])),
        }
        for name, (sock, data) in to_consumer.items():
            sock.sendto(data, self.consumer)
            self.sent[name] += 1
        to_provider = {
            "garbage to the provider": b"\xff" * 40,
            "reply batch to the provider": tunnel.encode_replies([(rid, wrong)]),
            "replayed request": datagram,
            "broken request": datagram[:-5],
        }
        for name, data in to_provider.items():
            self.forger.sendto(data, self.provider)
            self.sent[name] += 1

    def _read_forger(self) -> None:
        while True:
            data, source = self.forger.recvfrom(65535)
            self.forger_received["from the provider" if source[:2] == self.provider else "other"] += 1

    def close(self) -> None:
        gevent.killall(self._greenlets)
        self.sock.close()
        self.forger.close()


def test_forged_and_garbage_datagrams_never_reach_a_client(processes):
    _, port = _started(processes, service(20))
    provider, key = _started(processes, provider_sidecar(port))
    host, provider_port = key.rsplit(":", 1)
    relay = ForgingRelay((host, int(provider_port)))
    try:
        _, address = _started(processes, consumer_sidecar([f"{relay.key}=1"]))
        load = Load(address, 4)
        try:
            wait_until(lambda: load.answered() >= 100, "calls through the relay")
        finally:
            load.stop()
    finally:
        relay.close()
    assert load.calls and all(call.right for call in load.calls), [c for c in load.calls if not c.right]
    assert relay.sent["relayed requests"] >= 100 and relay.sent["reply from another address"] >= 100
    # the provider answered the replayed requests (and the broken ones) to the forger, not the consumer
    assert relay.forger_received["from the provider"] > 0
    assert provider.popen.poll() is None
