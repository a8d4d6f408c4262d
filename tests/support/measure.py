"""What the abuse tests read off a run: latency percentiles, and a process's resident memory."""

from __future__ import annotations

__all__ = ["percentiles", "rss_kib"]


def percentiles(latencies: list[float]) -> str:
    """``p50 ... ms, p99 ... ms`` of ``latencies`` (seconds, sorted)."""
    p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


def rss_kib(pid: int) -> int:
    """The resident set of process ``pid`` now, in KiB (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
