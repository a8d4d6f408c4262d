"""The cluster as the store sees it: its primaries, each with one connection and its puts, and the map
from the 16384 hash slots to the primaries (from ``CLUSTER SLOTS``).

A :class:`Node` holds two lists of puts, each as parallel columns (key, offset, packed ``XADD``):
``pending``, not yet sent, and ``journal``, sent and written by the node but not yet confirmed by
its replicas (``WAIT``). Both keep put order, which is the order of the ids within each stream.
"""

from __future__ import annotations

import time

from redis import Connection
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError, ResponseError, TimeoutError
from redis.retry import Retry

from .errors import ClusterUnreachableError

SLOTS = 16384
LINK_ERRORS = (ConnectionError, TimeoutError, OSError)


class Batch:
    """Puts as three parallel columns: stream key, offset, packed command."""

    __slots__ = ("keys", "offsets", "cmds", "size")

    def __init__(self):
        self.keys: list[bytes] = []
        self.offsets: list[int] = []
        self.cmds: list[bytes] = []
        self.size = 0

    def add(self, key: bytes, offset: int, cmd: bytes) -> None:
        self.keys.append(key)
        self.offsets.append(offset)
        self.cmds.append(cmd)
        self.size += len(cmd)

    def extend(self, other: Batch) -> None:
        self.keys += other.keys
        self.offsets += other.offsets
        self.cmds += other.cmds
        self.size += other.size

    def __len__(self) -> int:
        return len(self.cmds)

    def items(self):
        return zip(self.keys, self.offsets, self.cmds, strict=True)


class Node:
    """One primary: address, replica count, connection, and its pending and journaled puts."""

    def __init__(self, host: str, port: int, connect: dict):
        self.host, self.port = host, port
        self.address = f"{host}:{port}"
        self.replicas = 0
        self.pending = Batch()
        self.journal = Batch()
        self.offset_check = False  # confirm by replica offsets: WAIT on this connection would not cover the journal
        self._connect = connect
        self._conn: Connection | None = None

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            self._conn = Connection(host=self.host, port=self.port, **self._connect)
            self._conn.connect()
            if self.journal:
                self.offset_check = True
        return self._conn

    def call(self, *args, asking: bool = False):
        """One command and its reply (a server error reply is raised as ResponseError)."""
        conn = self.conn
        try:
            if asking:
                conn.send_packed_command(conn.pack_commands([("ASKING",), args]), check_health=False)
                conn.read_response()
            else:
                conn.send_packed_command(conn.pack_command(*args), check_health=False)
            return conn.read_response()
        except LINK_ERRORS:
            self.disconnect()
            raise

    def exchange(self, cmds: list[bytes], asking: bool = False) -> list:
        """Send packed commands in one write and read every reply: the reply, or the ResponseError."""
        conn = self.conn
        replies = []
        try:
            if asking:
                conn.send_packed_command([b"*1\r\n$6\r\nASKING\r\n".join([b"", *cmds])], check_health=False)
            else:
                conn.send_packed_command([b"".join(cmds)], check_health=False)
            read = conn.read_response
            for _ in cmds:
                if asking:
                    read()
                try:
                    replies.append(read())
                except ResponseError as e:
                    replies.append(e)
        except LINK_ERRORS:
            self.disconnect()
            raise
        return replies

    def disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.disconnect()
            except Exception:  # noqa: BLE001 - a broken socket may fail to close; it is dropped either way
                pass
            self._conn = None

    def __repr__(self) -> str:
        return f"<Node {self.address} pending={len(self.pending)} journal={len(self.journal)}>"


def connect_options(url, connect_timeout: float, socket_timeout: float) -> dict:
    return {
        "username": url.username,
        "password": url.password,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "driver_info": None,
    }


class Topology:
    """The slot map of the cluster and its primaries, built from ``CLUSTER NODES`` of any node that answers.

    (``CLUSTER NODES`` rather than ``CLUSTER SLOTS``: the latter leaves out a replica that has not yet
    reported a replication offset, and a flush must wait for every primary's replica all the same.)"""

    def __init__(self, url, connect: dict):
        self.url = url
        self.seeds = [f"{h}:{p}" for h, p in url.addresses]
        self.connect = connect
        self.nodes: dict[str, Node] = {}  # address -> Node; kept after a node leaves, for its puts
        self.slots: list[Node | None] = [None] * SLOTS
        self.refresh()

    def node(self, host: str, port: int) -> Node:
        address = f"{host}:{port}"
        node = self.nodes.get(address)
        if node is None:
            node = self.nodes[address] = Node(host, port, self.connect)
        return node

    def route(self, key: bytes) -> Node | None:
        return self.slots[key_slot(key)]

    def primaries(self) -> list[Node]:
        """The nodes that serve slots now, in address order."""
        return sorted({id(n): n for n in self.slots if n is not None}.values(), key=lambda n: n.address)

    def covered(self) -> bool:
        return all(n is not None for n in self.slots)

    def refresh(self) -> None:
        """Rebuild the slot map from the first node that answers (known primaries first, then the seeds)."""
        errors = []
        candidates = [n.address for n in self.primaries()] + [a for a in self.seeds]
        for address in dict.fromkeys(candidates):
            host, _, port = address.rpartition(":")
            probe = Node(host, int(port), self.connect)
            try:
                reply = probe.call("CLUSTER", "NODES")
            except LINK_ERRORS as e:
                errors.append(f"{address}: {_short(e)}")
                continue
            except ResponseError as e:
                if "cluster support disabled" in str(e).lower():
                    raise ClusterUnreachableError(
                        f"{address} is a Redis server without cluster mode; mqdb needs a Redis Cluster "
                        "(cluster-enabled yes, nodes joined with redis-cli --cluster create)"
                    ) from None
                errors.append(f"{address}: {_short(e)}")
                continue
            finally:
                probe.disconnect()
            self._apply(reply, host)
            return
        raise ClusterUnreachableError(
            f"no node of the Redis Cluster at {self.url} answered ({'; '.join(errors)}); "
            "start the cluster or give the address of a running node"
        )

    def _apply(self, reply, asked_host: str) -> None:
        slots: list[Node | None] = [None] * SLOTS
        replicas: dict[str, int] = {}
        owners = []
        for line in _text(reply).splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            node_id, address, flags, master = fields[0], fields[1], fields[2].split(","), fields[3]
            if "slave" in flags:
                if "fail" not in flags and "noaddr" not in flags:
                    replicas[master] = replicas.get(master, 0) + 1
            elif "master" in flags and len(fields) > 8:
                host, _, port = address.split("@")[0].rpartition(":")
                owners.append((node_id, host or asked_host, int(port), fields[8:]))
        for node_id, host, port, ranges in owners:
            node = self.node(host, port)
            node.replicas = replicas.get(node_id, 0)
            for part in ranges:
                if part.startswith("["):  # a slot being imported or migrated: still the owner's
                    continue
                start, _, end = part.partition("-")
                for slot in range(int(start), int(end or start) + 1):
                    slots[slot] = node
        self.slots = slots


def wait_replica_offsets(node: Node, want: int, timeout: float) -> int:
    """How many replicas of ``node`` reached its replication offset of now, polled for up to ``timeout`` s.

    The confirmation when ``WAIT`` cannot be used: the writes went over an earlier connection."""
    info = _info(node.call("INFO", "replication"))
    target = int(info.get("master_repl_offset", "0"))
    deadline = time.monotonic() + timeout
    while True:
        info = _info(node.call("INFO", "replication"))
        acked = sum(
            1
            for k, v in info.items()
            if k.startswith("slave") and k[5:].isdigit() and int(_fields(v).get("offset", "-1")) >= target
        )
        if acked >= want or time.monotonic() >= deadline:
            return acked
        time.sleep(0.01)


def _info(raw) -> dict:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def _fields(value: str) -> dict:
    return dict(part.split("=", 1) for part in value.split(",") if "=" in part)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _short(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
