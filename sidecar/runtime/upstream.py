"""A small pool of persistent, multiplexed TCP connections to one Dubbo service, on gevent.

:class:`DubboPool` keeps ``size`` connections up and spreads the frames given to :meth:`~DubboPool.send`
over them turn by turn of the event loop: the calls of one turn go to the connection that was least
loaded at the turn's first call, so that they leave in one write. Each connection carries many calls
at once, matched by Dubbo request id. The pool does not look inside bodies: the reader of a
connection splits the byte stream into frames by the 16-byte header alone and hands each response,
as raw bytes, to ``on_reply(request_id, frame)``. Whoever calls :meth:`~DubboPool.send` owns the
request ids and must keep them unique among the calls in flight.

Each connection has four parts: a keeper greenlet that connects (with backoff), then waits for the
connection's end and drops it; a read watcher on the hub's loop whose callback reads what the socket
has and hands on every whole frame (no greenlet switch per read); an outbox that
:meth:`~DubboPool.send` appends to without blocking; and a writer greenlet for what the socket does
not take at once. Frames queued in one turn of the event loop are written at the end of
that turn, by a callback of the loop, in one non-blocking ``send`` per connection: a burst of calls
costs one system call and a lone call no switch to another greenlet. Only what that ``send`` leaves
(the kernel's buffer is full) goes to the writer greenlet, which owns the outbox until it is empty.

Heartbeats go both ways: a heartbeat request from the service is answered at once; a connection
that has read nothing for ``heartbeat`` seconds sends one, and one silent for three times as long
is closed (and replaced). When a connection dies, the calls in flight on it are reported to
``on_lost(request_ids, reason)`` so that none waits for an answer that cannot come; while no
connection is up, :meth:`~DubboPool.send` raises :class:`~sidecar.errors.UpstreamUnavailable`.
"""

from __future__ import annotations

import logging
import os
import socket as _socket
import time
from collections import Counter
from collections.abc import Callable, Iterable

import gevent
import gevent.event
from gevent import socket

from sidecar._accel import import_c_accel, module_name
from sidecar.codecs.dubbo import encode
from sidecar.codecs.dubbo_messages import (
    DEFAULT_PAYLOAD,
    FLAG_EVENT,
    FLAG_REQUEST,
    FLAG_TWOWAY,
    HEADER,
    HEADER_LENGTH,
    MAGIC,
    SERIALIZATION_MASK,
    Serialization,
    heartbeat,
)
from sidecar.errors import UpstreamUnavailable

__all__ = ["DubboPool"]

log = logging.getLogger(module_name(__name__))

_SERIALIZATIONS = frozenset(s.value for s in Serialization)
_unpack_header = HEADER.unpack_from
_read = os.read  # gevent makes every socket's descriptor non-blocking: EAGAIN raises BlockingIOError
_READ = 1  # libev's EV_READ


class _Connection:
    """One live TCP connection: its socket, the ids of the calls it carries, its outbox, and what its
    reader has buffered of the next frame."""

    __slots__ = (
        "sock", "fd", "slot", "in_flight", "outbox", "queued", "wake", "writer", "writing", "last_read", "last_beat",
        "why", "reader", "parts", "have", "need", "got_any", "ended", "end", "worked",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, slot: int):
        self.sock = sock
        self.fd = sock.fileno()
        self.slot = slot
        self.in_flight: set[int] = set()
        self.outbox: list[bytes] = []
        self.queued = 0  # bytes in the outbox
        self.wake = gevent.event.Event()
        self.writer: gevent.Greenlet | None = None
        self.writing = False  # the writer greenlet owns the outbox (a write is in progress or due)
        self.last_read = self.last_beat = time.monotonic()
        self.why: str | None = None  # why we closed it ourselves
        self.reader = None  # the read watcher on the hub's loop, while the connection is up
        self.parts: list[bytes] = []  # bytes read and not yet handed on (an incomplete frame)
        self.have = 0  # bytes in parts
        self.need = HEADER_LENGTH  # bytes the next frame needs
        self.got_any = False  # a whole frame came
        self.ended = gevent.event.Event()  # set by the reader when the stream ends or breaks
        self.end = "the service closed the connection"  # why it ended
        self.worked = False  # it ended cleanly after whole frames came: the next failure starts the backoff over

    def shutdown(self, why: str) -> None:
        """Make the reader see the end of the stream; it wakes the keeper, which drops the connection."""
        if self.why is None:
            self.why = why
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass


class DubboPool:
    """Persistent connections to the Dubbo service at ``address``; see the module docstring.

    Arguments (all but ``address`` keyword-only):
        size: connections kept up (default 4).
        heartbeat: seconds without reading before a heartbeat is sent; three times that closes the
            connection (default 60). 0 disables both.
        connect_timeout: seconds a connection attempt may take (default 3).
        backoff, max_backoff: the first wait before reconnecting after a failure, doubled after each
            failure in a row up to ``max_backoff`` (defaults 0.1 and 5 seconds).
        on_reply: ``on_reply(request_id, frame)`` for each response frame (raw bytes, header included).
        on_lost: ``on_lost(request_ids, reason)`` with the calls in flight on a connection that died.

    ``on_reply`` runs in the hub's loop (a callback of a connection's read watcher), ``on_lost`` in a
    keeper greenlet; neither may block. ``start()`` begins connecting and returns at once; ``close()``
    stops everything (calls in flight are reported lost).
    """

    CONNECT_TIMEOUT = 3.0
    RECV_SIZE = 64 * 1024  # per read; under glibc's mmap threshold (128 KiB), else each read costs 3 more system calls
    MAX_OUTBOX = 16 * 1024 * 1024  # bytes queued on one connection before it takes no more frames
    MAX_PAYLOAD = DEFAULT_PAYLOAD  # a larger body from the service breaks the connection
    HEARTBEAT_ID = 1 << 63  # heartbeats we send count up from here (never tracked as calls)

    def __init__(
        self,
        address: tuple[str, int],
        *,
        size: int = 4,
        heartbeat: float = 60.0,
        connect_timeout: float = CONNECT_TIMEOUT,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        on_reply: Callable[[int, bytes], object] | None = None,
        on_lost: Callable[[list[int], str], object] | None = None,
    ):
        if size < 1:
            raise ValueError(f"a pool needs at least one connection, not {size}")
        if heartbeat < 0 or connect_timeout <= 0 or backoff <= 0 or max_backoff < backoff:
            raise ValueError("heartbeat >= 0, connect_timeout > 0 and 0 < backoff <= max_backoff are required")
        self.address = (address[0], int(address[1]))
        self.size = size
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_reply = on_reply or (lambda request_id, frame: None)
        self.on_lost = on_lost or (lambda request_ids, reason: None)
        self.counters: Counter[str] = Counter()
        self.last_error = "not connected yet"
        self.closed = False
        self._live: list[_Connection] = []
        self._where: dict[int, _Connection] = {}  # request id -> the connection carrying it
        self._greenlets: list[gevent.Greenlet] = []
        self._beats = 0
        self._up = gevent.event.Event()  # set while at least one connection is up
        self._loop = gevent.get_hub().loop
        self._unflushed: list[_Connection] = []  # connections given frames since the last flush
        self._flush_scheduled = False
        self._turn: _Connection | None = None  # the connection of this turn's calls, until the flush

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._live)}/{self.size} up"
        return f"DubboPool({self.address[0]}:{self.address[1]}, {state}, in_flight={len(self._where)})"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._greenlets or self.closed:
            return
        self._greenlets = [gevent.spawn(self._keep, slot) for slot in range(self.size)]
        if self.heartbeat:
            self._greenlets.append(gevent.spawn(self._heartbeat_loop))

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until at least one connection is up; whether one is."""
        return self._up.wait(timeout)

    def close(self) -> None:
        """Close every connection and stop reconnecting; the calls in flight are reported lost.
        Closing twice is harmless."""
        if self.closed:
            return
        self.closed = True
        for connection in list(self._live):
            connection.shutdown("the pool is closing")
        gevent.killall(self._greenlets)
        self._greenlets = []

    # -- sending --------------------------------------------------------------------------------

    def send(self, frame: bytes, request_id: int | None = None) -> None:
        """Queue one complete Dubbo request ``frame`` on the connection of this turn of the loop: the
        least loaded one when the turn's first call came (so the calls of one turn leave in one write,
        and their replies tend to come back in one read; the load spreads turn by turn). A two-way
        frame is tracked as in flight under ``request_id`` (read from the frame when not given)
        until its reply comes, it is :meth:`forget`-ten, or its connection dies. Never blocks;
        raises :class:`UpstreamUnavailable` when no connection can take it."""
        live = self._live
        if not live:
            raise UpstreamUnavailable(self._unavailable("no connection is up"))
        connection = self._turn
        # The turn's first call picks its connection, as does a call finding it gone or its outbox full
        # (then each call picks anew, as every call did before turns shared a connection).
        if connection is None or connection.queued > self.MAX_OUTBOX or connection not in live:
            connection = self._turn = live[0] if len(live) == 1 else min(live, key=_load)
            self._flush_soon()  # the flush ends the turn, whatever it has to write
        if connection.queued > self.MAX_OUTBOX:
            raise UpstreamUnavailable(self._unavailable("every connection has a full write backlog"))
        if frame[2] & FLAG_TWOWAY:
            if request_id is None:
                request_id = int.from_bytes(frame[4:12], "big")
            connection.in_flight.add(request_id)
            self._where[request_id] = connection
        self.counters["sent"] += 1
        self._queue(connection, frame)

    def forget(self, request_ids: Iterable[int]) -> None:
        """Stop tracking calls whose answer is no longer wanted (a reply that still comes is handed
        to ``on_reply`` all the same)."""
        where = self._where
        for request_id in request_ids:
            connection = where.pop(request_id, None)
            if connection is not None:
                connection.in_flight.discard(request_id)

    def _unavailable(self, what: str) -> str:
        host, port = self.address
        return f"Dubbo service {host}:{port} unavailable: {what} (last error: {self.last_error})"

    def _queue(self, connection: _Connection, frame: bytes) -> None:
        outbox = connection.outbox
        outbox.append(frame)
        connection.queued += len(frame)
        if len(outbox) == 1 and not connection.writing:
            self._unflushed.append(connection)
            self._flush_soon()

    def _flush_soon(self) -> None:
        """:meth:`_flush` at the end of this turn of the loop (once, however often asked)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.run_callback(self._flush)

    def _flush(self) -> None:
        """Write each connection's outbox in one non-blocking ``send``; hand what is left to its
        writer greenlet. Runs in the event loop's own greenlet: must neither block nor raise."""
        self._flush_scheduled = False
        self._turn = None
        unflushed, self._unflushed = self._unflushed, []
        for connection in unflushed:
            outbox = connection.outbox
            if not outbox or connection.writing:
                continue
            data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
            connection.outbox, connection.queued = [], 0
            try:
                sent = connection.sock.send(data, 0, 0.0)  # timeout 0: raises instead of waiting
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                connection.shutdown(f"writing to the service: {_describe(exc)}")
                continue
            except Exception:
                log.exception("writing to %s:%d", *self.address)
                connection.shutdown("writing to the service failed")
                continue
            self.counters["writes"] += 1
            if sent < len(data):  # the kernel's buffer is full: the writer waits until it takes the rest
                rest = data[sent:]
                connection.outbox, connection.queued = [rest], len(rest)
                connection.writing = True
                connection.wake.set()

    # -- per connection -------------------------------------------------------------------------

    def _keep(self, slot: int) -> None:
        """Keep connection ``slot`` up: connect, start its reader and wait until it ends, wait, again."""
        delay = self.backoff
        connected_before = False
        while not self.closed:
            try:
                sock = socket.create_connection(self.address, timeout=self.connect_timeout)
                sock.settimeout(None)
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            except OSError as exc:
                self.last_error = _describe(exc)
                self.counters["connect_failures"] += 1
                log.debug("connecting to %s:%d: %s", *self.address, self.last_error)
                gevent.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            if connected_before:
                self.counters["reconnects"] += 1
            connected_before = True
            connection = _Connection(sock, slot)
            reason = "the pool is closing"  # unless the reader says otherwise
            try:
                connection.writer = gevent.spawn(self._write_loop, connection)
                self._live.append(connection)
                self._up.set()
                connection.reader = self._loop.io(connection.fd, _READ)
                connection.reader.start(self._readable, connection)
                connection.ended.wait()
                reason = connection.end
                if connection.worked:
                    delay = self.backoff  # it worked for a while: the next failure starts over
            finally:
                self._drop(connection, connection.why or reason)
            if not self.closed:
                gevent.sleep(delay)
                delay = min(delay * 2, self.max_backoff)

    def _drop(self, connection: _Connection, reason: str) -> None:
        if connection in self._live:
            self._live.remove(connection)
        if not self._live:
            self._up.clear()
        if connection.writer is not None:
            connection.writer.kill(block=False)
        reader, connection.reader = connection.reader, None
        if reader is not None:  # stopped before the socket closes: its descriptor may be reused
            reader.stop()
            reader.close()
        connection.sock.close()
        self.last_error = reason
        self.counters["disconnects"] += 1
        lost = list(connection.in_flight)
        connection.in_flight.clear()
        for request_id in lost:
            if self._where.get(request_id) is connection:
                del self._where[request_id]
        if lost:
            self.counters["lost"] += len(lost)
            host, port = self.address
            log.warning("connection to %s:%d lost with %d calls in flight: %s", host, port, len(lost), reason)
            try:
                self.on_lost(lost, reason)
            except Exception:
                log.exception("on_lost failed")

    def _readable(self, connection: _Connection) -> None:
        """The connection is readable (a callback of the hub's loop, no greenlet switch): read once and
        hand on every whole frame; at the end of the stream or on an error, stop reading and wake the
        keeper. The loop calls again while the socket has more."""
        try:
            chunk = _read(connection.fd, self.RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._ended(connection, _describe(exc))
            return
        if not chunk:
            if connection.have:
                self._ended(
                    connection,
                    f"the service closed the connection inside a frame ({connection.have} bytes buffered)",
                )
            else:
                self._ended(connection, "the service closed the connection", worked=connection.got_any)
            return
        connection.last_read = time.monotonic()
        parts = connection.parts
        parts.append(chunk)
        have = connection.have + len(chunk)
        if have < connection.need:
            connection.have = have
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            pos = self._split(connection, data)
        except _BrokenStream as exc:
            self._ended(connection, str(exc))
            return
        except Exception:  # a bug: logged, the connection dropped and replaced, never raised into the loop
            log.exception("reading from %s:%d", *self.address)
            self._ended(connection, "reading from the service failed")
            return
        connection.got_any = True
        have = len(data) - pos
        connection.parts = [data[pos:]] if have else []
        connection.have = have
        need = HEADER_LENGTH
        if have >= HEADER_LENGTH:
            need += _unpack_header(data, pos)[4]
        connection.need = need

    def _ended(self, connection: _Connection, reason: str, worked: bool = False) -> None:
        """Stop reading ``connection`` (its end of stream would wake the loop again and again) and wake
        its keeper, which drops it."""
        reader = connection.reader
        if reader is not None:
            reader.stop()
        connection.end, connection.worked = reason, worked
        connection.ended.set()

    def _split(self, connection: _Connection, data: bytes) -> int:
        """Hand every whole frame in ``data`` on; returns where the first incomplete one starts."""
        pos, size = 0, len(data)
        on_reply, counters = self.on_reply, self.counters
        in_flight, where = connection.in_flight, self._where
        received = 0
        while size - pos >= HEADER_LENGTH:
            magic, flags, _status, request_id, length = _unpack_header(data, pos)
            if magic != MAGIC:
                raise _BrokenStream(f"bad magic 0x{magic:04x} from the service, expected 0xdabb")
            if length > self.MAX_PAYLOAD:
                raise _BrokenStream(f"frame {request_id} from the service declares {length} bytes of body")
            end = pos + HEADER_LENGTH + length
            if end > size:
                break
            if flags & (FLAG_REQUEST | FLAG_EVENT):
                self._on_other(connection, flags, request_id)
            else:
                if request_id in in_flight:
                    in_flight.discard(request_id)
                    del where[request_id]
                received += 1
                try:
                    on_reply(request_id, data[pos:end] if pos or end != size else data)
                except Exception:
                    log.exception("on_reply failed for %d", request_id)
            pos = end
        counters["received"] += received
        return pos

    def _on_other(self, connection: _Connection, flags: int, request_id: int) -> None:
        """A frame that is not the reply to a call: a heartbeat (or other event), or a request."""
        if not flags & FLAG_REQUEST:
            self.counters["heartbeat_replies"] += 1
            return
        if flags & FLAG_EVENT and flags & FLAG_TWOWAY:
            serialization = flags & SERIALIZATION_MASK
            if serialization not in _SERIALIZATIONS:
                serialization = Serialization.HESSIAN2
            self.counters["heartbeats_answered"] += 1
            self._queue(connection, encode(heartbeat(request_id, reply=True, serialization=serialization)))
        else:
            self.counters["ignored_requests"] += 1

    def _write_loop(self, connection: _Connection) -> None:
        """While :meth:`_flush` has handed it the outbox: send all it holds (waiting for the socket as
        needed), again until it is empty, then give the outbox back. Measured against writing each
        frame at once from :meth:`send` (buffering only while a write is in progress): equal with few
        calls in flight, about 1.4x the calls per second under load."""
        sock, wake = connection.sock, connection.wake
        while True:
            if not connection.outbox or not connection.writing:
                connection.writing = False
                wake.clear()
                wake.wait()
                continue
            outbox = connection.outbox
            connection.outbox, connection.queued = [], 0
            data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
            try:
                sent = sock.send(data)  # gevent's sendall asks the kernel for SO_SNDBUF on every call
                if sent < len(data):
                    sock.sendall(memoryview(data)[sent:])
            except OSError as exc:
                connection.shutdown(f"writing to the service: {_describe(exc)}")
                return
            self.counters["writes"] += 1

    def _heartbeat_loop(self) -> None:
        interval = self.heartbeat
        while True:
            gevent.sleep(interval / 3)
            now = time.monotonic()
            for connection in list(self._live):
                idle = now - connection.last_read
                if idle >= 3 * interval:
                    log.warning("closing a connection to %s:%d: nothing read for %.1f s", *self.address, idle)
                    connection.shutdown(f"nothing read from the service for {idle:.1f} s")
                elif idle >= interval and now - connection.last_beat >= interval:
                    self._beats += 1
                    connection.last_beat = now
                    self.counters["heartbeats_sent"] += 1
                    self._queue(connection, encode(heartbeat(self.HEARTBEAT_ID + self._beats)))

    # -- observing ------------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Connections up now."""
        return len(self._live)

    @property
    def in_flight(self) -> int:
        return len(self._where)

    def stats(self) -> dict:
        """Counts: connections up, calls in flight, frames sent and received, reconnects, calls lost
        with a connection, connection failures, heartbeats, and the last connection error."""
        counters = self.counters
        return {
            "address": f"{self.address[0]}:{self.address[1]}",
            "connections": len(self._live),
            "in_flight": len(self._where),
            "sent": counters["sent"],
            "received": counters["received"],
            "writes": counters["writes"],
            "reconnects": counters["reconnects"],
            "connect_failures": counters["connect_failures"],
            "disconnects": counters["disconnects"],
            "lost": counters["lost"],
            "heartbeats_sent": counters["heartbeats_sent"],
            "heartbeat_replies": counters["heartbeat_replies"],
            "heartbeats_answered": counters["heartbeats_answered"],
            "last_error": self.last_error,
        }


class _BrokenStream(Exception):
    """The service sent bytes that are not Dubbo frames: the connection is closed."""


def _load(connection: _Connection) -> int:
    return len(connection.in_flight)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | _socket.timeout):
        return "connection attempt timed out"
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__


import_c_accel(globals(), "sidecar.runtime._c_upstream")
