"""The public handle: ``mqdb.open(path, **options)`` returns a :class:`DB`.

Every put and get passes through a method of :class:`DB`, so the build also compiles this module into
``mqdb._c_db`` (:mod:`mqdb._accel`): :class:`DB` becomes an extension type whose attributes every get
reads are typed slots (``_c_db.pxd``), the rest living in the instance's ``__dict__`` as in this class.
"""

import builtins
import errno
import fcntl
import os
import time
from types import MappingProxyType

from . import format
from ._accel import import_c_accel
from .errors import ClosedError, Error, FormatError, LockedError, ReadOnlyError, StoreNotFoundError
from .hashing import shard_of
from .options import resolve
from .pool import SlicePool
from .reads import read_queue
from .shard import Shard
from .stage import distribute
from .stage import put as stage_put

_MAX_NAME_BYTES = 65535


def open(path, **options) -> "DB":  # noqa: A001 - the API is mqdb.open
    """Open (or create) the store in directory ``path``. See ``mqdb.DEFAULT_OPTIONS``."""
    return DB(path, resolve(options), given=frozenset(options))


class DB:
    """A store of many append-only queues. Thread-safe; use as a context manager or ``close()`` it."""

    def __init__(self, path, opts: dict, given: frozenset = frozenset()):
        self.path = os.fspath(path)
        self._closed = True
        self._lock_fd = -1
        self.readonly = opts["readonly"]
        self.migrating = False  # a store of an older format version, brought to this one while opening
        self.reading = False  # cleared whenever a shard grew: staged a chunk or took a pool slice (Shard.grew)
        if self.readonly:
            if not os.path.exists(os.path.join(self.path, format.MANIFEST)):
                raise StoreNotFoundError(f"no mqdb store at {self.path} (no {format.MANIFEST} file)")
        else:
            os.makedirs(self.path, exist_ok=True)
            self._take_lock()
        try:
            opts = self._manifest(opts, given)
            self.options = MappingProxyType(opts)
            budget = 64 << 10 if self.readonly else opts["write_buffer_bytes"]
            self._pool = SlicePool(budget, opts["slice_size"])
            self._drain_slices = self._pool.slices // 2
            self._shards = [Shard(self, i, opts, self._pool) for i in range(opts["shards"])]
        except BaseException:
            for sh in getattr(self, "_shards", None) or ():
                sh.close()
            self._release_lock()
            raise
        self.recovery = [r for r in (sh.recovery for sh in self._shards) if r["dropped_bytes"] or r["reason"]]
        if self.migrating:
            self._write_manifest(opts)
        self._closed = False
        self._nshards = len(self._shards)
        if self.readonly:
            # every put of a read-only handle raises ReadOnlyError there: an instance attribute, which
            # shadows the compiled twin's put method as it shadows the class's in Python
            object.__setattr__(self, "put", self._put_slow)

    # --- writing ----------------------------------------------------------------------------------
    def put(self, queue: str, msg: bytes) -> int:
        """Append ``msg`` to ``queue``; return its offset (0 for the first message of a queue)."""
        if queue.__class__ is not str or msg.__class__ is not bytes or not queue:
            return self._put_slow(queue, msg)
        name = queue  # a str, typed so in the twin: encoded by a C call, not a method lookup
        try:
            raw = name.encode()
        except UnicodeEncodeError:
            return self._put_slow(queue, msg)
        sh = self._shards[shard_of(queue, self._nshards)]
        lock = sh.lock  # acquire and release as method calls, as in get
        lock.acquire()
        try:
            if sh.closed:
                raise ClosedError()
            directory = sh.directory  # a C method call in the twin
            qid = directory.find(raw)
            if qid < 0:
                if len(raw) > _MAX_NAME_BYTES:
                    self._check_name(queue)
                qid = sh.create(raw)
            c = stage_put(sh, qid, msg)
            if sh.grew:
                self._grew(sh)
        finally:
            lock.release()
        return c

    def _put_slow(self, queue, msg) -> int:
        self._check_name(queue)
        if not isinstance(msg, bytes | bytearray | memoryview):
            raise TypeError(f"a message must be bytes, not {type(msg).__name__}")
        if msg.__class__ is not bytes:
            msg = bytes(msg)
        if self._closed:
            raise ClosedError()
        if self.readonly:
            raise ReadOnlyError(f"{self.path} was opened readonly; open it without readonly=True to write")
        sh = self._shards[shard_of(queue, self._nshards)]
        raw = queue.encode()
        with sh.lock:
            if sh.closed:
                raise ClosedError()
            qid = sh.directory.find(raw)
            if qid < 0:
                qid = sh.create(raw)
            c = stage_put(sh, qid, msg)
            if sh.grew:
                self._grew(sh)
            return c

    def flush(self) -> None:
        """Write everything put so far; after it returns, a crash of the process loses none of it
        (with ``sync=True``, nor a power cut)."""
        self._check_open()
        if self.readonly:
            return
        for sh in self._shards:
            with sh.lock:
                sh.commit()
                if sh.grew:
                    self._grew(sh)
        if self.options["sync"]:
            _fsync_dir(self.path)

    def make_room(self, shard: Shard, current: int) -> None:
        """Called by a shard (its lock held) when the pool is full: seal unfinished blocks early."""
        if shard.evict(current):
            return
        n = self._nshards
        for step in range(1, n):
            other = self._shards[(shard.number + step) % n]
            if other.lock.acquire(blocking=False):
                try:
                    freed = 0 if other.closed else other.evict(-1)
                    if other.drain_due:  # no put is half-done in a shard whose lock we hold
                        other.drain()
                finally:
                    other.lock.release()
                if freed:
                    return
        time.sleep(0.001)  # every other shard is busy: let its owner finish and free slices

    # --- reading ----------------------------------------------------------------------------------
    def get(self, queue: str, offset: int, num: int) -> list[bytes]:
        """Up to ``num`` messages of ``queue`` from ``offset`` on, in put order; ``[]`` past the end."""
        if type(queue) is not str or type(offset) is not int or type(num) is not int:
            self._check_read(queue, offset, num)
        if offset < 0 or num < 0:
            self._check_read(queue, offset, num)
        name = queue  # a str, as in put
        try:  # self._locate(queue), inline: a get is short enough for a call to count
            raw = name.encode()
        except UnicodeEncodeError:
            raise ValueError(f"queue name {queue!r} is not valid Unicode text") from None
        sh = self._shards[shard_of(queue, self._nshards)]
        if not self.reading:
            self._start_reading()
        lock = sh.lock  # acquire and release as method calls: compiled, cheaper than a with block (__enter__, __exit__)
        lock.acquire()
        try:
            msgs = read_queue(sh, raw, offset, num)
            if sh.grew:
                self._grew(sh)
        finally:
            lock.release()
        if msgs is not None:
            return msgs
        self._check_name(queue)
        return []

    def count(self, queue: str) -> int:
        """Number of messages in ``queue`` (0 for a queue never written)."""
        if queue.__class__ is not str:
            self._check_name(queue)
        self._check_open()
        sh, raw = self._locate(queue)
        with sh.lock:
            qid = sh.directory.find(raw)
            if qid >= 0:
                return sh.count[qid] + sh.staged[qid]
        self._check_name(queue)
        return 0

    def __contains__(self, queue) -> bool:
        self._check_open()
        if not isinstance(queue, str) or not queue:
            return False
        try:
            sh, raw = self._locate(queue)
        except ValueError:
            return False
        with sh.lock:
            return sh.directory.find(raw) >= 0

    def _locate(self, queue: str) -> tuple[Shard, bytes]:
        """The shard of ``queue`` and its UTF-8 name; ValueError for a name that is not valid text."""
        try:
            raw = queue.encode()
        except UnicodeEncodeError:
            raise ValueError(f"queue name {queue!r} is not valid Unicode text") from None
        return self._shards[shard_of(queue, self._nshards)], raw

    def __iter__(self):
        """Names of all queues (shard by shard)."""
        self._check_open()
        for sh in self._shards:
            with sh.lock:
                names = sh.directory.names()
            yield from names

    def __len__(self) -> int:
        self._check_open()
        return sum(sh.queue_count for sh in self._shards)

    def refresh(self) -> int:
        """Read-only handles: pick up what the writer flushed since; return the commits applied."""
        self._check_open()
        if not self.readonly:
            return 0
        applied = 0
        for sh in self._shards:
            with sh.lock:
                applied += sh.refresh()
        return applied

    def _grew(self, sh: Shard) -> None:
        """``sh`` staged a chunk or took pool slices: a write phase, so the next read starts reading again."""
        sh.grew = False
        self.reading = False

    def _start_reading(self) -> None:
        """The first read after a write phase: distribute every staged message to its blocks, and if
        the pool is then more than half full, seal and write the buffered blocks, so memory goes back
        to reading."""
        self.reading = True
        for sh in self._shards:
            with sh.lock:
                if not sh.closed:
                    distribute(sh)
                    if sh.grew:
                        self._grew(sh)
        if self._pool.in_use > self._drain_slices:
            for sh in self._shards:
                with sh.lock:
                    if not sh.closed:
                        sh.drain()

    # --- life cycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush and close; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            for sh in self._shards:
                with sh.lock:
                    sh.close()
            if self.options["sync"] and not self.readonly:
                _fsync_dir(self.path)
        finally:
            self._release_lock()
            self._pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open readonly" if self.readonly else "open")
        return f"<mqdb.DB {self.path!r} {state}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict:
        """Figures about the store: sizes, counts, shard balance, pool use, read counters."""
        self._check_open()
        per_shard = []
        totals = {"messages": 0, "payload": 0, "blocks": 0, "raw": 0, "stored": 0, "staged": 0}
        counters: dict = {}
        flushed = 0
        for sh in self._shards:
            with sh.lock:
                per_shard.append(sh.queue_count)
                totals["messages"] += sh.messages()
                totals["payload"] += sh.payload()
                totals["blocks"] += sh.blocks
                totals["raw"] += sh.raw_bytes
                totals["stored"] += sh.stored_bytes
                totals["staged"] += sh.stage_frames + len(sh.stage_buf)
                flushed = max(flushed, sh.flushed_ns)
                for k, v in sh.counters().items():
                    counters[k] = counters.get(k, 0) + v
        disk = 0
        for entry in os.scandir(self.path):
            if entry.is_file():
                disk += entry.stat().st_size
        return {
            "path": self.path,
            "format_version": format.VERSION,
            "readonly": self.readonly,
            "queues": sum(per_shard),
            "messages": totals["messages"],
            "payload_bytes": totals["payload"],
            "blocks": totals["blocks"],
            "raw_block_bytes": totals["raw"],
            "stored_block_bytes": totals["stored"],
            "compression": self.options["compression"],
            "compression_ratio": (totals["raw"] / totals["stored"]) if totals["stored"] else 1.0,
            "bytes_on_disk": disk,
            "staged_bytes": totals["staged"],
            "queues_per_shard": per_shard,
            "shard_balance": (max(per_shard) / min(per_shard)) if min(per_shard) else None,
            "last_flush_ns": flushed or None,
            "pool": self._pool.stats(),
            **counters,
            "recovery": self.recovery,
        }

    # --- checks -----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError()

    @staticmethod
    def _check_name(queue) -> None:
        if not isinstance(queue, str):
            raise TypeError(f"a queue name must be a str, not {type(queue).__name__}")
        if not queue:
            raise ValueError("a queue name must not be empty")
        try:
            size = len(queue.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"queue name {queue!r} is not valid Unicode text") from None
        if size > _MAX_NAME_BYTES:
            raise ValueError(f"a queue name must be at most {_MAX_NAME_BYTES} bytes of UTF-8, not {size}")

    def _check_read(self, queue, offset, num) -> None:
        self._check_name(queue)
        for label, value in (("offset", offset), ("num", num)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{label} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{label} must not be negative, not {value}")
        self._check_open()

    def _take_lock(self) -> None:
        fd = os.open(os.path.join(self.path, format.LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockedError(
                    f"{self.path} is open for writing by another process (pid {holder}); "
                    "close it there, or open with readonly=True"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _manifest(self, opts: dict, given: frozenset) -> dict:
        path = os.path.join(self.path, format.MANIFEST)
        try:
            with builtins.open(path, "rb") as f:
                raw = f.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(f"{path}: not an mqdb manifest (not UTF-8 text)") from None
            data = format.parse_manifest(path, text)
        except FileNotFoundError:
            if self.readonly:
                raise StoreNotFoundError(f"no mqdb store at {self.path}") from None
            self._write_manifest(opts)
            return opts
        if data["version"] != format.VERSION:
            if self.readonly:
                raise FormatError(
                    f"{path}: format version {data['version']}, and a read-only handle cannot migrate it to version "
                    f"{format.VERSION}: open it once for writing (mqdb.open({self.path!r}) without readonly=True) "
                    "and it is migrated as it opens"
                )
            self.migrating = True
        for key in ("shards", "block_size"):
            if key in given and opts[key] != data[key]:
                raise Error(f"{self.path} was created with {key}={data[key]}, not {opts[key]}")
            opts[key] = data[key]
        extra = os.path.join(self.path, format.data_name(data["shards"]))
        if os.path.exists(extra):
            raise FormatError(f"{path}: says {data['shards']} shards, but {extra} exists")
        return opts

    def _write_manifest(self, opts: dict) -> None:
        path = os.path.join(self.path, format.MANIFEST)
        tmp = path + ".tmp"
        with builtins.open(tmp, "w", encoding="utf-8") as f:
            f.write(format.manifest_text(opts["shards"], opts["block_size"]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


import_c_accel(globals(), "mqdb._c_db")
