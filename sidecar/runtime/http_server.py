"""An HTTP/1.1 server on gevent's loop with no greenlet per connection: watchers and callbacks.

Each connection is a :class:`Connection`: a non-blocking socket, a read watcher and, while an answer
waits for room in the socket buffer, a write watcher on the hub's loop; the pure
:class:`~sidecar.codecs.http1.ServerConnection`; and its phase in the server's
:class:`~sidecar.policies.connections.ConnectionLimits`. When the loop says a socket is readable its
bytes are parsed; the handler checks each request head before its body is read
(``handler.check(request)``), and a whole request goes to the handler with what that check returned,
``handler.handle(request, route, body, connection)``, which calls ``connection.respond(response)`` at
once or later (when a call's reply comes back); the answer is written without waking anything.
Pipelined requests are taken one at a time, the next once the previous answer went out, so answers
leave in request order.

Answers are written together, once the callbacks of the loop's turn that made them are done (a
callback of the hub, run before it polls again). A send wakes the client, and the kernel often runs
the woken process at once on this core: written as each answer is made, the answers of a burst of
replies waited for the clients of the ones before them. Measured against that, at 128 connections
on two cores, the calls took 1.5% less time in 13 of 14 paired runs, with no more than noise in CPU;
a later batch of 7 pairs, on a faster phase of the machine, showed no difference.

Everything runs in the hub's callbacks, one after another: the reaper that ends late connections and
the code that answers them never run at the same time, so no socket is ever used by two parties.
While answers go out, the writing callback carries the reaper's look
(:class:`~sidecar.runtime.periodic.Periodic`): its timer fires only after a ``REAP_INTERVAL`` without
answers, and does not wake a busy loop by itself.

No client can starve the others or the process (:class:`Limits` has the numbers):

* **Work per turn**: one read of at most ``RECV_SIZE`` bytes, and at most ``EVENTS_PER_TURN`` parser
  events or ``TURN_SECONDS`` of work (answers the handler gives at once count) per connection, then
  the loop serves the others; bytes of pipelined requests beyond
  ``max_buffered`` are left in the kernel until the earlier ones are answered.
* **Deadlines**: a kept-alive connection may stay silent for ``idle_timeout``; a request head must be
  whole within ``header_timeout`` of its first byte and the whole request within ``request_timeout``
  (408, then closed); an answer must be taken by the client within ``send_timeout`` (reset: what it
  did not take is dropped, so that the kernel does not hold it for a client that never reads).
* **Connections**: at ``max_connections`` a new connection sheds the longest idle one (then the
  slowest client); when every connection is busy with a call, the new one gets 503 and is closed.
* **Memory**: request bodies buffered at once, in all connections together, take at most
  ``body_budget`` bytes; a request whose body would go past it gets 503 with ``Retry-After``. Bodies
  over ``SMALL_BODY`` may fill only 7/8 of it, so large uploads cannot crowd out ordinary calls. The
  bytes are given back when the body is answered or its connection closes (and, after a burst, the
  freed heap goes back to the system).
* **Errors are read**: after an error answer the server half-closes and reads on (at most
  ``DRAIN_BYTES``, for ``DRAIN_TIMEOUT``) before closing, so a client still sending its body reads
  the 413 instead of a reset.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import select
import socket
import struct
import time
from dataclasses import dataclass

import gevent
from gevent.hub import get_hub

from sidecar._accel import import_c_accel, module_name
from sidecar.codecs import http1
from sidecar.codecs.http1_wire import closing_response
from sidecar.errors import ProtocolError
from sidecar.policies.connections import BUSY, IDLE, WAITING, ConnectionLimits
from sidecar.runtime.periodic import Periodic

__all__ = ["Connection", "HttpServer", "Limits"]

log = logging.getLogger(module_name(__name__))

RECV_SIZE = 64 * 1024  # bytes read from one connection per turn of the loop
EVENTS_PER_TURN = 64  # parser events (requests, body pieces) handled per connection per turn
TURN_SECONDS = 0.0005  # and at most about this much work per connection per turn (looked at every 8 events)
ACCEPTS_PER_TURN = 64  # connections accepted per turn
DRAIN_BYTES = 2 * 1024 * 1024  # after an error answer, bytes read and dropped before the close
DRAIN_TIMEOUT = 2.0  # seconds given to that
REAP_INTERVAL = 0.1  # seconds between looks for late connections: the resolution of every deadline
SMALL_BODY = 16 * 1024  # bodies up to this may use the whole body budget; larger ones 7/8 of it
TRIM_AFTER = 4 << 20  # bytes of bodies held at once since the last trim that make the next idle moment trim

_READ, _WRITE = 1, 2
# What each request passes through, bound once: a module's attribute costs the compiled twin a lookup
# each time, a global of its own almost nothing.
_monotonic, _get_header = time.monotonic, http1.get_header
_Data, _EndOfMessage, _Request = http1.Data, http1.EndOfMessage, http1.Request
_NEED_DATA, _PAUSED, _DONE = http1.NEED_DATA, http1.PAUSED, http1.DONE
_LINGER_NONE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 seconds: close() resets the connection


@dataclass(frozen=True)
class Limits:
    """What one client may take of the server; times in seconds, sizes in bytes. The defaults and
    the meaning of each are the consumer's settings (:class:`~sidecar.runtime.settings.ConsumerConfig`)."""

    idle_timeout: float
    header_timeout: float
    request_timeout: float
    send_timeout: float
    max_head: int
    max_body: int
    max_connections: int
    max_buffered: int
    body_budget: int
    retry_after: int


class Handler:
    """What the server asks of its owner. :meth:`check` sees a request head before its body is read
    (and before ``100 Continue`` is sent): it raises a :class:`ProtocolError` to refuse the request, or
    returns what :meth:`handle` gets with the whole request as ``route`` (what the handler learnt of
    the head, so that it need not look again)."""

    def check(self, request: http1.Request) -> object:
        return None

    def handle(self, request: http1.Request, route: object, body: bytes, connection: Connection) -> None:
        """Answer ``request`` (whose head :meth:`check` passed, returning ``route``) with
        ``connection.respond(response)``, now or later, exactly once."""
        raise NotImplementedError

    def refused(self, request: http1.Request, error: ProtocolError, connection: Connection) -> None:
        """Answer a request whose head :meth:`check` refused, once its body was read and dropped."""
        connection.respond(self.error(error.status_hint, error.reason, _headers(error), request))

    def error(self, status: int, reason: str, headers: tuple = (), request: http1.Request | None = None):
        """The answer (an :class:`http1.Response`) for an error the server found itself: a malformed
        request, a late one, no room; ``request`` is the request it concerns, if its head came."""
        return http1.Response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers], reason.encode())


class HttpServer:
    """Serves ``listener`` (a listening socket) with ``handler`` under ``limits``; see the module
    docstring. :meth:`start` and :meth:`stop` from a greenlet; everything else runs in the hub."""

    def __init__(self, listener: socket.socket, handler: Handler, limits: Limits):
        self.listener, self.handler, self.limits = listener, handler, limits
        self.connections = ConnectionLimits(max_connections=limits.max_connections)
        self.open: set[Connection] = set()
        self.loop = get_hub().loop
        self.stopping = False
        self.body_in_use = 0  # bytes of request bodies buffered now, all connections
        self._trim_pending = False  # a burst of bodies (TRIM_AFTER) was held since memory was last given back
        self.counters = {
            "connections": 0,  # accepted
            "requests": 0,  # whole requests handed to the handler
            "timeouts": 0,  # closed for a deadline (idle, head, request, send)
            "send_timeouts": 0,  # of those, answers the client did not take within send_timeout
            "shed": 0,  # closed to make room for a new connection
            "refused": 0,  # new connections refused with 503: every connection busy
            "over_budget": 0,  # requests refused with 503: the body budget was spent
        }
        self._accepting = None
        self._reaper = None
        self._later: list[Connection] = []  # connections with work left over from their turn
        self._writes: list = []  # (connection, answer) to write when this turn's callbacks are done
        self._writing = False  # a callback to write them is scheduled
        self._next_turn = self.loop.timer(0.0)  # fires after the next poll: every socket had its turn

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.listener.setblocking(False)
        self._accepting = self.loop.io(self.listener.fileno(), _READ)
        self._accepting.start(self._accept)
        self._reaper = Periodic(self.loop, REAP_INTERVAL, self._reap, name="reaping connections")
        self._reaper.start()

    def close_listener(self) -> None:
        """Stop accepting; the connections go on."""
        if self._accepting is not None:
            self._accepting.stop()
            self._accepting.close()
            self._accepting = None
            self.listener.close()

    def stop(self, timeout: float) -> None:
        """Stop accepting, close the connections that wait for a request (not those with a request's
        bytes already in: they came before the stop), let the others finish their answer for up to
        ``timeout`` seconds, then close everything. Call from a greenlet."""
        self.stopping = True
        self.close_listener()
        end = time.monotonic() + timeout
        self._close_idle()
        while self.open and time.monotonic() < end:  # those left have a request in hand
            gevent.sleep(0.01)
            self._close_idle()
        for connection in list(self.open):
            connection.close()
        if self._reaper is not None:
            self._reaper.stop()
            self._reaper = None
        self._next_turn.stop()

    def later(self, connection: Connection) -> None:
        """Let ``connection`` go on after every other ready connection had its turn (once per turn,
        however often it asks)."""
        if connection.waiting_turn:
            return
        connection.waiting_turn = True
        self._later.append(connection)
        if not self._next_turn.active:
            self._next_turn.start(self._turn)

    def write_soon(self, connection: Connection, data: bytes) -> None:
        """Write ``data`` to ``connection`` once the callbacks of this turn of the loop are done (see
        the module docstring: answers go out together, at the end of the turn)."""
        self._writes.append((connection, data))
        if not self._writing:
            self._writing = True
            self.loop.run_callback(self._write_all)

    def _write_all(self) -> None:
        self._writing = False
        writes, self._writes = self._writes, []
        for connection, data in writes:
            if not connection.closed:
                connection._write(data)
                connection.settle()
        if self._reaper is not None:
            self._reaper.ride(_monotonic())  # a look due within half an interval is made here

    def _turn(self) -> None:
        connections, self._later = self._later, []
        for connection in connections:
            connection.waiting_turn = False
            connection.process()

    def _close_idle(self) -> None:
        """Close the connections with no request in hand: none parsed, none waiting in the kernel (a
        request already sent came before the stop, and is served)."""
        quiet = [c for c in self.open if not c.answering and not c.has_request_bytes()]
        waiting = _readable(quiet)
        for connection in quiet:
            if connection.fd not in waiting:
                connection.close()

    # -- accepting ------------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of descriptors, or the listener closed under us
                log.warning("accept failed: %s", e)
                return
            self.counters["connections"] += 1
            connection = Connection(self, sock, address)
            shed = self.connections.opened(connection, time.monotonic() + self.limits.idle_timeout)
            if shed is None:
                self.counters["refused"] += 1
                connection.refuse(self.handler.error(503, "every connection is busy", self._retry()))
                continue
            for victim in shed:
                self.counters["shed"] += 1
                victim.close()
            self.open.add(connection)
            connection.start()

    def _retry(self) -> tuple[tuple[str, str], ...]:
        return (("Retry-After", str(self.limits.retry_after)),)

    # -- deadlines ------------------------------------------------------------------------------

    def _reap(self, now: float) -> None:
        for connection in self.connections.overdue(now):
            self.counters["timeouts"] += 1
            if connection.stage == "send":
                self.counters["send_timeouts"] += 1
            connection.late()
        if self._trim_pending and not self.body_in_use:
            self._trim_pending = False
            _give_memory_back()

    # -- the body budget ------------------------------------------------------------------------

    def reserve(self, size: int, total: int) -> bool:
        """Take ``size`` bytes of the body budget for a body that holds ``total`` bytes with them."""
        budget = self.limits.body_budget
        if total > SMALL_BODY:
            budget -= budget // 8
        if self.body_in_use + size > budget:
            return False
        self.body_in_use += size
        if self.body_in_use >= TRIM_AFTER:  # small bodies come and go in the heap's free lists: no trim
            self._trim_pending = True
        return True

    def release(self, size: int) -> None:
        self.body_in_use -= size


class Connection:
    """One client connection of an :class:`HttpServer`; see the module docstring."""

    __slots__ = (
        "server", "sock", "fd", "address", "conn", "reader", "writer", "out", "request", "body", "reserved",
        "declared", "rejected", "route", "started", "waiting_turn", "answering", "closed", "eof", "draining", "drained",
        "in_process", "stage", "due", "due_deadline", "__weakref__",
    )  # fmt: skip

    def __init__(self, server: HttpServer, sock: socket.socket, address):
        self.server, self.sock, self.address = server, sock, address
        self.fd = sock.fileno()
        limits = server.limits
        self.conn = http1.ServerConnection(max_head=limits.max_head, max_body=limits.max_body)
        self.reader = self.writer = None
        self.out: memoryview | None = None  # the part of an answer the socket has not taken yet
        self.request: http1.Request | None = None
        self.body: list[bytes] = []
        self.reserved = 0  # bytes of the body budget this request holds
        self.declared = False  # its Content-Length was reserved whole: its pieces need nothing more
        self.rejected: ProtocolError | None = None  # the handler refused its head: its body is dropped
        self.route = None  # what the handler's check of the head returned, for its handle
        self.started = 0.0  # when the first byte of the current request came
        self.answering = False  # a whole request went to the handler and its answer is not out yet
        self.closed = False
        self.eof = False  # the client closed its side: nothing more to read
        self.draining = False  # an error answer went out: read and drop, then close
        self.drained = 0
        self.in_process = False
        self.waiting_turn = False  # in the server's list of connections to go on after the others
        self.stage = "idle"  # what the deadline is for: idle, head, body, send, drain
        self.due: str | None = None  # the phase to tell the connection limits when this callback ends
        self.due_deadline = 0.0  # and its deadline

    def __repr__(self) -> str:
        return f"<Connection {self.address} {self.stage}{' closed' if self.closed else ''}>"

    def start(self) -> None:
        sock = self.sock
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.reader = self.server.loop.io(self.fd, _READ)
        self.reader.start(self._readable)

    def has_request_bytes(self) -> bool:
        return bool(self.conn.buffered) or self.conn.their_state is not http1.IDLE

    # -- reading --------------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if self.draining:
            self.drained += len(data)
            if not data or self.drained >= DRAIN_BYTES:
                self.close()
            return
        try:
            self.conn.receive_data(data)
        except ProtocolError as e:  # bytes after an end of file
            log.debug("connection from %s: %s", self.address, e)
            self.close()
            return
        if not data:
            self.eof = True
            self._pause_reading()
        elif self.stage == "idle":
            self._head_begins()
        if self.conn.buffered > self.server.limits.max_buffered:
            self._pause_reading()  # later requests wait in the kernel until these are answered
        self.process()
        self.settle()

    def _head_begins(self) -> None:
        self.started = _monotonic()
        self.stage = "head"
        self._phase(WAITING, self.started + self.server.limits.header_timeout)

    def process(self) -> None:
        """Handle what the parser has, at most ``EVENTS_PER_TURN`` events; then let others run."""
        if self.in_process or self.closed:
            return
        self.in_process = True
        try:
            self._process()
        except Exception:
            log.exception("connection from %s failed", self.address)
            self._fail(500, "internal error in the sidecar")
        finally:
            self.in_process = False
            self.settle()

    def _process(self) -> None:
        conn = self.conn
        turn_ends = _monotonic() + TURN_SECONDS
        for count in range(EVENTS_PER_TURN):
            if self.answering or self.closed or self.draining:
                return
            if count & 7 == 7 and _monotonic() > turn_ends:
                break
            try:
                event = conn.next_event()
            except ProtocolError as e:
                self._fail(e.status_hint, e.reason, _headers(e))
                return
            kind = type(event)
            if kind is _Data:
                if self.rejected is not None:
                    continue
                if not self.declared and not self._reserve(len(event.data)):
                    return
                self.body.append(event.data)
            elif kind is _Request:
                if not self._begin(event):
                    return
                if self.declared and self.rejected is None:  # its body reserved whole: here already?
                    body = conn.take_body()
                    if body is not None:
                        self.body = [body]
                        self._end()
            elif kind is _EndOfMessage:
                self._end()
            elif event is _NEED_DATA:
                self._read_more()
                return
            elif event is _PAUSED:
                return
            else:  # ConnectionClosed
                self.close()
                return
        self.server.later(self)  # more to do: after the others had their turn

    def _end(self) -> None:
        """The request in hand came whole: to the handler (or, refused by its head, to ``refused``)."""
        server = self.server
        self.answering = True
        self._phase(BUSY, 0.0)
        server.counters["requests"] += 1
        request, body = self.request, b"".join(self.body)
        self.body = []
        self.stage = "busy"
        rejected, self.rejected = self.rejected, None
        route, self.route = self.route, None
        if rejected is None:
            server.handler.handle(request, route, body, self)
        else:
            server.handler.refused(request, rejected, self)

    def _begin(self, request: http1.Request) -> bool:
        """A request head came whole: check it, reserve its body, say 100 Continue if it asked."""
        server, limits = self.server, self.server.limits
        self.request, self.body = request, []
        if self.stage != "head":  # its head came with the bytes of the previous request
            self.started = _monotonic()
        self.stage = "body"
        self._phase(WAITING, self.started + limits.request_timeout)
        expect = _get_header(request.headers, "expect")
        continues = expect is not None and expect.lower() == "100-continue" and request.http_version == "1.1"
        try:
            self.route = server.handler.check(request)
        except ProtocolError as problem:
            if continues:  # the client waits to hear before sending its body: it hears no, and the end
                self._fail(problem.status_hint, problem.reason, _headers(problem))
                return False
            self.rejected = problem  # its body is read and dropped; then the error, and the next request
            return True
        length = _get_header(request.headers, "content-length")
        self.declared = length is not None
        if self.declared and not self._reserve(int(length.split(",")[0])):
            return False
        if continues:
            self._write_now(self.conn.send(http1.InformationalResponse(100)))
        return True

    def _reserve(self, size: int) -> bool:
        """Take ``size`` more bytes of the body budget for this request (a declared length once, or
        chunk by chunk); when it is spent, answer 503 and return False."""
        if self.server.reserve(size, self.reserved + size):
            self.reserved += size
            return True
        self.server.counters["over_budget"] += 1
        self._fail(503, "the sidecar has no room for more request bodies now", self.server._retry())
        return False

    def _read_more(self) -> None:
        if self.conn.buffered > self.server.limits.max_buffered:
            self._pause_reading()
        else:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if self.reader is not None and self.reader.active:
            self.reader.stop()

    def _resume_reading(self) -> None:
        if self.reader is not None and not self.reader.active and not self.closed and not self.eof:
            self.reader.start(self._readable)

    # -- answering ------------------------------------------------------------------------------

    def respond(self, response: http1.Response) -> None:
        """The answer to the request in hand; once out, the next request is taken."""
        if self.closed:
            self._release()
            return
        try:
            data = self.conn.send(response)
        except ProtocolError as e:
            log.warning("cannot send the answer to %s: %s", self.address, e.reason)
            self.close()
            return
        self._release()
        self.server.write_soon(self, data)

    def _write(self, data: bytes) -> None:
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self.out = memoryview(data)[sent:]
            self.stage = "send"
            self._phase(WAITING, time.monotonic() + self.server.limits.send_timeout)
            self._pause_reading()
            self.writer = self.server.loop.io(self.fd, _WRITE)
            self.writer.start(self._writable)
            return
        self._sent()

    def _write_now(self, data: bytes) -> None:
        """A small write that does not end the cycle (100 Continue): into the buffer, or dropped."""
        try:
            self.sock.send(data)
        except OSError:
            pass

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            self.out = None
            self.writer.stop()
            self.writer.close()
            self.writer = None
            self._sent()
            self.settle()

    def _sent(self) -> None:
        conn, server = self.conn, self.server
        self.answering = False
        if conn.our_state is not _DONE or server.stopping:
            if conn.their_state is _DONE or not conn.buffered:
                self.close()
            else:  # the client may still be sending what we did not read: let it read our answer
                self._drain()
            return
        conn.start_next_cycle()
        self.request = None
        if conn.buffered:  # the next request's bytes are here already
            self._head_begins()
        else:
            self.stage = "idle"
            self._phase(IDLE, _monotonic() + server.limits.idle_timeout)
        self._resume_reading()
        if not self.in_process and (conn.buffered or self.eof):  # else the parser would only ask for bytes
            self.process()

    # -- errors and the end ---------------------------------------------------------------------

    def _fail(self, status: int, reason: str, headers=()) -> None:
        """Answer an error and close; a reply already partly out can only be cut."""
        conn = self.conn
        self._release()
        if self.out is not None or self.closed:
            self.close()
            return
        response = self.server.handler.error(status, reason, tuple(headers), self.request)
        try:
            if conn.our_state is http1.SEND_RESPONSE:
                data = conn.send(response)
            else:  # no request to answer in order (a head that never ended): a closing answer
                data = closing_response(response.status, response.headers, response.body)
        except ProtocolError as e:
            log.debug("could not answer %d to %s: %s", status, self.address, e)
            self.close()
            return
        self.answering = True
        self._write_close(data)

    def _write_close(self, data: bytes) -> None:
        try:
            sent = self.sock.send(data)
        except OSError:
            self.close()
            return
        if sent < len(data):  # the client does not read: nothing more is owed to it
            self.close()
            return
        self._drain()

    def _drain(self) -> None:
        """Half-close, then read and drop what the client still sends, briefly, before closing."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.draining, self.stage = True, "drain"
        self._phase(WAITING, time.monotonic() + DRAIN_TIMEOUT)
        self._resume_reading()

    def late(self) -> None:
        """Its deadline passed: 408 for a request that did not come whole in time; an answer the
        client did not take is dropped with a reset; else just close."""
        if self.closed:
            return
        if self.stage in ("head", "body"):
            self._fail(408, "the request did not arrive in time")
        elif self.stage == "send":
            self.reset()
        else:
            self.close()
        self.settle()

    def _phase(self, phase: str, deadline: float) -> None:
        """From now on the connection is in ``phase`` of the connection limits (idle, waiting, busy)
        until ``deadline`` (none when busy). The limits hear of it when the callback that set it ends
        (:meth:`settle`): nothing else runs before then, so a request that comes whole and goes to
        the handler in one callback sets its last phase only, not the three it passed through."""
        self.due, self.due_deadline = phase, deadline

    def settle(self) -> None:
        """Tell the connection limits the phase set last, if one is due; the end of every callback
        that may set one (reading, processing, answering, writing, a deadline) calls it."""
        phase = self.due
        if phase is None:
            return
        self.due = None
        if self.closed:
            return
        limits = self.server.connections
        if phase is BUSY:
            limits.busy(self)
        elif phase is IDLE:
            limits.idle(self, self.due_deadline)
        else:
            limits.waiting(self, self.due_deadline)

    def reset(self) -> None:
        """Close with a reset (``SO_LINGER`` 0): the bytes the client has not taken are dropped at
        once. A plain close would leave them to the kernel, which keeps the connection and its send
        buffer (megabytes) for as long as the client's window stays shut."""
        if not self.closed:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NONE)
            except OSError:
                pass
        self.close()

    def refuse(self, response: http1.Response) -> None:
        """Answer a connection that is not taken, and close it."""
        try:
            self.sock.setblocking(False)
            self.sock.send(closing_response(response.status, response.headers, response.body))
        except OSError:
            pass
        self.sock.close()
        self.closed = True

    def _release(self) -> None:
        self.declared = False
        if self.reserved:
            self.server.release(self.reserved)
            self.reserved = 0

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._release()
        self.body, self.route = [], None
        for watcher in (self.reader, self.writer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self.reader = self.writer = None
        self.out = None
        self.server.connections.closed(self)
        self.server.open.discard(self)
        try:
            self.sock.close()
        except OSError:
            pass


def _readable(connections) -> set[int]:
    """The descriptors of ``connections`` with bytes (or an end of file) to read, without waiting."""
    poller = select.poll()
    for connection in connections:
        poller.register(connection.fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(0)}


def _headers(error: ProtocolError) -> tuple:
    """The extra headers an error's answer carries (``Allow`` for a 405, ``Retry-After`` ...)."""
    return tuple(getattr(error, "headers", ()))


def _load_trim():
    """glibc's ``malloc_trim``, which gives freed heap pages back to the system (None elsewhere)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_MALLOC_TRIM = _load_trim()


def _give_memory_back() -> None:
    """After a burst of large bodies, hand the freed pages back: without it glibc keeps them."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


import_c_accel(globals(), "sidecar.runtime._c_http_server")
