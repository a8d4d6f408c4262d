"""A periodic job on the hub's loop (sidecar.runtime.periodic): its timer runs it while nothing rides
it; a busy turn runs it once half its interval passed and puts the timer a whole interval off; an
error is logged and the job goes on; after stop nothing runs it."""

from __future__ import annotations

import logging
import math

import gevent
import pytest
from gevent.hub import get_hub

from sidecar.runtime.periodic import Periodic


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def periodic(interval, clock, job=None):
    runs = []
    job = job or runs.append
    return Periodic(get_hub().loop, interval, job, clock=clock, name="the test's job"), runs


@pytest.mark.parametrize("interval", [0, -0.5, math.nan, math.inf, "0.1", None])
def test_an_interval_is_a_finite_number_of_seconds_above_zero(interval):
    with pytest.raises(ValueError, match="periodic job's interval"):
        Periodic(get_hub().loop, interval, print)


def test_left_alone_the_timer_runs_the_job_every_interval_with_the_clocks_reading(clock):
    job, runs = periodic(0.02, clock)
    job.start()
    try:
        gevent.sleep(0.15)
    finally:
        job.stop()
    assert 3 <= len(runs) <= 8
    assert set(runs) == {1000.0} and job.last == 1000.0 and job.runs == len(runs)


def test_a_turn_rides_the_job_once_half_an_interval_passed_and_the_timer_waits_a_whole_interval(clock):
    job, runs = periodic(60.0, clock)  # the timer does not fire within this test
    assert not job.ride(clock.now) and runs == []  # not started: nothing rides it
    job.start()
    try:
        assert job.ride(clock.now) and runs == [1000.0]  # never ran: runs at once
        assert not job.ride(clock.now + 29.9) and runs == [1000.0]
        assert job.ride(clock.now + 30.0) and runs == [1000.0, 1030.0]
        assert job.last == 1030.0 and job.runs == 2
    finally:
        job.stop()


def test_a_ride_puts_the_timer_off_so_that_a_busy_loop_is_not_woken_by_it(clock):
    job, runs = periodic(0.1, clock)
    job.start()
    try:
        for _ in range(6):  # every 0.03 s a turn rides it: the 0.1 s timer never comes due
            gevent.sleep(0.03)
            clock.now += 0.06
            assert job.ride(clock.now)
        assert len(runs) == 6 and runs == sorted(set(runs))  # each from a ride, at its own reading
        gevent.sleep(0.25)  # nothing rides it: the timer runs it again
        assert len(runs) >= 7 and runs[6:] == [clock.now] * (len(runs) - 6)
    finally:
        job.stop()


def test_a_job_that_raises_is_logged_and_runs_again(clock, caplog):
    calls = []

    def job(now):
        calls.append(now)
        raise RuntimeError("broken")

    failing, _ = periodic(0.02, clock, job)
    failing.start()
    try:
        with caplog.at_level(logging.ERROR, logger="sidecar.runtime.periodic"):
            assert failing.ride(clock.now)
            gevent.sleep(0.1)
    finally:
        failing.stop()
    assert len(calls) >= 3
    assert "the test's job failed" in caplog.text and "RuntimeError: broken" in caplog.text


def test_after_stop_neither_the_timer_nor_a_ride_runs_it(clock):
    job, runs = periodic(0.02, clock)
    job.start()
    assert job.started
    job.stop()
    job.stop()  # twice is fine
    gevent.sleep(0.08)
    assert not job.ride(clock.now) and runs == [] and not job.started
