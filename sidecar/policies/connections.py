"""Which connections of a server to close: a cap on their number, and a deadline for each phase.

Pure, like the balancer: the I/O layer says what each connection is doing, with the deadline of that
phase, and asks which connections to close; it closes them in its own way (a watcher stopped and the
socket closed, a greenlet killed, a socket shut down). Keys are whatever the I/O layer uses for a
connection (hashable). A connection is in one of three phases:

* **idle**: waiting for a request to begin (a new or a kept-alive connection); its deadline is the
  idle timeout. Idle connections are the first to go when the server is full.
* **waiting**: waiting on the client in the middle of something (a request head or body that has
  begun, an answer the client is slow to take); its deadline is the one of that phase, and holds
  however often bytes arrive.
* **busy**: the server is working for it (a call in flight); no deadline here (the call has its own).

At ``max_connections``, a new connection sheds the idle connection that has been idle longest; when
none is idle, the waiting one with the earliest deadline (the slowest client); when every connection
is busy, there is no room and the new connection is to be refused.

>>> limits = ConnectionLimits(max_connections=2)
>>> limits.opened("a", deadline=5.0), limits.opened("b", deadline=6.0)
([], [])
>>> limits.busy("a"); limits.opened("c", deadline=7.0)  # "a" is answering: "b" has waited longest
['b']
>>> limits.idle("a", deadline=8.0); limits.overdue(now=7.5)
['c']
>>> limits.overdue(now=8.0), limits.phase("c")  # "c" is the I/O layer's to close now
(['a'], 'busy')
"""

from __future__ import annotations

from collections.abc import Hashable

from sidecar._accel import import_c_accel

__all__ = ["ConnectionLimits", "IDLE", "WAITING", "BUSY"]

IDLE, WAITING, BUSY = "idle", "waiting", "busy"


class ConnectionLimits:
    """The connections of one server, each with its phase and the deadline of that phase."""

    def __init__(self, *, max_connections: int):
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be an int >= 1, not {max_connections!r}")
        self.max_connections = max_connections
        # key -> (phase, deadline, since): since orders the idle ones by how long they have been idle
        self._phases: dict[Hashable, tuple[str, float | None, int]] = {}
        self._ticks = 0  # orders the changes of phase

    def __len__(self) -> int:
        return len(self._phases)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._phases

    def phase(self, key: Hashable) -> str | None:
        entry = self._phases.get(key)
        return None if entry is None else entry[0]

    def opened(self, key: Hashable, deadline: float) -> list[Hashable] | None:
        """Take a new connection, idle until ``deadline``. Returns the connections to close to make
        room for it (forgotten here already), or None when every connection is busy: then the new
        one is not taken and is to be refused."""
        shed = []
        while len(self._phases) >= self.max_connections:
            victim = self._first_to_go()
            if victim is None:  # every connection is busy
                return None
            del self._phases[victim]
            shed.append(victim)
        self._set(key, IDLE, deadline)
        return shed

    def idle(self, key: Hashable, deadline: float) -> None:
        """``key`` waits for its next request until ``deadline``."""
        if key in self._phases:
            self._set(key, IDLE, deadline)

    def waiting(self, key: Hashable, deadline: float) -> None:
        """``key`` is in the middle of a request or an answer, which must be done by ``deadline``."""
        if key in self._phases:
            self._set(key, WAITING, deadline)

    def busy(self, key: Hashable) -> None:
        """The server works for ``key``: no deadline until it is idle or waiting again."""
        if key in self._phases:
            self._set(key, BUSY, None)

    def closed(self, key: Hashable) -> None:
        self._phases.pop(key, None)

    def overdue(self, now: float) -> list[Hashable]:
        """The connections whose deadline passed, the earliest deadline first. Each is busy from now
        on (it is not returned again) until the I/O layer closes it or gives it a new phase."""
        late = sorted(
            (deadline, since, key)
            for key, (_, deadline, since) in self._phases.items()
            if deadline is not None and deadline <= now
        )
        for _, _, key in late:
            self._set(key, BUSY, None)
        return [key for _, _, key in late]

    def _set(self, key: Hashable, phase: str, deadline: float | None) -> None:
        self._ticks += 1
        self._phases[key] = (phase, deadline, self._ticks)

    def _first_to_go(self) -> Hashable | None:
        idle = [(since, key) for key, (phase, _, since) in self._phases.items() if phase is IDLE]
        if idle:
            return min(idle)[1]
        waiting = [(deadline, since, key) for key, (phase, deadline, since) in self._phases.items() if phase is WAITING]
        if waiting:
            return min(waiting)[2]
        return None


import_c_accel(globals(), "sidecar.policies._c_connections")
