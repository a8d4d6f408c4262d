"""Suite-wide hooks: the gevent hub's clock is brought up to date before each test, and the run ends with
one line per test module that skipped tests, and why."""

from __future__ import annotations

import sys
from collections import Counter, defaultdict

import pytest


@pytest.fixture(autouse=True)
def _fresh_gevent_clock():
    """Bring the gevent hub's clock up to now before each test. The loop reads the time once per turn;
    after minutes of tests that never ran it, a timer armed on the stale clock (a join or a socket
    timeout) is already past due and fires at the loop's next turn, before anything could happen."""
    gevent = sys.modules.get("gevent")
    if gevent is not None:
        hub = gevent.get_hub()
        hub.loop.update_now()
    yield


def pytest_terminal_summary(terminalreporter):
    skipped = defaultdict(Counter)  # module -> reason -> tests
    for report in terminalreporter.stats.get("skipped", []):
        module = report.nodeid.split("::")[0]
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        skipped[module][reason.removeprefix("Skipped: ")] += 1
    if not skipped:
        return
    terminalreporter.section("skipped suites")
    for module in sorted(skipped):
        for reason, count in skipped[module].most_common():
            terminalreporter.write_line(f"{module}: {count} skipped: {reason}")
