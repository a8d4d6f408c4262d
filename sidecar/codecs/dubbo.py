"""Dubbo 2 protocol: the 16-byte frame header (ExchangeCodec) and the request and response bodies
(DubboCodec), in Hessian 2 or fastjson. Pure: events in, bytes out; bytes in, events out.

* :func:`encode` turns a :class:`Request`, :class:`Response`, :class:`Event` or :class:`Frame` into
  the bytes of one frame.
* :class:`DubboDecoder` splits a TCP byte stream into frames: feed it with ``receive_data`` and call
  ``next_event`` until it returns :data:`NEED_DATA`.
* :func:`parse` turns a :class:`Frame` (header plus raw body) into a request, response or event, for
  callers that route frames by request id and only look inside some of them.
* :class:`RequestTemplate` encodes many calls of one method: the parts of the body that do not change
  from call to call are encoded once, so each call encodes only its arguments.

The byte layout, with a worked example, is in ``sidecar/PROTOCOLS.md``.
"""

from __future__ import annotations

from typing import Any

from sidecar._accel import import_c_accel
from sidecar.codecs.dubbo_messages import (
    DEFAULT_PAYLOAD,
    DUBBO_VERSION,
    FLAG_EVENT,
    FLAG_REQUEST,
    FLAG_TWOWAY,
    HEADER,
    HEADER_LENGTH,
    MAGIC,
    MAX_BODY,
    SERIALIZATION_MASK,
    Event,
    Frame,
    Request,
    Response,
    ResultFlag,
    Serialization,
    Status,
    heartbeat,
    parse_descriptor,
    supports_response_attachments,
    to_descriptor,
)
from sidecar.codecs.fastjson import FastjsonDecoder, FastjsonEncoder
from sidecar.codecs.hessian2 import Hessian2Decoder, Hessian2Encoder
from sidecar.codecs.javatypes import Long
from sidecar.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAGIC",
    "HEADER_LENGTH",
    "FLAG_REQUEST",
    "FLAG_TWOWAY",
    "FLAG_EVENT",
    "SERIALIZATION_MASK",
    "DEFAULT_PAYLOAD",
    "DUBBO_VERSION",
    "Serialization",
    "Status",
    "ResultFlag",
    "Frame",
    "Request",
    "Response",
    "Event",
    "NEED_DATA",
    "CLOSED",
    "encode",
    "parse",
    "parse_response",
    "read_reply",
    "DubboDecoder",
    "RequestTemplate",
    "parse_descriptor",
    "to_descriptor",
    "heartbeat",
    "supports_response_attachments",
]

_WRITERS = {Serialization.HESSIAN2: Hessian2Encoder, Serialization.FASTJSON: FastjsonEncoder}
_READERS = {Serialization.HESSIAN2: Hessian2Decoder, Serialization.FASTJSON: FastjsonDecoder}
_STATUSES = {status.value: status for status in Status}
_FLAGS = {flag.value: flag for flag in ResultFlag}
_SERIALIZATIONS = {kind.value: kind for kind in Serialization}
# Members bound once: an enum class resolves its members through a Python-level __getattr__.
_OK = Status.OK
_WITH_EXCEPTION, _VALUE, _NULL_VALUE = (
    ResultFlag.RESPONSE_WITH_EXCEPTION,
    ResultFlag.RESPONSE_VALUE,
    ResultFlag.RESPONSE_NULL_VALUE,
)
_LONGS = frozenset(["J", "Ljava/lang/Long;"])
_DOUBLES = frozenset(["D", "F", "Ljava/lang/Double;", "Ljava/lang/Float;"])


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")  # next_event(): feed more bytes first
CLOSED = _Sentinel("CLOSED")  # next_event(): the stream ended cleanly between frames

# -- encoding ------------------------------------------------------------------------------------


Message = Request | Response | Event | Frame


def encode(message: Message, *, max_payload: int | None = DEFAULT_PAYLOAD) -> bytes:
    """The bytes of one frame. Raises :class:`LocalProtocolError` (status hint 413 for a body over
    ``max_payload`` bytes; ``None`` means only the protocol's own 2 GiB limit)."""
    if isinstance(message, Frame):
        flags, status, body = message.flags, message.status, message.body
    elif isinstance(message, Request):
        flags = FLAG_REQUEST | (FLAG_TWOWAY if message.two_way else 0) | message.serialization
        status, body = 0, _request_body(message)
    elif isinstance(message, Response):
        flags, status, body = message.serialization, message.status, _response_body(message)
    elif isinstance(message, Event):
        flags = FLAG_EVENT | message.serialization
        if message.is_request:
            flags |= FLAG_REQUEST | (FLAG_TWOWAY if message.two_way else 0)
            status = 0
        else:
            status = message.status
        writer = _writer(message.serialization)
        failed = not message.is_request and status != _OK
        writer.write(_text(message.error_message, "error_message") if failed else message.data)
        body = writer.getvalue()
    else:
        raise LocalProtocolError(f"cannot encode {type(message).__qualname__} as a Dubbo frame")
    request_id = message.request_id
    if not 0 <= request_id < 1 << 64 or not 0 <= status <= 0xFF or not 0 <= flags <= 0xFF:
        fields = f"id {request_id}, flags {flags}, status {status}"
        raise LocalProtocolError(f"header field out of range: {fields}")
    _check_length(len(body), max_payload, request_id, LocalProtocolError)
    return HEADER.pack(MAGIC, flags, status, request_id, len(body)) + body


def _writer(serialization: int) -> Any:
    factory = _WRITERS.get(serialization)
    if factory is None:
        raise LocalProtocolError(f"serialization id {serialization} is not supported (2 or 6)")
    return factory()


def _check_length(length: int, max_payload: int | None, request_id: int, error: type) -> None:
    limit = MAX_BODY if max_payload is None or max_payload <= 0 else min(max_payload, MAX_BODY)
    if length > limit:
        raise error(
            f"Dubbo frame {request_id}: body of {length} bytes exceeds the payload limit of {limit}",
            status_hint=413,
            request_id=request_id,
        )


def _text(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise LocalProtocolError(f"{what} must be a string or None, not {type(value).__qualname__}")
    return value


def _request_body(request: Request) -> bytes:
    try:
        types = parse_descriptor(_text(request.parameter_types, "parameter_types") or "")
    except ValueError as exc:
        raise LocalProtocolError(str(exc), request_id=request.request_id) from None
    if len(types) != len(request.arguments):
        count = f"{len(request.arguments)} arguments for {len(types)} parameter types"
        raise LocalProtocolError(f"{count} {request.parameter_types!r}", request_id=request.request_id)
    if not request.method or not isinstance(request.method, str):
        raise LocalProtocolError("a request needs a method name", request_id=request.request_id)
    writer = _writer(request.serialization)
    writer.write(_text(request.dubbo_version, "dubbo_version"))
    writer.write(_text(request.service_path, "service_path"))
    writer.write(_text(request.service_version, "service_version"))
    writer.write(request.method)
    writer.write(request.parameter_types)
    _write_arguments(writer, types, request.arguments)
    writer.write(request.attachments if request.attachments is not None else {})
    return writer.getvalue()


def _write_arguments(writer: Any, types: tuple[str, ...], arguments: Any) -> None:
    for kind, argument in zip(types, arguments, strict=True):
        if type(argument) is int:  # a Python int for a long or double parameter: send that type
            argument = Long(argument) if kind in _LONGS else float(argument) if kind in _DOUBLES else argument
        writer.write(argument)


class RequestTemplate:
    """The request frames of one method called again and again: ``encode(request_id, arguments)``
    gives the same bytes as ``encode(Request(request_id, ..., arguments, ...))`` with the fields given
    here, but encodes only the arguments; the body's head (Dubbo version, path, version, method,
    descriptor) and, when it can, its tail (the attachments) are encoded once, here.

    Why the pieces can be encoded apart: a Hessian 2 stream shares class definitions, type names and
    back-references between its values, so a value's bytes can depend on what was written before it.
    The head is five strings (or nulls), which define and use none of these, so the arguments come
    out the same after it as in a fresh stream. The tail is encoded once only when the attachments
    are a plain ``dict`` of string keys and string or null values: then it is ``H``, strings, ``Z``
    whatever came before (the map's own reference number is never written, as nothing follows it).
    Other attachments (a ``TypedMap``, whose type name may be a reference to an argument's; nested
    values, which may be back-references) are written after the arguments in the same stream, as
    :func:`encode` does. fastjson has no state between values at all. One difference remains: an
    argument that is the very attachments dict is a back-reference for :func:`encode` and a second
    copy of the map here (the peer reads the same value). Attachments written per call are not
    copied: do not change them while the template is in use.

    The constructor raises :class:`LocalProtocolError` for a request that :func:`encode` refuses
    whatever its arguments (a bad descriptor, no method name, a field that is not a string), without
    a request id; ``encode`` raises what :func:`encode` raises for the arguments and the request id.
    """

    __slots__ = ("serialization", "flags", "_descriptor", "_types", "_writer", "_head", "_tail", "_attachments")

    def __init__(
        self,
        service_path: str | None,
        method: str,
        parameter_types: str = "",
        attachments: dict[str, Any] | None = None,
        *,
        service_version: str | None = "0.0.0",
        dubbo_version: str | None = DUBBO_VERSION,
        two_way: bool = True,
        serialization: int = Serialization.HESSIAN2,
    ):
        try:
            self._types = parse_descriptor(_text(parameter_types, "parameter_types") or "")
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
        if not method or not isinstance(method, str):
            raise LocalProtocolError("a request needs a method name")
        self.serialization = serialization
        self._descriptor = parameter_types
        self.flags = FLAG_REQUEST | (FLAG_TWOWAY if two_way else 0) | serialization
        self._writer = _WRITERS.get(serialization)
        head = _writer(serialization)
        head.write(_text(dubbo_version, "dubbo_version"))
        head.write(_text(service_path, "service_path"))
        head.write(_text(service_version, "service_version"))
        head.write(method)
        head.write(parameter_types)
        self._head = head.getvalue()
        attachments = attachments if attachments is not None else {}
        self._tail: bytes | None = None
        self._attachments: dict[str, Any] | None = attachments  # written per call when _tail is None
        if serialization != Serialization.HESSIAN2 or (
            type(attachments) is dict
            and all(type(key) is str and (value is None or type(value) is str) for key, value in attachments.items())
        ):
            tail = _writer(serialization)
            tail.write(attachments)
            self._tail, self._attachments = tail.getvalue(), None

    def encode(self, request_id: int, arguments: Any, *, max_payload: int | None = DEFAULT_PAYLOAD) -> bytes:
        """The bytes of the request frame ``request_id`` with ``arguments`` (see :func:`encode`)."""
        types = self._types
        if len(types) != len(arguments):
            count = f"{len(arguments)} arguments for {len(types)} parameter types"
            raise LocalProtocolError(f"{count} {self._descriptor!r}", request_id=request_id)
        writer = self._writer()
        _write_arguments(writer, types, arguments)
        tail = self._tail
        if tail is None:
            writer.write(self._attachments)
            tail = b""
        written = writer.getvalue()
        length = len(self._head) + len(written) + len(tail)
        if not 0 <= request_id < 1 << 64:
            raise LocalProtocolError(f"header field out of range: id {request_id}, flags {self.flags}, status 0")
        _check_length(length, max_payload, request_id, LocalProtocolError)
        # One copy of the frame: the pieces joined once, not the body made first and the header added.
        return b"".join((HEADER.pack(MAGIC, self.flags, 0, request_id, length), self._head, written, tail))


def _response_body(response: Response) -> bytes:
    writer = _writer(response.serialization)
    if response.status != _OK:
        writer.write(_text(response.error_message, "error_message"))
        return writer.getvalue()
    flag = response.flag
    if flag is None:
        flag = 0 if response.exception is not None else 2 if response.value is None else 1
        flag += 3 if response.attachments is not None else 0
    try:
        flag = ResultFlag(flag)
    except ValueError:
        raise LocalProtocolError(f"unknown result flag {flag}", request_id=response.request_id) from None
    writer.write_int(flag)
    base = flag % 3
    written = None
    if base == _WITH_EXCEPTION:
        written = response.exception
    elif base == _VALUE:
        written = response.value
    if base != _NULL_VALUE:
        writer.write(written)
    if flag < 3:
        return writer.getvalue()
    attachments = response.attachments if response.attachments is not None else {}
    if type(written) in _SCALARS and type(attachments) is dict and attachments == _DUBBO_ATTACHMENTS:
        # What nearly every reply carries, after a value that cannot be (or hold) a reference to it.
        return writer.getvalue() + _PROVIDER_ATTACHMENTS[response.serialization]
    writer.write(attachments)
    return writer.getvalue()


# -- decoding ------------------------------------------------------------------------------------


def parse(frame: Frame) -> Request | Response | Event:
    """Decode the body of ``frame``. A malformed body raises :class:`RemoteProtocolError` with the
    frame's ``request_id`` and a status hint of 400 (a request) or 502 (a response)."""
    kind = "request" if frame.is_request else "response"
    try:
        reader_class = _READERS.get(frame.serialization)
        if reader_class is None:
            raise RemoteProtocolError(f"serialization id {frame.serialization} is not supported (2 or 6)")
        reader = reader_class(frame.body)
        if frame.is_event:
            return _parse_event(frame, reader)
        return _parse_request(frame, reader) if frame.is_request else _parse_response(frame, reader)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(
            f"Dubbo {kind} {frame.request_id}: {exc.reason}",
            status_hint=400 if frame.is_request else 502,
            request_id=frame.request_id,
        ) from None


def _status(value: int) -> int:
    return _STATUSES.get(value, value)


def _attachments(reader: Any) -> dict[str, Any]:
    value = None if reader.at_end() else reader.read()
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"attachments must be a map, not {type(value).__name__}")
    return value


def _parse_event(frame: Frame, reader: Any) -> Event:
    status = _status(frame.status) if not frame.is_request else _OK
    event = Event(
        frame.request_id,
        frame.is_request,
        frame.two_way,
        status=status,
        serialization=_SERIALIZATIONS[frame.serialization],
    )
    if reader.at_end():
        return event
    if status == _OK:
        event.data = reader.read()
    else:
        event.error_message = reader.read_string()
    return event


def _parse_request(frame: Frame, reader: Any) -> Request:
    dubbo_version = reader.read_string()
    service_path = reader.read_string()
    service_version = reader.read_string()
    method = reader.read_string()
    if not method:
        raise RemoteProtocolError("request without a method name")
    descriptor = reader.read_string() or ""
    try:
        types = parse_descriptor(descriptor)
    except ValueError as exc:
        raise RemoteProtocolError(str(exc)) from None
    arguments = [reader.read() for _ in types]
    return Request(
        request_id=frame.request_id,
        service_path=service_path,
        method=method,
        parameter_types=descriptor,
        arguments=arguments,
        attachments=_attachments(reader),
        service_version=service_version,
        dubbo_version=dubbo_version,
        two_way=frame.two_way,
        serialization=_SERIALIZATIONS[frame.serialization],
    )


def parse_response(data: bytes) -> Response:
    """The response in ``data``, the bytes of one whole response frame (header and body) whose header
    was checked: ``parse(Frame(flags, status, request_id, body))`` of its fields, read in place
    rather than from a copy of the body. Raises what :func:`parse` raises."""
    fields = _read_in_place(data)
    if fields is None:
        return parse(_frame_of(data))
    return _response_of(HEADER.unpack_from(data)[3], data[2] & SERIALIZATION_MASK, fields)


def read_reply(data: bytes) -> tuple[int, str | None, Any, Any]:
    """``(status, error_message, exception, value)`` of ``parse_response(data)``, without making the
    :class:`Response` (what the consumer's reply needs of each one). Raises what :func:`parse` raises."""
    fields = _read_in_place(data)
    if fields is None:
        response = parse(_frame_of(data))
        return response.status, response.error_message, response.exception, response.value
    return fields[0], fields[2], fields[3], fields[4]


def _read_in_place(data: bytes) -> tuple | None:
    """The fields (:func:`_read_fields`) of the response frame in ``data``, read where they are; None
    for a frame that is not such a response or does not decode: ``parse()`` of a copy of its body
    says why, its offsets counted in the body."""
    if len(data) < HEADER_LENGTH:
        return None
    flags, status = data[2], data[3]
    serialization = flags & SERIALIZATION_MASK
    reader_class = _READERS.get(serialization)
    if reader_class is None or flags & (FLAG_REQUEST | FLAG_EVENT):
        return None
    try:
        return _read_fields(status, serialization, reader_class(data, HEADER_LENGTH), data)
    except RemoteProtocolError:
        return None


def _frame_of(data: bytes) -> Frame:
    _, flags, status, request_id, _ = HEADER.unpack_from(data)
    return Frame(flags, status, request_id, bytes(data[HEADER_LENGTH:]))


def _parse_response(frame: Frame, reader: Any) -> Response:
    fields = _read_fields(frame.status, frame.serialization, reader, frame.body)
    return _response_of(frame.request_id, frame.serialization, fields)


def _response_of(request_id: int, serialization: int, fields: tuple) -> Response:
    status, flag, error_message, exception, value, attachments = fields
    if attachments is _USUAL_ATTACHMENTS:
        attachments = {"dubbo": DUBBO_VERSION}  # a map of its own for each response: callers may change it
    return Response(
        request_id, status, value, exception, attachments, error_message, flag, _SERIALIZATIONS[serialization]
    )


def _read_fields(status: int, serialization: int, reader: Any, data: bytes) -> tuple:
    """``(status, flag, error_message, exception, value, attachments)`` of the response whose body
    ``reader`` reads from ``data`` (which ends where the body ends): the fields of its
    :class:`Response`, attachments being :data:`_USUAL_ATTACHMENTS` for the map nearly every reply
    carries, which is then not decoded."""
    status = _status(status)
    if status != _OK:
        return status, None, None if reader.at_end() else reader.read_string(), None, None, None
    value = reader.read_int()
    flag = _FLAGS.get(value)
    if flag is None:
        raise RemoteProtocolError(f"unknown result flag {value}")
    base = flag % 3
    exception = result = attachments = None
    if base == _WITH_EXCEPTION:
        exception = reader.read()
    elif base == _VALUE:
        result = reader.read()
    if flag >= 3:
        tail = _PROVIDER_ATTACHMENTS[serialization]
        if reader.position + len(tail) == len(data) and data.endswith(tail):
            attachments = _USUAL_ATTACHMENTS
        else:
            attachments = _attachments(reader)
    return status, flag, None, exception, result, attachments


def _encoded(serialization: int, value: Any) -> bytes:
    writer = _writer(serialization)
    writer.write(value)
    return writer.getvalue()


# The attachments a Dubbo 2.0.2 provider puts after every result, as each serialization writes them:
# a reply whose body ends with exactly these bytes after its value needs no map decoded, and a
# reply with a scalar value (no stream state to share) gets them without encoding the map.
_DUBBO_ATTACHMENTS = {"dubbo": DUBBO_VERSION}
_PROVIDER_ATTACHMENTS = {kind: _encoded(kind, _DUBBO_ATTACHMENTS) for kind in Serialization}
_USUAL_ATTACHMENTS = object()  # read: the body ended with exactly the bytes of _DUBBO_ATTACHMENTS
_SCALARS = frozenset([type(None), bool, int, Long, float, str])


class DubboDecoder:
    """Incremental decoder for one TCP stream of Dubbo frames.

    ``receive_data(b"")`` marks the end of the stream. ``next_event()`` returns a :class:`Request`,
    :class:`Response` or :class:`Event` (a raw :class:`Frame` when ``parse_bodies`` is false),
    :data:`NEED_DATA`, or :data:`CLOSED` once the stream ended between frames.

    Errors: a broken stream (bad magic, a body over ``max_payload``, the stream ending inside a
    frame) raises :class:`RemoteProtocolError` and every later call raises it again. A frame whose
    header is sound but whose body cannot be decoded raises an error carrying its ``request_id``;
    the frame is consumed and the next call goes on with the next frame.
    """

    COMPACT_AFTER = 64 * 1024  # drop consumed bytes once this many have piled up

    def __init__(self, *, max_payload: int | None = DEFAULT_PAYLOAD, parse_bodies: bool = True):
        self.max_payload = max_payload
        self.parse_bodies = parse_bodies
        self._buffer = bytearray()
        self._pos = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a frame."""
        return len(self._buffer) - self._pos

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            self._eof = True
        elif self._eof:
            raise LocalProtocolError("receive_data() with more bytes after the end of the stream")
        else:
            self._buffer += data

    def next_event(self) -> Request | Response | Event | Frame | _Sentinel:
        if self._error is not None:
            raise self._error
        buffer, pos = self._buffer, self._pos
        available = len(buffer) - pos
        if available < HEADER_LENGTH:
            if not self._eof:
                return NEED_DATA
            if available == 0:
                return CLOSED
            self._fail(f"stream ended inside a frame header ({available} of {HEADER_LENGTH} bytes)")
        magic, flags, status, request_id, length = HEADER.unpack_from(buffer, pos)
        if magic != MAGIC:
            head = bytes(buffer[pos : pos + HEADER_LENGTH]).hex()
            self._fail(f"bad magic 0x{magic:04x}, expected 0xdabb (frame header {head})")
        try:
            _check_length(length, self.max_payload, request_id, RemoteProtocolError)
        except RemoteProtocolError as exc:
            self._error = exc
            raise
        end = pos + HEADER_LENGTH + length
        if end > len(buffer):
            if not self._eof:
                return NEED_DATA
            self._fail(f"stream ended inside frame {request_id} ({available} of {end - pos} bytes)")
        if length < 65536:
            body = bytes(buffer[pos + HEADER_LENGTH : end])
        else:
            with memoryview(buffer) as view:  # one copy of a large body, not two
                body = bytes(view[pos + HEADER_LENGTH : end])
        frame = Frame(flags, status, request_id, body)
        if end == len(buffer):
            buffer.clear()
            self._pos = 0
        elif end > self.COMPACT_AFTER:
            del buffer[:end]
            self._pos = 0
        else:
            self._pos = end
        return parse(frame) if self.parse_bodies else frame

    def _fail(self, reason: str) -> None:
        self._error = RemoteProtocolError(f"Dubbo stream: {reason}")
        raise self._error


import_c_accel(globals(), "sidecar.codecs._c_dubbo")
