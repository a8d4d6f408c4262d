"""Datagrams out of a non-blocking UDP socket, never blocking: what the socket has no room for waits.

Both ends of the tunnel send this way (the consumer's calls, the provider's replies). A datagram goes
out at once when nothing waits before it; else it joins a backlog, in order, that a write watcher on
the hub's loop sends as the socket takes it. Past ``limit`` waiting datagrams a new one is dropped
and reported (UDP may lose it anyway: a call whose datagram is lost ends at its deadline).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

from sidecar._accel import import_c_accel

__all__ = ["DatagramSender"]

_WRITE = 2


class DatagramSender:
    """Sends on ``sock`` (non-blocking, bound) for the hub ``loop``; counts ``datagrams_out`` in
    ``counters`` and calls ``failed(address, error)`` for a send that failed (``error`` None: the
    backlog was full)."""

    def __init__(self, sock, loop, counters: Counter, failed: Callable, *, limit: int = 65536):
        self.sock, self.counters, self.failed, self.limit = sock, counters, failed, limit
        self.backlog: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._writer = loop.io(sock.fileno(), _WRITE)

    @property
    def waiting(self) -> int:
        return len(self.backlog)

    def send(self, datagram: bytes, address: tuple[str, int]) -> None:
        backlog = self.backlog
        if not backlog:
            try:
                self.sock.sendto(datagram, address)
                self.counters["datagrams_out"] += 1
                return
            except BlockingIOError:
                pass
            except OSError as e:
                self.failed(address, e)
                return
        if len(backlog) >= self.limit:
            self.failed(address, None)
            return
        backlog.append((datagram, address))
        if not self._writer.active:
            self._writer.start(self._writable)

    def _writable(self) -> None:
        backlog, sendto = self.backlog, self.sock.sendto
        while backlog:
            datagram, address = backlog[0]
            try:
                sendto(datagram, address)
            except BlockingIOError:
                return
            except OSError as e:
                self.failed(address, e)
            else:
                self.counters["datagrams_out"] += 1
            backlog.popleft()
        self._writer.stop()

    def close(self) -> None:
        self._writer.stop()
        self._writer.close()
        self.backlog.clear()


import_c_accel(globals(), "sidecar.runtime._c_datagrams")
