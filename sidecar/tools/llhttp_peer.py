"""llhttp (Node's HTTP/1.1 parser, through ``httptools``) behind the interface of our server parser, to
hold :class:`sidecar.codecs.http1.ServerConnection` to a hardened peer: the parser tests run against
both, and ``sidecar bench`` times both (:func:`sidecar.tools.bench_codec.parsing`).

:class:`LlhttpServerConnection` is a :class:`~sidecar.codecs.http1.ServerConnection` whose request
parsing is llhttp's: every byte of a request goes through ``httptools.HttpRequestParser`` in its strict
default (no leniency), and the events come from its callbacks. What llhttp leaves to the server that
embeds it is done here, as Node's HTTP server does it:

* limits: the head (request line and fields, ``max_head`` bytes, 431; ``max_headers`` fields, 431),
  the body (``max_body`` bytes, 413, from ``Content-Length`` before any body byte, and from each chunk
  size line), a chunk size line (``max_head`` bytes, 400) and the trailer section (as the head);
* rules llhttp does not apply: HTTP/1.0 and 1.1 only (505), exactly one ``Host`` in HTTP/1.1 (400), no
  ``Transfer-Encoding`` in HTTP/1.0 (400), no transfer coding but ``chunked`` (501);
* our status mapping: an llhttp error is a :class:`RemoteProtocolError` with status hint 400, 413 for
  a ``Content-Length`` too large to hold, 505 for an HTTP version llhttp refuses; its reason is
  llhttp's, after ``llhttp:``;
* pipelining as ours: llhttp is fed the bytes of the current request only (the head up to its blank
  line, then as many body bytes as its framing announces), so later requests wait in the buffer.

Header values are stripped of trailing blanks (llhttp strips only leading ones), so both parsers give
the same :class:`~sidecar.codecs.http1.Request`. Responses are written by ``ServerConnection.send()``.

``httptools`` is a test and bench dependency only (``pip install 'dubbomesh[bench]'``); the runtime
parses with our own :mod:`sidecar.codecs.http1`.
"""

from __future__ import annotations

from collections import deque

import httptools

from sidecar.codecs.http1 import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_HEAD,
    DEFAULT_MAX_HEADERS,
    DONE,
    IDLE,
    MUST_CLOSE,
    NEED_DATA,
    PAUSED,
    SEND_BODY,
    Data,
    EndOfMessage,
    Request,
    ServerConnection,
)
from sidecar.errors import RemoteProtocolError

__all__ = ["LlhttpServerConnection", "llhttp_version"]

_LENGTH, _SIZE, _CHUNK, _TRAILERS = range(4)  # what the body bytes fed next to llhttp are


def llhttp_version() -> str:
    """The version of httptools (which ships its llhttp)."""
    return f"httptools {httptools.__version__}"


def _llhttp_error(exc: Exception) -> RemoteProtocolError:
    """Our error for an httptools exception: an error one of our callbacks raised, or llhttp's own."""
    if isinstance(exc, httptools.HttpParserCallbackError) and isinstance(exc.__context__, RemoteProtocolError):
        return exc.__context__
    message = " ".join(str(exc).split())
    status = 400
    if "Content-Length overflow" in message:
        status = 413  # more digits than 64 bits hold: over any limit
    elif "Invalid HTTP version" in message:
        status = 505
    return RemoteProtocolError(f"llhttp: {message}", status_hint=status)


class LlhttpServerConnection(ServerConnection):
    """The server end of one HTTP/1.1 connection, its requests parsed by llhttp; the interface and the
    limits of :class:`~sidecar.codecs.http1.ServerConnection` (see the module docstring)."""

    def __init__(
        self,
        *,
        max_head: int = DEFAULT_MAX_HEAD,
        max_body: int = DEFAULT_MAX_BODY,
        max_headers: int = DEFAULT_MAX_HEADERS,
    ):
        super().__init__(max_head=max_head, max_body=max_body, max_headers=max_headers)
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque = deque()
        self._url: list[bytes] = []
        self._fields: list[tuple[str, str]] = []
        self._head_done = False
        self._head: tuple[bytes, str, bool] = (b"", "", False)  # method, version, keep-alive
        self._framing = _LENGTH
        self._left = 0  # body bytes (chunk: data and its CRLF) still to feed
        self._total = 0  # body bytes announced so far

    def __repr__(self) -> str:
        return f"<LlhttpServerConnection client={self.their_state} server={self.our_state} buffered={self.buffered}>"

    # -- llhttp's callbacks ------------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._fields
        if len(fields) >= self._limits.max_headers:
            where = "trailer section" if self._head_done else "request head"
            message = f"more than {self._limits.max_headers} header fields in the {where}"
            raise RemoteProtocolError(message, status_hint=431)
        fields.append((name.decode("ascii").lower(), value.decode("latin-1").rstrip(" \t")))

    def on_headers_complete(self) -> None:
        parser = self._parser  # read now: llhttp resets them once the message is complete
        self._head = (parser.get_method(), parser.get_http_version(), parser.should_keep_alive())
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        self._events.append(EndOfMessage())

    # -- feeding -----------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # CONNECT, or Upgrade with Connection: upgrade: llhttp ends the message at its head and
            # stops; the server answers it as a request and goes on parsing HTTP/1.1 after it.
            pass
        except httptools.HttpParserError as exc:
            raise _llhttp_error(exc) from None

    def _next_event(self):
        events = self._events
        if events and self.their_state is SEND_BODY:
            return events.popleft()
        state, buffer, limits = self.their_state, self._buffer, self._limits
        if state is IDLE:
            buffer.skip_empty_lines()
            if not len(buffer):
                return self._closed_or_need_data()
            head = buffer.take_until(b"\r\n\r\n", limits.max_head, limits.head_too_long)
            if head is None:
                if buffer.eof:
                    raise RemoteProtocolError(f"connection closed inside a request head ({len(buffer)} bytes)")
                return NEED_DATA
            self._url, self._fields, self._head_done, self._total = [], [], False, 0
            self._feed(head + b"\r\n\r\n")
            if not self._head_done:
                raise RemoteProtocolError("llhttp: the head ended before its fields did")
            self._request = self._checked_request()
            if not self._request.keep_alive:
                self._state.disable_keep_alive()
            return self._request
        if state is SEND_BODY:
            while not events:
                if not self._feed_body():
                    if buffer.eof:
                        raise RemoteProtocolError("connection closed inside a body")
                    return NEED_DATA
            return events.popleft()
        if state is DONE and len(buffer):
            return PAUSED
        if state is MUST_CLOSE:
            buffer.discard()
        return self._closed_or_need_data()

    def _checked_request(self) -> Request:
        """The request llhttp parsed, under the rules it leaves to the server; sets the body framing."""
        fields, limits = self._fields, self._limits
        method, version, keep_alive = self._head
        if version not in ("1.0", "1.1"):
            raise RemoteProtocolError(f"HTTP version {version} is not supported (only 1.0 and 1.1)", status_hint=505)
        hosts = sum(1 for name, _ in fields if name == "host")
        if hosts > 1:
            raise RemoteProtocolError("more than one Host header")
        if not hosts and version == "1.1":
            raise RemoteProtocolError("HTTP/1.1 request without a Host header")
        codings = [c.strip().lower() for name, value in fields if name == "transfer-encoding" for c in value.split(",")]
        lengths = [value for name, value in fields if name == "content-length"]
        self._framing, self._left = _LENGTH, 0
        if codings:
            if version == "1.0":
                raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 message")
            if codings != ["chunked"]:
                raise RemoteProtocolError(f"transfer coding {codings[0]!r} is not supported", status_hint=501)
            self._framing = _SIZE
        elif lengths and not self._events:  # llhttp checked the digits and that there is one
            self._left = int(lengths[0])
            if self._left > limits.max_body:
                message = f"Content-Length {self._left} is over the limit of {limits.max_body} bytes"
                raise RemoteProtocolError(message, status_hint=413)
        target = b"".join(self._url).decode("ascii")
        return Request(method.decode("ascii"), target, fields, version, keep_alive)

    def _feed_body(self) -> bool:
        """Feed llhttp the next piece of the body; False when the bytes it needs have not arrived."""
        buffer, limits = self._buffer, self._limits
        if self._framing in (_LENGTH, _CHUNK):
            n = min(self._left, len(buffer))
            if not n:
                return False
            self._left -= n
            if self._framing == _CHUNK and not self._left:
                self._framing = _SIZE
            self._feed(buffer.take(n))
            return True
        if self._framing == _SIZE:
            line = buffer.take_until(b"\r\n", limits.max_head, self._line_too_long)
            if line is None:
                return False
            self._feed(line + b"\r\n")
            size = int(line.partition(b";")[0], 16)  # llhttp accepted the line
            self._total += size
            if self._total > limits.max_body:
                message = f"chunked body over the limit of {limits.max_body} bytes"
                raise RemoteProtocolError(message, status_hint=413)
            self._framing, self._left = (_CHUNK, size + 2) if size else (_TRAILERS, 0)
            return True
        if buffer.startswith(b"\r\n"):
            self._feed(buffer.take(2))
            return True
        section = buffer.take_until(b"\r\n\r\n", limits.max_head, limits.head_too_long)
        if section is None:
            return False
        self._fields = []  # the trailer fields count against max_headers on their own
        self._feed(section + b"\r\n\r\n")
        return True

    def _line_too_long(self) -> RemoteProtocolError:
        return RemoteProtocolError(f"chunk size line longer than {self._limits.max_head} bytes")

    def start_next_cycle(self) -> None:
        super().start_next_cycle()
        self._events.clear()
