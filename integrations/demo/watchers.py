"""Serving connections on gevent's loop with watchers and callbacks: no greenlet per connection, no
greenlet switch per read.

The demo Dubbo service and the plain HTTP backend share it, so that a call costs them little next to
the sidecars they stand behind in ``sidecar bench``:

* :class:`Server` accepts on a listening socket from a read watcher and gives each new socket to a
  :class:`Connection` that the owner's ``make(server, sock, address)`` builds, then starts it.
* :class:`Connection` reads from its own read watcher and hands the bytes to :meth:`Connection.received`
  (``b""`` at the end of the stream); :meth:`Connection.write` queues bytes, which go out in one
  ``send`` per turn of the loop (a write watcher takes over while the socket buffer is full).
* :class:`DelayLine` runs callbacks a fixed delay after they were added, in the order added, on one
  timer: every call of a service takes the same time, so the due times are in order.

Everything runs in the hub's callbacks, one after another: a callback must not block (no
``gevent.sleep``, no blocking socket call).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gevent.hub import get_hub

__all__ = ["Connection", "DelayLine", "Server"]

log = logging.getLogger(__name__)

_READ, _WRITE = 1, 2
ACCEPTS_PER_TURN = 64  # connections accepted per turn of the loop


class Server:
    """Accepts on ``listener`` (an address ``(host, port)`` or an already-bound socket) and gives each
    connection to ``make(server, sock, address)``, which returns a :class:`Connection` (then started).

    :attr:`connections` holds the open ones (a connection leaves it when it closes); :attr:`owner` is
    whatever the connections need to reach (the service). With ``max_connections`` open, accepting
    pauses (new connections wait in the listen backlog) until one closes.
    """

    def __init__(
        self,
        listener: Any,
        make: Callable[[Server, socket.socket, Any], Connection],
        *,
        owner: Any = None,
        backlog: int = 1024,
        max_connections: int = 10_000,
    ):
        self._listener_spec = listener
        self.make = make
        self.owner = owner
        self.backlog = backlog
        self.max_connections = max_connections
        self.loop = get_hub().loop
        self.listener: Any = None
        self.connections: set[Connection] = set()
        self._accepting = None

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    def start(self) -> None:
        """Bind (unless given a socket), listen and accept from the loop."""
        spec = self._listener_spec
        if not isinstance(spec, tuple):  # a bound socket (the standard library's or gevent's)
            sock = spec
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in spec[0] else socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(spec)
                sock.listen(self.backlog)
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        self.listener = sock
        self._accepting = self.loop.io(sock.fileno(), _READ)
        self._accepting.start(self._accept)

    def close(self) -> None:
        """Stop accepting (the connections go on); twice is harmless."""
        if self._accepting is not None:
            self._accepting.stop()
            self._accepting.close()
            self._accepting = None
            self.listener.close()

    def closed(self, connection: Connection) -> None:
        """``connection`` has closed: forget it, and accept again if it made room."""
        self.connections.discard(connection)
        if self._accepting is not None and not self._accepting.active:
            self._accepting.start(self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            if len(self.connections) >= self.max_connections:
                self._accepting.stop()  # until a connection closes
                return
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, or the listener closed under us
                log.warning("accept failed: %s", exc)
                return
            try:
                connection = self.make(self, sock, address)
                self.connections.add(connection)
                connection.start()
            except Exception:
                log.exception("cannot serve the connection from %s", address)
                sock.close()


class Connection:
    """One accepted connection; subclasses say what the bytes mean in :meth:`received`, and may act on
    the close in :meth:`closed_hook`.

    :meth:`write` queues bytes; they leave at the end of the loop's turn, together with everything else
    written meanwhile, in one ``send``. :meth:`close_after_writes` closes once the queue is out; and
    :meth:`close` at once.
    """

    RECV_SIZE = 64 * 1024

    def __init__(self, server: Server, sock: socket.socket, address: Any):
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        try:
            host, port = address[:2]
            self.peer = f"{host}:{port}"
        except (TypeError, ValueError):
            self.peer = "?"
        self.closed = False
        self.closing = False  # close once the queued bytes are out
        self.eof = False  # the peer closed its side: nothing more to read
        self.queued: list[bytes] = []  # written, not yet given to send
        self.out: memoryview | None = None  # what the socket has not taken of the last send
        self._flush_pending = False
        loop = server.loop
        self.loop = loop
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.reader = loop.io(self.fd, _READ)
        self.writer = loop.io(self.fd, _WRITE)

    def start(self) -> None:
        """Begin reading (the server calls it once the connection is built)."""
        self.reader.start(self._readable)

    # -- what subclasses define ---------------------------------------------------------------------

    def received(self, data: bytes) -> None:
        """Bytes read from the peer; ``b""`` when it closed its side."""
        raise NotImplementedError

    def closed_hook(self) -> None:
        """Called once when the connection closes."""

    # -- reading ------------------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = self.sock.recv(self.RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("connection from %s: %s", self.peer, exc)
            self.close()
            return
        if not data:
            self.eof = True
            self.reader.stop()
        try:
            self.received(data)
        except Exception:  # a bug: this connection ends, the server goes on
            log.exception("connection from %s failed", self.peer)
            self.close()

    def pause_reading(self) -> None:
        self.reader.stop()

    def resume_reading(self) -> None:
        if not self.closed and not self.eof and not self.reader.active:
            self.reader.start(self._readable)

    # -- writing ------------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Writes not yet taken by the socket (queued, plus the rest of one partly sent)."""
        return len(self.queued) + (self.out is not None)

    def write(self, data: bytes) -> None:
        if self.closed or self.closing:
            return
        self.queued.append(data)
        if not self._flush_pending and self.out is None:
            self._flush_pending = True
            self.loop.run_callback(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self.closed or self.out is not None:
            return
        if self.queued:
            data = self.queued[0] if len(self.queued) == 1 else b"".join(self.queued)
            self.queued = []
            self.out = memoryview(data)
        self._send()

    def _send(self) -> None:
        out = self.out
        if out is not None:
            try:
                sent = self.sock.send(out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                log.debug("writing to %s: %s", self.peer, exc)
                self.close()
                return
            if sent < len(out):
                self.out = out[sent:]
                if not self.writer.active:
                    self.writer.start(self._writable)
                return
            self.out = None
        if self.writer.active:
            self.writer.stop()
        if self.queued:
            self._flush()
        elif self.closing:
            self.close()

    def _writable(self) -> None:
        if self.out is None and self.queued:
            self._flush()
        else:
            self._send()

    # -- closing ------------------------------------------------------------------------------------

    def close_after_writes(self) -> None:
        """Close once what is queued has gone out (at once when nothing is)."""
        if self.closed:
            return
        self.closing = True
        self.reader.stop()
        if not self.queued and self.out is None:
            self.close()

    def close(self) -> None:
        """Close now, dropping what is queued; twice is harmless."""
        if self.closed:
            return
        self.closed = True
        self.queued = []
        self.out = None
        for watcher in (self.reader, self.writer):
            watcher.stop()
            watcher.close()
        try:
            self.sock.close()
        finally:
            self.server.closed(self)
            self.closed_hook()


class DelayLine:
    """Calls ``callback(item)`` ``delay`` seconds after :meth:`add` of each item, in the order added,
    from one timer of the hub's loop (a timer or a greenlet per item costs more than the item)."""

    def __init__(self, delay: float, callback: Callable[[Any], object]):
        self.delay = delay
        self.callback = callback
        self.loop = get_hub().loop
        self._due: deque[tuple[float, Any]] = deque()
        self._timer = None

    def __len__(self) -> int:
        return len(self._due)

    def add(self, item: Any) -> None:
        self._due.append((time.monotonic() + self.delay, item))
        if len(self._due) == 1:
            self._arm(self.delay)

    def _arm(self, wait: float) -> None:
        if self._timer is not None:
            self._timer.close()
        # The loop's clock is the one read when this turn began: brought up to now, the timer does not
        # fire before the first item is due (and find nothing to do).
        self.loop.update_now()
        self._timer = self.loop.timer(max(0.0, wait))
        self._timer.start(self._fire)

    def _fire(self) -> None:
        due = self._due
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, item = due.popleft()
            try:
                self.callback(item)
            except Exception:  # a bug in one item must not stop the line
                log.exception("delayed call failed")
        if due:
            self._arm(due[0][0] - now)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None
