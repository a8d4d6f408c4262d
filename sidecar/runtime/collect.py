"""Collecting I/O events before the hub's loop polls again: fewer wake-ups of a busy sidecar.

A sidecar's hub blocks in ``epoll_wait`` until one of its sockets is ready, handles what is ready, and
blocks again. Under a steady load of a few thousand calls a second that is one or two calls per
wake-up, and a wake-up costs far more than its system call: the process is scheduled back onto a core
whose caches the other processes have used meanwhile. On this project's benchmark (two cores shared
with the services, the other sidecars and the load generator) a loop turn of the consumer cost about
85 µs beyond the calls it handled, which at 128 connections was a third of its CPU per call.

libev can collect events instead (``ev_set_io_collect_interval``): before each poll it sleeps for
whatever is left of ``interval`` since the previous poll returned, then polls once for everything
that came meanwhile. A busy loop then wakes at most once per interval and handles more calls each
time, each of them up to ``interval`` (plus the sleep's overshoot, about 0.1 ms here) later than it
could have been. Timers are not delayed: the sleep ends before the next one is due.

That rule does not look at the load: after a turn that handled one request, the loop sleeps before it
polls for that request's answer, so a lone call waits too (measured: 0.37 ms for a call through the
demo topology with nothing else going on, 0.95 ms with a 0.3 ms interval). :class:`Collector` sets the
interval only while its owner says it is busy, and 0 otherwise; :func:`collect_io` sets it for good.

gevent does not expose the setting. Its default loop on CPython (``gevent.libev.corecext``) exports
libev's function from its extension module and gives the address of its ``ev_loop`` (``loop.ptr``),
which is all the call needs; another loop (libuv, or the CFFI build) is left as it is.
"""

from __future__ import annotations

import ctypes
import math
import sys
from collections.abc import Callable

__all__ = ["Collector", "collect_io"]

_LIBEV_LOOP = "gevent.libev.corecext"


def collect_io(loop, interval: float) -> bool:
    """Let the hub's ``loop`` collect I/O events for up to ``interval`` seconds before it polls (0: poll
    as soon as it would block, libev's default). True when set; False for a loop that is not gevent's
    libev loop, which stays as it is. Raises ValueError for a negative or non-finite interval."""
    _check_interval(interval)
    set_interval = _interval_setter(loop)
    if set_interval is None:
        return False
    set_interval(ctypes.c_void_p(loop.ptr), float(interval))
    return True


class Collector:
    """Collects only while ``busy()`` says so. After each poll a check watcher (libev runs it before
    the callbacks of that poll) asks ``busy()`` and sets the loop's interval to ``interval`` or to 0
    for the next poll, calling libev only when the answer changes.

    libev's own rule sleeps after every turn that took less than the interval, busy or not: a lone
    call whose answer comes back within the interval waits for it. The owner's ``busy`` (the consumer:
    enough calls in flight that another event is due within the interval) keeps a light load free of
    that delay.

    :meth:`start` returns False (and changes nothing) for a loop that is not gevent's libev loop.
    ``collecting`` is what the next poll does; ``turns`` and ``busy_turns`` count the polls seen."""

    def __init__(self, loop, interval: float, busy: Callable[[], bool]):
        _check_interval(interval)
        self.loop, self.interval, self.busy = loop, float(interval), busy
        self.collecting = False
        self.turns = self.busy_turns = 0
        self._watcher = None
        self._set = None
        self._ptr = None

    def start(self) -> bool:
        if self._watcher is not None:
            return True
        self._set = _interval_setter(self.loop)
        if self._set is None:
            return False
        self._ptr = ctypes.c_void_p(self.loop.ptr)
        self._watcher = self.loop.check()
        self._watcher.start(self._polled)
        return True

    def _polled(self) -> None:
        self.turns += 1
        busy = bool(self.busy())
        if busy:
            self.busy_turns += 1
        if busy is not self.collecting:
            self.collecting = busy
            self._set(self._ptr, self.interval if busy else 0.0)

    def stop(self) -> None:
        """Stop watching, and let the loop poll at once again."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None
            self._set(self._ptr, 0.0)
            self.collecting = False


def _check_interval(interval) -> None:
    if not (isinstance(interval, int | float) and math.isfinite(interval) and interval >= 0):
        raise ValueError(f"an I/O collect interval is a number of seconds, at least 0, not {interval!r}")


def _interval_setter(loop):
    """``ev_set_io_collect_interval`` of gevent's libev extension module when ``loop`` is its loop;
    else None."""
    module = type(loop).__module__
    if module != _LIBEV_LOOP or not getattr(loop, "ptr", None):
        return None
    path = getattr(sys.modules.get(module), "__file__", None)
    if not path:
        return None
    try:
        function = ctypes.CDLL(path).ev_set_io_collect_interval
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_void_p, ctypes.c_double)
    function.restype = None
    return function
