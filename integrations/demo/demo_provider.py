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
import socket
import sys
import time
from collections import deque
from typing import Any

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.queue import Full, Queue
from gevent.server import StreamServer

from integrations.demo.hello_service import HelloService
from integrations.demo.serving import serve
from sidecar.codecs.dubbo import CLOSED, NEED_DATA, DubboDecoder, encode, parse
from sidecar.codecs.dubbo_messages import Event, Frame, Request, Response, Serialization, Status
from sidecar.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["DemoProvider", "main"]

log = logging.getLogger(__name__)

_SERIALIZATIONS = {"hessian2": Serialization.HESSIAN2, "fastjson": Serialization.FASTJSON}
_CLOSE = object()  # in a connection's outbox: flush what is before it, then close


class DemoProvider:
    """A Dubbo 2 server for :class:`HelloService` on a gevent :class:`StreamServer`.

    ``listener`` is an address ``(host, port)`` or an already-bound socket. ``start()`` binds and
    returns at once; ``stop()`` drains and closes; ``address`` is the bound ``(host, port)``.
    """

    LATENCY = 0.050  # seconds each call takes
    CAPACITY = 200  # calls served at once, over all connections (a Java provider's default threads)
    HEARTBEAT = 60.0  # seconds without reading before a heartbeat; 3x that closes the connection
    STOP_TIMEOUT = 5.0  # seconds stop() waits for calls in progress
    MAX_CONNECTIONS = 1000  # a full pool stops accepting
    RECV_SIZE = 64 * 1024
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
        self._server = StreamServer(listener, self._handle, spawn=Pool(self.MAX_CONNECTIONS))
        # The delay line: calls in the order they arrived, each due ``latency`` after its arrival. All
        # calls take the same time, so the due times are in order and one greenlet with one timer at a
        # time serves them all (a greenlet and a timer per call cost more CPU than the call itself).
        self._due: deque[tuple[float, _Connection, Request]] = deque()
        self._arrived = gevent.event.Event()
        self._line: gevent.Greenlet | None = None
        self._connections: set[_Connection] = set()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.address[:2]
        return host, port

    def start(self) -> None:
        self._server.start()
        self._line = gevent.spawn(self._delay_line)
        host, port = self.address
        self.service = dataclasses.replace(self.service, host=host, port=port)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let the calls in progress finish, then close every connection."""
        timeout = self.STOP_TIMEOUT if timeout is None else timeout
        self._server.close()
        end = time.monotonic() + timeout
        while self.in_progress and time.monotonic() < end:
            gevent.sleep(0.01)
        for connection in list(self._connections):
            connection.close()
        self._server.stop(timeout=max(0.0, end - time.monotonic()))
        if self._line is not None:
            self._line.kill(block=False)

    # -- per connection ----------------------------------------------------------------------------
    def _handle(self, sock: Any, address: Any) -> None:
        connection = _Connection(self, sock)
        self._connections.add(connection)
        try:
            connection.run()
        finally:
            self._connections.discard(connection)

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
                self._due.append((time.monotonic() + self.latency, connection, message))
                if len(self._due) == 1:
                    self._arrived.set()
            else:
                self._serve(connection, message)
        # a Response from a caller answers nothing we sent: ignored

    def _delay_line(self) -> None:
        due = self._due
        while True:
            if not due:
                self._arrived.clear()
                self._arrived.wait()
                continue
            wait = due[0][0] - time.monotonic()
            if wait > 0:
                gevent.sleep(wait)
                continue
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, connection, request = due.popleft()
                self._serve(connection, request)

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


class _Connection:
    """One caller's TCP connection: a reader (this greenlet), a writer and a heartbeat timer."""

    def __init__(self, provider: DemoProvider, sock: Any):
        self.provider = provider
        self.sock = sock
        try:
            host, port = sock.getpeername()[:2]
            self.peer = f"{host}:{port}"
        except OSError:
            self.peer = "?"
        self.decoder = DubboDecoder(parse_bodies=False)
        self.outbox: Queue = Queue(provider.OUTBOX)
        self.last_read = time.monotonic()
        self.closed = False
        self._beats = 0

    def run(self) -> None:
        writer = gevent.spawn(self._write_loop)
        beater = gevent.spawn(self._heartbeat_loop) if self.provider.heartbeat else None
        try:
            self._read_loop()
        except OSError as exc:
            log.debug("connection from %s: %s", self.peer, exc)
        finally:
            self.closed = True
            if beater is not None:
                beater.kill(block=False)
            writer.kill(block=False)
            self.sock.close()

    def _read_loop(self) -> None:
        decoder = self.decoder
        while True:
            data = self.sock.recv(self.provider.RECV_SIZE)
            self.last_read = time.monotonic()
            decoder.receive_data(data)
            while True:
                try:
                    frame = decoder.next_event()
                except RemoteProtocolError as exc:  # the stream itself is broken: nothing to answer
                    log.warning("closing the connection from %s: %s", self.peer, exc.reason)
                    return
                if frame is NEED_DATA:
                    break
                if frame is CLOSED:
                    return
                self.provider.dispatch(self, frame)

    def send(self, message: Response | Event) -> None:
        """Queue a reply or event; a reply that cannot be encoded becomes status 50 (BAD_RESPONSE)."""
        if self.closed:
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
        try:
            self.outbox.put_nowait(data)
        except Full:  # the caller has stopped reading: waiting would stall every other caller's replies
            log.warning("closing the connection from %s: %d replies not read", self.peer, self.outbox.qsize())
            self._shutdown()

    def close(self) -> None:
        """Send what is queued, then close (the reader sees the end of the stream)."""
        if self.closed:
            return
        try:
            self.outbox.put(_CLOSE, timeout=self.provider.STOP_TIMEOUT)
        except Full:  # the caller reads nothing: drop what is queued
            self._shutdown()

    def _shutdown(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # the reader's recv returns b""
        except OSError:
            pass

    def _write_loop(self) -> None:
        outbox, sock = self.outbox, self.sock
        while True:
            item = outbox.get()
            parts = []
            while item is not _CLOSE:
                parts.append(item)
                if outbox.empty() or len(parts) >= 256:
                    break
                item = outbox.get()
            if parts:
                try:
                    sock.sendall(b"".join(parts))
                except OSError as exc:
                    log.debug("writing to %s: %s", self.peer, exc)
                    item = _CLOSE
            if item is _CLOSE:
                self._shutdown()
                return

    def _heartbeat_loop(self) -> None:
        interval = self.provider.heartbeat
        last_beat = 0.0
        while not self.closed:
            gevent.sleep(interval / 3)
            now = time.monotonic()
            idle = now - self.last_read
            if idle >= 3 * interval:
                log.info("closing %s: nothing read for %.1f s", self.peer, idle)
                self.close()
                return
            if idle >= interval and now - last_beat >= interval:
                self._beats += 1
                self.send(self.provider.service.heartbeat(self._beats))
                last_beat = now


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
