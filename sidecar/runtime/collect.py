"""Collecting I/O events before the hub's loop polls again: fewer wake-ups of a busy sidecar.

A sidecar's hub blocks in ``epoll_wait`` until one of its sockets is ready, handles what is ready, and
blocks again. Under a steady load of a few thousand calls a second that is one or two calls per
wake-up, and a wake-up costs far more than its system call: the process is scheduled back onto a core
whose caches the other processes have used meanwhile. On this project's benchmark (two cores shared
with the services, the other sidecars and the load generator) a loop turn of the consumer cost about
85 µs beyond the calls it handled, which at 128 connections was a third of its CPU per call.

libev can collect events instead (``ev_set_io_collect_interval``): when the loop is about to block
and it last polled less than ``interval`` ago, it first sleeps for the rest of the interval, then
polls once for everything that came meanwhile. An idle sidecar polled long ago, so it never waits and
a lone call sees no delay; a busy one wakes at most once per interval and handles more calls each
time, each of them up to ``interval`` later than it could have been. Timers are not delayed: the
sleep ends before the next one is due.

gevent does not expose the setting. Its default loop on CPython (``gevent.libev.corecext``) exports
libev's function from its extension module and gives the address of its ``ev_loop`` (``loop.ptr``),
which is all the call needs; another loop (libuv, or the CFFI build) is left as it is.
"""

from __future__ import annotations

import ctypes
import math
import sys

__all__ = ["collect_io"]

_LIBEV_LOOP = "gevent.libev.corecext"


def collect_io(loop, interval: float) -> bool:
    """Let the hub's ``loop`` collect I/O events for up to ``interval`` seconds before it polls (0: poll
    as soon as it would block, libev's default). True when set; False for a loop that is not gevent's
    libev loop, which stays as it is. Raises ValueError for a negative or non-finite interval."""
    if not (isinstance(interval, int | float) and math.isfinite(interval) and interval >= 0):
        raise ValueError(f"an I/O collect interval is a number of seconds, at least 0, not {interval!r}")
    module = type(loop).__module__
    pointer = getattr(loop, "ptr", None)
    if module != _LIBEV_LOOP or not pointer:
        return False
    function = _libev_function(module)
    if function is None:
        return False
    function(ctypes.c_void_p(pointer), ctypes.c_double(float(interval)))
    return True


def _libev_function(module_name: str):
    """``ev_set_io_collect_interval`` of the loaded extension module ``module_name``, or None."""
    path = getattr(sys.modules.get(module_name), "__file__", None)
    if not path:
        return None
    try:
        function = ctypes.CDLL(path).ev_set_io_collect_interval
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_void_p, ctypes.c_double)
    function.restype = None
    return function
