"""The consumer sidecar's balancer, as a pure policy: no sockets, no clock of its own.

Every method that needs the time takes ``now``; ``now``, deadlines and the backoff options are in one
unit of the caller's choosing (the defaults assume seconds on a monotonic clock).

* **Choice**: a call goes to the provider whose in-flight count is furthest below its share, the
  argmin of ``(in_flight + 1) / weight`` over providers that are below their threshold and not
  ejected; ties go to the larger weight, then to the smaller key, so the choice is deterministic.
* **Admission**: :meth:`Balancer.submit` sends a call, or queues it in a bounded FIFO when every
  provider is at its threshold, or rejects it (queue full, no provider, every provider ejected).
  :meth:`Balancer.complete` frees a slot and releases queued calls first, in FIFO order;
  :meth:`Balancer.expire` hands back the queued calls whose deadline passed, so nothing waits forever.
* **Ejection**: ``eject_after`` consecutive timeouts eject a provider for ``backoff``, doubling with
  each ejection in a row up to ``max_backoff``; when the time is up one probe call is let through
  (half-open): an answer closes the circuit, a timeout ejects again for longer. A successful call
  resets the doubling.
* **Registry changes**: providers come and go while calls run; a removed provider's calls still in
  flight complete normally and are counted, and queued calls stay queued.

The I/O layer maps the outcomes: ``("reject", QUEUE_FULL)`` is 503 with ``Retry-After``,
``("reject", NO_PROVIDER)`` and ``("reject", ALL_EJECTED)`` 503, an expired call 504.

>>> b = Balancer(threshold=1, queue_size=1)
>>> b.add_provider("10.0.0.1:30000", weight=1)
>>> b.submit("a", deadline=5.0, now=0.0), b.submit("b", deadline=5.0, now=0.0)
(('send', '10.0.0.1:30000'), ('queued',))
>>> b.submit("c", deadline=5.0, now=0.0)
('reject', 'queue full')
>>> b.complete("a", "10.0.0.1:30000", now=0.05, outcome="ok")
[('b', '10.0.0.1:30000')]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum

from sidecar._accel import import_c_accel

__all__ = [
    "DEFAULT_OPTIONS",
    "NO_PROVIDER",
    "QUEUE_FULL",
    "ALL_EJECTED",
    "Outcome",
    "ProviderStats",
    "Balancer",
]

DEFAULT_OPTIONS = {
    "threshold": 200,  # calls in flight per provider before calls queue
    "queue_size": 1024,  # calls that may wait for a slot; 0 rejects at once when all are saturated
    "eject_after": 5,  # consecutive timeouts that eject a provider
    "backoff": 1.0,  # the first ejection's length
    "max_backoff": 30.0,  # the doubling stops here
}

NO_PROVIDER = "no provider"
QUEUE_FULL = "queue full"
ALL_EJECTED = "all providers ejected"


class Outcome(StrEnum):
    """How a call ended: a reply (``ok``), an error reply (``error``), or none by the deadline."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"


# The members, bound once: an enum class resolves its members through a Python-level __getattr__.
_OK, _ERROR, _TIMEOUT = Outcome.OK, Outcome.ERROR, Outcome.TIMEOUT


@dataclass(frozen=True, slots=True)
class ProviderStats:
    """A snapshot of one provider. ``answered`` counts replies (``errors`` of them were errors);
    ``ejected_until`` is set while the provider is ejected or waits for its probe call."""

    key: str
    weight: float
    threshold: int
    in_flight: int
    answered: int
    errors: int
    timeouts: int
    ejections: int
    ejected_until: float | None


class _Provider:
    __slots__ = (
        "key",
        "weight",
        "threshold",
        "in_flight",
        "answered",
        "errors",
        "timeouts",
        "ejections",
        "ejected_until",
        "consecutive_timeouts",
        "streak",
        "probe",
    )

    def __init__(self, key: str, weight: float, threshold: int):
        self.key, self.weight, self.threshold = key, weight, threshold
        self.in_flight = self.answered = self.errors = self.timeouts = self.ejections = 0
        self.ejected_until: float | None = None  # set: ejected until then, then half-open
        self.consecutive_timeouts = 0
        self.streak = 0  # ejections since the last successful call: the backoff doubles with it
        self.probe: Hashable | None = None  # the half-open probe call in flight

    def available(self, now: float) -> bool:
        if self.in_flight >= self.threshold:
            return False
        return self.ejected_until is None or (now >= self.ejected_until and self.probe is None)

    def shut(self, now: float) -> bool:
        """Ejected, or half-open with its probe call still out."""
        return self.ejected_until is not None and (now < self.ejected_until or self.probe is not None)


class Balancer:
    """Weighted least-loaded choice with per-provider thresholds, a FIFO wait queue and ejection.

    Call ids are any hashable values, unique among the calls in flight or queued. Options and their
    defaults are in :data:`DEFAULT_OPTIONS`.
    """

    def __init__(
        self,
        *,
        threshold: int = DEFAULT_OPTIONS["threshold"],
        queue_size: int = DEFAULT_OPTIONS["queue_size"],
        eject_after: int = DEFAULT_OPTIONS["eject_after"],
        backoff: float = DEFAULT_OPTIONS["backoff"],
        max_backoff: float = DEFAULT_OPTIONS["max_backoff"],
    ):
        self.threshold = _positive_int(threshold, "threshold")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 0:
            raise ValueError(f"queue_size must be an int >= 0, not {queue_size!r}")
        self.queue_size = queue_size
        self.eject_after = _positive_int(eject_after, "eject_after")
        if not 0 < backoff <= max_backoff:
            raise ValueError(f"need 0 < backoff <= max_backoff, not {backoff!r} and {max_backoff!r}")
        self.backoff, self.max_backoff = backoff, max_backoff
        self._providers: dict[str, _Provider] = {}
        self._draining: dict[str, _Provider] = {}  # removed, with calls still in flight
        self._calls: dict[Hashable, _Provider] = {}  # call id -> provider, for calls in flight
        self._queue: deque[tuple[Hashable, float]] = deque()  # (call id, deadline), oldest first
        self._queued: set[Hashable] = set()
        self._expired: list[tuple[Hashable, float]] = []  # found expired while releasing

    def __repr__(self) -> str:
        return (
            f"Balancer(providers={len(self._providers)}, in_flight={self.in_flight}, queued={self.queued}, "
            f"draining={len(self._draining)})"
        )

    # -- providers ------------------------------------------------------------------------------

    @property
    def providers(self) -> tuple[str, ...]:
        """The keys of the providers calls may go to, in the order they were added."""
        return tuple(self._providers)

    def add_provider(self, key: str, weight: float, threshold: int | None = None) -> None:
        """Add a provider, or change the weight and threshold of a known one. A provider removed
        while its calls were in flight comes back with those calls and its counters. Queued calls
        do not move by themselves: call :meth:`release` afterwards."""
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            raise ValueError(f"weight of {key!r} must be a number > 0, not {weight!r}")
        limit = self.threshold if threshold is None else _positive_int(threshold, f"threshold of {key!r}")
        provider = self._providers.get(key) or self._draining.pop(key, None)
        if provider is None:
            provider = _Provider(key, weight, limit)
        else:
            provider.weight, provider.threshold = weight, limit
        self._providers[key] = provider

    def remove_provider(self, key: str) -> bool:
        """Stop sending calls to ``key``; its calls in flight still complete. False if unknown."""
        provider = self._providers.pop(key, None)
        if provider is None:
            return False
        if provider.in_flight:
            self._draining[key] = provider
        return True

    def stats(self) -> dict[str, ProviderStats]:
        """A snapshot of every provider calls may go to, by key."""
        return {
            p.key: ProviderStats(
                p.key,
                p.weight,
                p.threshold,
                p.in_flight,
                p.answered,
                p.errors,
                p.timeouts,
                p.ejections,
                p.ejected_until,
            )
            for p in self._providers.values()
        }

    @property
    def in_flight(self) -> int:
        """Calls sent and not completed, removed providers' included."""
        return len(self._calls)

    @property
    def queued(self) -> int:
        """Calls waiting for a slot, including those whose deadline passed and that :meth:`expire`
        has not handed back yet."""
        return len(self._queue) + len(self._expired)

    # -- calls ----------------------------------------------------------------------------------

    def choose(self, now: float) -> str | None:
        """The provider the next call would go to, or None when none is available. Changes nothing."""
        provider = self._pick(now)
        return None if provider is None else provider.key

    def submit(self, call_id: Hashable, deadline: float, now: float) -> tuple:
        """Admit a call: ``("send", key)``, ``("queued",)`` until a slot frees or ``deadline`` passes,
        or ``("reject", reason)`` with :data:`NO_PROVIDER`, :data:`ALL_EJECTED` or :data:`QUEUE_FULL`.
        While calls are queued a new call queues behind them."""
        if call_id in self._calls or call_id in self._queued or (self._expired and self._expiring(call_id)):
            raise ValueError(f"call {call_id!r} is already in flight or queued")
        if not self._providers:
            return ("reject", NO_PROVIDER)
        if not self._queue:
            provider = self._pick(now)
            if provider is not None:
                self._send(call_id, provider)
                return ("send", provider.key)
        reason = self._full(now)
        if reason is not None:
            return ("reject", reason)
        self._queue.append((call_id, deadline))
        self._queued.add(call_id)
        return ("queued",)

    def _expiring(self, call_id: Hashable) -> bool:
        """Whether ``call_id`` is among the queued calls found expired and not yet handed out (a method
        of its own: a generator inside :meth:`submit` would cost its compiled twin a closure per call)."""
        return any(c == call_id for c, _ in self._expired)

    def refusal(self, now: float) -> str | None:
        """Why a call submitted now would be rejected at once (:data:`NO_PROVIDER`, :data:`ALL_EJECTED`
        or :data:`QUEUE_FULL`), or None when it would be sent or queued. Changes nothing."""
        if not self._providers:
            return NO_PROVIDER
        if not self._queue and self._pick(now) is not None:
            return None
        return self._full(now)

    def _full(self, now: float) -> str | None:
        """With no provider free for a call: why it cannot wait either, or None when it can queue."""
        if all(p.shut(now) for p in self._providers.values()):
            return ALL_EJECTED
        if self.queued >= self.queue_size:
            return QUEUE_FULL
        return None

    def complete(self, call_id: Hashable, provider: str, now: float, outcome: Outcome | str) -> list:
        """Record the end of a call sent to ``provider``, then :meth:`release` queued calls into the
        freed slots: returns their ``(call id, key)`` in FIFO order. A call that is not in flight
        (completed already) changes nothing and releases nothing."""
        if outcome.__class__ is not Outcome:  # a plain string: the enum's lookup is a Python-level call
            outcome = Outcome(outcome)
        target = self._calls.get(call_id)
        if target is None:
            return []
        if target.key != provider:
            raise ValueError(f"call {call_id!r} went to {target.key!r}, not {provider!r}")
        del self._calls[call_id]
        target.in_flight -= 1
        if outcome is _TIMEOUT:
            target.timeouts += 1
        else:
            target.answered += 1
            target.errors += outcome is _ERROR
        self._health(target, call_id, now, outcome)
        if not target.in_flight and self._draining.get(target.key) is target:
            del self._draining[target.key]
        return self.release(now)

    def release(self, now: float) -> list:
        """Send queued calls, oldest first, while a provider is available: their ``(call id, key)``.
        Calls whose deadline passed are left for :meth:`expire`. The I/O layer calls this after
        :meth:`add_provider` and at :meth:`wakeup_time` (an ejection may have ended)."""
        released = []
        queue = self._queue
        while queue:
            call_id, deadline = queue[0]
            if deadline <= now:
                self._expired.append(queue.popleft())
                self._queued.discard(call_id)
                continue
            provider = self._pick(now)
            if provider is None:
                break
            queue.popleft()
            self._queued.discard(call_id)
            self._send(call_id, provider)
            released.append((call_id, provider.key))
        return released

    def expire(self, now: float) -> list:
        """Take the queued calls whose deadline is at or before ``now`` out of the queue and return
        their ids, oldest first (the I/O layer answers them 504)."""
        expired = [call_id for call_id, _ in self._expired]
        self._expired = []
        if any(deadline <= now for _, deadline in self._queue):
            keep = deque()
            for call_id, deadline in self._queue:
                if deadline <= now:
                    expired.append(call_id)
                    self._queued.discard(call_id)
                else:
                    keep.append((call_id, deadline))
            self._queue = keep
        return expired

    def cancel(self, call_id: Hashable) -> bool:
        """Drop a queued call (its client went away). False if it is not queued; a call in flight
        ends with :meth:`complete`."""
        for index, (queued_id, _) in enumerate(self._expired):
            if queued_id == call_id:
                del self._expired[index]
                return True
        if call_id not in self._queued:
            return False
        self._queued.discard(call_id)
        self._queue = deque(entry for entry in self._queue if entry[0] != call_id)
        return True

    def wakeup_time(self, now: float) -> float | None:
        """When :meth:`expire` and :meth:`release` next have work without any call completing: the
        earliest deadline of a queued call, or the end of an ejection after ``now`` while calls are
        queued. None when nothing is queued; a time at or before ``now`` means at once."""
        if not self._queue and not self._expired:
            return None
        times = [deadline for _, deadline in self._queue] + [deadline for _, deadline in self._expired]
        ends = (p.ejected_until for p in self._providers.values() if p.ejected_until is not None)
        times += [end for end in ends if end > now]
        return min(times)

    # -- internals ------------------------------------------------------------------------------

    def _pick(self, now: float) -> _Provider | None:
        """The available provider furthest below its share: the least ``(in flight + 1) / weight``;
        of equals, the heavier, then the first key. Compared field by field, not as a tuple per
        provider (this runs for every call)."""
        best, best_load = None, 0.0
        for provider in self._providers.values():
            if provider.available(now):
                load = (provider.in_flight + 1) / provider.weight
                if best is None or load < best_load or (load == best_load and _ahead(provider, best)):
                    best, best_load = provider, load
        return best

    def _send(self, call_id: Hashable, provider: _Provider) -> None:
        provider.in_flight += 1
        self._calls[call_id] = provider
        if provider.ejected_until is not None:  # half-open: this call is the probe
            provider.probe = call_id

    def _health(self, provider: _Provider, call_id: Hashable, now: float, outcome: Outcome) -> None:
        if provider.ejected_until is not None:
            if call_id != provider.probe:  # a late end of a call sent before the ejection
                return
            provider.probe = None
            if outcome is _TIMEOUT:
                self._eject(provider, now)
                return
            provider.ejected_until = None  # it answered: close the circuit
        if outcome is _TIMEOUT:
            provider.consecutive_timeouts += 1
            if provider.consecutive_timeouts >= self.eject_after:
                self._eject(provider, now)
            return
        provider.consecutive_timeouts = 0
        if outcome is _OK:
            provider.streak = 0

    def _eject(self, provider: _Provider, now: float) -> None:
        provider.ejected_until = now + min(self.backoff * 2 ** min(provider.streak, 64), self.max_backoff)
        provider.streak += 1
        provider.ejections += 1
        provider.consecutive_timeouts = 0


def _positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an int >= 1, not {value!r}")
    return value


def _ahead(provider: _Provider, other: _Provider) -> bool:
    """Of two providers equally far below their share, whether ``provider`` goes first: the heavier,
    then the first key."""
    if provider.weight != other.weight:
        return provider.weight > other.weight
    return provider.key < other.key


import_c_accel(globals(), "sidecar.policies._c_balancer")
