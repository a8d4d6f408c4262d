"""The load that ``sidecar demo`` drives: keep-alive HTTP clients on gevent sending the benchmark's
form call, each with a parameter of 0 to 1023 random alphanumeric characters, and checking every
answer against Java's ``String.hashCode`` of what it sent.

:func:`drive` returns a :class:`DriveResult`; :func:`report` formats it (QPS against the ideal,
latency percentiles, errors by status, and each provider's share of the answers, read from the
``X-Provider`` header the demo's consumer adds).
"""

from __future__ import annotations

import random
import string
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
from gevent import socket

from integrations.demo.hello_service import java_string_hash
from sidecar.codecs import http1

__all__ = ["DriveResult", "drive", "report", "form_body", "percentile", "read_response", "SERVICE"]

SERVICE = "com.alibaba.dubbo.performance.demo.provider.IHelloService"
ALPHABET = string.ascii_letters + string.digits
MAX_PARAMETER = 1023


def form_body(parameter: str) -> bytes:
    """The benchmark's form call for ``hash(parameter)``."""
    return urllib.parse.urlencode(
        {"interface": SERVICE, "method": "hash", "parameterTypesString": "Ljava/lang/String;", "parameter": parameter}
    ).encode()


@dataclass
class DriveResult:
    connections: int
    duration: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, of the calls answered 200
    statuses: Counter = field(default_factory=Counter)
    providers: Counter = field(default_factory=Counter)
    mismatches: int = 0
    socket_errors: int = 0

    @property
    def answered(self) -> int:
        return self.statuses[200]

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200) + self.socket_errors + self.mismatches

    @property
    def qps(self) -> float:
        return self.answered / self.duration if self.duration else 0.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def drive(
    address: tuple[str, int],
    connections: int,
    duration: float,
    *,
    on_tick: Callable[[], object] | None = None,
    seed: int | None = None,
) -> DriveResult:
    """Send calls over ``connections`` keep-alive connections for ``duration`` seconds."""
    result = DriveResult(connections)
    rng = random.Random(seed)
    end = time.monotonic() + duration
    clients = [gevent.spawn(_client, address, end, result, random.Random(rng.random())) for _ in range(connections)]
    start = time.monotonic()
    ticks = 0
    while time.monotonic() < end:
        gevent.sleep(min(0.1, max(0.0, end - time.monotonic())))
        if on_tick is not None and ticks < int(duration * 10):
            ticks += 1
            on_tick()
    gevent.joinall(clients, timeout=30)
    gevent.killall(clients)
    result.duration = time.monotonic() - start
    while on_tick is not None and ticks < int(duration * 10):
        ticks += 1
        on_tick()
    return result


def _client(address: tuple[str, int], end: float, result: DriveResult, rng: random.Random) -> None:
    sock = None
    conn = None
    while time.monotonic() < end:
        if sock is None:
            try:
                sock = socket.create_connection(address, timeout=30)
            except OSError:
                result.socket_errors += 1
                gevent.sleep(0.1)
                continue
            conn = http1.ClientConnection(host=f"{address[0]}:{address[1]}")
        parameter = "".join(rng.choices(ALPHABET, k=rng.randint(0, MAX_PARAMETER)))
        request = http1.ClientRequest(
            "POST", "/", [("Content-Type", "application/x-www-form-urlencoded")], form_body(parameter)
        )
        started = time.monotonic()
        try:
            sock.sendall(conn.send(request))
            response = read_response(sock, conn)
        except (OSError, http1.RemoteProtocolError, http1.LocalProtocolError):
            response = None
        if response is None:
            result.socket_errors += 1
            sock.close()
            sock = None
            continue
        elapsed = time.monotonic() - started
        result.statuses[response.status] += 1
        if response.status == 200:
            result.latencies.append(elapsed)
            if response.body != str(java_string_hash(parameter)).encode():
                result.mismatches += 1
            provider = http1.get_header(response.headers, "x-provider")
            if provider:
                result.providers[provider] += 1
        if conn.our_state is not http1.IDLE:  # the server closed the connection after this reply
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


def read_response(sock, conn: http1.ClientConnection) -> http1.Response | None:
    """Read one whole response from ``sock`` through ``conn``; None when the server closed without one."""
    while True:
        event = conn.next_event()
        if isinstance(event, http1.Response):
            return event
        if event is not http1.NEED_DATA:
            return None
        data = sock.recv(65536)
        conn.receive_data(data)
        if not data and conn.next_event() is http1.NEED_DATA:
            return None


def report(result: DriveResult, scenario, connections: int, names: dict[str, str] | None = None) -> str:
    """The demo's summary, a few aligned lines."""
    lat = sorted(result.latencies)
    ideal = scenario.ideal_qps(connections)
    lines = [
        f"calls answered   {result.answered} in {result.duration:.1f} s over {connections} connections",
        f"QPS              {result.qps:,.0f}  ({result.qps / ideal:.2f} of the ideal {ideal:,.0f} = C / L)",
        "latency ms       "
        + "  ".join(f"p{int(q * 100)} {percentile(lat, q) * 1000:.1f}" for q in (0.5, 0.9, 0.99))
        + f"  max {lat[-1] * 1000 if lat else float('nan'):.1f}",
        f"errors           {result.errors}"
        + (
            "  (" + ", ".join(f"HTTP {s}: {n}" for s, n in sorted(result.statuses.items()) if s != 200)
            + (f", socket: {result.socket_errors}" if result.socket_errors else "")
            + (f", wrong hash: {result.mismatches}" if result.mismatches else "") + ")"
            if result.errors else ""
        ),
    ]  # fmt: skip
    total = sum(result.providers.values())
    if total:
        lines.append("provider share   (weights " + "/".join(str(c) for c in scenario.capacities) + ")")
        for key, count in sorted(result.providers.items(), key=lambda kv: kv[1]):
            label = (names or {}).get(key, "")
            lines.append(f"  {key:<22} {label:<7} {count:>8}  {count / total:6.1%}")
    return "\n".join(lines)
