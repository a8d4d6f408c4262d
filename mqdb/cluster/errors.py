"""The errors of the Redis Cluster store. Each derives from :class:`mqdb.Error` and says what to do."""

from __future__ import annotations

from ..errors import Error


class ClusterError(Error):
    """Base class of the errors that only the Redis Cluster store raises."""


class MissingDependencyError(ClusterError):
    """The ``redis`` package is not installed."""

    def __init__(self):
        super().__init__(
            "mqdb.open('redis://...') needs the redis package: pip install 'dubbomesh[redis]' (or pip install redis)"
        )


class ClusterUnreachableError(ClusterError):
    """No node of the cluster answered, or the nodes are not a Redis Cluster that serves every slot."""


class ForeignStreamError(ClusterError):
    """A key in the store's namespace holds something mqdb did not write; mqdb neither reads nor appends
    to it. ``queue`` and ``key`` name it."""

    def __init__(self, queue: str, key: bytes, reason: str):
        self.queue = queue
        self.key = key
        super().__init__(
            f"queue {queue!r}: key {key.decode('utf-8', 'backslashreplace')!r} is not an mqdb queue ({reason}); "
            "mqdb leaves it alone: rename or delete the key, or use another queue name or store name (/NAME in the URL)"
        )


class ConflictError(ClusterError):
    """Another writer appended to a queue this handle appends to: an offset holds another message."""


class NotDurableError(ClusterError):
    """A flush could not confirm some messages: a node was lost and no replica took over in time, or
    no replica acknowledged them. ``messages`` lists ``(queue, offset)`` of each; they stay queued in the
    handle, and the next ``flush()`` tries them again. Nothing that an earlier flush returned is affected.
    """

    def __init__(self, reason: str, messages: list[tuple[str, int]]):
        self.reason = reason
        self.messages = messages
        super().__init__(
            f"{reason}; {len(messages):,} message(s) may not be durable: {describe(messages)}. "
            "They stay queued in this handle: call flush() again once the cluster is ok"
        )


def describe(messages: list[tuple[str, int]], limit: int = 8) -> str:
    """``Queue-1 offsets 3-9, Queue-7 offset 0 ...`` for (queue, offset) pairs."""
    runs: dict[str, list[list[int]]] = {}
    for queue, offset in messages:
        spans = runs.setdefault(queue, [])
        if spans and spans[-1][1] + 1 == offset:
            spans[-1][1] = offset
        else:
            spans.append([offset, offset])
    parts = []
    for queue, spans in runs.items():
        text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
        parts.append(f"{queue} offset{'s' if len(spans) > 1 or spans[0][0] != spans[0][1] else ''} {text}")
    more = len(parts) - limit
    return "; ".join(parts[:limit]) + (f"; and {more} more queue(s)" if more > 0 else "")
