"""The consumer sidecar: an HTTP/1.1 server on gevent that turns each call into a tunnel call.

One greenlet per client connection runs the loop: bytes from the socket into the pure
:class:`~sidecar.http1.ServerConnection`, a whole request out of it, :func:`sidecar.calls.parse_call`,
:meth:`sidecar.caller.TunnelCaller.call`, :func:`sidecar.calls.reply_for`, the response back. Requests
pipelined on one connection are answered one after the other, so always in order.

Errors are sorted here, at the I/O boundary: a malformed request gets its 4xx (the codec's status
hint) with a one-line reason and the connection is closed; a call that fails gets the status of its
:class:`~sidecar.caller.CallError`; anything unexpected is logged and gets a 500, and only if no byte
of the reply went out. A connection silent for ``idle_timeout`` between requests is closed; a request
head that takes longer than ``header_timeout`` gets 408 and is closed.
"""

from __future__ import annotations

import logging
import os
import socket as _socket
import time

import gevent
from gevent import socket
from gevent.pool import Pool
from gevent.server import StreamServer

from sidecar import calls, http1
from sidecar.caller import CallError, TunnelCaller
from sidecar.config import ConsumerConfig
from sidecar.dubbo_messages import Serialization
from sidecar.errors import ProtocolError
from sidecar.http1_wire import encode_head, status_line
from sidecar.registry import StaticRegistry

__all__ = ["ConsumerSidecar", "listening_socket"]

log = logging.getLogger(__name__)

RECV_SIZE = 64 * 1024
_SERIALIZATIONS = {"hessian2": Serialization.HESSIAN2, "fastjson": Serialization.FASTJSON}


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
    ``config.listen``. ``registry`` defaults to the static list in ``config.providers``.
    """

    def __init__(self, config: ConsumerConfig, *, listener=None, registry=None, consumer_id: int | None = None):
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
        )
        self._workers = config.workers
        self._listener = listener
        self._server: StreamServer | None = None
        self._serialization = _SERIALIZATIONS[config.serialization]
        self.connections = 0
        self.requests = 0

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

    def _providers_changed(self, entries) -> None:
        workers = self._workers
        entries = [e._replace(threshold=max(1, e.threshold // workers)) if e.threshold else e for e in entries]
        self.caller.set_providers(entries)

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, give the calls in flight up to ``timeout`` seconds, then close."""
        if self._server is None:
            return
        self._server.close()
        end = time.monotonic() + timeout
        while self.caller.pending and time.monotonic() < end:
            gevent.sleep(0.01)
        self._server.stop(timeout=max(0.0, end - time.monotonic()))
        self.registry.stop()
        self.caller.stop()

    def stats(self) -> dict:
        return {"connections": self.connections, "requests": self.requests, **self.caller.stats()}

    # -- one connection ---------------------------------------------------------------------------

    def _handle(self, sock: socket.socket, address) -> None:
        self.connections += 1
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass
        config = self.config
        conn = http1.ServerConnection(max_head=config.max_head, max_body=config.max_body)
        try:
            self._serve(sock, conn)
        except (ConnectionError, TimeoutError, OSError) as e:
            log.debug("connection from %s ended: %s", address, e)
        finally:
            sock.close()

    def _serve(self, sock: socket.socket, conn: http1.ServerConnection) -> None:
        config = self.config
        idle, header_timeout = config.idle_timeout, config.header_timeout
        head_deadline = None
        request = None
        body = []
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as e:
                self._send_error(sock, conn, e.status_hint, e.reason)
                return
            kind = type(event)
            if event is http1.NEED_DATA:
                if conn.their_state is http1.IDLE and conn.buffered and head_deadline is None:
                    head_deadline = time.monotonic() + header_timeout
                if head_deadline is not None:
                    timeout = head_deadline - time.monotonic()
                    if timeout <= 0:
                        self._send_error(sock, conn, 408, "the request head did not arrive in time")
                        return
                else:
                    timeout = idle
                sock.settimeout(timeout)
                try:
                    data = sock.recv(RECV_SIZE)
                except TimeoutError:
                    if head_deadline is not None or request is not None:
                        self._send_error(sock, conn, 408, "the request did not arrive in time")
                    return
                conn.receive_data(data)
                if not data:
                    continue
                if head_deadline is None and conn.their_state is http1.IDLE:
                    head_deadline = time.monotonic() + header_timeout
                continue
            if kind is http1.Request:
                request, body, head_deadline = event, [], None
                if (http1.get_header(event.headers, "expect") or "").lower() == "100-continue":
                    sock.sendall(conn.send(http1.InformationalResponse(100)))
            elif kind is http1.Data:
                body.append(event.data)
            elif kind is http1.EndOfMessage:
                self.requests += 1
                response = self._respond(request, b"".join(body))
                sock.sendall(conn.send(response))
                if conn.our_state is not http1.DONE or not conn.keep_alive:
                    return
                conn.start_next_cycle()
                request = None
            elif kind is http1.ConnectionClosed or event is http1.PAUSED:
                return

    def _respond(self, request: http1.Request, body: bytes) -> http1.Response:
        form = True
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
        return http1.Response(reply.status, headers, reply.body)

    def _send_error(self, sock: socket.socket, conn: http1.ServerConnection, status: int, reason: str) -> None:
        reply = calls.error_reply(status, reason)
        try:
            if conn.our_state is http1.SEND_RESPONSE:
                data = conn.send(http1.Response(reply.status, list(reply.headers), reply.body))
            elif conn.our_state is http1.IDLE:  # no request to answer yet (a head that never ended)
                headers = [*reply.headers, ("Content-Length", str(len(reply.body))), ("Connection", "close")]
                data = encode_head(status_line(reply.status, "", True), headers) + reply.body
            else:
                return  # a reply is partly out: closing is all we can do
            sock.sendall(data)
        except (ProtocolError, OSError) as e:
            log.debug("could not send %d: %s", status, e)
