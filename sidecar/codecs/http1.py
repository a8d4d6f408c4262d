r"""HTTP/1.1 codec of the consumer sidecar, in the h11 style: bytes in, events out; events in, bytes out.
No sockets, no event loop, no clock (so no ``Date`` header: add one to the response if you want it).

The server side is :class:`ServerConnection`; :class:`ClientConnection` is a small client used by tests
and the bench. The events and the state tables are in :mod:`sidecar.codecs.http1_states`, the byte grammar
in :mod:`sidecar.codecs.http1_wire`.

>>> server = ServerConnection()
>>> server.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nx=1&y")
>>> request = server.next_event()
>>> request  # doctest: +ELLIPSIS
Request(method='POST', target='/', headers=[('host', 'a'), ('content-length', '5')], http_version='1.1', ...)
>>> get_header(request.headers, "Content-Length")
'5'
>>> server.next_event(), server.next_event(), server.next_event()
(Data(data=b'x=1&y'), EndOfMessage(), NEED_DATA)
>>> server.send(Response(200, [("Content-Type", "text/plain")], b"42"))
b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n42'
>>> server.start_next_cycle()  # keep-alive: the next request may come
>>> parse_form(b"x=1&y")
{'x': '1', 'y': ''}

Limits (constructor arguments, defaults in :data:`DEFAULT_OPTIONS`): ``max_head`` bytes of request line
plus header fields (431), ``max_headers`` header fields (431), ``max_body`` bytes of body (413, checked
from ``Content-Length`` before any body byte is read, and while a chunked body arrives).

Errors: everything wrong with the peer's bytes raises :class:`RemoteProtocolError` from ``next_event()``
with a one-line ``reason`` and a ``status_hint`` (400, 413, 431, 501, 505; the hints are written for
the server side). The connection is then in ``ERROR``: ``next_event()`` raises the same error again,
received bytes are dropped, and ``send()`` can still produce the error response (with
``Connection: close``). Misuse by the caller (an event the state tables forbid, a bad header in a
response) raises :class:`LocalProtocolError` from ``send()`` and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar._accel import import_c_accel
from sidecar.codecs.http1_states import (
    CLIENT,
    CLOSED,
    DONE,
    ERROR,
    IDLE,
    MUST_CLOSE,
    NEED_DATA,
    PAUSED,
    SEND_BODY,
    SEND_RESPONSE,
    SERVER,
    ConnectionClosed,
    ConnectionState,
    Data,
    EndOfMessage,
    Headers,
    InformationalResponse,
    Request,
    Response,
    Sentinel,
)
from sidecar.codecs.http1_wire import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_HEAD,
    DEFAULT_MAX_HEADERS,
    DEFAULT_OPTIONS,
    NO_BODY_STATUSES,
    STATUS_LINE,
    TARGET_RE,
    TOKEN_STR,
    Buffer,
    LengthReader,
    Limits,
    UntilCloseReader,
    body_reader,
    checked_headers,
    encode_head,
    get_header,
    parse_fields,
    parse_form,
    parse_request_line,
    show,
    status_line,
    wants_keep_alive,
)
from sidecar.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_HEAD",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_OPTIONS",
    "CLIENT",
    "SERVER",
    "IDLE",
    "SEND_BODY",
    "SEND_RESPONSE",
    "DONE",
    "MUST_CLOSE",
    "CLOSED",
    "ERROR",
    "NEED_DATA",
    "PAUSED",
    "Headers",
    "Request",
    "Data",
    "EndOfMessage",
    "ConnectionClosed",
    "InformationalResponse",
    "Response",
    "ClientRequest",
    "ServerConnection",
    "ClientConnection",
    "get_header",
    "parse_form",
]

# -- connections -----------------------------------------------------------------------------------


class _Connection:
    """What both ends share: the state machine, the receive buffer, the sticky remote error, and the
    peer's role (a Sentinel, ``_peer``), which each subclass gives."""

    def __init__(self, peer: Sentinel, max_head: int, max_body: int, max_headers: int):
        self._peer = peer
        self._limits = Limits(max_head, max_body, max_headers)
        self._state = ConnectionState()
        self._buffer = Buffer()
        self._reader = None
        self._error: RemoteProtocolError | None = None

    @property
    def states(self) -> dict[Sentinel, Sentinel]:
        return self._state.states

    @property
    def our_state(self) -> Sentinel:
        return self._state.server if self._peer is CLIENT else self._state.client

    @property
    def their_state(self) -> Sentinel:
        return self._their_state()

    def _their_state(self) -> Sentinel:
        return self._state.client if self._peer is CLIENT else self._state.server

    @property
    def keep_alive(self) -> bool:
        return self._state.keep_alive

    @property
    def error(self) -> RemoteProtocolError | None:
        """The peer's protocol error, once ``next_event()`` raised it."""
        return self._error

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned (pipelined requests waiting, for backpressure)."""
        return len(self._buffer)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side (EOF)."""
        buffer = self._buffer
        if not data:
            buffer.eof = True
        elif buffer.eof:
            raise LocalProtocolError("receive_data() with more bytes after the end of the stream")
        elif self._error is None and self._their_state() is not MUST_CLOSE:
            buffer.feed(data)  # after an error, or after "close", nothing more is read: drop

    def next_event(self):
        """The next event of the peer's side (see the subclass); raises :class:`RemoteProtocolError`,
        the same one again on every later call, when the peer broke the protocol."""
        if self._error is not None:
            raise self._error
        try:
            event = self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            self._state.process_error(self._peer)
            self._buffer.discard()
            raise
        if event is not NEED_DATA and event is not PAUSED:
            self._state.process_event(self._peer, type(event))
        return event

    def _next_event(self):
        raise NotImplementedError  # each end parses its peer's messages

    def _closed_or_need_data(self) -> ConnectionClosed | Sentinel:
        return ConnectionClosed() if self._buffer.eof else NEED_DATA


class ServerConnection(_Connection):
    """The server end of one HTTP/1.1 connection.

    ``next_event()`` returns :class:`Request`, then :class:`Data` pieces of the body as they arrive,
    then :class:`EndOfMessage`; :class:`ConnectionClosed` when the client closed between requests;
    :data:`NEED_DATA` when more bytes must be received first.

    Pipelining: requests are handed out one cycle at a time. Once a request's :class:`EndOfMessage`
    was returned, the bytes of later requests stay buffered and ``next_event()`` returns :data:`PAUSED`
    until the response was sent and ``start_next_cycle()`` was called, so replies go out in request
    order with no bookkeeping by the caller (with nothing buffered it returns :data:`NEED_DATA`, or
    :class:`ConnectionClosed` if the client hung up: answer the request you have before reading
    more). ``buffered`` tells how many bytes wait, for backpressure. After a request with
    ``Connection: close`` (or an HTTP/1.0 request without keep-alive), later bytes are ignored
    (RFC 9112 §9.6): send the response and close.

    ``send(Response(...))`` returns the bytes of the response: ``Content-Length`` written from the body
    (none for 204 and 304; no body bytes for a HEAD request), ``Connection: close`` when the connection
    is not reused (the request asked, an error, a response sent before the request body was read in
    full, or ``Connection: close`` among the response headers), ``Connection: keep-alive`` for an
    HTTP/1.0 client that asked for it. After sending, close when ``our_state is MUST_CLOSE``, otherwise
    call ``start_next_cycle()``.
    """

    def __init__(
        self,
        *,
        max_head: int = DEFAULT_MAX_HEAD,
        max_body: int = DEFAULT_MAX_BODY,
        max_headers: int = DEFAULT_MAX_HEADERS,
    ):
        super().__init__(CLIENT, max_head, max_body, max_headers)
        self._request: Request | None = None

    def __repr__(self) -> str:
        return f"<ServerConnection client={self.their_state} server={self.our_state} buffered={self.buffered}>"

    def _next_event(self):
        state, buffer = self._state.client, self._buffer
        if state is IDLE:
            buffer.skip_empty_lines()
            if not len(buffer):
                return self._closed_or_need_data()
            head = buffer.take_until(b"\r\n\r\n", self._limits.max_head, self._limits.head_too_long)
            if head is None:
                if buffer.eof:
                    raise RemoteProtocolError(f"connection closed inside a request head ({len(buffer)} bytes)")
                return NEED_DATA
            self._request, self._reader = self._parse_head(head)
            if not self._request.keep_alive:
                self._state.disable_keep_alive()
            return self._request
        if state is SEND_BODY:
            event = self._reader.read(buffer)
            return NEED_DATA if event is None else event
        if state is DONE and len(buffer):
            return PAUSED
        if state is MUST_CLOSE:
            buffer.discard()
        return self._closed_or_need_data()

    def _parse_head(self, head: bytes) -> tuple[Request, object]:
        lines = head.split(b"\r\n")
        method, target, version = parse_request_line(lines[0])
        headers = parse_fields(lines[1:], self._limits.max_headers, "request head")
        hosts = 0
        for name, _ in headers:
            if name == "host":
                hosts += 1
        if hosts > 1:
            raise RemoteProtocolError("more than one Host header")
        if not hosts and version == "1.1":
            raise RemoteProtocolError("HTTP/1.1 request without a Host header")
        reader = body_reader(headers, version, self._limits)
        return Request(method, target, headers, version, wants_keep_alive(headers, version)), reader

    def take_body(self) -> bytes | None:
        """The rest of the request body at once, when its ``Content-Length`` is known and every byte
        of it has been received: the body is consumed and the request ended, exactly as if
        ``next_event()`` had returned its :class:`Data` pieces and then :class:`EndOfMessage`. Else
        (a chunked body, bytes still to come, no body being read, an error) None, and nothing changed.
        A shortcut for servers that take a whole request at once; ``next_event()`` stays the way in.
        """
        reader = self._reader
        if self._error is not None or type(reader) is not LengthReader or self._state.client is not SEND_BODY:
            return None
        left = reader.left
        buffer = self._buffer
        if len(buffer) < left:
            return None
        body = buffer.take(left) if left else b""
        reader.left = 0
        self._state.process_event(CLIENT, EndOfMessage)
        return body

    def send(self, event: Response | InformationalResponse) -> bytes:
        if isinstance(event, InformationalResponse):
            self._state.next_state(SERVER, InformationalResponse)
            fields = checked_headers(event.headers)
            data = encode_head(status_line(event.status, event.reason, False), [(n, v) for n, _, v in fields])
            self._state.process_event(SERVER, InformationalResponse)
            return data
        if not isinstance(event, Response):
            raise LocalProtocolError(f"send() takes a Response or an InformationalResponse, not {type(event).__name__}")
        self._state.next_state(SERVER, Response)
        first_line = status_line(event.status, event.reason, True)
        body, fields, request = event.body, checked_headers(event.headers), self._request
        close = not self._state.keep_alive or self._state.client is not DONE
        headers = []
        for name, lower, value in fields:
            if lower == "connection":
                close = close or "close" in {t.strip().lower() for t in value.split(",")}
            elif lower == "transfer-encoding":
                raise LocalProtocolError("send() frames bodies with Content-Length; drop Transfer-Encoding")
            elif lower != "content-length":
                headers.append((name, value))
            elif value.strip() != str(len(body)):
                raise LocalProtocolError(f"Content-Length {value!r} does not match the body of {len(body)} bytes")
        if event.status in NO_BODY_STATUSES:
            if body:
                raise LocalProtocolError(f"a {event.status} response has no body ({len(body)} bytes given)")
        else:
            headers.append(("Content-Length", str(len(body))))
        if close:
            headers.append(("Connection", "close"))
        elif request is not None and request.http_version == "1.0":
            headers.append(("Connection", "keep-alive"))
        data = encode_head(first_line, headers)
        if close:
            self._state.disable_keep_alive()
        self._state.process_event(SERVER, Response)
        if request is not None and request.method == "HEAD":
            return data
        return b"".join((data, body))

    def start_next_cycle(self) -> None:
        """After the response of a keep-alive cycle: the next request may be read."""
        self._state.start_next_cycle()
        self._request = self._reader = None


@dataclass(slots=True)
class ClientRequest:
    """A request for :class:`ClientConnection` to send. ``Host`` is added when missing; the body is
    framed with ``Content-Length``, or as one chunk when the headers say ``Transfer-Encoding: chunked``."""

    method: str
    target: str
    headers: Headers = field(default_factory=list)
    body: bytes = b""


class ClientConnection(_Connection):
    """The client end of one HTTP/1.1 connection, one request at a time (no pipelining).

    ``send(ClientRequest(...))`` returns the request's bytes; ``next_event()`` returns the complete
    :class:`Response` (body included; 1xx responses are skipped), :class:`ConnectionClosed`, or
    :data:`NEED_DATA`. With keep-alive the next cycle starts by itself once the response is in;
    otherwise both roles end in ``MUST_CLOSE``.
    """

    def __init__(
        self,
        *,
        host: str = "localhost",
        max_head: int = DEFAULT_MAX_HEAD,
        max_body: int = DEFAULT_MAX_BODY,
        max_headers: int = DEFAULT_MAX_HEADERS,
    ):
        super().__init__(SERVER, max_head, max_body, max_headers)
        self.host = host
        self._method = ""
        self._response: Response | None = None
        self._parts: list[bytes] = []

    def __repr__(self) -> str:
        return f"<ClientConnection client={self.our_state} server={self.their_state} buffered={self.buffered}>"

    def send(self, request: ClientRequest) -> bytes:
        if not isinstance(request, ClientRequest):
            raise LocalProtocolError(f"send() takes a ClientRequest, not {type(request).__name__}")
        self._state.next_state(CLIENT, Request)
        method, target, body = request.method, request.target, request.body
        if not isinstance(method, str) or not TOKEN_STR.fullmatch(method):
            raise LocalProtocolError(f"invalid method {method!r}")
        if not isinstance(target, str) or not target.isascii() or not TARGET_RE.fullmatch(target.encode()):
            raise LocalProtocolError(f"invalid request target {target!r}")
        fields = checked_headers(request.headers)
        names = {lower for _, lower, _ in fields}
        headers = [] if "host" in names else [("Host", self.host)]
        headers += [(name, value) for name, lower, value in fields if lower != "content-length"]
        chunked = "transfer-encoding" in names
        if chunked:
            if [v.strip().lower() for _, lower, v in fields if lower == "transfer-encoding"] != ["chunked"]:
                raise LocalProtocolError("the client only sends Transfer-Encoding: chunked")
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        elif body or method in ("POST", "PUT", "PATCH") or "content-length" in names:
            headers.append(("Content-Length", str(len(body))))
        for _, lower, value in fields:
            if lower == "content-length" and (chunked or value.strip() != str(len(request.body))):
                message = f"Content-Length {value!r} does not match the body of {len(request.body)} bytes"
                raise LocalProtocolError(message)
        data = encode_head(f"{method} {target} HTTP/1.1", headers)
        self._state.process_event(CLIENT, Request)
        if request.body:
            self._state.process_event(CLIENT, Data)
        self._state.process_event(CLIENT, EndOfMessage)
        if not wants_keep_alive([(lower, value) for _, lower, value in fields], "1.1"):
            self._state.disable_keep_alive()
        self._method = method
        return b"".join((data, body))

    def next_event(self) -> Response | ConnectionClosed | Sentinel:
        event = _Connection.next_event(self)
        if isinstance(event, Response) and self._state.keep_alive and self._state.client is DONE:
            self._state.start_next_cycle()
        return event

    def _next_event(self):
        state, buffer, limits = self._state.server, self._buffer, self._limits
        if state is not SEND_RESPONSE:
            if len(buffer):
                raise RemoteProtocolError(f"the server sent bytes with no request outstanding: {show(buffer.data)}")
            return self._closed_or_need_data()
        while self._response is None:
            head = buffer.take_until(b"\r\n\r\n", limits.max_head, limits.head_too_long)
            if head is None:
                if buffer.eof:
                    raise RemoteProtocolError(f"connection closed before a complete response ({len(buffer)} bytes)")
                return NEED_DATA
            lines = head.split(b"\r\n")
            match = STATUS_LINE.fullmatch(lines[0])
            if match is None:
                raise RemoteProtocolError(f"bad status line {show(lines[0])}")
            version, status, reason = match.group(1).decode(), int(match.group(2)), match.group(3) or b""
            headers = parse_fields(lines[1:], limits.max_headers, "response head")
            if status < 200:
                continue  # 1xx: the final response follows
            if not wants_keep_alive(headers, version):
                self._state.disable_keep_alive()
            if self._method == "HEAD" or status in NO_BODY_STATUSES:
                self._reader = LengthReader(0)
            else:
                self._reader = body_reader(headers, version, limits, until_close=True)
                if isinstance(self._reader, UntilCloseReader):
                    self._state.disable_keep_alive()
            self._response = Response(status, headers, b"", reason.decode("latin-1"))
        while True:
            event = self._reader.read(buffer)
            if event is None:
                return NEED_DATA
            if isinstance(event, EndOfMessage):
                response, self._response, self._reader = self._response, None, None
                response.body, self._parts = b"".join(self._parts), []
                return response
            self._parts.append(event.data)


import_c_accel(globals(), "sidecar.codecs._c_http1")
