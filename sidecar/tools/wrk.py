"""wrk as the benchmark's load generator: its command line and its output, without running anything.

:func:`wrk_command` builds the argument list; :func:`parse_wrk_output` reads what wrk printed into a
:class:`WrkResult`. Running it is :func:`sidecar.tools.wrk_run.run_wrk` (this module stays pure: no
processes, sockets or clocks).

With :data:`SCRIPT` (``bench_wrk.lua``, shipped with the package) every request is the benchmark's form
call with a fresh random parameter and every 2xx answer is checked against the ``String.hashCode``
the script computed itself (how, is written at the top of the script). The script ends wrk's output
with one line, :data:`MARKER` and a JSON object::

    BENCH_WRK_RESULT {"requests":4959,"duration_us":2002267,"sent":4976,"responses":4959,
      "mismatches":0,"echoed":4959,"outstanding":17,"statuses":{"200":4959},
      "providers":{},"socket_errors":{"connect":0,"read":0,"write":0,"timeout":0},
      "p50_us":6243,"p90_us":7591,"p99_us":9051,"mean_us":6397.9,"max_us":10606}

(one line in the output). Without the script, or with another one, the figures come from wrk's own
text (``Requests/sec:``, ``Socket errors: ...``, ``Non-2xx or 3xx responses: N``, and the latency
distribution when ``--latency`` was given); nothing is checked then and ``checked`` is false.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MARKER", "SCRIPT", "SOCKET_ERRORS", "WrkResult", "wrk_command", "parse_wrk_output"]

SCRIPT = str(Path(__file__).with_name("bench_wrk.lua"))
MARKER = "BENCH_WRK_RESULT "
SOCKET_ERRORS = ("connect", "read", "write", "timeout")

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"
_REQUESTS = re.compile(rf"^\s*(\d+) requests in {_TIME},", re.M)
_QPS = re.compile(r"^Requests/sec:\s*([0-9.]+)", re.M)
_SOCKET = re.compile(r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses: (\d+)", re.M)
_PERCENTILE = re.compile(rf"^\s*(50|90|99)(?:\.0+)?%\s+{_TIME}\s*$", re.M)


@dataclass(frozen=True)
class WrkResult:
    """One wrk run.

    Attributes:
        requests: responses wrk completed (its ``N requests in ...``).
        duration_s: the run's length as wrk measured it.
        qps: wrk's ``Requests/sec``.
        p50_ms, p90_ms, p99_ms: latency percentiles (``None`` when wrk printed none: no script line and
            no ``--latency``).
        errors: socket errors (connect, read, write, timeout) + responses that are not 2xx + mismatches.
        mismatches: 2xx answers that were not the hash of the request's parameter.
        statuses: responses by HTTP status (from the script; empty without it).
        socket_errors: wrk's socket error counts by kind.
        non_2xx: responses whose status is not 2xx (without the script: wrk's count, which is of
            statuses over 399).
        checked: whether the script's line was found, i.e. whether the answers were checked.
        echoed: responses that echoed ``X-Request-Id`` (checked exactly against their request).
        providers: 2xx responses by their ``X-Provider`` header (from the script; empty when no answer
            had one).
        max_ms: the longest latency (``None`` without the script).
    """

    requests: int
    duration_s: float
    qps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    mismatches: int
    statuses: dict[int, int] = field(default_factory=dict)
    p90_ms: float | None = None
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0
    checked: bool = False
    echoed: int = 0
    providers: dict[str, int] = field(default_factory=dict)
    max_ms: float | None = None

    @property
    def ok_qps(self) -> float:
        """Right answers per second: 2xx responses that were not mismatches (``qps`` counts every
        response, refusals included)."""
        good = self.requests - self.non_2xx - self.mismatches
        return good / self.duration_s if self.duration_s > 0 else 0.0


def wrk_command(
    url: str,
    connections: int,
    duration_s: float,
    threads: int,
    script_path: str | None = SCRIPT,
    timeout_s: float = 2.0,
    *,
    wrk: str = "wrk",
) -> list[str]:
    """The argument list of one wrk run (``--latency`` on; ``script_path`` None runs without a script).

    wrk takes whole seconds: ``duration_s`` and ``timeout_s`` are rounded up. ``threads`` is capped at
    ``connections`` (wrk refuses fewer connections than threads).

    >>> wrk_command("http://127.0.0.1:20000/", 128, 30, 2, "bench_wrk.lua", 2)
    ['wrk', '-t', '2', '-c', '128', '-d', '30s', '--timeout', '2s', '--latency', '-s', 'bench_wrk.lua', 'http://127.0.0.1:20000/']
    """
    if connections < 1 or threads < 1:
        raise ValueError(f"connections and threads must be at least 1 (got {connections}, {threads})")
    if duration_s <= 0 or timeout_s <= 0:
        raise ValueError(f"duration and timeout must be positive (got {duration_s}, {timeout_s})")
    command = [wrk, "-t", str(min(threads, connections)), "-c", str(connections)]
    command += ["-d", f"{math.ceil(duration_s)}s", "--timeout", f"{math.ceil(timeout_s)}s", "--latency"]
    if script_path is not None:
        command += ["-s", str(script_path)]
    return [*command, url]


def parse_wrk_output(text: str) -> WrkResult:
    """The figures in wrk's standard output (and the script's line, when there is one).

    Raises :class:`ValueError` when ``text`` is not the output of a finished wrk run.
    """
    requests_match, qps_match = _REQUESTS.search(text), _QPS.search(text)
    if requests_match is None or qps_match is None:
        raise ValueError(f"not the output of a finished wrk run: {text.strip()[-300:]!r}")
    requests = int(requests_match.group(1))
    duration_s = _seconds(requests_match.group(2), requests_match.group(3))
    qps = float(qps_match.group(1))
    socket_match = _SOCKET.search(text)
    socket_errors = dict.fromkeys(SOCKET_ERRORS, 0)
    if socket_match:
        socket_errors = dict(zip(SOCKET_ERRORS, map(int, socket_match.groups()), strict=True))
    non_2xx_match = _NON_2XX.search(text)
    non_2xx = int(non_2xx_match.group(1)) if non_2xx_match else 0
    percentiles = {int(p): _seconds(v, unit) * 1e3 for p, v, unit in _PERCENTILE.findall(text)}

    line = _script_line(text)
    if line is None:
        return WrkResult(
            requests=requests,
            duration_s=duration_s,
            qps=qps,
            p50_ms=percentiles.get(50),
            p90_ms=percentiles.get(90),
            p99_ms=percentiles.get(99),
            errors=sum(socket_errors.values()) + non_2xx,
            mismatches=0,
            socket_errors=socket_errors,
            non_2xx=non_2xx,
        )
    statuses = {int(status): int(n) for status, n in line.get("statuses", {}).items()}
    non_2xx = sum(n for status, n in statuses.items() if not 200 <= status < 300)
    socket_errors = {kind: int(line.get("socket_errors", {}).get(kind, socket_errors[kind])) for kind in SOCKET_ERRORS}
    mismatches = int(line["mismatches"])
    return WrkResult(
        requests=int(line.get("requests", requests)),
        duration_s=int(line["duration_us"]) / 1e6 if "duration_us" in line else duration_s,
        qps=qps,
        p50_ms=_ms(line, "p50_us", percentiles.get(50)),
        p90_ms=_ms(line, "p90_us", percentiles.get(90)),
        p99_ms=_ms(line, "p99_us", percentiles.get(99)),
        errors=sum(socket_errors.values()) + non_2xx + mismatches,
        mismatches=mismatches,
        statuses=statuses,
        socket_errors=socket_errors,
        non_2xx=non_2xx,
        checked=True,
        echoed=int(line.get("echoed", 0)),
        providers={str(key): int(n) for key, n in line.get("providers", {}).items()},
        max_ms=_ms(line, "max_us", None),
    )


def _script_line(text: str) -> dict | None:
    """The JSON object after the last :data:`MARKER` line, or None."""
    found = None
    for line in text.splitlines():
        if line.startswith(MARKER):
            found = line[len(MARKER) :]
    if found is None:
        return None
    try:
        data = json.loads(found)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the script's result line is not JSON: {found[:200]!r}") from exc
    if not isinstance(data, dict) or "mismatches" not in data:
        raise ValueError(f"the script's result line lacks the counts: {found[:200]!r}")
    return data


def _seconds(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


def _ms(line: dict, key: str, default: float | None) -> float | None:
    return int(line[key]) / 1e3 if key in line else default
