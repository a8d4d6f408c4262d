"""Which connections of a server to close: a cap on their number and a deadline for each request.

Pure, like the balancer: the I/O layer says what happened to a connection, with the time, and asks
which connections to close; it closes them in its own way (a greenlet killed, a socket shut down).
Keys are whatever the I/O layer uses for a connection (hashable).

* A connection must bring a whole request within ``request_timeout`` of being opened or of its
  previous answer: a head sent a byte at a time, or a keep-alive connection left silent, is overdue
  then, however often bytes arrive.
* While a request is being answered, its connection has no deadline (the answer has its own).
* At ``max_connections``, a new connection closes the one that has waited longest for its request
  (the earliest deadline), so a flood of slow or idle connections cannot lock out a new client.

>>> limits = ConnectionLimits(max_connections=2, request_timeout=5.0)
>>> limits.opened("a", now=0.0), limits.opened("b", now=1.0)
([], [])
>>> limits.busy("a"); limits.opened("c", now=2.0)  # "a" is answering: "b" has waited longest
['b']
>>> limits.answered("a", now=3.0); limits.overdue(now=7.5)
['c']
>>> limits.overdue(now=8.0)
['a']
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["ConnectionLimits"]


class ConnectionLimits:
    """The connections of one server, each with the time by which its next request must be whole."""

    def __init__(self, *, max_connections: int, request_timeout: float):
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be an int >= 1, not {max_connections!r}")
        if not request_timeout > 0:
            raise ValueError(f"request_timeout must be > 0, not {request_timeout!r}")
        self.max_connections, self.request_timeout = max_connections, request_timeout
        self._deadlines: dict[Hashable, float | None] = {}  # None: its request is being answered

    def __len__(self) -> int:
        return len(self._deadlines)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._deadlines

    def opened(self, key: Hashable, now: float) -> list[Hashable]:
        """Take a new connection; returns the connections to close to make room for it, which are
        forgotten here already."""
        shed = []
        while len(self._deadlines) >= self.max_connections:
            victim = self._longest_waiting()
            del self._deadlines[victim]
            shed.append(victim)
        self._deadlines[key] = now + self.request_timeout
        return shed

    def busy(self, key: Hashable) -> None:
        """A whole request arrived on ``key``: no deadline while it is answered."""
        if key in self._deadlines:
            self._deadlines[key] = None

    def answered(self, key: Hashable, now: float) -> None:
        """The answer went out: the next request is due within ``request_timeout``."""
        if key in self._deadlines:
            self._deadlines[key] = now + self.request_timeout

    def closed(self, key: Hashable) -> None:
        self._deadlines.pop(key, None)

    def overdue(self, now: float) -> list[Hashable]:
        """The connections whose request is late, oldest deadline first; they are forgotten here."""
        late = sorted(
            (deadline, index, key)
            for index, (key, deadline) in enumerate(self._deadlines.items())
            if deadline is not None and deadline <= now
        )
        for _, _, key in late:
            del self._deadlines[key]
        return [key for _, _, key in late]

    def _longest_waiting(self) -> Hashable:
        """The connection with the earliest deadline; when every one is answering, the oldest."""
        waiting = [
            (deadline, index, key)
            for index, (key, deadline) in enumerate(self._deadlines.items())
            if deadline is not None
        ]
        if waiting:
            return min(waiting)[2]
        return next(iter(self._deadlines))
