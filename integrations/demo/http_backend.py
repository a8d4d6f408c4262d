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
import sys
import time
from typing import Any

import gevent

from integrations.demo.hello_service import SERVICE, java_string_hash
from integrations.demo.serving import serve
from integrations.demo.watchers import Connection, DelayLine, Server
from sidecar.codecs import http1
from sidecar.errors import ProtocolError

__all__ = ["HttpBackend", "main"]

log = logging.getLogger(__name__)

_TEXT = [("Content-Type", "text/plain; charset=utf-8")]


class HttpBackend:
    """The backend on gevent's loop (:mod:`integrations.demo.watchers`: callbacks, no greenlet per
    connection).

    ``listener`` is an address ``(host, port)`` or an already-bound socket. ``start()`` binds and
    returns at once; ``stop()`` stops accepting and waits for the calls in progress; ``address`` is the
    bound ``(host, port)``.
    """

    LATENCY = 0.050  # seconds each call takes
    CAPACITY = 200  # calls served at once, over all connections
    STOP_TIMEOUT = 5.0  # seconds stop() waits for calls in progress
    MAX_CONNECTIONS = 10_000  # accepting pauses at this many open connections
    BACKLOG = 1024

    def __init__(self, listener: Any, *, latency: float = LATENCY, capacity: int = CAPACITY):
        if latency < 0 or capacity < 0:
            raise ValueError("latency and capacity must not be negative")
        self.latency = latency
        self.capacity = capacity
        self.in_progress = 0
        self.answered = 0
        self.refused = 0
        self._server = Server(
            listener, _Connection, owner=self, backlog=self.BACKLOG, max_connections=self.MAX_CONNECTIONS
        )
        # Every call takes the same time: the calls wait in one line, on one timer.
        self._line = DelayLine(latency, self._serve_due)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    def start(self) -> None:
        self._server.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._server.close()
        deadline = time.monotonic() + timeout
        while self.in_progress and time.monotonic() < deadline:
            gevent.sleep(0.01)
        for connection in list(self._server.connections):
            connection.close_after_writes()
        while self._server.connections and time.monotonic() < deadline:
            gevent.sleep(0.01)
        for connection in list(self._server.connections):
            connection.close()
        self._line.close()

    def take(self, connection: _Connection, request: http1.Request, body: bytes) -> None:
        """A whole request from ``connection``: answer it at once (an error, or no latency) or after
        the latency, through ``connection.answer``."""
        form = self._form(request, body)
        if isinstance(form, http1.Response):
            connection.answer(request, form)
            return
        if self.in_progress >= self.capacity:
            self.refused += 1
            refusal = _reply(503, f"capacity exhausted: {self.in_progress} of {self.capacity} calls in progress")
            connection.answer(request, refusal)
            return
        self.in_progress += 1
        parameter = form["parameter"]
        if self.latency:
            self._line.add((connection, request, parameter))
        else:
            self._serve_due((connection, request, parameter))

    def _serve_due(self, item: tuple[_Connection, http1.Request, str]) -> None:
        connection, request, parameter = item
        try:
            value = java_string_hash(parameter)
        finally:
            self.in_progress -= 1
        self.answered += 1
        connection.answer(request, http1.Response(200, list(_TEXT), str(value).encode("ascii")))

    @staticmethod
    def _form(request: http1.Request, body: bytes) -> dict[str, str] | http1.Response:
        """The form of the call, or the error answer to a request that is not the form call."""
        if request.target.partition("?")[0] != "/":
            return _reply(404, f"no such path: {request.target[:100]}")
        if request.method != "POST":
            return _reply(405, "only POST / is served", [("Allow", "POST")])
        try:
            form = http1.parse_form(body)
        except ProtocolError as exc:
            return _reply(400, exc.reason)
        problem = _form_problem(form)
        return form if problem is None else _reply(400, problem)


class _Connection(Connection):
    """One client connection: requests parsed as their bytes come, answered one after the other, in
    order (reading pauses while a request waits for its answer)."""

    def __init__(self, server: Server, sock: Any, address: Any):
        super().__init__(server, sock, address)
        self.backend: HttpBackend = server.owner
        self.conn = http1.ServerConnection()
        self.request: http1.Request | None = None
        self.body: list[bytes] = []
        self.waiting = False  # a request was taken and its answer is not written yet
        self.processing = False  # in _process: an answer given at once lets its loop go on

    def received(self, data: bytes) -> None:
        try:
            self.conn.receive_data(data)
        except ProtocolError as exc:  # bytes after the end of the stream
            log.debug("connection from %s: %s", self.peer, exc)
            self.close()
            return
        self._process()

    def _process(self) -> None:
        self.processing = True
        try:
            self._events()
        finally:
            self.processing = False

    def _events(self) -> None:
        conn = self.conn
        while not (self.waiting or self.closed or self.closing):
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                if conn.our_state is http1.SEND_RESPONSE:
                    self.write(conn.send(_reply(exc.status_hint, exc.reason)))
                self.close_after_writes()
                return
            kind = type(event)
            if event is http1.NEED_DATA:
                return
            if kind is http1.Request:
                self.request, self.body = event, []
            elif kind is http1.Data:
                self.body.append(event.data)
            elif kind is http1.EndOfMessage:
                self.waiting = True
                self.pause_reading()  # what comes next waits in the kernel until this is answered
                request, body = self.request, b"".join(self.body)
                self.request, self.body = None, []
                self.backend.take(self, request, body)
            else:  # ConnectionClosed (PAUSED cannot come: a request is answered before reading on)
                self.close_after_writes()
                return

    def answer(self, request: http1.Request, response: http1.Response) -> None:
        """Write the answer to ``request`` (echoing its ``X-Request-Id``), then take the next request."""
        if self.closed:
            return
        request_id = http1.get_header(request.headers, "x-request-id")
        if request_id is not None:
            response.headers.append(("X-Request-Id", request_id))
        conn = self.conn
        self.write(conn.send(response))
        self.waiting = False
        if conn.our_state is not http1.DONE:
            self.close_after_writes()
            return
        conn.start_next_cycle()
        self.resume_reading()
        if not self.processing:
            self._process()


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
