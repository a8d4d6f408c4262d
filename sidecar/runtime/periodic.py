"""A periodic job of the hub's loop that a busy loop runs from turns it makes anyway.

A sidecar has jobs that must run every so often: the caller's sweep ends the calls whose deadline
passed, the HTTP server's reaper ends the connections that are late. Each could be a timer of its
own, and when the sidecar is idle that is what it is. When it is busy, though, such a timer wakes the
loop by itself, and a timer due within the collect interval cuts libev's collect sleep short
(:mod:`sidecar.runtime.collect`): the loop polls more often than the interval allows, with fewer
events each time. At 128 connections the consumer's two timers (every 20 ms and every 100 ms) made
its loop poll about 40% more often than without them.

:class:`Periodic` lets the code that runs on a busy loop's turns (the reader of replies, the writer
of answers) carry the job: :meth:`Periodic.ride` runs it once half its ``interval`` has passed since
it last ran, and starts the timer again (``timer.again``), so the timer fires only after a whole
``interval`` in which nothing rode it. A job then runs at least once per ``interval``, and at most
about twice; its resolution is the one its timer gives.

The job is given the clock's reading when it runs, and should not raise: if it does, the error is
logged and the job runs again next time (a job that died would take every deadline with it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

__all__ = ["Periodic"]

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``job(now)`` every ``interval`` seconds on the hub ``loop`` from :meth:`start` until
    :meth:`stop`, or earlier from :meth:`ride`. ``clock`` is the owner's monotonic clock, in seconds
    (``ride`` is given its reading); ``name`` says which job failed in the log."""

    def __init__(self, loop, interval: float, job: Callable[[float], object], *,
                 clock: Callable[[], float] = time.monotonic, name: str = "periodic job"):  # fmt: skip
        if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
            raise ValueError(f"a periodic job's interval is a number of seconds above 0, not {interval!r}")
        self.loop, self.interval, self.job, self.clock, self.name = loop, float(interval), job, clock, name
        self.last = -math.inf  # when the job last ran (``clock``); never yet
        self.runs = 0
        self._timer = None

    @property
    def started(self) -> bool:
        return self._timer is not None

    def start(self) -> None:
        """Run the job every ``interval`` from now on (the first time one ``interval`` from now)."""
        if self._timer is None:
            self._timer = self.loop.timer(self.interval, self.interval)
            self._timer.start(self._fire)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None

    def ride(self, now: float) -> bool:
        """A turn the loop makes anyway, at ``now``: run the job here if half an ``interval`` passed
        since it last ran, and put its timer a whole ``interval`` off. True when the job ran."""
        if self._timer is None or now - self.last < self.interval / 2:
            return False
        self._timer.again(self._fire, update=False)
        self._run(now)
        return True

    def _fire(self) -> None:
        self._run(self.clock())

    def _run(self, now: float) -> None:
        self.last = now
        self.runs += 1
        try:
            self.job(now)
        except Exception:  # never let the job die: what it keeps (every deadline) would go with it
            log.exception("%s failed", self.name)
