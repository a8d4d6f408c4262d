"""What the admin endpoint shows, from the sidecars' ``stats()`` dicts: pure functions, no I/O.

* :func:`merge` adds up the stats of the workers of one consumer (counters and gauges add,
  latency histograms merge bucket by bucket), so the supervisor answers for them all;
* :func:`consumer_view` and :func:`provider_view` are the JSON of ``/stats``: per provider the calls in
  flight, answered, errors, timeouts, ejections and latency percentiles in milliseconds;
* :func:`consumer_metrics` and :func:`provider_metrics` are the text of ``/metrics``, the Prometheus
  text exposition format 0.0.4 (:data:`CONTENT_TYPE`): every family with ``# HELP`` and ``# TYPE``,
  names prefixed ``dubbomesh_consumer_`` / ``dubbomesh_provider_``, per-provider series labelled
  ``provider="host:port"``, dropped datagrams labelled ``reason="..."``, latency as a histogram in
  seconds.

A consumer's raw stats are ``{"role": "consumer", "workers": 1, **ConsumerSidecar.stats()}``; a
provider's ``{"role": "provider", **ProviderSidecar.stats()}``.

>>> print(_Exposition("demo_").counter("calls_total", "Calls.", [({"provider": 'a"b'}, 3)]).text(), end="")
# HELP demo_calls_total Calls.
# TYPE demo_calls_total counter
demo_calls_total{provider="a\\"b"} 3
"""

from __future__ import annotations

import copy
import json
import math

from sidecar.policies.histogram import STEPS_PER_DOUBLING, Histogram

__all__ = [
    "ADMIN_LIMITS",
    "ADMIN_PATHS",
    "CONTENT_TYPE",
    "answer",
    "merge",
    "consumer_view",
    "provider_view",
    "consumer_metrics",
    "provider_metrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}

# Keys whose values are the same in every worker (or mean nothing summed): the first one is kept.
_FIRST = frozenset({"role", "key", "weight", "consumer_id", "address", "dubbo", "last_error", "interval"})


def merge(docs: list[dict]) -> dict:
    """The stats of several workers as one: numbers add (booleans: any), dicts merge key by key,
    lists (histogram counts) add element by element, ``ejected_until`` is the latest, strings and
    the keys in ``_FIRST`` are the first worker's.

    >>> merge([{"workers": 1, "calls": {"ok": 2}, "h": [1, 2]}, {"workers": 1, "calls": {"ok": 3}, "h": [1]}])
    {'workers': 2, 'calls': {'ok': 5}, 'h': [2, 2]}
    """
    out: dict = {}
    for doc in docs:
        _merge_into(out, doc)
    return out


def _merge_into(out: dict, doc: dict) -> None:
    for key, value in doc.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif key in _FIRST:
            continue
        elif key == "ejected_until":
            out[key] = max((v for v in (out[key], value) if v is not None), default=None)
        elif isinstance(value, dict) and isinstance(out[key], dict):
            _merge_into(out[key], value)
        elif isinstance(value, bool) or isinstance(out[key], bool):
            out[key] = bool(out[key]) or bool(value)
        elif isinstance(value, int | float) and isinstance(out[key], int | float):
            out[key] += value
        elif isinstance(value, list) and isinstance(out[key], list):
            mine = out[key]
            mine.extend([0] * (len(value) - len(mine)))
            for index, n in enumerate(value):
                mine[index] += n
        elif out[key] is None:
            out[key] = copy.deepcopy(value)


def _latency_ms(latency: dict) -> dict:
    histogram = Histogram.from_dict(latency)
    out = {name: round(histogram.percentile(q) * 1000, 3) for name, q in PERCENTILES.items()}
    out["mean"] = round(histogram.sum / histogram.count * 1000, 3) if histogram.count else 0.0
    out["count"] = histogram.count
    return out


def consumer_view(raw: dict) -> dict:
    """The JSON of a consumer's ``/stats`` (see the module docstring)."""
    counters = raw.get("counters", {})
    providers = {}
    for key, p in sorted(raw.get("providers", {}).items()):
        providers[key] = {
            "weight": p["weight"],
            "threshold": p["threshold"],
            "in_flight": p["in_flight"],
            "answered": p["answered"],
            "errors": p["errors"],
            "timeouts": p["timeouts"],
            "ejections": p["ejections"],
            "ejected": p.get("ejected_until") is not None,
            "latency_ms": _latency_ms(p.get("latency", {})),
        }
    return {
        "role": "consumer",
        "workers": raw.get("workers", 1),
        "in_flight": raw.get("pending", 0),
        "queued": raw.get("queued", 0),
        "providers": providers,
        "calls": {
            name: counters.get(name, 0)
            for name in ("calls", "answered", "timeouts", "queued", "queue_timeouts", "rejected", "send_errors")
        },
        "tunnel": {
            "datagrams_in": counters.get("datagrams_in", 0),
            "datagrams_out": counters.get("datagrams_out", 0),
            "request_batches": counters.get("request_batches", 0),
            "batched_calls": counters.get("batched_calls", 0),
            "dropped": dict(sorted(raw.get("dropped", {}).items())),
        },
        "http": {name: raw.get(name, 0) for name in ("connections", "requests", "timeouts", "send_timeouts")},
        "io_collect": _collect_view(raw.get("io_collect", {})),
    }


def _collect_view(collect: dict) -> dict:
    """The event loop's collecting (:class:`~sidecar.runtime.collect.Collector`): the interval, whether
    a worker's next poll waits for it, its polls and those after which it gathered events."""
    return {
        "interval": collect.get("interval", 0.0),
        "collecting": bool(collect.get("collecting", False)),
        "turns": collect.get("turns", 0),
        "busy_turns": collect.get("busy_turns", 0),
    }


def provider_view(raw: dict) -> dict:
    """The JSON of a provider's ``/stats``: its own counts, in flight, drops by reason, the pool's."""
    view = {"role": "provider", **{key: value for key, value in raw.items() if key != "role"}}
    view["dropped"] = dict(sorted(raw.get("dropped", {}).items()))
    return view


# -- the Prometheus text format ----------------------------------------------------------------------


class _Exposition:
    """Families of one text exposition, written in the order they are added."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.lines: list[str] = []

    def _family(self, name: str, kind: str, help_text: str) -> str:
        name = self.prefix + name
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        return name

    def counter(self, name: str, help_text: str, samples) -> _Exposition:
        return self._samples(name, "counter", help_text, samples)

    def gauge(self, name: str, help_text: str, samples) -> _Exposition:
        return self._samples(name, "gauge", help_text, samples)

    def _samples(self, name: str, kind: str, help_text: str, samples) -> _Exposition:
        if isinstance(samples, int | float):
            samples = [({}, samples)]
        full = self._family(name, kind, help_text)
        for labels, value in samples:
            self.lines.append(f"{full}{_labels(labels)} {_number(value)}")
        return self

    def histogram(self, name: str, help_text: str, samples) -> _Exposition:
        """``samples``: ``(labels, Histogram)`` pairs; buckets one per doubling of the latency."""
        full = self._family(name, "histogram", help_text)
        for labels, histogram in samples:
            for bound, count in histogram.cumulative(STEPS_PER_DOUBLING):
                self.lines.append(f"{full}_bucket{_labels({**labels, 'le': _number(bound)})} {count}")
            self.lines.append(f"{full}_sum{_labels(labels)} {_number(histogram.sum)}")
            self.lines.append(f"{full}_count{_labels(labels)} {histogram.count}")
        return self

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape_label(value)}"' for name, value in labels.items()) + "}"


def _escape_label(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def consumer_metrics(raw: dict) -> str:
    """The ``/metrics`` text of a consumer (one process or the merged stats of its workers)."""
    counters = raw.get("counters", {})
    providers = sorted(raw.get("providers", {}).items())
    out = _Exposition("dubbomesh_consumer_")

    def per_provider(field):
        return [({"provider": key}, p[field]) for key, p in providers]

    out.gauge("workers", "Worker processes whose stats these are.", raw.get("workers", 1))
    out.counter("http_connections_total", "HTTP connections accepted.", raw.get("connections", 0))
    out.counter("http_requests_total", "HTTP requests read whole.", raw.get("requests", 0))
    out.counter(
        "http_timeouts_total",
        "HTTP connections closed for a deadline (idle, request head, whole request, answer not taken).",
        raw.get("timeouts", 0),
    )
    out.counter(
        "http_send_timeouts_total",
        "HTTP connections closed because the client did not take an answer within send_timeout.",
        raw.get("send_timeouts", 0),
    )
    out.counter("calls_total", "Calls admitted (sent to a provider or queued).", counters.get("calls", 0))
    out.counter("calls_answered_total", "Calls answered by a provider.", counters.get("answered", 0))
    out.counter("calls_timeouts_total", "Calls without an answer by their deadline (504).", counters.get("timeouts", 0))
    out.counter("calls_queued_total", "Calls that waited in the queue for a provider slot.", counters.get("queued", 0))
    out.counter(
        "calls_queue_timeouts_total", "Calls whose deadline passed queued (503).", counters.get("queue_timeouts", 0)
    )
    out.counter("calls_rejected_total", "Calls rejected at once (503).", counters.get("rejected", 0))
    out.counter("tunnel_send_errors_total", "Tunnel datagrams the socket refused.", counters.get("send_errors", 0))
    out.gauge("in_flight", "Calls in flight or queued now.", raw.get("pending", 0))
    out.gauge("queued", "Calls waiting in the queue for a provider slot now.", raw.get("queued", 0))
    out.counter("tunnel_datagrams_received_total", "Tunnel datagrams received.", counters.get("datagrams_in", 0))
    out.counter("tunnel_datagrams_sent_total", "Tunnel datagrams sent.", counters.get("datagrams_out", 0))
    out.counter(
        "tunnel_request_batches_total",
        "REQUEST_BATCH datagrams sent (several calls in one datagram).",
        counters.get("request_batches", 0),
    )
    out.counter("tunnel_batched_calls_total", "Calls sent inside a REQUEST_BATCH.", counters.get("batched_calls", 0))
    collect = _collect_view(raw.get("io_collect", {}))
    out.counter("loop_turns_total", "Polls of the event loop for socket events.", collect["turns"])
    out.counter(
        "loop_collecting_turns_total",
        "Polls after which the loop gathered socket events for io_collect seconds (enough calls in flight).",
        collect["busy_turns"],
    )
    out.counter(
        "tunnel_dropped_total",
        "Tunnel datagrams or replies dropped, by reason.",
        [({"reason": reason}, n) for reason, n in sorted(raw.get("dropped", {}).items())],
    )
    out.gauge("provider_weight", "The provider's weight (its share of the calls).", per_provider("weight"))
    out.gauge("provider_threshold", "Calls in flight to the provider before calls queue.", per_provider("threshold"))
    out.gauge("provider_in_flight", "Calls in flight to the provider now.", per_provider("in_flight"))
    out.counter("provider_answered_total", "Replies from the provider.", per_provider("answered"))
    out.counter("provider_errors_total", "Replies from the provider with a Dubbo error status.", per_provider("errors"))
    out.counter("provider_timeouts_total", "Calls to the provider without a reply in time.", per_provider("timeouts"))
    out.counter("provider_ejections_total", "Times the provider was ejected.", per_provider("ejections"))
    out.gauge(
        "provider_ejected",
        "1 while the provider is ejected or waits for its probe call.",
        [({"provider": key}, int(p.get("ejected_until") is not None)) for key, p in providers],
    )
    out.histogram(
        "provider_latency_seconds",
        "Seconds from sending a call to the provider to its reply.",
        [({"provider": key}, Histogram.from_dict(p.get("latency", {}))) for key, p in providers],
    )
    return out.text()


def provider_metrics(raw: dict) -> str:
    """The ``/metrics`` text of a provider sidecar."""
    pool = raw.get("pool", {})
    out = _Exposition("dubbomesh_provider_")
    out.counter("tunnel_datagrams_received_total", "Tunnel datagrams received.", raw.get("datagrams_in", 0))
    out.counter("tunnel_datagrams_sent_total", "Tunnel datagrams sent (reply batches).", raw.get("datagrams_out", 0))
    out.counter("calls_forwarded_total", "Calls forwarded to the Dubbo service.", raw.get("forwarded", 0))
    out.counter("calls_answered_total", "Replies of the service sent back.", raw.get("answered", 0))
    out.counter(
        "calls_upstream_errors_total", "Calls answered with an error: the service unavailable or lost.",
        raw.get("upstream_errors", 0),
    )  # fmt: skip
    out.counter("calls_rejected_total", "Malformed calls answered with BAD_REQUEST.", raw.get("rejected", 0))
    out.counter("calls_timeouts_total", "Calls the service did not answer within call_timeout.", raw.get("timeouts", 0))
    out.counter("calls_one_way_total", "One-way calls forwarded.", raw.get("one_way", 0))
    out.gauge("in_flight", "Calls forwarded and not answered yet.", raw.get("in_flight", 0))
    out.counter(
        "tunnel_dropped_total",
        "Tunnel datagrams or replies dropped, by reason.",
        [({"reason": reason}, n) for reason, n in sorted(raw.get("dropped", {}).items())],
    )
    out.gauge("upstream_connections", "TCP connections to the Dubbo service up now.", pool.get("connections", 0))
    out.gauge("upstream_in_flight", "Calls in flight on the connections to the service.", pool.get("in_flight", 0))
    out.counter("upstream_frames_sent_total", "Dubbo frames sent to the service.", pool.get("sent", 0))
    out.counter("upstream_frames_received_total", "Dubbo frames received from the service.", pool.get("received", 0))
    out.counter("upstream_reconnects_total", "Connections to the service made again.", pool.get("reconnects", 0))
    out.counter(
        "upstream_connect_failures_total", "Failed connection attempts to the service.", pool.get("connect_failures", 0)
    )
    out.counter("upstream_disconnects_total", "Connections to the service lost.", pool.get("disconnects", 0))
    out.counter("upstream_lost_total", "Calls lost with a connection to the service.", pool.get("lost", 0))
    out.counter("upstream_heartbeats_sent_total", "Dubbo heartbeats sent.", pool.get("heartbeats_sent", 0))
    return out.text()


# -- the admin paths -------------------------------------------------------------------------------

ADMIN_PATHS = ("/healthz", "/readyz", "/metrics", "/stats")
# What one client may take of an admin port, for a worker's server and the supervisor's alike.
ADMIN_LIMITS = {
    "request_timeout": 5.0,  # seconds for a whole request, from the connection's start or the last answer
    "send_timeout": 5.0,  # seconds for an answer to be taken by the client
    "max_connections": 64,  # past this a new connection sheds the one that has waited longest
    "max_requests": 100,  # answers per connection; then it is closed
    "max_head": 8 * 1024,  # bytes of request line and headers (over: 431)
    "max_body": 1024,  # bytes of request body (the paths take none; over: 413)
}
TEXT = "text/plain; charset=utf-8"


def answer(method: str, target: str, health, stats, metrics, ready=None) -> tuple[int, list[tuple[str, str]], bytes]:
    """The admin endpoint's reply to ``method target`` as ``(status, headers, body)``, from the
    callables ``health() -> (ok, reason)`` (``/healthz``: the process serves), ``ready() -> (ok, reason)``
    (``/readyz``: a call made now can be served; ``health`` when None), ``stats() -> dict`` and
    ``metrics() -> str``: GET only (405 otherwise), :data:`ADMIN_PATHS` only (404 otherwise). Errors of
    the callables propagate.

    >>> answer("GET", "/healthz", lambda: (False, "draining"), dict, str)[::2]
    (503, b'draining\\n')
    >>> answer("POST", "/stats", None, None, None)[0], answer("GET", "/nope", None, None, None)[0]
    (405, 404)
    """
    path = target.split("?", 1)[0]
    if path not in ADMIN_PATHS:
        return _text(404, f"not found: {path} (try {', '.join(ADMIN_PATHS)})\n")
    if method != "GET":
        status, headers, body = _text(405, f"{method} not allowed: GET only\n")
        return status, [*headers, ("Allow", "GET")], body
    if path in ("/healthz", "/readyz"):
        ok, reason = (health if path == "/healthz" or ready is None else ready)()
        return _text(200, "ok\n") if ok else _text(503, " ".join(str(reason).split()) + "\n")
    if path == "/metrics":
        return _text(200, metrics(), CONTENT_TYPE)
    return _text(200, json.dumps(stats(), indent=2) + "\n", "application/json")


def _text(status: int, text: str, content_type: str = TEXT) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", content_type), ("Cache-Control", "no-store")], text.encode()
