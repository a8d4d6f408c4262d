"""The consumer sidecar's translation between HTTP calls and Dubbo 2 frames. Pure: no sockets, no clock.

* :func:`parse_call` turns a whole HTTP request (method, target, headers, body) into a :class:`Call`:
  :func:`check_route` of its head (which a server runs before it reads the body), then
  :func:`parse_checked_call` of the path that returned and the body;
* :func:`encode_call` turns a :class:`Call` into the bytes of its Dubbo request frame;
* :func:`reply_for` turns the Dubbo response frame into the HTTP :class:`Reply`;
* :func:`error_reply` is the canned reply for every other failure (400, 404, 503, 504 ...).

The two call forms:

* **the form call** (the benchmark's): ``POST /``, ``application/x-www-form-urlencoded`` (or no
  Content-Type), fields ``interface``, ``method``, ``parameterTypesString`` (a JVM descriptor such as
  ``Ljava/lang/String;``, or Java type names separated by commas), ``parameter``, and optionally
  ``version`` and ``group``. The descriptor declares at most one parameter; ``parameter`` is its text,
  converted for ``int``/``long``/``short``/``byte`` (decimal), ``boolean`` (``true``/``false``),
  ``double``/``float``, ``char`` (one character), their boxed classes, and passed as is for
  ``String``, ``Object`` and ``CharSequence``. The reply body is the result as text.
* **the JSON call**: ``POST /dubbo/{interface}/{method}`` with no Content-Type or ``application/json``
  and an object ``{"types": [...], "args": [...], "attachments": {...}, "version": ..., "group": ...}``;
  every key is optional (an empty body is ``{}``: a call without arguments). ``types`` holds one Java
  type per argument, as a name (``java.lang.String``, ``int``, ``long[]``, ``[Ljava.lang.String;``)
  or a descriptor (``Ljava/lang/String;``, ``I``). ``args`` go as JSON gives them (objects as maps).
  ``attachments`` maps strings to strings; ``path``, ``interface``, ``version`` and ``group`` are set
  from the call itself. The reply is ``{"result": ...}`` (JSON).

Failures of :func:`parse_call` raise :class:`BadCall` (a :class:`RemoteProtocolError`) whose
``status_hint`` is 400, 404, 405 or 415 and whose ``headers`` go into the reply (``Allow: POST`` for 405).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import chain
from typing import Any
from urllib.parse import unquote

from sidecar._accel import import_c_accel
from sidecar.codecs import dubbo, fastjson
from sidecar.codecs.dubbo import Request, Serialization, Status, parse_descriptor, to_descriptor
from sidecar.codecs.dubbo_messages import FLAG_EVENT, FLAG_REQUEST, HEADER, HEADER_LENGTH, MAGIC
from sidecar.codecs.http1_wire import form_value as _form_value
from sidecar.codecs.http1_wire import get_header, parse_form
from sidecar.codecs.javatypes import Long, describe_exception
from sidecar.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "Call",
    "Reply",
    "BadCall",
    "parse_call",
    "parse_checked_call",
    "prepare_call",
    "encode_call",
    "reply_for",
    "error_reply",
]

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
JSON_ROUTE = "POST /dubbo/{interface}/{method}"
_JSON_KEYS = frozenset(["types", "args", "attachments", "version", "group"])
_FORM_KEYS = frozenset(["interface", "method", "parameterTypesString", "parameter", "version", "group"])
_RESERVED = ("path", "interface", "version", "group")
_INTEGER = re.compile(r"[+-]?[0-9]+")
# Each digit belongs to one repetition only: ``[0-9]+\.?[0-9]*`` split a run of digits every way
# before failing on what follows it (quadratic in the length of the parameter).
_DECIMAL = re.compile(r"[+-]?(?:NaN|Infinity|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
_LINE_BREAK = re.compile(r"[\r\n]")
_OK = Status.OK  # bound once: an enum class resolves its members through a Python-level __getattr__


@dataclass(slots=True)
class Call:
    """One call, whichever form it came in. ``form`` is true for the form call (reply as text)."""

    interface: str
    method: str
    parameter_types: str = ""  # a JVM descriptor
    arguments: list[Any] = field(default_factory=list)
    attachments: dict[str, str] = field(default_factory=dict)
    version: str | None = None
    group: str | None = None
    form: bool = True
    # The request template of this call for one serialization, when :func:`prepare_call` found it
    # already: :func:`encode_call` then skips looking it up. Not part of the call's value.
    template: dubbo.RequestTemplate | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class Reply:
    """An HTTP reply: ``headers`` is a fresh list (callers may append); Content-Length is not in it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class BadCall(RemoteProtocolError):
    """A request that is not a call; ``headers`` belong in its error reply."""

    def __init__(self, reason: str, status_hint: int = 400, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(reason, status_hint=status_hint)
        self.headers = headers


# -- HTTP request -> Call ------------------------------------------------------------------------


def parse_call(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> Call:
    """The call an HTTP request makes (see the module docstring); raises :class:`BadCall`."""
    return parse_checked_call(check_route(method, target, headers), body)


def parse_checked_call(path: str, body: bytes) -> Call:
    """The call of a request whose head :func:`check_route` passed, returning ``path``, and whose body
    is ``body``: what :func:`parse_call` does after that check. Raises :class:`BadCall`."""
    if path == "/":
        return _form_call(parse_form(body))
    parts = path.split("/")
    return _json_call(unquote(parts[2]), unquote(parts[3]), body)


def prepare_call(path: str, body: bytes, serialization: int = Serialization.HESSIAN2) -> Call:
    """:func:`parse_checked_call` for a server that will encode the call with ``serialization``: the
    same :class:`Call`, or the same error, found the short way for the common form call.

    The common form call ends with its ``parameter`` field, of a text type (``String``, ``Object``,
    ``CharSequence``). Everything before that field (its *head*: interface, method, descriptor,
    version, group) comes again, byte for byte, with every call of one method, and what the general
    path makes of it does not depend on the parameter: so the head is checked and its fields decoded
    once, by the general path, and kept (:data:`_FORM_HEADS`) with the call's template. A call whose
    head was seen before costs a dictionary lookup and the decoding of its parameter. Anything else
    (another order of fields, a parameter of another type, a parameter with ``&`` in it, a head the
    general path refuses) takes :func:`parse_checked_call` itself.
    """
    if path == "/" and type(body) is bytes:
        at = body.find(b"&parameter=") + 1  # its head is short: found from the start (0: not found)
        if at:
            value = body[at + 10 :]
            if at <= _FORM_HEAD_MAX and b"&" not in value:
                head = body[:at]
                known = _FORM_HEADS.get((serialization, head))
                if known is None:
                    known = _form_head(head, serialization)
                if known is not False:
                    arguments = [_form_value(value)]
                    # Every field by position (form=True, then the template): a keyword costs the
                    # dataclass's interpreted __init__ a third more.
                    return Call(
                        known.interface, known.method, known.parameter_types, arguments, {}, known.version,
                        known.group, True, known.template,
                    )  # fmt: skip
    return parse_checked_call(path, body)


# The heads of the form calls seen lately (see prepare_call), by serialization and bytes: a Call
# without arguments and with its template, or False for a head that takes the general path; cleared
# whole when full.
_FORM_HEADS: dict[tuple[int, bytes], Call | bool] = {}
_MAX_FORM_HEADS = 1024
_FORM_HEAD_MAX = 1024  # bytes of a head worth keeping: a longer one takes the general path every time
_TEXT_TYPES = frozenset(["Ljava/lang/String;", "Ljava/lang/Object;", "Ljava/lang/CharSequence;"])


def _form_head(head: bytes, serialization: int) -> Call | bool:
    """What :func:`prepare_call` keeps of ``head``: the call the general path makes of it with an empty
    parameter, if it makes one with a single text parameter and a template; else False."""
    known: Call | bool = False
    try:
        call = _form_call(parse_form(head + b"parameter="))
    except RemoteProtocolError:
        call = None
    if call is not None and call.parameter_types in _TEXT_TYPES:
        template = _template(call, serialization)
        if template is not None:
            call.arguments, call.template = [], template
            known = call
    if len(_FORM_HEADS) >= _MAX_FORM_HEADS:
        _FORM_HEADS.clear()
    _FORM_HEADS[serialization, head] = known
    return known


def check_route(method: str, target: str, headers: list[tuple[str, str]]) -> str:
    """What a call's head must pass before its body is read (the path, the method, no query string,
    the Content-Type); returns the path. Raises :class:`BadCall`.

    >>> check_route("POST", "/", [])
    '/'
    >>> try:
    ...     check_route("GET", "/dubbo/Svc/hash", [])
    ... except BadCall as e:
    ...     print(e.status_hint, e.reason)
    405 method GET not allowed: calls are POST
    """
    content_type = get_header(headers, "content-type")
    key = (method, target, content_type)
    path = _ROUTES.get(key)
    if path is None:
        path = _checked_route(method, target, content_type)
        if len(target) <= _ROUTE_MAX and (content_type is None or len(content_type) <= _ROUTE_MAX):
            if len(_ROUTES) >= _MAX_ROUTES:
                _ROUTES.clear()
            _ROUTES[key] = path
    return path


# Routes that passed lately, by method, target and Content-Type: a client calls the same few again
# and again; cleared whole when full. A refused route is not kept (its error is made each time).
_ROUTES: dict[tuple[str, str, str | None], str] = {}
_MAX_ROUTES = 1024
_ROUTE_MAX = 256  # characters of a target or a Content-Type worth keeping


def _checked_route(method: str, target: str, content_type: str | None) -> str:
    path, _, query = _origin_form(target).partition("?")
    whole = _json_path(path)
    form = whole is None
    if whole is False:
        raise BadCall(f"no such path {_show(path)}: the JSON call is {JSON_ROUTE}", 404)
    if form and path != "/":
        raise BadCall(f"no such path {_show(path)}: call POST / (form) or {JSON_ROUTE}", 404)
    if method != "POST":
        raise BadCall(f"method {method} not allowed: calls are POST", 405, (("Allow", "POST"),))
    if query:
        raise BadCall("a query string is not supported: put the call's fields in the body")
    expected = FORM if form else JSON
    if content_type is not None and content_type.partition(";")[0].strip().lower() != expected:
        raise BadCall(f"Content-Type {_show(content_type)} not supported here: send {expected}", 415)
    return path


def json_route(target: str) -> bool | None:
    """None when ``target`` is not on the JSON route (``/dubbo/...``); else whether it is a whole
    ``/dubbo/{interface}/{method}``. Errors on the JSON route are answered in JSON.

    >>> json_route("/"), json_route("/dubbo/Svc/hash?x"), json_route("/dubbo/Svc")
    (None, True, False)
    """
    return _json_path(_origin_form(target).partition("?")[0])


def _json_path(path: str) -> bool | None:
    """:func:`json_route` of a path without its query."""
    if not path.startswith("/dubbo/"):
        return None
    parts = path.split("/")
    return len(parts) == 4 and bool(parts[2]) and bool(parts[3])


def _origin_form(target: str) -> str:
    """The path and query of a request target: an absolute-form target loses its scheme and host."""
    if target.startswith(("http://", "https://")):
        slash = target.find("/", target.find("//") + 2)
        return target[slash:] if slash >= 0 else "/"
    return target


def _form_call(fields: dict[str, str]) -> Call:
    for name in ("interface", "method"):
        if not fields.get(name):
            raise BadCall(f"form field {name!r} is missing or empty")
    if "parameterTypesString" not in fields:
        raise BadCall("form field 'parameterTypesString' is missing (empty for a method without parameters)")
    if not fields.keys() <= _FORM_KEYS:
        unknown = ", ".join(sorted(repr(k[:40]) for k in fields.keys() - _FORM_KEYS))
        raise BadCall(f"unknown form field {unknown}: the fields are {', '.join(sorted(_FORM_KEYS))}")
    descriptor = fields["parameterTypesString"]
    try:
        types = parse_descriptor(descriptor)
    except ValueError:
        try:
            descriptor = to_descriptor([name.strip() for name in descriptor.split(",")])
            types = parse_descriptor(descriptor)
        except ValueError:
            reason = f"parameterTypesString {_show(descriptor)} is neither a JVM descriptor nor type names"
            raise BadCall(reason) from None
    text = fields.get("parameter")
    if len(types) > 1:
        raise BadCall(f"the form call carries one parameter, not {len(types)}: use {JSON_ROUTE}")
    if not types:
        if text:
            raise BadCall("form field 'parameter' given, but parameterTypesString declares no parameter")
        arguments = []
    elif text is None:
        raise BadCall("form field 'parameter' is missing")
    else:
        arguments = [_convert(types[0], text)]
    version, group = fields.get("version") or None, fields.get("group") or None
    return Call(fields["interface"], fields["method"], descriptor, arguments, {}, version, group, True)


def _whole(bits: int, kind: type = int):
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def convert(text: str) -> int:
        if not _INTEGER.fullmatch(text):
            raise ValueError("expected a whole number")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"out of range {low}..{high}")
        return kind(value)

    return convert


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise ValueError("expected true or false")
    return lowered == "true"


def _decimal(text: str) -> float:
    if not _DECIMAL.fullmatch(text):
        raise ValueError("expected a decimal number")
    return float(text)


def _char(text: str) -> str:
    if len(text) != 1 or ord(text) > 0xFFFF:
        raise ValueError("expected one character")
    return text


_CONVERTERS = {}
for _names, _converter in [
    ("Ljava/lang/String; Ljava/lang/Object; Ljava/lang/CharSequence;", str),
    ("I Ljava/lang/Integer;", _whole(32)),
    ("J Ljava/lang/Long;", _whole(64, Long)),
    ("S Ljava/lang/Short;", _whole(16)),
    ("B Ljava/lang/Byte;", _whole(8)),
    ("Z Ljava/lang/Boolean;", _boolean),
    ("D F Ljava/lang/Double; Ljava/lang/Float;", _decimal),
    ("C Ljava/lang/Character;", _char),
]:
    _CONVERTERS.update(dict.fromkeys(_names.split(), _converter))


def _convert(kind: str, text: str) -> Any:
    converter = _CONVERTERS.get(kind)
    if converter is None:
        raise BadCall(f"the form call cannot carry a parameter of type {kind}: use {JSON_ROUTE}")
    try:
        return converter(text)
    except ValueError as exc:
        raise BadCall(f"parameter {_show(text)} does not fit type {kind}: {exc}") from None


def _json_call(interface: str, method: str, body: bytes) -> Call:
    try:
        data = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise BadCall(f"bad JSON in the body: {_show(str(exc))}") from None
    if not isinstance(data, dict):
        raise BadCall(f"the body must be a JSON object, not {type(data).__name__}")
    if not data.keys() <= _JSON_KEYS:
        unknown = ", ".join(sorted(repr(k[:40]) for k in data.keys() - _JSON_KEYS))
        raise BadCall(f"unknown key {unknown}: the keys are {', '.join(sorted(_JSON_KEYS))}")
    types, args, attachments = data.get("types", []), data.get("args", []), data.get("attachments") or {}
    if not isinstance(types, list) or not isinstance(args, list):
        raise BadCall('"types" and "args" must be JSON arrays')
    if len(types) != len(args):
        raise BadCall(f'{len(types)} "types" for {len(args)} "args": give one type per argument')
    descriptors = []
    for index, name in enumerate(types):
        try:
            if not isinstance(name, str):
                raise ValueError("not a string")
            descriptor = to_descriptor([name])
            if len(parse_descriptor(descriptor)) != 1:
                raise ValueError("not one type")
        except ValueError as exc:
            raise BadCall(f"types[{index}] {json.dumps(name)[:80]} is not a Java type: {exc}") from None
        descriptors.append(descriptor)
    if not isinstance(attachments, dict) or not all(isinstance(v, str) for v in attachments.values()):
        raise BadCall('"attachments" must be an object of strings')
    for key in _RESERVED:
        if key in attachments:
            raise BadCall(f'attachment {key!r} is set by the call itself: use the URL or the "{key}" key')
    version, group = data.get("version"), data.get("group")
    if not isinstance(version, str | None) or not isinstance(group, str | None):
        raise BadCall('"version" and "group" must be strings')
    return Call(interface, method, "".join(descriptors), args, attachments, version or None, group or None, False)


# -- Call -> Dubbo request -----------------------------------------------------------------------


def encode_call(call: Call, request_id: int, *, serialization: int = Serialization.HESSIAN2) -> bytes:
    """The Dubbo request frame of ``call``, with the attachments a Dubbo 2 consumer sends (``path``,
    ``interface``, ``version``, ``group`` when set). Raises :class:`LocalProtocolError` (413 when the
    body exceeds Dubbo's 8 MiB payload, 400 when the arguments do not fit the descriptor)."""
    template = call.template
    if template is None or template.serialization != serialization:
        template = _template(call, serialization)
    if template is not None:
        return template.encode(request_id, call.arguments)
    # A call no frame can carry whatever its arguments: encode() says why, with the request id.
    request = Request(request_id, call.interface, call.method, call.parameter_types, call.arguments)
    request.attachments, request.service_version = _attachments(call), call.version or "0.0.0"
    request.serialization = serialization
    return dubbo.encode(request)


def _attachments(call: Call) -> dict[str, str]:
    version = call.version or "0.0.0"
    attachments = {"path": call.interface, "interface": call.interface, "version": version}
    if call.group:
        attachments["group"] = call.group
    if call.attachments:
        attachments = {**call.attachments, **attachments}
    return attachments


# The request templates of the calls seen lately, by everything of a call but its arguments: a
# consumer sees few distinct methods, so the cache is cleared whole when it fills up.
_TEMPLATES: dict[tuple, dubbo.RequestTemplate] = {}
_MAX_TEMPLATES = 1024


def _template(call: Call, serialization: int) -> dubbo.RequestTemplate | None:
    """The template of ``call``'s method; None for a call that cannot be encoded at all. It is cached
    only when every field of the key is a string or None: values that are equal but encode
    differently (``1`` and ``True``) must not share a template."""
    fields = (call.interface, call.method, call.parameter_types, call.version, call.group)
    if call.attachments:
        fields += tuple(chain.from_iterable(call.attachments.items()))
    cached = True
    for value in fields:
        if value is not None and type(value) is not str:
            cached = False
            break
    if cached:
        template = _TEMPLATES.get((serialization, fields))
        if template is not None:
            return template
    try:
        template = dubbo.RequestTemplate(
            call.interface,
            call.method,
            call.parameter_types,
            _attachments(call),
            service_version=call.version or "0.0.0",
            serialization=serialization,
        )
    except LocalProtocolError:
        return None
    if cached:
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.clear()
        _TEMPLATES[serialization, fields] = template
    return template


# -- Dubbo response -> HTTP reply ----------------------------------------------------------------


def reply_for(call: Call, frame: bytes) -> Reply:
    """The HTTP reply for the Dubbo response ``frame`` to ``call``: 200 with the value, 500 for an
    exception result, 502 for a status other than OK or a frame that cannot be decoded."""
    try:
        status, error_message, exception, value = _result(frame)
    except RemoteProtocolError as exc:
        return error_reply(502, f"bad reply from provider: {exc.reason}", form=call.form)
    if status != _OK:
        name = status.name if isinstance(status, Status) else f"status {status}"
        line = _one_line(f"Dubbo status {name}: {error_message or 'no message'}")
        return _reply(502, call.form, line, {"error": line, "dubbo_status": name})
    if exception is not None:
        kind, message = describe_exception(exception)
        line = _one_line(kind if message is None else f"{kind}: {message}")
        return _reply(500, call.form, line, {"error": line, "type": kind})
    try:
        if not call.form:
            return Reply(200, [("Content-Type", JSON)], fastjson.dumps({"result": value}))
        return Reply(200, [("Content-Type", TEXT)], _as_text(value))
    except LocalProtocolError as exc:  # a value that JSON cannot show
        return error_reply(502, f"bad reply from provider: {exc.reason}", form=call.form)


def _result(frame: bytes) -> tuple[int, str | None, object, object]:
    """``(status, error_message, exception, value)`` of the Dubbo response ``frame``
    (:func:`sidecar.codecs.dubbo.read_reply`), once its header says it is one."""
    if len(frame) < HEADER_LENGTH:
        raise RemoteProtocolError(f"{len(frame)} bytes, shorter than a Dubbo header")
    magic, flags, status, request_id, length = HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise RemoteProtocolError(f"bad magic 0x{magic:04x}, expected 0xdabb")
    if length != len(frame) - HEADER_LENGTH:
        raise RemoteProtocolError(f"frame {request_id} says {length} body bytes, has {len(frame) - HEADER_LENGTH}")
    if flags & (FLAG_REQUEST | FLAG_EVENT):
        raise RemoteProtocolError(f"frame {request_id} is a request or an event, not a response")
    return dubbo.read_reply(bytes(frame))


def _as_text(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8", "replace")  # a lone surrogate becomes "?", as in Java
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int):
        return b"%d" % value
    return fastjson.dumps(value)[:-1]


def _reply(status: int, form: bool, line: str, document: dict[str, str]) -> Reply:
    if form:
        return Reply(status, [("Content-Type", TEXT)], (line + "\n").encode("utf-8", "replace"))
    return Reply(status, [("Content-Type", JSON)], fastjson.dumps(document))


def error_reply(status: int, reason: str, *, form: bool = True, headers=()) -> Reply:
    """A canned error reply: ``reason`` on one line (text, or ``{"error": reason}`` when ``form`` is
    false), then ``headers`` (such as ``Retry-After``) after the Content-Type."""
    line = _one_line(reason)
    reply = _reply(status, form, line, {"error": line})
    reply.headers.extend(headers)
    return reply


def _one_line(text: str) -> str:
    """``text`` with each run of whitespace that holds a line break made one space, stripped. Split
    at the breaks rather than matching ``\\s*[\\r\\n]\\s*``, which retries a long run of blanks
    without a break from each of its characters (quadratic in a provider's error message)."""
    if "\n" not in text and "\r" not in text:
        return text
    return " ".join(piece for piece in (part.strip() for part in _LINE_BREAK.split(text)) if piece)


def _show(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


import_c_accel(globals(), "sidecar.codecs._c_calls")
