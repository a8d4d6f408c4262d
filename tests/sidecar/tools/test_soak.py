"""The soak's verdict on growth beyond noise (the run itself: tests/integrations/test_bench.py)."""

from __future__ import annotations

import pytest

from sidecar.tools.soak import MIB, _spread, verdict


def point(rss_mib: float, fds: int | None = 10) -> dict:
    return {"rss_bytes": int(rss_mib * MIB), "fds": fds, "cpu_s": 1.0}


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (point(30), point(30), "steady"),
        (point(30), point(29), "steady"),  # shrinking is not growth
        (point(30), point(37.9), "steady"),  # 7.9 MiB: under 8 MiB
        (point(200), point(215), "steady"),  # 15 MiB but 7.5%: under 10%
        (point(30), point(39), "grew: RSS +9.0 MiB +30.0%"),
        (point(30), point(30, fds=11), "grew: fds +1"),
        (point(30, fds=12), point(30, fds=10), "steady"),
        (point(30), point(50, fds=14), "grew: RSS +20.0 MiB +66.7%, fds +4"),
        (point(30), {"rss_bytes": None, "fds": None, "cpu_s": None}, "gone"),
    ],
)
def test_verdict(start, end, expected):
    assert verdict(start, end) == expected


def test_spread_keeps_first_and_last():
    assert _spread(list(range(5)), 13) == [0, 1, 2, 3, 4]
    assert _spread(list(range(121)), 13) == list(range(0, 121, 10))
