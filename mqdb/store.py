"""The API every mqdb store offers, and ``mqdb.open``, which picks the store from its target.

- ``mqdb.open(path, **options)``: the embedded store in a directory (:class:`mqdb.db.DB`).
- ``mqdb.open("redis://HOST:PORT[,HOST:PORT...][/NAME]", **options)``: the same API over a Redis
  Cluster, one stream per queue (:mod:`mqdb.cluster`; needs the ``redis`` package).

Both are :class:`Store` instances; one contract test suite runs against each.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator

from . import db
from .db import DB

URL_SCHEMES = ("redis://",)


class Store(abc.ABC):
    """Many append-only queues: ``put`` appends, ``get`` reads by offset, ``flush`` makes durable.

    Queue names are non-empty strings; messages are bytes. Reads see every earlier put of the same
    handle, flushed or not. ``get`` past the end returns ``[]``; a negative offset or count is a
    ``ValueError``; any use after ``close()`` raises :class:`mqdb.ClosedError`; ``close()`` flushes and
    may be called twice. ``path`` names the store (a directory or a URL) in messages.
    """

    path: str
    readonly: bool

    @abc.abstractmethod
    def put(self, queue: str, msg: bytes) -> int:
        """Append ``msg`` to ``queue``; return its offset (0 for the first message of a queue)."""

    @abc.abstractmethod
    def get(self, queue: str, offset: int, num: int) -> list[bytes]:
        """Up to ``num`` messages of ``queue`` from ``offset`` on, in put order; ``[]`` past the end."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every earlier put durable (what durable means is the store's: see its documentation)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and close; closing twice is harmless."""

    @abc.abstractmethod
    def count(self, queue: str) -> int:
        """Number of messages in ``queue`` (0 for a queue never written)."""

    @abc.abstractmethod
    def __contains__(self, queue) -> bool: ...

    @abc.abstractmethod
    def __iter__(self) -> Iterator[str]:
        """Names of all queues."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def refresh(self) -> int:
        """Read-only handles: pick up what writers made visible since; return how much was applied."""

    @abc.abstractmethod
    def stats(self) -> dict:
        """Figures about the store, plain data ready for JSON."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


Store.register(DB)

MAX_NAME_BYTES = 65535


def check_name(queue) -> None:
    """The rules for a queue name every store applies: a non-empty str of at most 65535 UTF-8 bytes."""
    if not isinstance(queue, str):
        raise TypeError(f"a queue name must be a str, not {type(queue).__name__}")
    if not queue:
        raise ValueError("a queue name must not be empty")
    try:
        size = len(queue.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"queue name {queue!r} is not valid Unicode text") from None
    if size > MAX_NAME_BYTES:
        raise ValueError(f"a queue name must be at most {MAX_NAME_BYTES} bytes of UTF-8, not {size}")


def check_read(queue, offset, num) -> None:
    """The rules for the arguments of ``get``: a good name, int offset and count, neither negative."""
    check_name(queue)
    for label, value in (("offset", offset), ("num", num)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{label} must be an int, not {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{label} must not be negative, not {value}")


def is_url(target) -> bool:
    """True when ``target`` names a store over a network (``redis://...``), not a directory."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def open(target, **options) -> Store:  # noqa: A001 - the API is mqdb.open
    """Open (or create) a store: a directory path for the embedded store (see ``mqdb.DEFAULT_OPTIONS``),
    or ``redis://HOST:PORT[,HOST:PORT...][/NAME]`` for a Redis Cluster (see
    ``mqdb.cluster.DEFAULT_CLUSTER_OPTIONS``)."""
    if is_url(target):
        from .cluster import open_cluster

        return open_cluster(target, **options)
    return db.open(target, **options)
