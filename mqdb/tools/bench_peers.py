"""The stores `mqdb bench` runs: mqdb itself and its peers SQLite, LMDB and RocksDB used as queues.

Every adapter offers the same small surface as an mqdb handle, so the benchmark loops call each store
the same way; `name` labels it in reports and `missing()` says why it cannot run (or returns None)::

    store = SqliteStore(path, hint)          # opens or creates a store in the directory `path`
    off = store.put(queue, msg)              # offset of msg in its queue
    msgs = store.get(queue, offset, num)     # up to num messages from offset, [] past the end
    store.flush(); store.close()

A message is stored under (queue, sequence): SQLite uses a `WITHOUT ROWID` table keyed by both, the
key-value stores use the key `queue name bytes + 8-byte big-endian sequence`, so a queue is one
contiguous key range and `get` is a short range scan. Puts are buffered and written in batches, each
in one transaction; `get` writes the pending batch first, so reads see every earlier put. The next
offset of each queue is kept in a dict (filled from the store when an existing queue is first
appended to). `hint` is the workload description (`payload_bytes` sizes LMDB's map).

LMDB and RocksDB are optional (`pip install dubbomesh[bench]`); without them they report "not installed".

`redis-cluster` is mqdb's own store over a Redis Cluster (`mqdb.open("redis://...")`, mqdb/CLUSTER.md):
the bench starts a cluster on loopback for it, or is given one by URL; each run gets a store name of its
own. Its `figures()` add the cluster's memory per message (every node's `used_memory`, after the
flush, less before the first put). A store may offer `figures()`: extra numbers for the run's result.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import struct
import threading

_pack_seq = struct.Struct(">Q").pack
_LAST = b"\x00" + b"\xff" * 7  # past every offset below 2**56, before the next queue name


class _Peer:
    """Shared parts: the per-queue offsets, the pending batch and its lock."""

    name = ""
    module: str | None = None  # the import a peer needs; None for the standard library
    BATCH = 10_000

    @classmethod
    def missing(cls) -> str | None:
        if cls.module and importlib.util.find_spec(cls.module) is None:
            return "not installed"
        return None

    def _init_batching(self, fresh: bool) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._pending: list = []
        self._fresh = fresh

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._write()
            self._sync()

    def _sync(self) -> None:
        pass


class MqdbStore:
    """mqdb itself: the benchmark calls the handle's own bound methods."""

    name = "mqdb"

    @staticmethod
    def missing() -> str | None:
        import mqdb

        return None if hasattr(mqdb, "open") else "mqdb.open is not available"

    def __init__(self, path: str, hint: dict | None = None, **options) -> None:
        import mqdb

        self.db = mqdb.open(path, **options)
        self.put, self.get = self.db.put, self.db.get
        self.flush, self.close = self.db.flush, self.db.close


class RedisClusterStore:
    """mqdb's Redis Cluster store; `url` names the cluster and a store name of the run's own."""

    name = "redis-cluster"

    @staticmethod
    def missing() -> str | None:
        if importlib.util.find_spec("redis") is None:
            return "not installed (pip install 'dubbomesh[redis]')"
        return None

    def __init__(self, path: str, hint: dict | None = None, url: str = "") -> None:
        import mqdb
        from mqdb.tools.redis_cluster import cluster_memory

        self.url = url
        self._memory = cluster_memory
        self._before = cluster_memory(url)
        self._messages = (hint or {}).get("messages", 0)
        self.db = mqdb.open(url)
        self.put, self.get = self.db.put, self.db.get
        self.flush, self.close = self.db.flush, self.db.close

    def figures(self) -> dict:
        """Server memory per message, all nodes and primaries only, after a flush (which the replicas
        acknowledged: they have applied every write)."""
        after = self._memory(self.url)
        n = max(1, self._messages)
        return {
            "cluster_bytes_per_msg": (after["all"] - self._before["all"]) / n,
            "cluster_primary_bytes_per_msg": (after["primaries"] - self._before["primaries"]) / n,
            "cluster_memory_bytes": after["all"] - self._before["all"],
            "disk_bytes": None,
        }


class SqliteStore(_Peer):
    """SQLite (standard library): WAL journal, synchronous=NORMAL, 10,000 puts per transaction."""

    name = "sqlite"
    _SELECT = "SELECT msg FROM messages WHERE queue = ? AND seq >= ? ORDER BY seq LIMIT ?"

    def __init__(self, path: str, hint: dict | None = None) -> None:
        os.makedirs(path, exist_ok=True)
        file = os.path.join(path, "queues.sqlite")
        fresh = not os.path.exists(file)
        conn = sqlite3.connect(file, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS messages (queue TEXT NOT NULL, seq INTEGER NOT NULL,"
            " msg BLOB NOT NULL, PRIMARY KEY (queue, seq)) WITHOUT ROWID"
        )
        self._conn = conn
        self._init_batching(fresh)

    def put(self, queue: str, msg: bytes) -> int:
        with self._lock:
            seq = self._counts.get(queue)
            if seq is None:
                seq = 0 if self._fresh else self._stored_count(queue)
            self._counts[queue] = seq + 1
            pending = self._pending
            pending.append((queue, seq, msg))
            if len(pending) >= self.BATCH:
                self._write()
        return seq

    def _stored_count(self, queue: str) -> int:
        row = self._conn.execute("SELECT MAX(seq) FROM messages WHERE queue = ?", (queue,)).fetchone()
        return 0 if row[0] is None else row[0] + 1

    def _write(self) -> None:
        pending = self._pending
        pending.sort()
        conn = self._conn
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO messages (queue, seq, msg) VALUES (?, ?, ?)", pending)
        conn.execute("COMMIT")
        pending.clear()

    def get(self, queue: str, offset: int, num: int) -> list[bytes]:
        with self._lock:
            if self._pending:
                self._write()
            rows = self._conn.execute(self._SELECT, (queue, offset, num)).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        self.flush()
        self._conn.close()


class LmdbStore(_Peer):
    """LMDB (`lmdb` package): one B+tree, 10,000 puts per write transaction, no fsync per commit."""

    name = "lmdb"
    module = "lmdb"

    def __init__(self, path: str, hint: dict | None = None) -> None:
        import lmdb

        payload = (hint or {}).get("payload_bytes", 0)
        map_size = max(1 << 30, payload * 8)
        fresh = not os.path.exists(os.path.join(path, "data.mdb"))
        self._env = lmdb.open(path, map_size=map_size, sync=False, metasync=False, readahead=False)
        self._init_batching(fresh)

    def put(self, queue: str, msg: bytes) -> int:
        with self._lock:
            seq = self._counts.get(queue)
            if seq is None:
                seq = 0 if self._fresh else self._stored_count(queue)
            self._counts[queue] = seq + 1
            pending = self._pending
            pending.append((queue.encode() + _pack_seq(seq), msg))
            if len(pending) >= self.BATCH:
                self._write()
        return seq

    def _stored_count(self, queue: str) -> int:
        name = queue.encode()
        with self._env.begin() as txn:
            cur = txn.cursor()
            if cur.set_range(name + _LAST):
                found = cur.prev()
            else:
                found = cur.last()
            key = cur.key() if found else b""
        if len(key) == len(name) + 8 and key.startswith(name):
            return int.from_bytes(key[-8:], "big") + 1
        return 0

    def _write(self) -> None:
        pending = self._pending
        pending.sort()
        with self._env.begin(write=True) as txn:
            txn.cursor().putmulti(pending)
        pending.clear()

    def _sync(self) -> None:
        self._env.sync(True)

    def get(self, queue: str, offset: int, num: int) -> list[bytes]:
        if self._pending:
            with self._lock:
                if self._pending:
                    self._write()
        name = queue.encode()
        end = name + _pack_seq(offset + num)
        out = []
        with self._env.begin() as txn:
            cur = txn.cursor()
            if cur.set_range(name + _pack_seq(offset)):
                for key, value in cur:
                    if key >= end:
                        break
                    out.append(value)
        return out

    def close(self) -> None:
        self.flush()
        self._env.close()


class RocksdbStore(_Peer):
    """RocksDB (`rocksdict` package, raw bytes mode): WriteBatch of 1,000 puts, WAL without fsync."""

    name = "rocksdb"
    module = "rocksdict"
    BATCH = 1000

    def __init__(self, path: str, hint: dict | None = None) -> None:
        from rocksdict import Options, Rdict, WriteBatch

        fresh = not os.path.exists(os.path.join(path, "CURRENT"))
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.increase_parallelism(max(2, os.cpu_count() or 2))
        self._db = Rdict(path, options=options)
        self._new_batch = lambda: WriteBatch(raw_mode=True)
        self._batch = self._new_batch()
        self._init_batching(fresh)

    def put(self, queue: str, msg: bytes) -> int:
        with self._lock:
            seq = self._counts.get(queue)
            if seq is None:
                seq = 0 if self._fresh else self._stored_count(queue)
            self._counts[queue] = seq + 1
            self._batch.put(queue.encode() + _pack_seq(seq), msg)
            pending = self._pending  # one entry per put in the batch: its length is the batch size
            pending.append(None)
            if len(pending) >= self.BATCH:
                self._write()
        return seq

    def _stored_count(self, queue: str) -> int:
        name = queue.encode()
        it = self._db.iter()
        it.seek_for_prev(name + _LAST)
        key = it.key() if it.valid() else b""
        del it
        if len(key) == len(name) + 8 and key.startswith(name):
            return int.from_bytes(key[-8:], "big") + 1
        return 0

    def _write(self) -> None:
        self._db.write(self._batch)
        self._batch = self._new_batch()
        self._pending.clear()

    def get(self, queue: str, offset: int, num: int) -> list[bytes]:
        if self._pending:
            with self._lock:
                if self._pending:
                    self._write()
        name = queue.encode()
        end = name + _pack_seq(offset + num)
        out = []
        it = self._db.iter()
        it.seek(name + _pack_seq(offset))
        while it.valid():
            key = it.key()
            if key >= end:
                break
            out.append(it.value())
            it.next()
        return out

    def close(self) -> None:
        self.flush()
        self._db.flush()
        self._db.close()


PEERS = {cls.name: cls for cls in (SqliteStore, LmdbStore, RocksdbStore, RedisClusterStore)}
