"""The load that ``sidecar demo`` drives, and its report.

The load runs in a process of its own, so that the demo's QPS is the sidecars' and not that of a load
generator sharing a process (or a greenlet loop) with them: :func:`run_load` runs wrk with
:file:`bench_wrk.lua` when wrk is installed, else ``python -m sidecar.tools.demo HOST:PORT C SECONDS``
(this module's :func:`main`), which drives :func:`drive` and prints one JSON line. Both send the
benchmark's form call, each with a parameter of 0 to 1023 random alphanumeric characters, check every
answer against Java's ``String.hashCode`` of what they sent, and count the answers per provider from
the ``X-Provider`` header the demo's consumer adds. Either way the result is a :class:`LoadResult`.

:func:`drive` is the load itself: keep-alive HTTP clients on gevent (:class:`DriveResult`, with every
latency). :func:`report` formats a run: QPS against the ideal, latency percentiles, errors by status,
each provider's share of the answers and, given the CPU each process used
(:func:`sidecar.tools.procstat.cpu_by_role`), the CPU per call of each role and of each process.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import gevent
from gevent import socket

from sidecar.codecs import http1
from sidecar.codecs.javahash import java_string_hash
from sidecar.runtime.registry import parse_address
from sidecar.tools.wrk import WrkResult
from sidecar.tools.wrk_run import WrkError, find_wrk, run_wrk, wait_ticking

__all__ = [
    "DriveResult",
    "LoadResult",
    "LoadError",
    "drive",
    "run_load",
    "report",
    "form_body",
    "percentile",
    "read_response",
    "main",
    "SERVICE",
]

SERVICE = "com.alibaba.dubbo.performance.demo.provider.IHelloService"
ALPHABET = string.ascii_letters + string.digits
MAX_PARAMETER = 1023
WRK_THREADS = 2
WRK_TIMEOUT = 5.0  # seconds before wrk counts a request as timed out
GRACE = 30.0  # seconds past the run's duration before the load process is given up on
ROLES = {"consumer": "consumer sidecar", "provider_sidecars": "provider sidecars", "services": "services"}


class LoadError(RuntimeError):
    """The load process failed or printed no result; the message has the end of its output."""


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

    def summary(self, generator: str = "python") -> LoadResult:
        lat = sorted(self.latencies)
        p50, p90, p99 = (percentile(lat, q) * 1000 if lat else None for q in (0.5, 0.9, 0.99))
        return LoadResult(
            generator=generator,
            connections=self.connections,
            duration=self.duration,
            statuses={int(status): n for status, n in self.statuses.items()},
            providers=dict(self.providers),
            mismatches=self.mismatches,
            socket_errors=self.socket_errors,
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            max_ms=lat[-1] * 1000 if lat else None,
        )


@dataclass
class LoadResult:
    """A run of the load, as either generator reports it (latencies in milliseconds)."""

    generator: str  # "wrk" or "python"
    connections: int
    duration: float
    statuses: dict[int, int]
    providers: dict[str, int]
    mismatches: int
    socket_errors: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @property
    def answered(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200) + self.socket_errors + self.mismatches

    @property
    def qps(self) -> float:
        return self.answered / self.duration if self.duration else 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoadResult:
        data = json.loads(text)
        data["statuses"] = {int(status): n for status, n in data["statuses"].items()}
        return cls(**data)

    @classmethod
    def from_wrk(cls, result: WrkResult, connections: int) -> LoadResult:
        return cls(
            generator="wrk",
            connections=connections,
            duration=result.duration_s,
            statuses=dict(result.statuses),
            providers=dict(result.providers),
            mismatches=result.mismatches,
            socket_errors=sum(result.socket_errors.values()),
            p50_ms=result.p50_ms,
            p90_ms=result.p90_ms,
            p99_ms=result.p99_ms,
            max_ms=result.max_ms,
        )


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


def run_load(
    address: tuple[str, int],
    connections: int,
    duration: float,
    *,
    on_tick: Callable[[], object] | None = None,
    use_wrk: bool | None = None,
) -> LoadResult:
    """Drive the load from a process of its own: wrk when ``use_wrk`` (default: when it is installed),
    else ``python -m sidecar.tools.demo``. ``on_tick()`` is called every ``wrk_run.TICK`` seconds meanwhile.
    Raises :class:`LoadError` when the load process fails."""
    host, port = address
    if use_wrk is None:
        use_wrk = find_wrk() is not None
    if use_wrk:
        url = f"http://{host}:{port}/"
        try:
            result, _ = run_wrk(url, connections, duration, WRK_THREADS, timeout_s=WRK_TIMEOUT, on_tick=on_tick)
        except WrkError as exc:
            raise LoadError(f"{exc}: {exc.output.strip()[-300:]}") from None
        return LoadResult.from_wrk(result, connections)
    command = [sys.executable, "-m", "sidecar.tools.demo", f"{host}:{port}", str(connections), f"{duration:g}"]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err, overran = wait_ticking(process, time.monotonic() + duration + GRACE, on_tick)
    if overran:
        raise LoadError(f"the load process ran more than {GRACE:.0f} s past its duration")
    lines = out.strip().splitlines()
    if process.returncode != 0 or not lines:
        raise LoadError(f"the load process exited with status {process.returncode}: {err.strip()[-300:]}")
    return LoadResult.from_json(lines[-1])


def report(
    result: LoadResult,
    scenario,
    connections: int,
    names: dict[str, str] | None = None,
    cpu: dict[str, dict[int, float]] | None = None,
    labels: dict[int, str] | None = None,
) -> str:
    """The demo's summary, a few aligned lines. ``cpu`` is CPU seconds by role and pid over the run
    (:func:`sidecar.tools.procstat.cpu_by_role`), ``labels`` a name for some of the pids."""
    ideal = scenario.ideal_qps(connections)
    generator = "wrk" if result.generator == "wrk" else "python -m sidecar.tools.demo"
    lines = [
        f"calls answered   {result.answered} in {result.duration:.1f} s over {connections} connections"
        f" (load: {generator})",
        f"QPS              {result.qps:,.0f}  ({result.qps / ideal:.2f} of the ideal {ideal:,.0f} = C / L)",
        "latency ms       "
        + "  ".join(f"p{q} {_ms(v)}" for q, v in ((50, result.p50_ms), (90, result.p90_ms), (99, result.p99_ms)))
        + f"  max {_ms(result.max_ms)}",
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
    if cpu:
        lines += cpu_lines(cpu, result.answered, labels or {})
    return "\n".join(lines)


def cpu_lines(cpu: dict[str, dict[int, float]], calls: int, labels: dict[int, str]) -> list[str]:
    """CPU microseconds per answered call: of each role, and of each of its processes."""
    lines = ["CPU us per call  (each process's CPU time over the calls answered)"]
    for role, used in cpu.items():
        per_call = {pid: seconds / calls * 1e6 if calls else float("nan") for pid, seconds in used.items()}
        each = "  ".join(f"{labels.get(pid, pid)} {value:.0f}" for pid, value in per_call.items())
        lines.append(f"  {ROLES.get(role, role):<18} {sum(per_call.values()):>6.0f}  ({each})")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sidecar.tools.demo",
        description="Drive the demo's load at a consumer sidecar and print the result as one JSON line.",
    )
    parser.add_argument("address", type=parse_address, help="the consumer sidecar, HOST:PORT")
    parser.add_argument("connections", type=int, help="keep-alive connections")
    parser.add_argument("seconds", type=float, help="seconds of load")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random parameters")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.connections < 1 or args.seconds <= 0:
        print("connections must be at least 1 and seconds positive", file=sys.stderr)
        return 2
    result = drive(args.address, args.connections, args.seconds, seed=args.seed)
    print(result.summary().to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
