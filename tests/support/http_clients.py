"""HTTP/1.1 clients on our own codec, and the form call they send.

:class:`Client` uses gevent's sockets, for a sidecar serving in this process on gevent;
:class:`ProcessClient` uses plain blocking sockets, for a server in another process (and threads)."""

from __future__ import annotations

import socket as stdlib_socket
import urllib.parse

from gevent import socket

from sidecar.codecs import http1
from tests.support.dubbo_peer import SERVICE, WAIT

__all__ = ["FORM_HEADERS", "SERVICE", "Client", "ProcessClient", "form", "form_request"]

FORM_HEADERS = [("Content-Type", "application/x-www-form-urlencoded")]


def form(parameter: str, **fields: str) -> bytes:
    """The form body of ``IHelloService.hash(parameter)``; ``fields`` replace or add form fields."""
    values = {"interface": SERVICE, "method": "hash", "parameterTypesString": "Ljava/lang/String;"}
    values.update(fields)
    values["parameter"] = parameter
    return urllib.parse.urlencode(values).encode()


def form_request(parameter: str, *, request_id: str | None = None, **fields: str) -> http1.ClientRequest:
    """``POST /`` with the form body of ``hash(parameter)``, and an ``X-Request-Id`` when given."""
    headers = list(FORM_HEADERS)
    if request_id is not None:
        headers.append(("X-Request-Id", request_id))
    return http1.ClientRequest("POST", "/", headers, form(parameter, **fields))


class Client:
    """One keep-alive connection to ``address`` on gevent's sockets."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=10)
        self.conn = http1.ClientConnection()

    def request(self, body=b"", target="/", headers=(), method="POST"):
        self.sock.sendall(self.conn.send(http1.ClientRequest(method, target, list(headers), body)))
        return self.response()

    def response(self):
        while True:
            event = self.conn.next_event()
            if isinstance(event, http1.Response):
                return event
            if event is not http1.NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(65536))

    def raw(self, data: bytes) -> bytes:
        """Send raw bytes and read until the server closes."""
        self.sock.sendall(data)
        out = b""
        while chunk := self.sock.recv(65536):
            out += chunk
        return out

    def close(self):
        self.sock.close()


class ProcessClient:
    """One keep-alive connection to a server process on ``127.0.0.1:port``, on a blocking socket;
    ``pipeline`` writes several requests before reading any answer."""

    def __init__(self, port: int):
        self.sock = stdlib_socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.conn = http1.ClientConnection(host=f"127.0.0.1:{port}")

    def pipeline(self, *requests: http1.ClientRequest) -> list[http1.Response]:
        self.sock.sendall(b"".join(http1.ClientConnection().send(request) for request in requests))
        responses = []
        for request in requests:
            self.conn.send(request)  # only to move the parser's state; the bytes went out above
            responses.append(self.receive())
        return responses

    def call(self, request: http1.ClientRequest) -> http1.Response:
        return self.pipeline(request)[0]

    def receive(self) -> http1.Response:
        """The next response; fails if the connection ends first."""
        while True:
            event = self.conn.next_event()
            if event is http1.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
            elif isinstance(event, http1.Response):
                return event
            else:
                raise AssertionError(f"connection ended: {event}")

    def close(self) -> None:
        self.sock.close()
