"""Misbehaving clients of a sidecar's admin port, against real processes: a demo Dubbo service, a
provider sidecar and a consumer sidecar (one process, or a supervisor serving the port for two
workers). While clients trickle request heads a byte at a time, hold connections open and silent, and
pipeline requests without reading, a readiness probe on a fresh connection is still answered, the
slow connections are ended at the request deadline (on a worker's own port with 408 where part of a
request came; the supervisor's threaded port shuts such a connection down), and memory
is back within bounds afterwards.

Run with ``-s`` to see each case's probe latencies (p50/p99) beside those of an idle port.
"""

from __future__ import annotations

import time

import gevent
import pytest
from gevent import socket

from sidecar.ops.metrics import ADMIN_LIMITS
from tests.support.dubbo_peer import WAIT
from tests.support.measure import percentiles, rss_kib
from tests.support.sidecar_load import consumer_sidecar, provider_sidecar, service

PROBE = b"GET /readyz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
# How many connections misbehave at once: more than the port holds, but for the pipelining clients,
# each of which makes the port do its per-connection budget of work.
ABUSERS = {"trickle": 2 * ADMIN_LIMITS["max_connections"], "idle": 2 * ADMIN_LIMITS["max_connections"], "pipeline": 8}
PROBES = 30


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "supervisor"])
def sidecars(request):
    started = []
    try:
        dubbo, dubbo_port = service(5)
        started.append(dubbo)
        provider, key = provider_sidecar(dubbo_port)
        started.append(provider)
        consumer, _ = consumer_sidecar([f"{key}=100"], "--admin", "127.0.0.1:0", "--workers", str(request.param))
        started.append(consumer)
        admin = consumer.wait_for_line(r"^admin (\S+):(\d+)$")
        address = (admin.group(1), int(admin.group(2)))
        _wait_ready(address)
        yield consumer, address, request.param
    finally:
        for process in reversed(started):
            process.stop()


def _wait_ready(address) -> None:
    with gevent.Timeout(WAIT, AssertionError("the consumer never became ready")):
        while probe(address)[0] != 200:
            gevent.sleep(0.05)


def probe(address) -> tuple[int, float]:
    """``GET /readyz`` on a new connection: the status and the seconds it took."""
    started = time.monotonic()
    with gevent.Timeout(WAIT, AssertionError("a probe was not answered")):
        with socket.create_connection(address) as sock:
            sock.sendall(PROBE)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    return int(data.split(b" ", 2)[1]), time.monotonic() - started


def probes(address, count: int = PROBES) -> list[float]:
    latencies = []
    for _ in range(count):
        status, seconds = probe(address)
        assert status == 200
        latencies.append(seconds)
        gevent.sleep(0.02)
    return sorted(latencies)


class Abuser:
    """One connection that misbehaves as told; ``ended`` is what the server did to it."""

    def __init__(self, address, behaviour: str):
        self.sock = socket.create_connection(address)
        self.ended: bytes | None = None  # what the server sent before closing (b"" for a plain close)
        self.greenlet = gevent.spawn(getattr(self, behaviour))

    def trickle(self) -> None:
        """A request head sent a byte at a time, each well within any per-read timeout."""
        try:
            self.sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            while True:
                self.sock.sendall(b"X")
                if self._closed(0.2):
                    return
        except OSError:
            self.ended = self.ended if self.ended is not None else b""

    def idle(self) -> None:
        """Connected, and silent."""
        self._closed(WAIT)

    def pipeline(self) -> None:
        """Hundreds of requests in one write, and nothing read for a while."""
        try:
            self.sock.sendall(b"GET /stats HTTP/1.1\r\nHost: a\r\n\r\n" * 500)
        except OSError:
            pass
        gevent.sleep(ADMIN_LIMITS["request_timeout"] / 2)
        self._closed(WAIT)

    def _closed(self, seconds: float) -> bool:
        """Read for up to ``seconds``; True once the server closed the connection."""
        data = b""
        with gevent.Timeout(seconds, False):
            while chunk := self.sock.recv(65536):
                data += chunk
            self.ended = data
            return True
        return False

    def close(self) -> None:
        self.greenlet.kill()
        self.sock.close()


@pytest.mark.parametrize("behaviour", ["trickle", "idle", "pipeline"])
def test_probes_are_answered_while_clients_misbehave(sidecars, behaviour):
    consumer, address, workers = sidecars
    quiet = probes(address)
    rss_before = rss_kib(consumer.pid)
    abusers = [Abuser(address, behaviour) for _ in range(ABUSERS[behaviour])]
    try:
        gevent.sleep(0.2)  # all connected and misbehaving
        during = probes(address)
        print(f"\n{behaviour} x{len(abusers)}: probes during {percentiles(during)}; idle port {percentiles(quiet)}")
        with gevent.Timeout(WAIT, AssertionError("some abusive connections were never ended by the server")):
            gevent.joinall([a.greenlet for a in abusers])
        if behaviour == "trickle":  # closed at the deadline; a worker's own port also says why (408)
            late = [a for a in abusers if a.ended and a.ended.startswith(b"HTTP/1.1 408 ")]
            shed = [a for a in abusers if a.ended == b""]
            assert len(late) + len(shed) == len(abusers)
            assert late if workers == 1 else not late  # the supervisor's threads are only shut down
        if behaviour == "pipeline":  # answered up to the per-connection budget, then closed
            answered = max(a.ended.count(b"HTTP/1.1 200 ") for a in abusers)
            assert 0 < answered <= ADMIN_LIMITS["max_requests"]
    finally:
        for abuser in abusers:
            abuser.close()
    assert probes(address, 5)
    assert rss_kib(consumer.pid) < rss_before + 32 * 1024  # KiB: what the abuse took was given back
