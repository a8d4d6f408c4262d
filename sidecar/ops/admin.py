"""The admin endpoint of a sidecar: a small HTTP/1.1 server on gevent, shared by both sidecars.

Four paths, GET only (404 for another path, 405 for another method):

* ``/healthz``: ``200 ok`` while the sidecar serves, else ``503`` with the reason as one line
  (``draining`` once a signal started the stop): liveness;
* ``/readyz``: ``200 ok`` while a call made now can be served, else ``503`` and why (a consumer whose
  providers are all ejected, or whose wait queue is full, is alive but not ready): readiness;
* ``/metrics``: the Prometheus text exposition format (:mod:`sidecar.ops.metrics`);
* ``/stats``: the stats as JSON.

The server knows nothing of sidecars: it calls ``health() -> (ok, reason)``, ``ready() -> (ok, reason)``,
``stats() -> dict`` and ``metrics() -> str`` for each request. It listens on a TCP address, or on a
Unix socket path (the workers of ``--workers N`` show their stats to their supervisor that way).
The bytes are parsed by :mod:`sidecar.codecs.http1`.

Probes must keep being answered while other clients misbehave (:mod:`sidecar.policies.connections`):
each request must be whole within ``REQUEST_TIMEOUT`` of the connection opening or of the previous
answer (a head trickled a byte at a time gets 408 then, an idle keep-alive connection is closed);
at ``MAX_CONNECTIONS`` a new connection sheds the one that has waited longest for its request; a
connection gets at most ``MAX_REQUESTS`` answers and small head and body limits; an answer that cannot
be sent within ``SEND_TIMEOUT`` ends the connection. Each connection's socket is used by its own
greenlet only: the reaper and the shedding kill that greenlet, which closes its socket itself.
"""

from __future__ import annotations

import logging
import os
import socket as _socket
import time
from collections.abc import Callable

import gevent
from gevent import socket
from gevent.server import StreamServer

from sidecar.codecs import http1
from sidecar.codecs.http1_wire import closing_response
from sidecar.errors import ProtocolError
from sidecar.ops import metrics
from sidecar.ops.metrics import answer
from sidecar.policies.connections import ConnectionLimits

__all__ = ["AdminServer", "for_consumer", "for_provider"]

log = logging.getLogger(__name__)


class AdminServer:
    """Serves ``/healthz``, ``/metrics`` and ``/stats`` on ``listen``: ``(host, port)`` (port 0 picks
    a free one; :attr:`address` is the bound one) or the path of a Unix socket."""

    REQUEST_TIMEOUT = metrics.ADMIN_LIMITS["request_timeout"]
    SEND_TIMEOUT = metrics.ADMIN_LIMITS["send_timeout"]
    MAX_CONNECTIONS = metrics.ADMIN_LIMITS["max_connections"]
    MAX_REQUESTS = metrics.ADMIN_LIMITS["max_requests"]
    MAX_HEAD = metrics.ADMIN_LIMITS["max_head"]
    MAX_BODY = metrics.ADMIN_LIMITS["max_body"]
    REAP_EVERY = 0.25  # seconds between looks for overdue requests

    def __init__(
        self,
        listen: tuple[str, int] | str,
        *,
        health: Callable[[], tuple[bool, str]],
        stats: Callable[[], dict],
        metrics: Callable[[], str],
        ready: Callable[[], tuple[bool, str]] | None = None,
    ):
        self.listen = listen
        self.health, self.stats, self.metrics = health, stats, metrics
        self.ready = ready or health
        self._server: StreamServer | None = None
        self._limits = ConnectionLimits(max_connections=self.MAX_CONNECTIONS)
        self._reaper: gevent.Greenlet | None = None
        self.shed = self.timed_out = 0  # connections closed to make room, and for a late request

    def __repr__(self) -> str:
        return f"AdminServer({self.listen!r}, {'serving' if self._server is not None else 'not started'})"

    @property
    def address(self) -> tuple[str, int] | str:
        """The bound address (after :meth:`start`): ``(host, port)``, or the Unix socket's path."""
        name = self._server.socket.getsockname()
        return name if isinstance(name, str) else name[:2]

    def start(self) -> None:
        self._server = StreamServer(self._listener(), self._handle)
        self._server.start()
        self._reaper = gevent.spawn(self._reap)

    def stop(self, timeout: float = 1.0) -> None:
        """Close the listener and the connections; stopping twice is harmless."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self._reaper.kill()
        server.stop(timeout=timeout)
        if isinstance(self.listen, str):
            try:
                os.unlink(self.listen)
            except OSError:
                pass

    def _listener(self) -> socket.socket:
        if isinstance(self.listen, str):
            try:
                os.unlink(self.listen)  # left by a worker that died
            except FileNotFoundError:
                pass
            sock = socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        else:
            family = _socket.AF_INET6 if ":" in self.listen[0] else _socket.AF_INET
            sock = socket.socket(family, _socket.SOCK_STREAM)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        try:
            sock.bind(self.listen)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        return sock

    # -- one connection ---------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            gevent.sleep(self.REAP_EVERY)
            for connection in self._limits.overdue(time.monotonic()):
                self.timed_out += 1
                connection.kill(_RequestTimeout, block=False)

    def _handle(self, sock: socket.socket, address) -> None:
        me = gevent.getcurrent()
        shed = self._limits.opened(me, deadline=time.monotonic() + self.REQUEST_TIMEOUT)
        if shed is None:  # every connection is being answered: this one waits for no one
            sock.close()
            return
        for victim in shed:
            self.shed += 1
            victim.kill(block=False)
        sock.settimeout(self.SEND_TIMEOUT)  # reads are bounded by the request deadline, sends by this
        conn = http1.ServerConnection(max_head=self.MAX_HEAD, max_body=self.MAX_BODY)
        try:
            self._serve(sock, conn, me)
        except _RequestTimeout:
            if conn.buffered or conn.their_state is not http1.IDLE:  # part of a request came: say why
                late = closing_response(408, _TEXT, b"request not complete in time\n")
                try:
                    sock.sendall(late)
                except (OSError, TimeoutError):
                    pass
        except (OSError, TimeoutError) as e:
            log.debug("admin connection ended: %s", e)
        finally:
            self._limits.closed(me)
            sock.close()

    def _serve(self, sock: socket.socket, conn: http1.ServerConnection, me) -> None:
        request, answered = None, 0
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as e:
                if conn.our_state is http1.SEND_RESPONSE:
                    sock.sendall(conn.send(_reply(e.status_hint, e.reason + "\n")))
                return
            if event is http1.NEED_DATA:
                sock.settimeout(None)  # the reaper ends a request that is late
                data = sock.recv(16 * 1024)
                sock.settimeout(self.SEND_TIMEOUT)
                conn.receive_data(data)
            elif isinstance(event, http1.Request):
                request = event
            elif isinstance(event, http1.EndOfMessage):
                self._limits.busy(me)
                answered += 1
                response = self.respond(request.method, request.target)
                if answered >= self.MAX_REQUESTS:
                    response.headers.append(("Connection", "close"))
                sock.sendall(conn.send(response))
                if conn.our_state is not http1.DONE or answered >= self.MAX_REQUESTS:
                    return
                self._limits.idle(me, deadline=time.monotonic() + self.REQUEST_TIMEOUT)
                conn.start_next_cycle()
                if conn.buffered:  # pipelined requests wait their turn behind other connections
                    gevent.sleep(0)
            elif isinstance(event, http1.ConnectionClosed) or event is http1.PAUSED:
                return

    def respond(self, method: str, target: str) -> http1.Response:
        """The response to ``method target`` (:func:`sidecar.ops.metrics.answer`); a failing callable is
        logged and answered 500."""
        try:
            status, headers, body = answer(method, target, self.health, self.stats, self.metrics, self.ready)
        except Exception:
            log.exception("admin %s %s failed", method, target)
            return _reply(500, "internal error of the admin endpoint\n")
        return http1.Response(status, headers, body)


class _RequestTimeout(Exception):
    """Thrown into a connection's greenlet whose request did not arrive whole in time."""


_TEXT = [("Content-Type", "text/plain; charset=utf-8")]


def _reply(status: int, text: str) -> http1.Response:
    return http1.Response(status, list(_TEXT), text.encode())


def for_provider(sidecar, listen: tuple[str, int] | str) -> AdminServer:
    """The admin server of a :class:`~sidecar.runtime.provider.ProviderSidecar`."""

    def raw() -> dict:
        return {"role": "provider", **sidecar.stats()}

    return AdminServer(
        listen,
        health=sidecar.health,
        stats=lambda: metrics.provider_view(raw()),
        metrics=lambda: metrics.provider_metrics(raw()),
    )


def for_consumer(sidecar, listen: tuple[str, int] | str, *, raw: bool = False) -> AdminServer:
    """The admin server of a :class:`~sidecar.runtime.consumer.ConsumerSidecar`. With ``raw`` its ``/stats``
    are the raw stats a supervisor merges (a worker's, on its Unix socket), else the view."""

    def raw_stats() -> dict:
        return {"role": "consumer", "workers": 1, **sidecar.stats()}

    return AdminServer(
        listen,
        health=sidecar.health,
        ready=sidecar.ready,
        stats=raw_stats if raw else lambda: metrics.consumer_view(raw_stats()),
        metrics=lambda: metrics.consumer_metrics(raw_stats()),
    )
