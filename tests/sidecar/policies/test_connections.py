"""The connection limits policy on a fake clock: deadlines per request, shedding at the cap."""

from __future__ import annotations

import doctest

import pytest

from sidecar.policies import connections
from sidecar.policies.connections import ConnectionLimits


def test_docstring_examples():
    assert doctest.testmod(connections).failed == 0


def test_a_request_must_be_whole_within_the_timeout_of_the_open_or_the_last_answer():
    limits = ConnectionLimits(max_connections=10, request_timeout=5.0)
    limits.opened("a", 0.0)
    assert limits.overdue(4.9) == []
    limits.busy("a")  # a request arrived whole: no deadline while it is answered
    assert limits.overdue(100.0) == []
    limits.answered("a", 100.0)
    assert limits.overdue(104.9) == [] and limits.overdue(105.0) == ["a"]
    assert "a" not in limits and len(limits) == 0  # an overdue connection is forgotten


def test_overdue_connections_come_oldest_deadline_first():
    limits = ConnectionLimits(max_connections=10, request_timeout=1.0)
    for key, now in (("c", 0.3), ("a", 0.1), ("b", 0.2)):
        limits.opened(key, now)
    assert limits.overdue(5.0) == ["a", "b", "c"]


def test_at_the_cap_the_longest_waiting_connection_is_shed():
    limits = ConnectionLimits(max_connections=3, request_timeout=5.0)
    limits.opened("old", 0.0)
    limits.opened("busy", 0.5)
    limits.busy("busy")
    limits.opened("young", 1.0)
    assert limits.opened("new", 2.0) == ["old"]
    assert limits.opened("newer", 3.0) == ["young"]  # the one answering is not shed while others wait
    assert set(limits._deadlines) == {"busy", "new", "newer"}


def test_when_every_connection_is_answering_the_oldest_is_shed():
    limits = ConnectionLimits(max_connections=2, request_timeout=5.0)
    for key in ("a", "b"):
        limits.opened(key, 0.0)
        limits.busy(key)
    assert limits.opened("c", 1.0) == ["a"]


def test_closed_and_unknown_connections_change_nothing():
    limits = ConnectionLimits(max_connections=1, request_timeout=1.0)
    limits.busy("ghost")
    limits.answered("ghost", 0.0)
    limits.closed("ghost")
    assert len(limits) == 0
    limits.opened("a", 0.0)
    limits.closed("a")
    assert limits.opened("b", 0.0) == []


@pytest.mark.parametrize(("options", "message"), [
    ({"max_connections": 0, "request_timeout": 1.0}, "max_connections"),
    ({"max_connections": True, "request_timeout": 1.0}, "max_connections"),
    ({"max_connections": 1, "request_timeout": 0}, "request_timeout"),
])  # fmt: skip
def test_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        ConnectionLimits(**options)
