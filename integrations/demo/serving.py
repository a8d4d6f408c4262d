"""Running a test server of ours as a process: start it, say so, serve until SIGTERM or SIGINT, stop.

Shared by the demo Dubbo service and the plain HTTP backend of the bench, which are run the same way:
once bound each prints one line, ``listening HOST:PORT``, and a signal makes it finish the calls in
progress and exit 0. A server that cannot start (bad option, port taken) exits 2 with one line on
stderr.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

__all__ = ["serve"]


def serve(name: str, make: Callable[[], Any]) -> int:
    """Build a server with ``make()`` (it has ``start()``, ``stop()`` and ``address``), run it until
    a signal, and return the exit status."""
    try:
        server = make()
        server.start()
    except (ValueError, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    stopping = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    host, port = server.address
    print(f"listening {host}:{port}", flush=True)
    stopping.wait()
    server.stop()
    return 0
