"""The Redis Cluster store: the API of :class:`mqdb.Store`, one stream per queue (layout.py).

Writing: ``put`` gives the next offset of its queue at once and packs ``XADD key 0-(offset+1) m msg``
into the pending batch of the primary that serves the key's slot. A batch is sent (one write, then
every reply read) when it passes ``pipeline_bytes`` and on ``flush``; the puts a primary has written
move to its journal. ``flush`` sends every batch, then asks each primary with a journal to confirm
it with ``WAIT`` (its replicas have it), then forgets the journal. Because each put names its id,
sending one again is harmless: the node answers that the id exists, and the entry is compared with
the message. That is how a batch survives redirections (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) and the
loss of a primary: its journal and pending puts go, in order, to whichever node serves their slots
once a replica has taken over.

Reading: ``get`` sends its node's pending batch first (reads see every earlier put), then one
``XRANGE key 0-(offset+1) + COUNT num``; every id is checked against the offsets it must have.
"""

from __future__ import annotations

import threading
import time
from types import MappingProxyType

from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from ..errors import ClosedError, CorruptionError, FormatError, ReadOnlyError, StoreNotFoundError
from ..store import Store, check_name, check_read
from . import layout
from .errors import ClusterUnreachableError, ConflictError, ForeignStreamError, NotDurableError
from .nodes import LINK_ERRORS, Batch, Node, Topology, connect_options, wait_replica_offsets

_DUPLICATE = "equal or smaller than the target stream top item"
_RETRY_PAUSE = 0.05


class ClusterStore(Store):
    """Queues as streams in a Redis Cluster. Thread-safe (one lock); a context manager."""

    kind = "redis-cluster"

    def __init__(self, url: str, opts: dict):
        self.url = layout.parse_url(url)
        self.path = str(self.url)
        self.options = MappingProxyType(opts)
        self.readonly = opts["readonly"]
        self._closed = True
        self._lock = threading.RLock()
        self._prefix = layout.queue_prefix(self.url.name)
        self._counts: dict[str, int] = {}  # next offset of every queue this handle has put to or looked up
        self._fresh = False  # the store was created by this handle: a queue it has not seen is empty
        self.flushed_ns: int | None = None
        self.redirects = 0  # puts and reads sent again after MOVED, ASK, TRYAGAIN or CLUSTERDOWN
        self.resent = 0  # puts a node already held when they were sent again (after a redirect or a failover)
        socket_timeout = opts["wait_timeout"] + opts["failover_timeout"] + 10
        self._topology = Topology(self.url, connect_options(self.url, opts["connect_timeout"], socket_timeout))
        try:
            self._open_meta()
        except BaseException:
            for node in self._topology.nodes.values():
                node.disconnect()
            raise
        self._closed = False

    def _open_meta(self) -> None:
        key = layout.meta_key(self.url.name)
        if self.readonly:
            value = self._call(key, "GET", key)
        else:
            value = self._call(key, "SET", key, layout.META_VALUE, "NX", "GET")
            self._fresh = value is None
            if value is None:
                return
        if value is None:
            raise StoreNotFoundError(
                f"no mqdb store named {self.url.name!r} in the cluster at {self.path} (no key {key.decode()}); "
                "open it without readonly=True to create it"
            )
        if value != layout.META_VALUE:
            raise FormatError(
                f"key {key.decode()} in the cluster at {self.path} holds {value[:80]!r}, not an mqdb store's "
                "marker; give another store name (/NAME in the URL)"
            )

    # --- writing ------------------------------------------------------------------------------------
    def put(self, queue: str, msg: bytes) -> int:
        with self._lock:
            count = self._counts.get(queue)
            if count is None or msg.__class__ is not bytes or self._closed:
                return self._put_slow(queue, msg)
            key = self._prefix + queue.encode()
            node = self._topology.route(key)
            if node is None or node.pending.size >= self.options["pipeline_bytes"]:
                return self._put_slow(queue, msg)
            node.pending.add(key, count, layout.pack_xadd(key, count, msg))
            self._counts[queue] = count + 1
            return count

    def _put_slow(self, queue, msg) -> int:
        check_name(queue)
        if not isinstance(msg, bytes | bytearray | memoryview):
            raise TypeError(f"a message must be bytes, not {type(msg).__name__}")
        msg = bytes(msg)
        self._check_open()
        if self.readonly:
            raise ReadOnlyError(f"{self.path} was opened readonly; open it without readonly=True to write")
        key = self._prefix + queue.encode()
        count = self._counts.get(queue)
        if count is None:
            count = 0 if self._fresh else self._stored_count(queue, key)
        node = self._route(key, time.monotonic() + self.options["failover_timeout"])
        if node.pending.size >= self.options["pipeline_bytes"]:
            self._send_all(node)
            node = self._route(key, time.monotonic() + self.options["failover_timeout"])
        node.pending.add(key, count, layout.pack_xadd(key, count, msg))
        self._counts[queue] = count + 1
        return count

    def flush(self) -> None:
        """Send every put and return once each primary has written it and ``replicas`` of its replicas
        have acknowledged it (``WAIT``). Raises NotDurableError, listing the messages, when that cannot
        be had within ``failover_timeout`` / ``wait_timeout``."""
        with self._lock:
            self._check_open()
            if self.readonly:
                return
            deadline = time.monotonic() + self.options["failover_timeout"]
            try:
                while True:
                    lost = self._send_pending(deadline)
                    for node in list(self._topology.nodes.values()):
                        if node.journal and all(node is not n for n, _ in lost):
                            try:
                                self._confirm(node)
                            except (*LINK_ERRORS, ResponseError) as e:
                                lost.append((node, e))
                    if not lost:
                        break
                    for node, error in lost:  # the others are confirmed: only the lost nodes' puts are in doubt
                        self._lost(node, error, deadline)
            except ClusterUnreachableError as e:
                raise NotDurableError(str(e), self._unconfirmed()) from None
            self.flushed_ns = time.time_ns()

    def _send_all(self, node: Node) -> None:
        """A pipeline past its bound: send it, and confirm the journal if it is past its own bound."""
        deadline = time.monotonic() + self.options["failover_timeout"]
        self._drain(deadline, only=node)
        for n in list(self._topology.nodes.values()):
            if n.journal.size >= self.options["journal_bytes"]:
                try:
                    self._confirm(n)
                except LINK_ERRORS as e:
                    self._lost(n, e, deadline)

    def _drain(self, deadline: float, only: Node | None = None) -> None:
        """Send pending batches until none is left, waiting out lost nodes (see ``_lost``)."""
        while True:
            lost = self._send_pending(deadline, only)
            if not lost:
                return
            for node, error in lost:
                self._lost(node, error, deadline)

    def _send_pending(self, deadline: float, only: Node | None = None) -> list[tuple[Node, Exception]]:
        """Send pending batches (``only``'s, and then the puts redirected from it) until none is left
        but those of nodes that do not answer: returned with their errors, their puts still pending."""
        lost: list[tuple[Node, Exception]] = []
        rounds = 0
        while True:
            busy = [
                n
                for n in self._topology.nodes.values()
                if n.pending and (only is None or n is only or rounds) and all(n is not m for m, _ in lost)
            ]
            if not busy:
                return lost
            rounds += 1
            for node in busy:
                batch, node.pending = node.pending, Batch()
                try:
                    self._deliver(node, batch, deadline)
                except LINK_ERRORS as e:
                    batch.extend(node.pending)
                    node.pending = batch
                    lost.append((node, e))

    def _deliver(self, node: Node, batch: Batch, deadline: float, asking: bool = False) -> None:
        """Send one batch to ``node``; journal what it wrote, route the redirected puts again."""
        replies = node.exchange(batch.cmds, asking=asking)
        again = Batch()  # redirected: routed again by the refreshed slot map
        asked: dict[tuple[str, int], Batch] = {}
        duplicates = Batch()
        failed: list[tuple[bytes, int, str]] = []
        for (key, offset, cmd), reply in zip(batch.items(), replies, strict=True):
            if not isinstance(reply, ResponseError):
                node.journal.add(key, offset, cmd)
            elif isinstance(reply, MovedError):
                again.add(key, offset, cmd)
            elif isinstance(reply, AskError):
                asked.setdefault(reply.node_addr, Batch()).add(key, offset, cmd)
            elif isinstance(reply, TryAgainError | ClusterDownError):
                again.add(key, offset, cmd)
            elif _DUPLICATE in str(reply):
                duplicates.add(key, offset, cmd)
            else:
                failed.append((key, offset, str(reply)))
        self.redirects += len(again) + sum(len(b) for b in asked.values())
        self.resent += len(duplicates)
        for key, offset, cmd in duplicates.items():
            self._check_duplicate(node, key, offset, cmd, asking)
        for (host, port), part in asked.items():
            target = self._topology.node(host, port)
            try:
                self._deliver(target, part, deadline, asking=True)
            except LINK_ERRORS as e:
                target.pending.extend(part)
                self._lost(target, e, deadline)
        if again:
            try:
                self._wait(deadline, "slots moved or the cluster is down")
            except ClusterUnreachableError:
                node.pending.extend(again)
                raise
            for key, offset, cmd in again.items():
                (self._topology.route(key) or node).pending.add(key, offset, cmd)
        if failed:
            self._fresh = False
            for key, _, _ in failed:
                self._counts.pop(self._queue_of(key), None)
            key, offset, reason = failed[0]
            if "WRONGTYPE" in reason:
                raise ForeignStreamError(self._queue_of(key), key, "it is not a stream")
            raise ConflictError(
                f"queue {self._queue_of(key)!r}: {node.address} refused the message at offset {offset}: {reason}"
            )

    def _check_duplicate(self, node: Node, key: bytes, offset: int, cmd: bytes, asking: bool) -> None:
        """The node already holds the id of a put sent again: fine if it holds this message."""
        eid = layout.entry_id(offset)
        entries = node.call("XRANGE", key, eid, eid, asking=asking)
        msg = layout.xadd_message(cmd, key, offset)
        if entries and entries[0][1] == [layout.FIELD, msg]:
            node.journal.add(key, offset, cmd)
            node.offset_check = True
            return
        queue = self._queue_of(key)
        self._counts.pop(queue, None)
        self._fresh = False
        raise ConflictError(
            f"queue {queue!r}: offset {offset} already holds another message (or the stream ends past it "
            "without one): another writer appends to this queue; one writer per queue, then reopen"
        )

    def _confirm(self, node: Node) -> None:
        """Wait until ``replicas`` replicas of ``node`` have its journal; then forget the journal."""
        want = min(self.options["replicas"], node.replicas)
        if want:
            timeout = self.options["wait_timeout"]
            if node.offset_check:
                acked = wait_replica_offsets(node, want, timeout)
            else:
                acked = node.call("WAIT", want, int(timeout * 1000))
            if acked < want:
                self._topology.refresh()
                want = min(want, node.replicas)
                if acked < want:
                    raise NotDurableError(
                        f"{acked} of {want} replica(s) of {node.address} acknowledged within {timeout:g} s",
                        self._unconfirmed(),
                    )
        node.journal = Batch()
        node.offset_check = False

    def _lost(self, node: Node, error: Exception, deadline: float) -> None:
        """``node`` stopped answering: once its slots are served again (by its replica, or by itself back
        up), its journal and pending puts go to their nodes, in order, to be sent again."""
        stranded = Batch()
        stranded.extend(node.journal)
        stranded.extend(node.pending)
        node.journal, node.pending = Batch(), Batch()
        node.offset_check = False
        while True:
            try:
                self._topology.refresh()
                if self._topology.covered():
                    target = {id(n): n for n in map(self._topology.route, set(stranded.keys))}
                    for n in target.values():
                        n.call("PING")
                    break
            except (ClusterUnreachableError, *LINK_ERRORS):
                pass
            if time.monotonic() >= deadline:
                node.pending = stranded
                raise NotDurableError(
                    f"{node.address} was lost ({' '.join(str(error).split())}) and no node served its slots "
                    f"within {self.options['failover_timeout']:g} s",
                    self._unconfirmed(),
                ) from None
            time.sleep(_RETRY_PAUSE * 4)
        for key, offset, cmd in stranded.items():
            self._topology.route(key).pending.add(key, offset, cmd)

    def _unconfirmed(self) -> list[tuple[str, int]]:
        out = []
        for node in self._topology.nodes.values():
            for batch in (node.journal, node.pending):
                out += [(self._queue_of(k), o) for k, o in zip(batch.keys, batch.offsets, strict=True)]
        return out

    # --- reading ------------------------------------------------------------------------------------
    def get(self, queue: str, offset: int, num: int) -> list[bytes]:
        with self._lock:
            if (
                queue.__class__ is not str
                or offset.__class__ is not int
                or num.__class__ is not int
                or offset < 0
                or num < 0
                or not queue
            ):
                check_read(queue, offset, num)
            self._check_open()
            if num == 0:
                return []
            key = self._prefix + queue.encode()
            first = layout.entry_id(offset)
            entries = self._call(key, "XRANGE", key, first, b"+", "COUNT", num)
            out = []
            for i, (eid, fields) in enumerate(entries):
                if eid != first if i == 0 else layout.offset_of(eid) != offset + i:
                    self._bad_entry(queue, key, offset + i, eid)
                if len(fields) != 2 or fields[0] != layout.FIELD:
                    raise ForeignStreamError(queue, key, f"entry {eid.decode()} has fields other than 'm'")
                out.append(fields[1])
            return out

    def _bad_entry(self, queue: str, key: bytes, offset: int, eid: bytes) -> None:
        found = layout.offset_of(eid)
        if found is None:
            raise ForeignStreamError(queue, key, f"entry id {eid.decode()} is not one mqdb gives (0-N)")
        raise CorruptionError(key.decode("utf-8", "backslashreplace"), offset, f"no message at offset {offset}", queue)

    def count(self, queue: str) -> int:
        with self._lock:
            check_name(queue)
            self._check_open()
            known = self._counts.get(queue)
            if known is not None:
                return known
            return self._stored_count(queue, self._prefix + queue.encode(), remember=False)

    def _stored_count(self, queue: str, key: bytes, remember: bool = True) -> int:
        """The next offset of ``queue`` as stored: one past the id of its last entry."""
        try:
            last = self._call(key, "XREVRANGE", key, b"+", b"-", "COUNT", 1)
        except ResponseError as e:
            if "WRONGTYPE" in str(e):
                raise ForeignStreamError(queue, key, "it is not a stream") from None
            raise
        n = 0
        if last:
            eid, fields = last[0]
            found = layout.offset_of(eid)
            if found is None or len(fields) != 2 or fields[0] != layout.FIELD:
                raise ForeignStreamError(queue, key, f"its last entry {eid.decode()} is not one mqdb writes")
            n = found + 1
        if remember and not self.readonly:
            self._counts[queue] = n
        return n

    def __contains__(self, queue) -> bool:
        if not isinstance(queue, str) or not queue:
            return False
        return self.count(queue) > 0

    def __iter__(self):
        """Names of all queues of the store, primary by primary (SCAN)."""
        with self._lock:
            self._check_open()
            names = set(self._pending_queues())
            for node in self._topology.primaries():
                names.update(self._scan(node))
        yield from names

    def _pending_queues(self) -> list[str]:
        return [self._queue_of(k) for n in self._topology.nodes.values() for k in n.pending.keys]

    def _scan(self, node: Node) -> list[str]:
        match = self._prefix.replace(b"\\", b"\\\\") + b"*"
        cursor, names, skip = b"0", [], len(self._prefix)
        while True:
            cursor, keys = self._node_call(node, "SCAN", cursor, "MATCH", match, "COUNT", 1000, "TYPE", "stream")
            names += [k[skip:].decode("utf-8", "backslashreplace") for k in keys]
            if cursor in (b"0", 0):
                return names

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def refresh(self) -> int:
        """Nothing to pick up: reads always ask the cluster."""
        self._check_open()
        return 0

    # --- figures ------------------------------------------------------------------------------------
    def queue_figures(self, prefix: str | None = None) -> list[tuple[str, int, int]]:
        """(name, messages, bytes of server memory) of every queue whose name starts with ``prefix``;
        one SCAN per primary and pipelined ``XLEN`` / ``MEMORY USAGE``, 1,000 queues per round trip."""
        with self._lock:
            self._check_open()
            if not self.readonly:
                self._drain(time.monotonic() + self.options["failover_timeout"])
            out = []
            for node in self._topology.primaries():
                names = [q for q in self._scan(node) if prefix is None or q.startswith(prefix)]
                for start in range(0, len(names), 1000):
                    part = names[start : start + 1000]
                    keys = [self._prefix + q.encode() for q in part]
                    cmds = []
                    for key in keys:
                        cmds.append(b"*2\r\n$4\r\nXLEN\r\n$%d\r\n%b\r\n" % (len(key), key))
                        cmds.append(
                            b"*5\r\n$6\r\nMEMORY\r\n$5\r\nUSAGE\r\n$%d\r\n%b\r\n$7\r\nSAMPLES\r\n$1\r\n0\r\n"
                            % (len(key), key)
                        )
                    try:
                        replies = node.exchange(cmds)
                    except LINK_ERRORS as e:
                        raise ClusterUnreachableError(
                            f"{node.address} of the cluster at {self.path} does not answer: {e}"
                        ) from None
                    for i, (queue, key) in enumerate(zip(part, keys, strict=True)):
                        length, memory = replies[2 * i], replies[2 * i + 1]
                        if isinstance(length, ResponseError) or isinstance(memory, ResponseError):
                            length, memory = (
                                self._call(key, "XLEN", key),
                                self._call(key, "MEMORY", "USAGE", key, "SAMPLES", 0),
                            )
                        out.append((queue, int(length), int(memory or 0)))
            return out

    def stats(self) -> dict:
        """Figures of the store and of each primary: queues, messages, memory, persistence settings."""
        with self._lock:
            figures = self.queue_figures()
            nodes = []
            for node in self._topology.primaries():
                memory = _info(self._node_call(node, "INFO", "memory"))
                persistence = _info(self._node_call(node, "INFO", "persistence"))
                nodes.append(
                    {
                        "address": node.address,
                        "slots": sum(1 for n in self._topology.slots if n is node),
                        "replicas": node.replicas,
                        "used_memory": int(memory.get("used_memory", 0)),
                        "aof_enabled": persistence.get("aof_enabled") == "1",
                        "appendfsync": self._config(node, "appendfsync"),
                    }
                )
            return {
                "path": self.path,
                "kind": self.kind,
                "store": self.url.name,
                "readonly": self.readonly,
                "format": f"{layout.FORMAT} {layout.VERSION}",
                "queues": len(figures),
                "messages": sum(f[1] for f in figures),
                "queue_memory_bytes": sum(f[2] for f in figures),
                "primaries": len(nodes),
                "used_memory": sum(n["used_memory"] for n in nodes),
                "unconfirmed": len(self._unconfirmed()),
                "redirects": self.redirects,
                "resent": self.resent,
                "last_flush_ns": self.flushed_ns,
                "nodes": nodes,
            }

    def _config(self, node: Node, name: str) -> str | None:
        try:
            reply = self._node_call(node, "CONFIG", "GET", name)
        except ResponseError:  # CONFIG may be renamed away
            return None
        if isinstance(reply, dict):
            reply = [x for pair in reply.items() for x in pair]
        return reply[1].decode() if len(reply) == 2 else None

    # --- one command --------------------------------------------------------------------------------
    def _call(self, key: bytes, *args):
        """One command on ``key`` at the node that serves it: the node's pending puts are sent first
        (so reads see them), and redirections and a failover are followed until ``failover_timeout``."""
        deadline = time.monotonic() + self.options["failover_timeout"]
        asking = None
        while True:
            node = asking or self._route(key, deadline)
            try:
                if node.pending:
                    self._drain(deadline, only=node)
                    continue
                return node.call(*args, asking=asking is not None)
            except (MovedError, TryAgainError, ClusterDownError):
                self.redirects += 1
                self._wait(deadline, "slots moved or the cluster is down")
                asking = None
            except AskError as e:
                self.redirects += 1
                asking = self._topology.node(*e.node_addr)
            except LINK_ERRORS as e:
                asking = None
                self._wait(deadline, f"{node.address} does not answer ({' '.join(str(e).split())})")

    def _node_call(self, node: Node, *args):
        try:
            return node.call(*args)
        except LINK_ERRORS as e:
            raise ClusterUnreachableError(
                f"{node.address} of the cluster at {self.path} does not answer: {' '.join(str(e).split())}"
            ) from None

    def _route(self, key: bytes, deadline: float) -> Node:
        node = self._topology.route(key)
        while node is None:
            self._wait(deadline, "some slots have no primary")
            node = self._topology.route(key)
        return node

    def _wait(self, deadline: float, why: str) -> None:
        """Pause, then read the slot map again; ClusterUnreachableError past the deadline."""
        if time.monotonic() >= deadline:
            raise ClusterUnreachableError(
                f"the cluster at {self.path} did not recover within {self.options['failover_timeout']:g} s: {why}"
            )
        time.sleep(_RETRY_PAUSE)
        try:
            self._topology.refresh()
        except ClusterUnreachableError:
            pass

    def _queue_of(self, key: bytes) -> str:
        return key[len(self._prefix) :].decode("utf-8")

    # --- life cycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush and close; closing twice is harmless. A failed flush still closes, then raises."""
        with self._lock:
            if self._closed:
                return
            try:
                self.flush()
            finally:
                self._closed = True
                for node in self._topology.nodes.values():
                    node.disconnect()
                self._counts = {}

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the store is closed; open it again with mqdb.open(url)")

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open readonly" if self.readonly else "open")
        return f"<mqdb.cluster.ClusterStore {self.path!r} {state}>"


def _info(raw) -> dict:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))
