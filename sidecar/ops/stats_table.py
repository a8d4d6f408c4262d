"""``sidecar stats``: a sidecar's ``/stats`` JSON (:mod:`sidecar.ops.metrics`) as a table for people.

A consumer shows one row per provider (weight, in flight, answered, errors, timeouts, ejections,
latency p50/p90/p99 in ms), then its calls, tunnel and HTTP counters, the dropped datagrams by
reason and its event loop's polls (all, and those after which it gathered socket events); a
provider shows its calls, tunnel counters, drops and its connections to the service.

>>> print(format_stats({"role": "consumer", "workers": 1, "in_flight": 0, "queued": 0, "providers": {}}))
consumer: 1 worker, 0 in flight, 0 queued
no provider known
"""

from __future__ import annotations

__all__ = ["format_stats"]

_PROVIDER_COLUMNS = (
    ("provider", None),
    ("weight", "weight"),
    ("in flight", "in_flight"),
    ("answered", "answered"),
    ("errors", "errors"),
    ("timeouts", "timeouts"),
    ("ejections", "ejections"),
    ("p50 ms", "p50"),
    ("p90 ms", "p90"),
    ("p99 ms", "p99"),
)


def format_stats(stats: dict) -> str:
    """The table of a consumer's or a provider's ``/stats`` (by its ``role``)."""
    if stats.get("role") == "provider":
        return _provider(stats)
    return _consumer(stats)


def _consumer(stats: dict) -> str:
    workers = stats.get("workers", 1)
    lines = [
        f"consumer: {workers} worker{'s' if workers != 1 else ''}, {stats.get('in_flight', 0)} in flight, "
        f"{stats.get('queued', 0)} queued"
        + (f", {stats['unreachable_workers']} workers not answering" if stats.get("unreachable_workers") else "")
    ]
    providers = stats.get("providers", {})
    if providers:
        rows = [[title for title, _ in _PROVIDER_COLUMNS]]
        for key, p in providers.items():
            latency = p.get("latency_ms", {})
            row = [key + (" (ejected)" if p.get("ejected") else "")]
            for _, field in _PROVIDER_COLUMNS[1:]:
                value = latency.get(field, 0) if field.startswith("p") and field[1:].isdigit() else p.get(field, 0)
                row.append(_number(value))
            rows.append(row)
        lines += _columns(rows)
    else:
        lines.append("no provider known")
    if "calls" in stats:
        lines.append("")
        lines.append(_pairs("calls", stats["calls"]))
        tunnel = stats.get("tunnel", {})
        lines.append(_pairs("tunnel", {k: v for k, v in tunnel.items() if k != "dropped"}))
        lines.append(_pairs("dropped", tunnel.get("dropped", {})))
        lines.append(_pairs("http", stats.get("http", {})))
        if "io_collect" in stats:  # the loop's polls, and those after which it gathered events
            collect = stats["io_collect"]
            lines.append(_pairs("loop", {"polls": collect.get("turns", 0), "gathered": collect.get("busy_turns", 0)}))
    return "\n".join(lines)


def _provider(stats: dict) -> str:
    pool = stats.get("pool", {})
    lines = [
        f"provider {stats.get('address')} -> Dubbo service {stats.get('dubbo')}, "
        f"weight {_number(stats.get('weight'))}, {stats.get('in_flight', 0)} in flight",
        "",
        _pairs(
            "calls",
            {
                k: stats.get(k, 0)
                for k in ("forwarded", "answered", "upstream_errors", "rejected", "timeouts", "one_way")
            },
        ),  # fmt: skip
        _pairs(
            "tunnel",
            {k: stats.get(k, 0) for k in ("datagrams_in", "datagrams_out", "request_batches", "batched_calls")},
        ),
        _pairs("dropped", stats.get("dropped", {})),
        _pairs(
            "upstream",
            {
                k: pool.get(k, 0)
                for k in (
                    "connections",
                    "in_flight",
                    "sent",
                    "received",
                    "reconnects",
                    "connect_failures",
                    "disconnects",
                    "lost",
                )
            },
        ),  # fmt: skip
    ]
    if pool.get("last_error") and not pool.get("connections"):
        lines.append(f"{'':10}last error: {pool['last_error']}")
    return "\n".join(lines)


def _pairs(title: str, values: dict) -> str:
    if not values:
        return f"{title:<10}none"
    return f"{title:<10}" + "  ".join(f"{name.replace('_', ' ')} {_number(value)}" for name, value in values.items())


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(_cell(i, cell, w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in rows]


def _cell(index: int, cell: str, width: int) -> str:
    return cell.ljust(width) if index == 0 else cell.rjust(width)


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)
