"""What the `mqdb` command shows about a store: the info summary, per-queue figures, reading and following
a queue. Library only (no click): the commands in `mqdb.cli` call one function here and format the result.

A store is a directory (the embedded store, :class:`mqdb.DB`) or a ``redis://`` URL (a Redis Cluster
store, `mqdb/CLUSTER.md`): reading, following, export and import use the API both share; the figures
of `info` and `ls` come from each kind's own ``stats()`` and per-queue figures.

This module is the one place outside the engine that looks at a store's internals (the shards' queue
columns and sparse index, see shard.py): :func:`shard_views` copies them under each shard's lock.
`mqdb.tools.check` works on those copies too.
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from .. import format
from ..db import DB
from ..db import open as open_db
from ..errors import ClosedError, Error, StoreNotFoundError
from ..store import Store, is_url
from ..store import open as open_any

SORTS = ("name", "messages", "bytes")
FOLLOW_INTERVAL = 0.2  # seconds between two looks for new flushes in `follow`
_CHUNK = 1024  # messages per get when reading a queue through


class QueueNotFoundError(Error):
    """A command named a queue that the store does not hold."""


def open_store(path, write: bool = False) -> Store:
    """Open the store at ``path`` (a directory or a ``redis://`` URL): read-only (it must exist), or
    for writing.

    Writing creates a store only in a new or empty directory, so a mistyped path never turns an
    unrelated directory into a store. On a cluster, writing creates the store name if it is new.
    """
    if is_url(path):
        return open_any(path, readonly=not write)
    path = os.fspath(path)
    if not write:
        return open_db(path, readonly=True)
    if os.path.exists(path) and not os.path.isdir(path):
        raise StoreNotFoundError(f"{path} is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, format.MANIFEST)):
        raise StoreNotFoundError(
            f"no mqdb store at {path} (no {format.MANIFEST} file, and the directory is not empty); "
            "give a new or empty directory to create one"
        )
    return open_db(path)


def require_queue(db: Store, queue: str) -> None:
    """Raise QueueNotFoundError unless ``queue`` holds (or held) messages in ``db``."""
    if queue not in db:
        raise QueueNotFoundError(f"no queue {queue!r} in {db.path}")


# --- a copy of the internals ------------------------------------------------------------------------
@dataclass(slots=True)
class ShardView:
    """A copy of one shard's queue names and sparse index, taken under its lock.

    ``b_qid``, ``b_entry`` (file offset and record length, ``format.pack_entry``) and ``b_count`` list every sealed
    block in file order; ``counts`` (messages in blocks) is indexed by queue id; ``committed`` is
    where the data this handle has loaded ends.
    """

    number: int
    data_path: str
    index_path: str
    names: list[str]
    counts: array
    b_qid: array
    b_entry: array
    b_count: array
    committed: int
    block_size: int


def shard_views(db: DB) -> list[ShardView]:
    if db.closed:
        raise ClosedError()
    views = []
    for sh in db._shards:
        with sh.lock:
            views.append(
                ShardView(
                    sh.number, sh.data_path, sh.index_path, sh.directory.names(), array("q", sh.count),
                    array("q", sh.owners()), array("q", sh.b_entry), array("q", sh.b_count), sh.committed,
                    sh.block_size,
                )
            )  # fmt: skip
    return views


# --- figures ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class QueueInfo:
    name: str
    messages: int
    blocks: int | None  # sealed blocks (None on a cluster: a stream has no blocks)
    stored_bytes: int  # bytes of its sealed block records, headers included; on a cluster, MEMORY USAGE

    def as_dict(self) -> dict:
        return {"name": self.name, "messages": self.messages, "blocks": self.blocks, "stored_bytes": self.stored_bytes}


def queue_infos(db: Store, prefix: str | None = None) -> list[QueueInfo]:
    """Figures of every queue whose name starts with ``prefix`` (all queues if None), shard by shard
    (on a cluster: primary by primary)."""
    if not isinstance(db, DB):
        return [QueueInfo(name, messages, None, memory) for name, messages, memory in db.queue_figures(prefix)]
    infos = []
    for v in shard_views(db):
        wanted = [q for q, name in enumerate(v.names) if prefix is None or name.startswith(prefix)]
        if not wanted:
            continue
        blocks = [0] * len(v.names)
        sizes = [0] * len(v.names)
        for qid, entry in zip(v.b_qid, v.b_entry, strict=True):
            blocks[qid] += 1
            sizes[qid] += format.entry_length(entry)
        infos += [QueueInfo(v.names[q], db.count(v.names[q]), blocks[q], sizes[q]) for q in wanted]
    return infos


def list_queues(db: Store, prefix: str | None = None, sort: str = "name", limit: int | None = None) -> list[QueueInfo]:
    """Queues with their figures: by name, or the largest first by ``messages`` or stored ``bytes``."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    infos = queue_infos(db, prefix)
    if sort == "name":
        infos.sort(key=lambda i: i.name)
    elif sort == "messages":
        infos.sort(key=lambda i: (-i.messages, i.name))
    else:
        infos.sort(key=lambda i: (-i.stored_bytes, i.name))
    return infos if limit is None else infos[:limit]


def summary(db: Store) -> dict:
    """The figures `mqdb info` shows, built from ``db.stats()``; plain data, ready for JSON."""
    s = db.stats()
    if not isinstance(db, DB):
        return cluster_summary(s)
    per_shard = s["queues_per_shard"]
    flushed = s["last_flush_ns"]
    return {
        "path": s["path"],
        "format_version": s["format_version"],
        "queues": s["queues"],
        "messages": s["messages"],
        "blocks": s["blocks"],
        "bytes_on_disk": s["bytes_on_disk"],
        "payload_bytes": s["payload_bytes"],
        "raw_block_bytes": s["raw_block_bytes"],
        "stored_block_bytes": s["stored_block_bytes"],
        "compression": s["compression"],
        "compression_ratio": s["compression_ratio"],
        "shards": len(per_shard),
        "queues_per_shard_min": min(per_shard),
        "queues_per_shard_max": max(per_shard),
        "shard_balance": s["shard_balance"],
        "last_flush_ns": flushed,
        "last_flush": iso_time(flushed),
    }


def cluster_summary(s: dict) -> dict:
    """`mqdb info` of a Redis Cluster store: the store's figures and one entry per primary."""
    flushed = s["last_flush_ns"]
    return {
        "path": s["path"],
        "kind": s["kind"],
        "store": s["store"],
        "format": s["format"],
        "queues": s["queues"],
        "messages": s["messages"],
        "queue_memory_bytes": s["queue_memory_bytes"],
        "used_memory": s["used_memory"],
        "primaries": s["primaries"],
        "nodes": s["nodes"],
        "last_flush_ns": flushed,
        "last_flush": iso_time(flushed),
    }


def iso_time(ns: int | None) -> str | None:
    """``ns`` since the epoch as ISO 8601 in UTC, to the second (None stays None)."""
    if not ns:
        return None
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).isoformat()


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# --- reading ---------------------------------------------------------------------------------------
def read(db: Store, queue: str, offset: int = 0, num: int = 10) -> list[tuple[int, bytes]]:
    """(offset, message) of up to ``num`` messages of ``queue`` from ``offset`` on."""
    require_queue(db, queue)
    return list(enumerate(db.get(queue, offset, num), offset))


def tail(db: Store, queue: str, last: int = 10) -> list[tuple[int, bytes]]:
    """(offset, message) of the last ``last`` messages of ``queue``."""
    require_queue(db, queue)
    start = max(0, db.count(queue) - last)
    return read(db, queue, start, last)


def follow(
    db: Store,
    queue: str,
    offset: int,
    interval: float = FOLLOW_INTERVAL,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, message) from ``offset`` on, then every message a writer flushes later.

    A read-only ``db`` looks for new flushes (``db.refresh()``) every ``interval`` seconds. Runs until
    ``timeout`` seconds have passed (forever if None) or the caller stops iterating.
    """
    require_queue(db, queue)
    deadline = None if timeout is None else clock() + timeout
    while True:
        while True:
            msgs = db.get(queue, offset, _CHUNK)
            for msg in msgs:
                yield offset, msg
                offset += 1
            if len(msgs) < _CHUNK:
                break
        if deadline is not None:
            left = deadline - clock()
            if left <= 0:
                return
            sleep(min(interval, left))
        else:
            sleep(interval)
        db.refresh()
