"""systemd readiness and watchdog notifications (``sd_notify``), spoken directly.

A service started with ``Type=notify`` finds ``$NOTIFY_SOCKET`` in its environment: the address of an
AF_UNIX datagram socket (a path, or ``@name`` for the abstract namespace, where ``@`` stands for a NUL
byte). It tells systemd about itself with one datagram of newline-separated ``KEY=value`` lines:
``READY=1`` once it serves, ``STOPPING=1`` when it begins to shut down, ``WATCHDOG=1`` at least once
per ``$WATCHDOG_USEC`` microseconds when ``WatchdogSec=`` is set (``$WATCHDOG_PID``, when present,
names the one process meant to ping), ``STATUS=...`` as free text for ``systemctl status``.

No dependency (``systemd-python``, ``sdnotify``, ``cysystemd``) is used on purpose: the whole protocol
is one datagram on a socket the standard library already speaks, and a C binding would tie the
package to libsystemd headers at install time for thirty lines of code. Without ``$NOTIFY_SOCKET``
(not under systemd, or ``Type=simple``) every function here does nothing and returns ``False``.

The parsing and formatting helpers are pure (environment in, values out); only :func:`notify` touches
a socket. :func:`start_watchdog` pings from a greenlet for processes that run a gevent hub;
:class:`WatchdogPinger` pings from a loop that wakes up often on its own (the consumer supervisor).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = [
    "SEND_TIMEOUT",
    "WatchdogPinger",
    "message",
    "notify",
    "ready",
    "socket_address",
    "start_watchdog",
    "stopping",
    "watchdog",
    "watchdog_interval",
]

log = logging.getLogger(__name__)

SEND_TIMEOUT = 1.0  # seconds a READY/STOPPING datagram may wait for room in systemd's queue


# -- pure helpers -------------------------------------------------------------------------------


def socket_address(value: str | None) -> str | None:
    """The AF_UNIX address that ``$NOTIFY_SOCKET`` names, or None when there is none we can use.

    ``/run/systemd/notify`` is a path; ``@name`` is ``name`` in the abstract namespace (``"\\0name"``).
    Anything else (empty, relative, ``vsock:`` of newer systemd versions) is None, as in ``sd_notify``.
    """
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:] if len(value) > 1 else None
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds within which systemd expects ``WATCHDOG=1`` from process ``pid``, or None.

    From ``$WATCHDOG_USEC`` (a positive integer); when ``$WATCHDOG_PID`` is set, only the process with
    that pid is meant to ping, any other gets None. Malformed values count as absent.
    """
    environ = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec / 1_000_000


def message(**fields: object) -> str:
    """One notification: ``message(READY=1, STATUS="up")`` is ``"READY=1\\nSTATUS=up"``."""
    lines = []
    for key, value in fields.items():
        text = str(value)
        if "\n" in text:
            raise ValueError(f"a notification value cannot contain a newline: {key}={text!r}")
        lines.append(f"{key}={text}")
    return "\n".join(lines)


# -- sending ------------------------------------------------------------------------------------


def notify(state: str, environ: Mapping[str, str] | None = None, timeout: float = SEND_TIMEOUT) -> bool:
    """Send ``state`` to ``$NOTIFY_SOCKET``; True if the datagram went out.

    False, and nothing done, when the variable is unset or unusable; False with a debug log when the
    send fails. ``timeout`` 0 never waits (a full queue drops the datagram: right for watchdog pings,
    the next one follows); the default waits up to :data:`SEND_TIMEOUT` for room.
    """
    environ = os.environ if environ is None else environ
    address = socket_address(environ.get("NOTIFY_SOCKET"))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.send(state.encode("utf-8"))
    except OSError as e:
        log.debug("systemd notification %r not sent: %s", state, e)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """Tell systemd the service is up (``READY=1``), with an optional status line."""
    return notify(message(READY=1, STATUS=status) if status else message(READY=1))


def stopping(status: str | None = None) -> bool:
    """Tell systemd the service is shutting down (``STOPPING=1``)."""
    return notify(message(STOPPING=1, STATUS=status) if status else message(STOPPING=1))


def watchdog() -> bool:
    """One watchdog ping (``WATCHDOG=1``); never waits."""
    return notify(message(WATCHDOG=1), timeout=0)


class WatchdogPinger:
    """Pings when due, for a loop without a gevent hub that wakes up more often than half the interval.

    ``poll()`` on every turn of the loop sends ``WATCHDOG=1`` at most every ``interval / 2`` seconds
    (the first call sends at once); with no interval (no watchdog configured) it never sends.
    """

    def __init__(
        self,
        interval: float | None,
        send: Callable[[], object] = watchdog,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.period = interval / 2 if interval else None
        self._send = send
        self._clock = clock
        self._next = float("-inf")

    def poll(self) -> bool:
        if self.period is None:
            return False
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self.period
        self._send()
        return True


def start_watchdog(interval: float | None = None):
    """A greenlet that sends ``WATCHDOG=1`` every half ``interval`` (default: from the environment).

    Returns None when no watchdog is configured for this process or there is no socket to ping; kill
    the greenlet to stop. It runs on the hub, so it proves the hub is alive, which is what the
    watchdog is for.
    """
    if interval is None:
        interval = watchdog_interval()
    if not interval or socket_address(os.environ.get("NOTIFY_SOCKET")) is None:
        return None
    import gevent

    def loop():
        while True:
            watchdog()
            gevent.sleep(interval / 2)

    return gevent.spawn(loop)
