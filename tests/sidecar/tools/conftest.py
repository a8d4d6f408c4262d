"""Fixtures for the benchmark tools' tests: real HTTP backend processes."""

from __future__ import annotations

import pytest

from tests.support.dubbo_peer import start_backend


@pytest.fixture(scope="module")
def backends():
    """Two http_backend processes (1 ms latency); yields their ports."""
    started = [start_backend("--latency-ms", "1") for _ in range(2)]
    yield [port for _, port in started]
    for process, _ in started:
        assert process.stop() == 0
