"""Real sidecar processes under a load the test can see into, for test_drain.py and test_failures.py.

The processes (a demo Dubbo service, provider sidecars, a consumer sidecar) are started with the
``sidecar`` command on free ports and waited for without blocking gevent, so the load keeps running
while one is started again. :class:`Load` runs keep-alive HTTP clients on gevent and records every
call: whether its request was written before the signal the test sent (the test and the clients
share one gevent hub, so "before" is exact, no clock involved), whether its reply came before it,
and its status, body and ``X-Provider``.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import sys
import time
from dataclasses import dataclass

import gevent
from gevent import socket

from integrations.demo.hello_service import java_string_hash
from sidecar.codecs import http1
from sidecar.tools.demo import ALPHABET, form_body, read_response
from tests.support.dubbo_peer import WAIT, Process
from tests.support.http_clients import Client
from tests.support.waiting import wait_until

__all__ = [
    "Call",
    "Load",
    "WAIT",
    "admin_address",
    "admin_stats",
    "consumer_sidecar",
    "provider_sidecar",
    "service",
    "wait_exit",
    "wait_until",
]

_ENV = {**os.environ, "SIDECAR_LOG_LEVEL": "warning"}


def _wait_line(process: Process, pattern: str) -> re.Match[str]:
    """The first stdout line of ``process`` matching ``pattern``, waited for without blocking gevent."""
    end, seen = time.monotonic() + WAIT, []
    while time.monotonic() < end:
        try:
            line = process.lines.get_nowait()
        except queue.Empty:
            gevent.sleep(0.01)
            continue
        if line is None:
            raise AssertionError(f"{process.args} ended: stdout {seen}, stderr {''.join(process.stderr[-20:])}")
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"{process.args}: no line matching {pattern!r} (saw {seen})")


def wait_exit(process: Process) -> int:
    """The exit status of ``process``, waited for without blocking gevent."""
    wait_until(lambda: process.popen.poll() is not None, f"{process.args} to exit")
    return process.popen.returncode


def service(latency_ms: float, *, port: int = 0, capacity: int = 1000) -> tuple[Process, int]:
    """The demo Dubbo service on ``port`` (0: a free one), and its port."""
    args = ["--port", str(port), "--latency-ms", f"{latency_ms:g}", "--capacity", str(capacity)]
    process = Process([sys.executable, "-m", "integrations.demo.demo_provider", *args])
    return process, int(_wait_line(process, r"^listening 127\.0\.0\.1:(\d+)$").group(1))


def provider_sidecar(dubbo_port: int, listen: str = "127.0.0.1:0") -> tuple[Process, str]:
    """A provider sidecar in front of the service on ``dubbo_port``, and its key (``HOST:PORT``)."""
    args = ["provider", "--listen", listen, "--dubbo", f"127.0.0.1:{dubbo_port}"]
    process = Process([sys.executable, "-m", "sidecar", *args], env=_ENV)
    return process, _wait_line(process, r"^listening (\S+)$").group(1)


def consumer_sidecar(providers: list[str], *options: str) -> tuple[Process, tuple[str, int]]:
    """A consumer sidecar that knows ``providers`` (``HOST:PORT=WEIGHT[/THRESHOLD]``), and its address."""
    args = ["consumer", "--listen", "127.0.0.1:0", "--no-access-log", *options]
    for provider in providers:
        args += ["--provider", provider]
    process = Process([sys.executable, "-m", "sidecar", *args], env=_ENV)
    match = _wait_line(process, r"^listening (\S+):(\d+)$")
    return process, (match.group(1), int(match.group(2)))


def admin_address(process: Process) -> tuple[str, int]:
    """The admin endpoint of a sidecar started with ``--admin``, from the line after its ``listening`` line."""
    match = _wait_line(process, r"^admin (\S+):(\d+)$")
    return match.group(1), int(match.group(2))


def admin_stats(admin: tuple[str, int]) -> dict:
    """The sidecar's ``/stats`` from its admin endpoint at ``admin``, asked without blocking gevent."""
    client = Client(admin)
    try:
        reply = client.request(b"", "/stats", method="GET")
    finally:
        client.close()
    assert reply.status == 200, reply
    return json.loads(reply.body)


@dataclass(eq=False)
class Call:
    """One call a client made. ``status`` None: the connection ended without a reply (``error`` says how)."""

    parameter: str
    sent_before_signal: bool  # its request was written before the test's signal
    answered_before_signal: bool | None = None  # None while it waits for its reply
    status: int | None = None
    body: bytes = b""
    provider: str | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.answered_before_signal is not None

    @property
    def right(self) -> bool:
        """Answered 200 with ``String.hashCode`` of what was sent."""
        return self.status == 200 and self.body == str(java_string_hash(self.parameter)).encode()


class Load:
    """``clients`` keep-alive gevent clients calling ``address`` until :meth:`stop`; each pauses
    ``pause`` seconds after an answer other than 200 (a provider that fails at once is not hammered)."""

    def __init__(self, address: tuple[str, int], clients: int, *, seed: int = 0, pause: float = 0.01):
        self.address, self.pause = address, pause
        self.calls: list[Call] = []
        self.refused = 0  # connection attempts that failed
        self.signalled = False
        self.held = False  # while set, the clients write no new request
        self._running = True
        self._greenlets = [gevent.spawn(self._client, random.Random(seed * 1000 + i)) for i in range(clients)]

    def signal(self, pid: int, signum: int) -> list[Call]:
        """Send ``signum`` to ``pid``; returns the calls in flight at that moment (written, not answered)."""
        in_flight = self.outstanding()
        self.signalled = True
        os.kill(pid, signum)
        return in_flight

    def outstanding(self) -> list[Call]:
        return [call for call in self.calls if not call.done]

    def answered(self, predicate=lambda call: True) -> int:
        return sum(1 for call in self.calls if call.status == 200 and predicate(call))

    def stop(self) -> None:
        self._running = False
        gevent.joinall(self._greenlets, timeout=WAIT)
        gevent.killall(self._greenlets)

    def _client(self, rng: random.Random) -> None:
        sock = conn = None
        host = f"{self.address[0]}:{self.address[1]}"
        while self._running:
            if sock is None:
                try:
                    sock = socket.create_connection(self.address, timeout=WAIT)
                except OSError:
                    self.refused += 1
                    gevent.sleep(self.pause)
                    continue
                conn = http1.ClientConnection(host=host)
            while self.held and self._running:
                gevent.sleep(0.005)
            parameter = "".join(rng.choices(ALPHABET, k=rng.randint(0, 64)))
            headers = [("Content-Type", "application/x-www-form-urlencoded")]
            data = conn.send(http1.ClientRequest("POST", "/", headers, form_body(parameter)))
            call = Call(parameter, sent_before_signal=not self.signalled)
            try:
                sock.sendall(data)
            except OSError:  # closed while we were not looking: the call never left
                sock.close()
                sock = None
                continue
            self.calls.append(call)
            try:
                response = read_response(sock, conn)
            except (OSError, http1.RemoteProtocolError, http1.LocalProtocolError) as e:
                response, call.error = None, repr(e)
            call.answered_before_signal = not self.signalled
            if response is None:
                call.error = call.error or "closed without a reply"
                sock.close()
                sock = None
                continue
            call.status, call.body = response.status, response.body
            call.provider = http1.get_header(response.headers, "x-provider")
            if response.status != 200:
                gevent.sleep(self.pause)
            if conn.our_state is not http1.IDLE:  # the server closed the connection after this reply
                sock.close()
                sock = None
        if sock is not None:
            sock.close()
