"""HTTP/1.1 on the wire, for :mod:`sidecar.codecs.http1`: the receive buffer, the grammar of heads and bodies
(RFC 9112) with the limits, the writing of heads, and the header and form helpers. Pure functions and
small reader objects; the connections and their states live in :mod:`sidecar.codecs.http1` and
:mod:`sidecar.codecs.http1_states`.

Body readers share one interface: ``read(buffer)`` returns :class:`Data`, :class:`EndOfMessage`, or
``None`` when more bytes are needed (raising :class:`RemoteProtocolError` when the stream ended first).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

from sidecar._accel import import_c_accel

try:
    import cython
except ImportError:  # Cython is needed only to build the compiled twins
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)
from sidecar.codecs.http1_states import Data, EndOfMessage, Headers
from sidecar.codecs.memo import Memo
from sidecar.errors import LocalProtocolError, RemoteProtocolError

DEFAULT_MAX_HEAD = 16 * 1024  # bytes of request line + header fields (also: a chunk-size line, the trailers)
DEFAULT_MAX_BODY = 1024 * 1024  # bytes of one message body
DEFAULT_MAX_HEADERS = 100  # header fields in one head (also: trailer fields)
DEFAULT_OPTIONS = {"max_head": DEFAULT_MAX_HEAD, "max_body": DEFAULT_MAX_BODY, "max_headers": DEFAULT_MAX_HEADERS}

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
TOKEN_STR = re.compile(_TOKEN.decode())
TARGET_RE = re.compile(rb"[\x21-\x7e]+")
# The value keeps no SP/HTAB at either end: ``(?:.*[^ \t])?`` ends it at the last other byte in one
# pass (a lazy ``(.*?)[ \t]*`` retried the tail at each byte: quadratic in a run of blanks).
_FIELD_RE = re.compile(rb"(%s):[ \t]*((?:.*[^ \t])?)[ \t]*" % _TOKEN, re.S)
_CTL_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # control characters other than HTAB
_CTL_STR = re.compile(_CTL_RE.pattern.decode())
_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}
_VERSION_RE = re.compile(rb"HTTP/[0-9]\.[0-9]")  # HTTP-version (RFC 9112 §2.3): 505 if not 1.0 or 1.1
# Request-target forms (RFC 9112 §3.2): origin-form and absolute-form for every method, asterisk-form
# for OPTIONS only, authority-form (host:port) for CONNECT only and CONNECT with it only.
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z][-+.0-9A-Za-z]*://[\x21-\x7e]*")
_AUTHORITY_FORM = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[-.0-9A-Za-z_~!$&'()*+,;=%]+):[0-9]{1,5}")
STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
# Possessive repeats (``*+``): each piece can be matched one way only, so nothing is lost by keeping
# no backtracking state, which the engine otherwise stacks per repetition (about 160 bytes per byte).
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*+"'
# No whitespace anywhere in a chunk-size line: RFC 9112 allows BWS around ";" and "=", but parsers
# that read "1 ;x" or "1 " differently are a request-smuggling vector, and llhttp refuses them too.
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;%s(?:=(?:%s|%s))?)*+" % (_TOKEN, _TOKEN, _QUOTED))
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
NO_BODY_STATUSES = frozenset([204, 304])


def show(raw: bytes, limit: int = 60) -> str:
    """``raw`` for an error reason: one line, at most ``limit`` bytes shown."""
    return repr(bytes(raw[:limit])) + ("..." if len(raw) > limit else "")


class Buffer:
    """Received bytes and a read offset, so consuming costs nothing. The bytes of a read are kept as
    they came (``bytes``, not copied) while they are taken apart; only when more arrive before they
    are all taken (a message across reads) are they joined, into a ``bytearray`` that is compacted
    amortised. ``scan`` remembers where the last search for a delimiter stopped."""

    __slots__ = ("data", "pos", "scan", "eof")
    COMPACT_AFTER = 64 * 1024

    def __init__(self) -> None:
        self.data: bytes | bytearray = b""
        self.pos = self.scan = 0
        self.eof = False

    def __len__(self) -> int:
        return len(self.data) - self.pos

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Add received bytes: kept as they are when nothing else waits (a ``bytes`` is not copied),
        else joined after what waits."""
        data = self.data
        if self.pos >= len(data):  # every byte taken: the new ones alone
            self.data = chunk if type(chunk) is bytes else bytes(chunk)
            self.pos = self.scan = 0
        elif type(data) is bytes:  # a message goes on in this read: what waits of it, joined from here on
            with memoryview(data) as view:
                joined = bytearray(view[self.pos :])
            joined += chunk
            self.data = joined
            self.scan -= self.pos
            self.pos = 0
        else:
            data += chunk

    def startswith(self, prefix: bytes) -> bool:
        return self.data.startswith(prefix, self.pos)

    def discard(self) -> None:
        self.data = b""
        self.pos = self.scan = 0

    def skip_empty_lines(self) -> None:
        """Drop CRLFs before a message head (RFC 9112 §2.2 lets a server ignore them)."""
        pos = self.pos
        while self.data.startswith(b"\r\n", pos):
            pos += 2
        if pos != self.pos:
            self._consume(pos)

    def take(self, n: int) -> bytes:
        return self._take(self.pos + n, self.pos + n)

    def take_until(self, delimiter: bytes, limit: int, too_long: Callable[[], Exception]) -> bytes | None:
        """The bytes before the next ``delimiter`` (consumed with it), or None until it arrives. Raises
        ``too_long()`` once the bytes up to and including the delimiter cannot fit in ``limit``."""
        data = self.data
        idx = data.find(delimiter, max(self.pos, self.scan - len(delimiter) + 1))
        if idx < 0:
            self.scan = len(data)
            if len(data) - self.pos > limit:
                raise too_long()
            return None
        end = idx + len(delimiter)
        if end - self.pos > limit:
            raise too_long()
        return self._take(idx, end)

    def _take(self, stop: int, end: int) -> bytes:
        data = self.data
        if type(data) is bytes:
            chunk = data[self.pos : stop]  # one copy (none for the whole of it)
        elif stop - self.pos < 4096:
            chunk = bytes(data[self.pos : stop])
        else:
            with memoryview(data) as view:  # one copy of a large piece, not two
                chunk = bytes(view[self.pos : stop])
        self._consume(end)
        return chunk

    def _consume(self, end: int) -> None:
        data = self.data
        if end >= len(data):
            self.data = b""
            end = 0
        elif end > self.COMPACT_AFTER and 2 * end > len(data) and type(data) is bytearray:
            del data[:end]
            end = 0
        self.pos = self.scan = end


# -- reading: heads --------------------------------------------------------------------------------


def parse_fields(lines: list[bytes], max_headers: int, where: str) -> Headers:
    if len(lines) > max_headers:
        raise RemoteProtocolError(f"more than {max_headers} header fields in the {where}", status_hint=431)
    fields = []
    parsed = _PARSED_FIELDS
    for line in lines:
        field = parsed.get(line)
        if field is None:
            field = _parse_field(line)
            if len(line) <= _PARSED_FIELDS_MAX_LENGTH:
                parsed.remember(line, field)
        fields.append(field)
    return fields


def _parse_field(line: bytes) -> tuple[str, str]:
    """A header line not met lately (_FIELD_RE, without running it): a token name, a colon, and a
    value without the spaces and tabs around it and without control characters other than HTAB."""
    name, colon, value = line.partition(b":")
    if not colon:
        raise RemoteProtocolError(_field_problem(line))
    lowered = _FIELD_NAMES.get(name)
    if lowered is None:
        if not _TOKEN_RE.fullmatch(name):
            raise RemoteProtocolError(_field_problem(line))
        lowered = name.decode("ascii").lower()
        if len(name) <= _LOWERED_MAX_LENGTH:
            if len(_FIELD_NAMES) >= _LOWERED_MAX_ITEMS:
                _FIELD_NAMES.clear()
            _FIELD_NAMES[name] = lowered
    value = value.strip(b" \t")
    if (_control_at(value) >= 0) if cython.compiled else (_CTL_RE.search(value) is not None):
        raise RemoteProtocolError(_field_problem(line))
    return lowered, value.decode("latin-1")


# Header lines parsed lately: most come again and again (Host, Content-Type, User-Agent, many a
# Content-Length), and a lookup is cheaper than parsing. A line that differs each time (X-Request-Id)
# is never kept (its first sighting only marks a bit, see memo.py), but still finds its name among the
# names met lately, checked once.
_PARSED_FIELDS_MAX_ITEMS = 4096
_PARSED_FIELDS = Memo(_PARSED_FIELDS_MAX_ITEMS)
_PARSED_FIELDS_MAX_LENGTH = 256
_FIELD_NAMES: dict[bytes, str] = {}  # valid field names met lately -> lowered


def _field_problem(line: bytes) -> str:
    name, colon, _ = line.partition(b":")
    if line[:1] in (b" ", b"\t"):
        return f"obs-fold (a header line starting with whitespace) is not allowed: {show(line)}"
    if not colon:
        return f"header line without a colon: {show(line)}"
    if name and name.rstrip(b" \t") != name:
        return f"whitespace between a header name and its colon: {show(line)}"
    if not _TOKEN_RE.fullmatch(name):
        return f"invalid header name {show(name)}"
    return f"control character in the value of header {name.decode('ascii').lower()!r}"


def parse_request_line(line: bytes) -> tuple[str, str, str]:
    lines = _PARSED_LINES
    parsed = lines.get(line)
    if parsed is not None:
        return parsed
    parsed = _parse_request_line(line)
    if len(line) <= _PARSED_FIELDS_MAX_LENGTH:
        lines.remember(line, parsed)
    return parsed


_PARSED_LINES = Memo(_PARSED_FIELDS_MAX_ITEMS)  # request lines parsed lately, as _PARSED_FIELDS


def _parse_request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN_RE.fullmatch(parts[0]) or not TARGET_RE.fullmatch(parts[1]):
        raise RemoteProtocolError(f"bad request line {show(line)}")
    version = _VERSIONS.get(parts[2])
    if version is None:
        if _VERSION_RE.fullmatch(parts[2]):
            message = f"HTTP version {show(parts[2][5:], 20)} is not supported (only 1.0 and 1.1)"
            raise RemoteProtocolError(message, status_hint=505)
        raise RemoteProtocolError(f"bad request line {show(line)}")
    method, target = parts[0], parts[1]
    if method == b"CONNECT":
        if not _AUTHORITY_FORM.fullmatch(target):
            raise RemoteProtocolError(f"CONNECT needs a host:port target, not {show(target)}")
    elif target[:1] != b"/" and not _ABSOLUTE_FORM.fullmatch(target):
        if target != b"*":
            raise RemoteProtocolError(f"request target {show(target)} is neither a path nor an absolute URI")
        if method != b"OPTIONS":
            raise RemoteProtocolError(f"request target '*' is for OPTIONS only, not {method.decode('ascii')}")
    return method.decode("ascii"), target.decode("ascii"), version


def wants_keep_alive(headers: Headers, version: str) -> bool:
    for name, _ in headers:
        if name == "connection":
            break
    else:  # no Connection field: the version's default
        return version == "1.1"
    tokens = {t.strip().lower() for name, value in headers if name == "connection" for t in value.split(",")}
    return "close" not in tokens and (version == "1.1" or "keep-alive" in tokens)


def body_reader(headers: Headers, version: str, limits: Limits, until_close: bool = False):
    """The reader of the body that ``headers`` announce (RFC 9112 §6.3)."""
    codings: list[str] = []
    lengths: list[str] = []
    for name, value in headers:
        if name == "content-length":
            lengths.append(value)
        elif name == "transfer-encoding":
            codings += value.split(",")
    if codings:
        if lengths:
            raise RemoteProtocolError("both Content-Length and Transfer-Encoding in one message")
        if version == "1.0":
            raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 message")
        codings = [c.strip().lower() for c in codings]
        if codings[-1] != "chunked":
            raise RemoteProtocolError(f"Transfer-Encoding {', '.join(codings)!r} does not end with chunked")
        if "chunked" in codings[:-1]:
            raise RemoteProtocolError("Transfer-Encoding chunked applied more than once")
        if len(codings) > 1:
            raise RemoteProtocolError(f"transfer coding {codings[0]!r} is not supported", status_hint=501)
        return ChunkedReader(limits)
    if lengths:
        # One field of digits only: a repeated Content-Length, even with the same value (a list RFC 9110
        # §8.6 lets a recipient accept), is refused, as llhttp does, rather than reconciled.
        value = lengths[0].strip()
        if len(lengths) > 1 or not (value.isascii() and value.isdigit()):
            raise RemoteProtocolError(f"bad Content-Length {get_header(headers, 'content-length')!r}")
        digits = value.lstrip("0") or "0"  # leading zeros are allowed and say nothing of the size
        if len(digits) > 18 or int(digits) > limits.max_body:
            shown = digits if len(digits) <= 40 else f"of {len(digits)} digits"
            message = f"Content-Length {shown} is over the limit of {limits.max_body} bytes"
            raise RemoteProtocolError(message, status_hint=413)
        return LengthReader(int(digits))
    return UntilCloseReader(limits.max_body) if until_close else LengthReader(0)


# -- reading: bodies -------------------------------------------------------------------------------


class Limits:
    __slots__ = ("max_head", "max_body", "max_headers")

    def __init__(self, max_head: int, max_body: int, max_headers: int):
        for name, value in (("max_head", max_head), ("max_body", max_body), ("max_headers", max_headers)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, not {value!r}")
        self.max_head, self.max_body, self.max_headers = max_head, max_body, max_headers

    def head_too_long(self) -> RemoteProtocolError:
        return RemoteProtocolError(f"message head over the limit of {self.max_head} bytes", status_hint=431)


class LengthReader:
    __slots__ = ("length", "left")

    def __init__(self, length: int):
        self.length = self.left = length

    def read(self, buffer: Buffer) -> Data | EndOfMessage | None:
        if not self.left:
            return EndOfMessage()
        n = min(self.left, len(buffer))
        if not n:
            if buffer.eof:
                got = self.length - self.left
                raise RemoteProtocolError(f"connection closed inside a body ({got} of {self.length} bytes)")
            return None
        self.left -= n
        return Data(buffer.take(n))


class UntilCloseReader:
    """A response body without framing: everything up to the end of the stream."""

    __slots__ = ("max_body", "total")

    def __init__(self, max_body: int):
        self.max_body, self.total = max_body, 0

    def read(self, buffer: Buffer) -> Data | EndOfMessage | None:
        if not len(buffer):
            return EndOfMessage() if buffer.eof else None
        self.total += len(buffer)
        if self.total > self.max_body:
            raise RemoteProtocolError(f"body over the limit of {self.max_body} bytes", status_hint=413)
        return Data(buffer.take(len(buffer)))


_SIZE, _CHUNK, _CRLF, _TRAILERS = range(4)


class ChunkedReader:
    """``Transfer-Encoding: chunked``; chunk extensions and trailer fields are checked, then ignored."""

    __slots__ = ("limits", "phase", "left", "total")

    def __init__(self, limits: Limits):
        self.limits, self.phase, self.left, self.total = limits, _SIZE, 0, 0

    def read(self, buffer: Buffer) -> Data | EndOfMessage | None:
        limits = self.limits
        while True:
            if self.phase == _SIZE:
                line = buffer.take_until(b"\r\n", limits.max_head, self._line_too_long)
                if line is None:
                    return self._need(buffer)
                match = _CHUNK_LINE.fullmatch(line)
                if match is None:
                    raise RemoteProtocolError(f"bad chunk size line {show(line)}")
                self.left = int(match.group(1), 16)
                self.total += self.left
                if self.total > limits.max_body:
                    message = f"chunked body over the limit of {limits.max_body} bytes"
                    raise RemoteProtocolError(message, status_hint=413)
                self.phase = _CHUNK if self.left else _TRAILERS
            elif self.phase == _CHUNK:
                n = min(self.left, len(buffer))
                if not n:
                    return self._need(buffer)
                self.left -= n
                if not self.left:
                    self.phase = _CRLF
                return Data(buffer.take(n))
            elif len(buffer) < 2:
                return self._need(buffer)
            elif self.phase == _CRLF:
                if buffer.take(2) != b"\r\n":
                    raise RemoteProtocolError("chunk data not followed by CRLF")
                self.phase = _SIZE
            elif buffer.startswith(b"\r\n"):
                buffer.take(2)
                return EndOfMessage()
            else:
                section = buffer.take_until(b"\r\n\r\n", limits.max_head, limits.head_too_long)
                if section is None:
                    return self._need(buffer)
                parse_fields(section.split(b"\r\n"), limits.max_headers, "trailer section")
                return EndOfMessage()

    def _line_too_long(self) -> RemoteProtocolError:
        return RemoteProtocolError(f"chunk size line longer than {self.limits.max_head} bytes")

    @staticmethod
    def _need(buffer: Buffer) -> None:
        if buffer.eof:
            raise RemoteProtocolError("connection closed inside a chunked body")
        return None


# -- writing ---------------------------------------------------------------------------------------


def checked_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(name, lower-case name, value) of headers to send; raises LocalProtocolError on a bad one."""
    checked = []
    for name, value in headers:
        if type(name) is not str or name not in _TOKEN_NAMES:
            if not isinstance(name, str) or not TOKEN_STR.fullmatch(name):
                raise LocalProtocolError(f"invalid header name {name!r}")
            if len(_TOKEN_NAMES) < 1024:
                _TOKEN_NAMES.add(name)
        if not isinstance(value, str) or not (value.isascii() and value.isprintable()) and _CTL_STR.search(value):
            raise LocalProtocolError(f"invalid value for header {name}: {value!r}")
        checked.append((name, _lower(name), value))
    return checked


_TOKEN_NAMES: set[str] = set()  # header names found valid so far (at most 1024, then checked each time)


def encode_head(first_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    parts = [first_line, "\r\n"]
    for name, value in headers:
        parts.append(f"{name}: {value}\r\n")
    parts.append("\r\n")
    text = "".join(parts)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"head text not encodable in Latin-1: {text[exc.start : exc.end]!r}") from None


def status_line(status: object, reason: str, final: bool) -> str:
    if not reason and type(status) is int:  # the standard phrase: a line made before, if any
        made = _FINAL_LINES if final else _INFORMATIONAL_LINES
        line = made.get(status)
        if line is None:
            line = made[status] = _status_line(status, reason, final)  # at most 900 of them
        return line
    return _status_line(status, reason, final)


# Status lines with the standard phrase, by status, once made: a dict lookup instead of a format.
_FINAL_LINES: dict[int, str] = {}
_INFORMATIONAL_LINES: dict[int, str] = {}


def _status_line(status: object, reason: str, final: bool) -> str:
    low, high = (200, 999) if final else (100, 199)
    if not isinstance(status, int) or not low <= status <= high or status == 101:
        raise LocalProtocolError(f"status {status!r} is not allowed here (expected {low}..{high}, not 101)")
    if not reason:
        return f"HTTP/1.1 {status} {_PHRASES.get(status, '')}"
    if not isinstance(reason, str) or _CTL_STR.search(reason):
        raise LocalProtocolError(f"invalid reason phrase {reason!r}")
    return f"HTTP/1.1 {status} {reason}"


_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def closing_response(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """A whole response that ends its connection, for when no request can be answered in order (a
    request that never arrived whole, a connection shed): Content-Length and ``Connection: close``
    added to ``headers``.

    >>> for line in closing_response(408, [("Content-Type", "text/plain")], b"late\\n").split(b"\\r\\n"):
    ...     print(line)
    b'HTTP/1.1 408 Request Timeout'
    b'Content-Type: text/plain'
    b'Content-Length: 5'
    b'Connection: close'
    b''
    b'late\\n'
    """
    fields = [*headers, ("Content-Length", str(len(body))), ("Connection", "close")]
    return encode_head(status_line(status, "", True), fields) + body


# -- helpers ---------------------------------------------------------------------------------------


def get_header(headers: Iterable[tuple[str, str]], name: str, default: str | None = None) -> str | None:
    """The value of header ``name`` (any case); several fields of that name are joined with ", "
    (RFC 9110 §5.3); ``default`` when there is none."""
    name = _lower(name)
    size = len(name)
    found = values = None  # the first value; a list once a second one comes (rare: no list made per call)
    for key, value in headers:
        # Lowering keeps the length of an ASCII name: a name of another length is skipped unlowered.
        if key == name or ((len(key) == size or not key.isascii()) and _lower(key) == name):
            if found is None:
                found = value
            elif values is None:
                values = [found, value]
            else:
                values.append(value)
    if found is None:
        return default
    return found if values is None else ", ".join(values)


# Field names lowered lately, by name: the same few names come in every request, and str.lower()
# makes a new string each time (str.islower() costs as much); cleared whole when full.
_LOWERED: dict[str, str] = {}
_LOWERED_MAX_ITEMS = 1024
_LOWERED_MAX_LENGTH = 64


def _lower(name):
    """``name.lower()``, from the cache when it was lowered lately."""
    lowered = _LOWERED
    low = lowered.get(name)
    if low is not None:
        return low
    low = name.lower()
    if len(name) <= _LOWERED_MAX_LENGTH:
        if len(lowered) >= _LOWERED_MAX_ITEMS:
            lowered.clear()
        lowered[name] = low
    return low


def parse_form(body: bytes) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body.

    ``+`` is a space; ``%XX`` must be two hex digits; the decoded bytes must be UTF-8. Empty pieces
    (``a=1&&b=2``, a trailing ``&``) are skipped; a piece without ``=`` is a field with an empty value.
    A repeated field name is an error, as is an empty one: a call must not depend on which of two
    ``parameter`` fields wins. Raises :class:`RemoteProtocolError` (status hint 400).
    """
    form: dict[str, str] = {}
    decoded = _DECODED
    for piece in bytes(body).split(b"&"):
        if not piece:
            continue
        raw_name, _, raw_value = piece.partition(b"=")
        name = decoded.get(raw_name)
        if name is None:
            name = _form_decode(raw_name)
        if not name:
            raise RemoteProtocolError(f"form field without a name: {show(piece)}")
        if name in form:
            raise RemoteProtocolError(f"form field {name[:60]!r} appears more than once")
        form[name] = form_value(raw_value)
    return form


def form_value(raw: bytes) -> str:
    """The text of one field's value in an ``application/x-www-form-urlencoded`` body, as
    :func:`parse_form` decodes it (``raw``: the bytes after the field's ``=``)."""
    decoded = _DECODED
    value = decoded.get(raw) if len(raw) <= _DECODED_MAX_LENGTH else None
    return _form_decode(raw) if value is None else value


# Short pieces decoded lately: the field names, and values such as the interface and the method,
# come again with every call; a short parameter that does not is never kept (memo.py).
_DECODED_MAX_ITEMS = 1024
_DECODED_MAX_LENGTH = 128
_DECODED = Memo(_DECODED_MAX_ITEMS)


def _form_decode(raw: bytes) -> str:
    text = _decode_piece(raw)
    if len(raw) <= _DECODED_MAX_LENGTH:
        decoded = _DECODED
        decoded.remember(raw, text)
    return text


def _decode_piece(raw: bytes) -> str:
    if b"%" in raw:
        if cython.compiled:
            bad = _bad_escape_at(raw)
        else:
            found = _BAD_ESCAPE.search(raw)
            bad = found.start() if found else -1
        if bad >= 0:
            raise RemoteProtocolError(f"bad percent escape {show(raw[bad : bad + 3])} in form data")
        raw = _unquote_plus(raw) if cython.compiled else unquote_to_bytes(raw.replace(b"+", b" "))
    else:
        raw = raw.replace(b"+", b" ")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"form data is not UTF-8: {show(raw[exc.start : exc.end + 8])}") from None


def _unquote_plus(raw: bytes) -> bytes:
    """``raw`` with each ``+`` made a space and each ``%XX`` the byte it names, as
    ``unquote_to_bytes(raw.replace(b"+", b" "))`` gives it; in one pass, for the compiled build, where
    it runs in C.

    >>> _unquote_plus(b"a+b%2Fc%e2%82%AC%zz%4")
    b'a b/c\\xe2\\x82\\xac%zz%4'
    """
    size = len(raw)
    out = bytearray(size)
    i = j = 0
    while i < size:
        byte = raw[i]
        i += 1
        if byte == 0x2B:
            byte = 0x20
        elif byte == 0x25 and i + 1 < size:
            high, low = _hex_digit(raw[i]), _hex_digit(raw[i + 1])
            if high >= 0 and low >= 0:
                byte = high << 4 | low
                i += 2
        out[j] = byte
        j += 1
    del out[j:]
    return bytes(out)


def _control_at(raw: bytes) -> int:
    """Where the first control character other than HTAB is in ``raw``, or -1: what
    ``_CTL_RE.search`` finds, in one loop over the bytes for the compiled build.

    >>> _control_at(b"a\tb"), _control_at(b"ab\x7f"), _control_at(b"\x00")
    (-1, 2, 0)
    """
    for i in range(len(raw)):
        byte = raw[i]
        if (byte < 0x20 and byte != 0x09) or byte == 0x7F:
            return i
    return -1


def _bad_escape_at(raw: bytes) -> int:
    """Where the first ``%`` of ``raw`` that two hex digits do not follow is, or -1: what
    ``_BAD_ESCAPE.search`` finds, in one loop over the bytes for the compiled build.

    >>> _bad_escape_at(b"a%41%4"), _bad_escape_at(b"%zz"), _bad_escape_at(b"%2F")
    (4, 0, -1)
    """
    size = len(raw)
    for i in range(size):
        if raw[i] == 0x25 and (i + 2 >= size or _hex_digit(raw[i + 1]) < 0 or _hex_digit(raw[i + 2]) < 0):
            return i
    return -1


def _hex_digit(byte: int) -> int:
    """The value of the hex digit ``byte`` (an ASCII code), or -1."""
    if 0x30 <= byte <= 0x39:
        return byte - 0x30
    byte |= 0x20  # lower case
    if 0x61 <= byte <= 0x66:
        return byte - 0x57
    return -1


import_c_accel(globals(), "sidecar.codecs._c_http1_wire")
