"""The consumer sidecar: an HTTP/1.1 server on gevent that turns each call into a tunnel call.

One greenlet per client connection runs the loop: bytes from the socket into the pure
:class:`~sidecar.codecs.http1.ServerConnection`, a whole request out of it, :func:`sidecar.codecs.calls.parse_call`,
:meth:`sidecar.runtime.caller.TunnelCaller.call`, :func:`sidecar.codecs.calls.reply_for`, the response back. Requests
pipelined on one connection are answered one after the other, so always in order.

Errors are sorted here, at the I/O boundary: a malformed request gets its 4xx (the codec's status
hint) with a one-line reason and the connection is closed; a call that fails gets the status of its
:class:`~sidecar.runtime.caller.CallError`; anything unexpected is logged and gets a 500, and only if no byte
of the reply went out. A connection silent for ``idle_timeout`` between requests is closed; a request
head that takes longer than ``header_timeout`` gets 408 and is closed.
"""

from __future__ import annotations

import logging
import os
import select
import socket as _socket
import time
from dataclasses import dataclass

import gevent
from gevent import socket
from gevent.pool import Pool
from gevent.server import StreamServer

from sidecar.codecs import calls, http1
from sidecar.codecs.dubbo_messages import Serialization
from sidecar.codecs.http1_wire import encode_head, status_line
from sidecar.codecs.tunnel import hex_id
from sidecar.errors import ProtocolError
from sidecar.runtime.caller import CallError, TunnelCaller
from sidecar.runtime.registry import StaticRegistry, format_address
from sidecar.runtime.settings import ACCESS_LOGGER, ConsumerConfig

__all__ = ["ConsumerSidecar", "listening_socket", "send_all"]

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)

RECV_SIZE = 64 * 1024
# What the reaper checks a connection for: waiting for a request (idle timeout), inside a request head
# (header timeout), inside a body (idle timeout between pieces), or busy with a call (the call's timeout).
_IDLE, _HEAD, _BODY, _BUSY = "idle", "head", "body", "busy"
_SERIALIZATIONS = {"hessian2": Serialization.HESSIAN2, "fastjson": Serialization.FASTJSON}


@dataclass(slots=True, eq=False)
class _Watch:
    """What the reaper checks of one connection: its ``state`` (one of the four above) and the time on
    the monotonic clock by which that state must end (``deadline``; not checked while busy)."""

    state: str
    deadline: float


def send_all(sock: socket.socket, data: bytes) -> None:
    """``sock.sendall(data)`` without gevent's per-call ``getsockopt``: one ``send`` is enough for a
    reply that fits the socket buffer, which is nearly every reply."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def listening_socket(address: tuple[str, int], *, reuse_port: bool = False, backlog: int = 1024) -> socket.socket:
    """A TCP socket listening on ``address``; with ``reuse_port`` several processes may share it
    (``SO_REUSEPORT``: the kernel spreads the connections over them)."""
    family = _socket.AF_INET6 if ":" in address[0] else _socket.AF_INET
    sock = socket.socket(family, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(backlog)
    return sock


class ConsumerSidecar:
    """One consumer process (one worker of ``--workers N``).

    ``listener`` is an already-listening socket (the workers' shared port) or None to bind
    ``config.listen``. ``registry`` defaults to the static list in ``config.providers``. ``keys``
    are the tunnel keys (:func:`sidecar.ops.tunnel_keys.load_keys`); none: datagrams are not tagged.
    """

    REAP_INTERVAL = 0.1  # seconds between the reaper's rounds: the resolution of idle and header timeouts

    def __init__(
        self, config: ConsumerConfig, *, listener=None, registry=None, consumer_id: int | None = None, keys=()
    ):
        self.config = config
        self.registry = registry if registry is not None else StaticRegistry(config.providers)
        if consumer_id is None:
            consumer_id = int.from_bytes(os.urandom(2), "big")
        threshold = max(1, config.threshold // config.workers)
        self.caller = TunnelCaller(
            consumer_id=consumer_id,
            bind=config.tunnel_bind,
            threshold=threshold,
            queue_size=config.queue_size,
            call_timeout=config.call_timeout,
            retry_after=config.retry_after,
            datagram_limit=config.datagram_limit,
            keys=keys,
            replay_window=config.replay_window,
        )
        self._workers = config.workers
        self._listener = listener
        self._server: StreamServer | None = None
        self._serialization = _SERIALIZATIONS[config.serialization]
        self._clients: dict[socket.socket, _Watch] = {}
        self._reaper: gevent.Greenlet | None = None
        self._stopping = False
        self.connections = 0
        self.requests = 0
        self.timeouts = 0

    @property
    def address(self) -> tuple[str, int]:
        return self._server.socket.getsockname()[:2]

    def start(self) -> None:
        self.caller.start()
        self.registry.start(self._providers_changed)
        listener = self._listener
        if listener is None:
            listener = listening_socket(self.config.listen, reuse_port=self.config.workers > 1)
        self._server = StreamServer(listener, self._handle, spawn=Pool(self.config.max_connections))
        self._server.start()
        self._reaper = gevent.spawn(self._reap)

    def _providers_changed(self, entries) -> None:
        workers = self._workers
        entries = [e._replace(threshold=max(1, e.threshold // workers)) if e.threshold else e for e in entries]
        self.caller.set_providers(entries)

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, give the calls in flight up to ``timeout`` seconds, then close. Connections
        waiting for a request are closed at once; the others after the reply they are busy with."""
        if self._server is None:
            return
        self._stopping = True
        self._server.close()
        end = time.monotonic() + timeout
        self._close_idle()
        while self.caller.pending and time.monotonic() < end:
            gevent.sleep(0.01)
        self._close_idle()
        self._server.stop(timeout=max(0.0, end - time.monotonic()))
        self.registry.stop()
        self.caller.stop()
        if self._reaper is not None:
            self._reaper.kill()

    def health(self) -> tuple[bool, str]:
        """``(True, "ok")`` while serving: listening, with at least one provider known; else False and why."""
        if self._stopping:
            return False, "draining"
        if self._server is None or self._server.closed:
            return False, "not listening"
        if not self.caller.balancer.providers:
            return False, "no provider known"
        return True, "ok"

    def stats(self) -> dict:
        return {
            "connections": self.connections,
            "requests": self.requests,
            "timeouts": self.timeouts,
            **self.caller.stats(),
        }

    # -- one connection ---------------------------------------------------------------------------

    def _handle(self, sock: socket.socket, address) -> None:
        self.connections += 1
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass
        config = self.config
        conn = http1.ServerConnection(max_head=config.max_head, max_body=config.max_body)
        watch = _Watch(_IDLE, time.monotonic() + config.idle_timeout)
        self._clients[sock] = watch
        client = format_address(*address[:2]) if config.access_log else None  # None: no access log
        try:
            self._serve(sock, conn, watch, client)
        except (ConnectionError, TimeoutError, OSError) as e:
            log.debug("connection from %s ended: %s", address, e)
        finally:
            del self._clients[sock]
            sock.close()

    def _serve(self, sock: socket.socket, conn: http1.ServerConnection, watch: _Watch, client: str | None) -> None:
        config = self.config
        recv, receive_data, next_event = sock.recv, conn.receive_data, conn.next_event
        request = None
        started = 0.0  # when the request head was read
        body = []
        while True:
            try:
                event = next_event()
            except ProtocolError as e:
                self._send_error(sock, conn, e.status_hint, e.reason)
                return
            kind = type(event)
            if event is http1.NEED_DATA:
                data = recv(RECV_SIZE)
                receive_data(data)
                if data and watch.state is _IDLE:  # the first bytes of a head: it must end in time
                    watch.state, watch.deadline = _HEAD, time.monotonic() + config.header_timeout
                continue
            if kind is http1.Request:
                request, body, started = event, [], time.monotonic()
                watch.state, watch.deadline = _BODY, started + config.idle_timeout
                if (http1.get_header(event.headers, "expect") or "").lower() == "100-continue":
                    send_all(sock, conn.send(http1.InformationalResponse(100)))
            elif kind is http1.Data:
                body.append(event.data)
                watch.deadline = time.monotonic() + config.idle_timeout
            elif kind is http1.EndOfMessage:
                watch.state = _BUSY
                self.requests += 1
                response = self._respond(request, b"".join(body), client, started)
                send_all(sock, conn.send(response))
                if conn.our_state is not http1.DONE or not conn.keep_alive or self._stopping:
                    return
                conn.start_next_cycle()
                request = None
                watch.state, watch.deadline = _IDLE, time.monotonic() + config.idle_timeout
            elif kind is http1.ConnectionClosed or event is http1.PAUSED:
                return

    def _close_idle(self) -> None:
        idle = [sock for sock, watch in self._clients.items() if watch.state is _IDLE]
        waiting = _readable(idle)  # a request already in a socket's buffer came before the stop: served
        for sock in idle:
            if sock.fileno() not in waiting:
                try:
                    sock.shutdown(_socket.SHUT_RDWR)  # its greenlet reads end of file and ends
                except OSError:
                    pass

    def _reap(self) -> None:
        """Every ``REAP_INTERVAL``: close the connections idle past ``idle_timeout``; answer 408 to
        those whose request head or body is late, and close them. Shutting a socket down wakes its
        greenlet with end of file, so no greenlet is ever killed mid-call, and no read needs a timer
        of its own."""
        while True:
            gevent.sleep(self.REAP_INTERVAL)
            now = time.monotonic()
            late = [
                (sock, watch.state)
                for sock, watch in self._clients.items()
                if watch.state is not _BUSY and watch.deadline < now
            ]
            for sock, state in late:
                try:
                    if state is not _IDLE:
                        sock.send(_canned(408, "the request did not arrive in time"))
                    sock.shutdown(_socket.SHUT_RDWR)
                except OSError:
                    pass
                self.timeouts += 1

    def _respond(
        self, request: http1.Request, body: bytes, client: str | None = None, started: float = 0.0
    ) -> http1.Response:
        """The reply to one call. With ``client`` (the access log is on) the call is logged too,
        timed from ``started``; without it, the access log costs this method one ``is None`` check."""
        form = True
        frame = provider = tunnel_id = None
        try:
            call = calls.parse_call(request.method, request.target, request.headers, body)
            form = call.form
            serialization = self._serialization
            frame, provider = self.caller.call(
                lambda request_id: calls.encode_call(call, request_id, serialization=serialization)
            )
            reply = calls.reply_for(call, frame)
            if self.config.provider_header:
                reply.headers.append(("X-Provider", provider))
        except CallError as e:
            tunnel_id, provider = e.request_id, e.provider
            if e.status == 504:
                log.warning("%s", e.reason, extra={"request_id": hex_id(tunnel_id), "provider": provider})
            reply = calls.error_reply(e.status, e.reason, form=form, headers=e.headers)
        except ProtocolError as e:
            reply = calls.error_reply(e.status_hint, e.reason, form=form, headers=getattr(e, "headers", ()))
        except Exception:
            log.exception("call failed: %s %s", request.method, request.target)
            reply = calls.error_reply(500, "internal error in the consumer sidecar", form=form)
        headers = reply.headers
        request_id = http1.get_header(request.headers, "x-request-id")
        if request_id is not None:
            headers = [*headers, ("X-Request-Id", request_id)]
        if client is not None:
            _log_access(request, reply.status, client, started, frame, tunnel_id, provider, request_id)
        return http1.Response(reply.status, headers, reply.body)

    def _send_error(self, sock: socket.socket, conn: http1.ServerConnection, status: int, reason: str) -> None:
        try:
            if conn.our_state is http1.SEND_RESPONSE:
                reply = calls.error_reply(status, reason)
                data = conn.send(http1.Response(reply.status, list(reply.headers), reply.body))
            elif conn.our_state is http1.IDLE:  # no request to answer yet (a head that never ended)
                data = _canned(status, reason)
            else:
                return  # a reply is partly out: closing is all we can do
            send_all(sock, data)
        except (ProtocolError, OSError) as e:
            log.debug("could not send %d: %s", status, e)


def _log_access(request, status, client, started, frame, tunnel_id, provider, client_request_id) -> None:
    """One line on the access log for a call answered ``status``. The tunnel request id comes from
    the Dubbo response ``frame`` (header bytes 4 to 12) or, for a call that ended without one, from
    its :class:`CallError` (``tunnel_id``)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = {}
    if frame is not None and len(frame) >= 12:
        tunnel_id = int.from_bytes(frame[4:12], "big")
    if tunnel_id is not None:
        fields["request_id"] = hex_id(tunnel_id)
    if client_request_id is not None:
        fields["client_request_id"] = client_request_id
    fields.update(
        client=client,
        method=request.method,
        path=request.target,
        status=status,
        ms=round((time.monotonic() - started) * 1000, 3),
    )
    if provider is not None:
        fields["provider"] = provider
    access_log.info("%s %s %d", request.method, request.target, status, extra=fields)


def _readable(socks: list[socket.socket]) -> set[int]:
    """The file descriptors of ``socks`` with bytes (or an end of file) to read, without waiting."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock.fileno(), select.POLLIN)
    return {fd for fd, _ in poller.poll(0)}


def _canned(status: int, reason: str) -> bytes:
    """A complete error response that closes the connection, for when there is no request to answer."""
    reply = calls.error_reply(status, reason)
    headers = [*reply.headers, ("Content-Length", str(len(reply.body))), ("Connection", "close")]
    return encode_head(status_line(reply.status, "", True), headers) + reply.body
