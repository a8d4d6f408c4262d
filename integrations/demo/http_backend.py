"""A plain HTTP backend for the benchmark's form call: what nginx proxies to in ``sidecar bench``.

    python -m integrations.demo.http_backend --port 0 --latency-ms 50 --capacity 200

It answers the same call as the consumer sidecar, without Dubbo: ``POST /`` with an
``application/x-www-form-urlencoded`` body whose ``interface`` is ``IHelloService``, ``method`` is
``hash``, ``parameterTypesString`` is ``Ljava/lang/String;`` and ``parameter`` is the string; the
reply is ``200`` with the decimal ``String.hashCode`` of the parameter
(:func:`integrations.demo.hello_service.java_string_hash`), after ``--latency-ms``. At most
``--capacity`` calls (over all connections) are served at once; a call beyond that gets ``503`` at
once, as the demo Dubbo service answers status 100. A request header ``X-Request-Id`` is echoed in the
reply. Other requests: a body that is not a valid form or names another service or method 400, another
path 404, another method 405.

HTTP/1.1 comes from :class:`sidecar.codecs.http1.ServerConnection`: keep-alive, and pipelined requests
answered one after the other, in order. Once bound it prints ``listening HOST:PORT`` (``--port 0`` picks
a free port). SIGTERM or SIGINT stops accepting, lets the calls in progress finish (up to
``STOP_TIMEOUT`` seconds) and exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import socket as _socket
import sys
import time
from typing import Any

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.server import StreamServer

from integrations.demo.hello_service import SERVICE, java_string_hash
from integrations.demo.serving import serve
from sidecar.codecs import http1
from sidecar.errors import ProtocolError

__all__ = ["HttpBackend", "main"]

log = logging.getLogger(__name__)

_TEXT = [("Content-Type", "text/plain; charset=utf-8")]


class HttpBackend:
    """The backend on a gevent :class:`StreamServer`.

    ``listener`` is an address ``(host, port)`` or an already-bound socket. ``start()`` binds and
    returns at once; ``stop()`` stops accepting and waits for the calls in progress; ``address`` is the
    bound ``(host, port)``.
    """

    LATENCY = 0.050  # seconds each call takes
    CAPACITY = 200  # calls served at once, over all connections
    STOP_TIMEOUT = 5.0  # seconds stop() waits for calls in progress
    MAX_CONNECTIONS = 10_000  # a full pool stops accepting
    RECV_SIZE = 64 * 1024
    BACKLOG = 1024

    def __init__(self, listener: Any, *, latency: float = LATENCY, capacity: int = CAPACITY):
        if latency < 0 or capacity < 0:
            raise ValueError("latency and capacity must not be negative")
        self.latency = latency
        self.capacity = capacity
        self.in_progress = 0
        self.answered = 0
        self.refused = 0
        self._server = StreamServer(listener, self._handle, spawn=Pool(self.MAX_CONNECTIONS), backlog=self.BACKLOG)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address[:2]

    def start(self) -> None:
        self._server.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._server.close()
        deadline = time.monotonic() + timeout
        while self.in_progress and time.monotonic() < deadline:
            gevent.sleep(0.01)
        self._server.stop(timeout=0)

    # -- one connection ---------------------------------------------------------------------------

    def _handle(self, sock: Any, address: Any) -> None:
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            self._serve(sock, http1.ServerConnection())
        except OSError as exc:
            log.debug("connection from %s ended: %s", address, exc)
        finally:
            sock.close()

    def _serve(self, sock: Any, conn: http1.ServerConnection) -> None:
        request, body = None, []
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                if conn.our_state is http1.SEND_RESPONSE:
                    sock.sendall(conn.send(_reply(exc.status_hint, exc.reason)))
                return
            kind = type(event)
            if event is http1.NEED_DATA:
                conn.receive_data(sock.recv(self.RECV_SIZE))
            elif kind is http1.Request:
                request, body = event, []
            elif kind is http1.Data:
                body.append(event.data)
            elif kind is http1.EndOfMessage:
                response = self._respond(request, b"".join(body))
                sock.sendall(conn.send(response))
                if conn.our_state is not http1.DONE:
                    return
                conn.start_next_cycle()
            else:  # ConnectionClosed (PAUSED cannot come: every request is answered before reading on)
                return

    def _respond(self, request: http1.Request, body: bytes) -> http1.Response:
        response = self._answer(request, body)
        request_id = http1.get_header(request.headers, "x-request-id")
        if request_id is not None:
            response.headers.append(("X-Request-Id", request_id))
        return response

    def _answer(self, request: http1.Request, body: bytes) -> http1.Response:
        if request.target.partition("?")[0] != "/":
            return _reply(404, f"no such path: {request.target[:100]}")
        if request.method != "POST":
            return _reply(405, "only POST / is served", [("Allow", "POST")])
        try:
            form = http1.parse_form(body)
        except ProtocolError as exc:
            return _reply(400, exc.reason)
        problem = _form_problem(form)
        if problem:
            return _reply(400, problem)
        if self.in_progress >= self.capacity:
            self.refused += 1
            return _reply(503, f"capacity exhausted: {self.in_progress} of {self.capacity} calls in progress")
        self.in_progress += 1
        try:
            if self.latency:
                gevent.sleep(self.latency)
            value = java_string_hash(form["parameter"])
        finally:
            self.in_progress -= 1
        self.answered += 1
        return http1.Response(200, list(_TEXT), str(value).encode("ascii"))


def _form_problem(form: dict[str, str]) -> str | None:
    if form.get("interface") != SERVICE:
        return f"unknown interface {form.get('interface', '')[:100]!r}"
    if form.get("method") != "hash":
        return f"unknown method {form.get('method', '')[:100]!r} (this backend serves hash)"
    if form.get("parameterTypesString") != "Ljava/lang/String;":
        return "hash takes one Ljava/lang/String;"
    if "parameter" not in form:
        return "missing field 'parameter'"
    return None


def _reply(status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> http1.Response:
    return http1.Response(status, [*_TEXT, *(headers or [])], (reason + "\n").encode("utf-8"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m integrations.demo.http_backend",
        description="A plain HTTP/1.1 backend answering the benchmark's form call (IHelloService.hash).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind; 0 picks a free one (default 8080)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="time each call takes (default 50)")
    parser.add_argument(
        "--capacity", type=int, default=HttpBackend.CAPACITY, help="calls served at once; beyond it 503 (default 200)"
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level on stderr (default WARNING)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(
        "http_backend",
        lambda: HttpBackend((args.host, args.port), latency=args.latency_ms / 1000, capacity=args.capacity),
    )


if __name__ == "__main__":
    sys.exit(main())
