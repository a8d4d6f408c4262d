"""Waiting for a state, never for a length of time: a condition polled under a deadline."""

from __future__ import annotations

import time

import gevent

from tests.support.dubbo_peer import WAIT

__all__ = ["WAIT", "wait_until"]


def wait_until(condition, what: str, timeout: float = WAIT):
    """Let gevent run until ``condition()`` is true, and return its value; fails naming ``what`` after
    ``timeout`` seconds (a bound, not a measurement). Polls without blocking other greenlets; in a
    plain thread it simply polls."""
    end = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        gevent.sleep(0.01)
    return value
