"""The connection limits policy on a fake clock: a deadline per phase, shedding at the cap."""

from __future__ import annotations

import doctest

import pytest

from sidecar.policies import connections
from sidecar.policies.connections import BUSY, IDLE, WAITING, ConnectionLimits


def test_docstring_examples():
    assert doctest.testmod(connections).failed == 0


def test_each_phase_has_its_deadline_and_busy_has_none():
    limits = ConnectionLimits(max_connections=10)
    limits.opened("a", deadline=5.0)
    assert limits.phase("a") == IDLE and limits.overdue(4.9) == []
    limits.waiting("a", deadline=7.0)  # a head began: its own deadline, however often bytes come
    assert limits.phase("a") == WAITING and limits.overdue(6.9) == []
    limits.busy("a")
    assert limits.phase("a") == BUSY and limits.overdue(100.0) == []
    limits.idle("a", deadline=105.0)
    assert limits.overdue(104.9) == [] and limits.overdue(105.0) == ["a"]
    assert limits.phase("a") == BUSY and limits.overdue(1000.0) == []  # the I/O layer's to close now
    limits.closed("a")
    assert "a" not in limits and len(limits) == 0 and limits.phase("a") is None


def test_overdue_connections_come_earliest_deadline_first():
    limits = ConnectionLimits(max_connections=10)
    for key, deadline in (("c", 1.3), ("a", 1.1), ("b", 1.2)):
        limits.opened(key, deadline=deadline)
    assert limits.overdue(5.0) == ["a", "b", "c"]


def test_at_the_cap_the_longest_idle_connection_goes_first():
    limits = ConnectionLimits(max_connections=3)
    limits.opened("old", deadline=60.0)
    limits.opened("young", deadline=61.0)
    limits.opened("slow", deadline=10.0)
    limits.waiting("slow", deadline=10.0)
    limits.idle("old", deadline=70.0)  # answered since: idle again, and now the youngest idle
    assert limits.opened("new", deadline=62.0) == ["young"]
    assert limits.opened("newer", deadline=63.0) == ["old"]


def test_without_idle_connections_the_slowest_waiting_one_goes():
    limits = ConnectionLimits(max_connections=2)
    limits.opened("a", deadline=1.0)
    limits.opened("b", deadline=1.0)
    limits.waiting("a", deadline=9.0)
    limits.waiting("b", deadline=8.0)
    assert limits.opened("c", deadline=5.0) == ["b"]


def test_when_every_connection_is_busy_a_new_one_is_refused():
    limits = ConnectionLimits(max_connections=2)
    for key in ("a", "b"):
        limits.opened(key, deadline=1.0)
        limits.busy(key)
    assert limits.opened("c", deadline=2.0) is None
    assert "c" not in limits and len(limits) == 2


def test_closed_and_unknown_connections_change_nothing():
    limits = ConnectionLimits(max_connections=1)
    limits.busy("ghost")
    limits.idle("ghost", deadline=0.0)
    limits.waiting("ghost", deadline=0.0)
    limits.closed("ghost")
    assert len(limits) == 0
    limits.opened("a", deadline=1.0)
    limits.closed("a")
    assert limits.opened("b", deadline=1.0) == []


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_max_connections_is_checked(value):
    with pytest.raises(ValueError, match="max_connections"):
        ConnectionLimits(max_connections=value)
