"""Suite-wide hooks: the run ends with one line per test module that skipped tests, and why."""

from __future__ import annotations

from collections import Counter, defaultdict


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
