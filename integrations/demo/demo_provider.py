"""The demo Dubbo service as a server: ``IHelloService`` over Dubbo 2 on gevent.

    python -m integrations.demo.demo_provider --port 20880 --latency-ms 50 --capacity 200

Each connection carries many calls at once, matched by request id, answered as they finish (not in
order). Each call waits ``--latency-ms`` before its answer; at most ``--capacity`` calls (over all
connections) are served at once and a call beyond that is refused at once with status 100
(``SERVER_THREADPOOL_EXHAUSTED_ERROR``), as a Java provider's full thread pool does. Heartbeats are
answered and sent: after ``--heartbeat-s`` seconds without reading anything the provider sends a
heartbeat, and it closes a connection that stays silent three times as long. Calls are answered in
the serialization they came in (Hessian 2 or fastjson); ``--serialization`` is what the provider's
own heartbeats use. What each call gets is decided by :mod:`integrations.demo.hello_service`.

Once bound it prints one line, ``listening HOST:PORT`` (``--port 0`` picks a free port). SIGTERM or
SIGINT stops accepting, lets the calls in progress finish (up to ``STOP_TIMEOUT`` seconds), sends
their answers, closes the connections and exits with status 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from typing import Any

import gevent

from integrations.demo.hello_service import HelloService
from integrations.demo.serving import serve
from integrations.demo.watchers import Connection, DelayLine, Server
from sidecar.codecs.dubbo import CLOSED, NEED_DATA, DubboDecoder, encode, parse
from sidecar.codecs.dubbo_messages import Event, Frame, Request, Response, Serialization, Status
from sidecar.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["DemoProvider", "main"]

log = logging.getLogger(__name__)

_SERIALIZATIONS = {"hessian2": Serialization.HESSIAN2, "fastjson": Serialization.FASTJSON}


class DemoProvider:
    """A Dubbo 2 server for :class:`HelloService` on gevent's loop (:mod:`integrations.demo.watchers`:
    callbacks, no greenlet per connection).

    ``listener`` is an address ``(host, port)`` or an already-bound socket. ``start()`` binds and
    returns at once; ``stop()`` drains and closes; ``address`` is the bound ``(host, port)``.
    """

    LATENCY = 0.050  # seconds each call takes
    CAPACITY = 200  # calls served at once, over all connections (a Java provider's default threads)
    HEARTBEAT = 60.0  # seconds without reading before a heartbeat; 3x that closes the connection
    STOP_TIMEOUT = 5.0  # seconds stop() waits for calls in progress
    MAX_CONNECTIONS = 1000  # accepting pauses at this many open connections
    OUTBOX = 4096  # replies queued per connection; a caller that leaves more unread is cut off

    def __init__(
        self,
        listener: Any,
        *,
        latency: float = LATENCY,
        capacity: int = CAPACITY,
        serialization: int = Serialization.HESSIAN2,
        version: str | None = None,
        heartbeat: float = HEARTBEAT,
    ):
        if latency < 0 or capacity < 0 or heartbeat < 0:
            raise ValueError("latency, capacity and heartbeat must not be negative")
        self.latency = latency
        self.capacity = capacity
        self.heartbeat = heartbeat
        self.in_progress = 0
        self.service = HelloService(version=version, serialization=serialization)
        self._server = Server(listener, _Connection, owner=self, max_connections=self.MAX_CONNECTIONS)
        # The delay line: calls in the order they arrived, each due ``latency`` after its arrival, on
        # one timer (a greenlet and a timer per call cost more CPU than the call itself).
        self._line = DelayLine(latency, self._serve_due)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.address
        return host, port

    def start(self) -> None:
        self._server.start()
        host, port = self.address
        self.service = dataclasses.replace(self.service, host=host, port=port)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let the calls in progress finish, then close every connection once what
        is queued for it has gone out."""
        timeout = self.STOP_TIMEOUT if timeout is None else timeout
        self._server.close()
        end = time.monotonic() + timeout
        while self.in_progress and time.monotonic() < end:
            gevent.sleep(0.01)
        for connection in list(self._server.connections):
            connection.close_after_writes()
        while self._server.connections and time.monotonic() < end:
            gevent.sleep(0.01)
        for connection in list(self._server.connections):
            connection.close()
        self._line.close()

    def dispatch(self, connection: _Connection, frame: Frame) -> None:
        """Act on one frame read from ``connection``."""
        try:
            message = parse(frame)
        except RemoteProtocolError as exc:
            if frame.is_request and frame.two_way and not frame.is_event:
                connection.send(self.service.reject(frame, exc.reason))
            else:
                log.warning("dropped an undecodable frame from %s: %s", connection.peer, exc.reason)
            return
        if isinstance(message, Event):
            reply = self.service.on_event(message)
            if reply is not None:
                connection.send(reply)
        elif isinstance(message, Request):
            if self.in_progress >= self.capacity:
                if message.two_way:
                    connection.send(self.service.refuse(message, self.in_progress, self.capacity))
                return
            self.in_progress += 1
            if self.latency:
                self._line.add((connection, message))
            else:
                self._serve(connection, message)
        # a Response from a caller answers nothing we sent: ignored

    def _serve_due(self, item: tuple[_Connection, Request]) -> None:
        self._serve(*item)

    def _serve(self, connection: _Connection, request: Request) -> None:
        try:
            response = self.service.answer(request)
        except Exception as exc:  # a bug here: logged, and the caller gets SERVER_ERROR
            log.exception("call %d failed", request.request_id)
            response = Response(
                request.request_id,
                Status.SERVER_ERROR,
                error_message=f"demo provider error: {exc!r}",
                serialization=request.serialization,
            )
        finally:
            self.in_progress -= 1
        if request.two_way:
            connection.send(response)


class _Connection(Connection):
    """One caller's TCP connection: frames decoded as they are read, replies queued, and a heartbeat
    timer."""

    def __init__(self, server: Server, sock: Any, address: Any):
        super().__init__(server, sock, address)
        self.provider: DemoProvider = server.owner
        self.decoder = DubboDecoder(parse_bodies=False)
        self.last_read = time.monotonic()
        self._beats = 0
        self._last_beat = 0.0
        self._beater = None
        interval = self.provider.heartbeat
        if interval:
            self._beater = self.loop.timer(interval / 3, interval / 3)
            self._beater.start(self._heartbeat)

    def received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        decoder = self.decoder
        decoder.receive_data(data)
        while not self.closed:
            try:
                frame = decoder.next_event()
            except RemoteProtocolError as exc:  # the stream itself is broken: nothing to answer
                log.warning("closing the connection from %s: %s", self.peer, exc.reason)
                self.close_after_writes()
                return
            if frame is NEED_DATA:
                return
            if frame is CLOSED:
                self.close_after_writes()
                return
            self.provider.dispatch(self, frame)

    def send(self, message: Response | Event) -> None:
        """Queue a reply or event; a reply that cannot be encoded becomes status 50 (BAD_RESPONSE)."""
        if self.closed or self.closing:
            return
        try:
            data = encode(message)
        except LocalProtocolError as exc:
            log.warning("cannot encode the reply to %d: %s", message.request_id, exc.reason)
            data = encode(
                Response(
                    message.request_id,
                    Status.BAD_RESPONSE,
                    error_message=f"Fail to encode response: {exc.reason}",
                    serialization=message.serialization,
                )
            )
        if self.backlog >= self.provider.OUTBOX:
            # the caller has stopped reading: holding more would only grow the queue
            log.warning("closing the connection from %s: %d replies not read", self.peer, self.backlog)
            self.close()
            return
        self.write(data)

    def _heartbeat(self) -> None:
        interval = self.provider.heartbeat
        now = time.monotonic()
        idle = now - self.last_read
        if idle >= 3 * interval:
            log.info("closing %s: nothing read for %.1f s", self.peer, idle)
            self.close_after_writes()
            return
        if idle >= interval and now - self._last_beat >= interval:
            self._beats += 1
            self.send(self.provider.service.heartbeat(self._beats))
            self._last_beat = now

    def closed_hook(self) -> None:
        if self._beater is not None:
            self._beater.stop()
            self._beater.close()
            self._beater = None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m integrations.demo.demo_provider",
        description="The demo Dubbo 2 service: IHelloService.hash(String) -> String.hashCode(), and echo.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=20880, help="port to bind; 0 picks a free one (default 20880)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="time each call takes (default 50)")
    parser.add_argument(
        "--capacity", type=int, default=DemoProvider.CAPACITY, help="calls served at once; beyond it status 100"
    )
    parser.add_argument(
        "--serialization",
        choices=sorted(_SERIALIZATIONS),
        default="hessian2",
        help="the provider's own serialization, for the heartbeats it sends (calls are answered in theirs)",
    )
    parser.add_argument(
        "--version",
        dest="service_version",
        default=None,
        help="export only this service version (default: answer whatever version a call names)",
    )
    parser.add_argument(
        "--heartbeat-s",
        type=float,
        default=DemoProvider.HEARTBEAT,
        help="seconds of silence before a heartbeat; 3x closes the connection; 0 disables (default 60)",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level on stderr (default WARNING)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(
        "demo_provider",
        lambda: DemoProvider(
            (args.host, args.port),
            latency=args.latency_ms / 1000,
            capacity=args.capacity,
            serialization=_SERIALIZATIONS[args.serialization],
            version=args.service_version,
            heartbeat=args.heartbeat_s,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
