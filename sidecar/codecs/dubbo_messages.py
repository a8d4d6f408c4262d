"""Dubbo 2 message model: header constants, status codes, result flags, and the frame, request,
response and event values that :mod:`sidecar.codecs.dubbo` encodes and decodes (layout in ``PROTOCOLS.md``).
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from sidecar._accel import import_c_accel

__all__ = [
    "MAGIC",
    "HEADER_LENGTH",
    "FLAG_REQUEST",
    "FLAG_TWOWAY",
    "FLAG_EVENT",
    "SERIALIZATION_MASK",
    "DEFAULT_PAYLOAD",
    "MAX_BODY",
    "DUBBO_VERSION",
    "HEADER",
    "Serialization",
    "Status",
    "ResultFlag",
    "Frame",
    "Request",
    "Response",
    "Event",
    "heartbeat",
    "parse_descriptor",
    "to_descriptor",
    "supports_response_attachments",
]

MAGIC = 0xDABB
HEADER_LENGTH = 16
FLAG_REQUEST = 0x80
FLAG_TWOWAY = 0x40
FLAG_EVENT = 0x20
SERIALIZATION_MASK = 0x1F
DEFAULT_PAYLOAD = 8 * 1024 * 1024  # bytes of body, as Dubbo's default `payload`
MAX_BODY = 0x7FFFFFFF  # the length field is a Java int
DUBBO_VERSION = "2.0.2"

HEADER = struct.Struct(">HBBQI")  # magic, flags, status, request id, body length


class Serialization(IntEnum):
    """Serialization ids (low 5 bits of the flag byte) that this codec reads and writes."""

    HESSIAN2 = 2
    FASTJSON = 6


class Status(IntEnum):
    """The status byte of a response."""

    OK = 20
    CLIENT_TIMEOUT = 30
    SERVER_TIMEOUT = 31
    CHANNEL_INACTIVE = 35
    BAD_REQUEST = 40
    BAD_RESPONSE = 50
    SERVICE_NOT_FOUND = 60
    SERVICE_ERROR = 70
    SERVER_ERROR = 80
    CLIENT_ERROR = 90
    SERVER_THREADPOOL_EXHAUSTED_ERROR = 100


class ResultFlag(IntEnum):
    """First value of an OK response body: what follows it."""

    RESPONSE_WITH_EXCEPTION = 0
    RESPONSE_VALUE = 1
    RESPONSE_NULL_VALUE = 2
    RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS = 3
    RESPONSE_VALUE_WITH_ATTACHMENTS = 4
    RESPONSE_NULL_VALUE_WITH_ATTACHMENTS = 5


@dataclass(slots=True)
class Frame:
    """One frame as it travels: the header fields and the body bytes, not decoded."""

    flags: int
    status: int
    request_id: int
    body: bytes

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_REQUEST)

    @property
    def two_way(self) -> bool:
        return bool(self.flags & FLAG_TWOWAY)

    @property
    def is_event(self) -> bool:
        return bool(self.flags & FLAG_EVENT)

    @property
    def serialization(self) -> int:
        return self.flags & SERIALIZATION_MASK

    def to_bytes(self) -> bytes:
        return HEADER.pack(MAGIC, self.flags, self.status, self.request_id, len(self.body)) + self.body


@dataclass(slots=True)
class Request:
    """An invocation: ``method`` of ``service_path`` with ``arguments`` typed by ``parameter_types``
    (a JVM descriptor such as ``Ljava/lang/String;``; see :func:`to_descriptor`)."""

    request_id: int
    service_path: str | None
    method: str
    parameter_types: str = ""
    arguments: list[Any] | tuple[Any, ...] = field(default_factory=list)
    attachments: dict[str, Any] = field(default_factory=dict)
    service_version: str | None = "0.0.0"
    dubbo_version: str | None = DUBBO_VERSION
    two_way: bool = True
    serialization: int = Serialization.HESSIAN2


@dataclass(slots=True)
class Response:
    """A reply. With status OK it holds ``value`` or ``exception`` (and ``attachments`` when the flag
    says so); with any other status only ``error_message``. ``flag`` left ``None`` when encoding is
    derived: exception, else null, else value, each with attachments when ``attachments`` is set."""

    request_id: int
    status: int = Status.OK
    value: Any = None
    exception: Any = None
    attachments: dict[str, Any] | None = None
    error_message: str | None = None
    flag: int | None = None
    serialization: int = Serialization.HESSIAN2


@dataclass(slots=True)
class Event:
    """An event frame; a heartbeat is the event whose data is null, as a request or as its reply."""

    request_id: int
    is_request: bool = True
    two_way: bool = True
    data: Any = None
    status: int = Status.OK
    error_message: str | None = None
    serialization: int = Serialization.HESSIAN2

    @property
    def is_heartbeat(self) -> bool:
        return self.data is None and self.status == Status.OK


def heartbeat(request_id: int, *, reply: bool = False, serialization: int = Serialization.HESSIAN2) -> Event:
    """A heartbeat request (two-way), or the reply to the one with ``request_id``."""
    return Event(request_id, is_request=not reply, two_way=not reply, serialization=serialization)


def supports_response_attachments(dubbo_version: str | None) -> bool:
    """Whether a caller speaking ``dubbo_version`` reads result flags 3 to 5 (Dubbo's own rule:
    protocol 2.0.2 or later, except the jar versions 2.0.10 to 2.6.2 and 2.8.x that old callers sent).

    >>> [supports_response_attachments(v) for v in ("2.0.2", "2.0.1", "2.6.2", "2.7.8", None)]
    [True, False, False, True, False]
    """
    if not dubbo_version:
        return False
    if type(dubbo_version) is str and len(dubbo_version) <= 64:  # a handful of versions, asked per call
        return _supports_response_attachments_cached(dubbo_version)
    return _supports_response_attachments(dubbo_version)


def _supports_response_attachments(dubbo_version: str) -> bool:
    parts = dubbo_version.split(".")
    number = 0
    for index, part in enumerate(parts):
        digits = len(part) - len(part.lstrip("0123456789"))
        if digits:
            number += int(part[:digits]) * 100 ** (len(parts) - index - 1)
    if len(parts) == 3:
        number *= 100
    if 2001000 <= number < 2060300 or 2080000 <= number < 2090000:
        return False
    return number >= 2000200


_supports_response_attachments_cached = functools.lru_cache(maxsize=64)(_supports_response_attachments)


_PRIMITIVES = {
    "boolean": "Z",
    "byte": "B",
    "char": "C",
    "double": "D",
    "float": "F",
    "int": "I",
    "long": "J",
    "short": "S",
}
_CODES = frozenset(_PRIMITIVES.values())
# Possessive repeats (``*+``): a descriptor splits one way only, and the engine then keeps no
# backtracking state per parameter (about 200 bytes each: 1.6 GiB for a hostile 8 MiB descriptor).
_DESCRIPTOR = re.compile(r"(?:\[*+(?:[ZBCDFIJS]|L[^;\[]++;))*+")
_DESCRIPTOR_ITEM = re.compile(r"\[*(?:[ZBCDFIJS]|L[^;\[]+;)")


def parse_descriptor(descriptor: str) -> tuple[str, ...]:
    """Split a parameter descriptor into one descriptor per parameter (``ValueError`` if malformed).

    >>> parse_descriptor("Ljava/lang/String;I[J")
    ('Ljava/lang/String;', 'I', '[J')
    """
    if len(descriptor) <= 512:  # the usual ones are parsed once; a huge one is not kept
        return _parse_descriptor_cached(descriptor)
    return _parse_descriptor(descriptor)


def _parse_descriptor(descriptor: str) -> tuple[str, ...]:
    if not _DESCRIPTOR.fullmatch(descriptor):
        shown = descriptor if len(descriptor) <= 80 else descriptor[:80] + "..."
        raise ValueError(f"malformed parameter descriptor {shown!r}")
    return tuple(_DESCRIPTOR_ITEM.findall(descriptor))


_parse_descriptor_cached = functools.lru_cache(maxsize=1024)(_parse_descriptor)


def to_descriptor(type_names: list[str] | tuple[str, ...]) -> str:
    """The descriptor of Java type names: ``["java.lang.String", "int[]"]`` -> ``Ljava/lang/String;[I``.
    Names already in descriptor or ``Class.getName`` array form (``[Ljava.lang.String;``) pass through."""
    parts = []
    for name in type_names:
        dims = 0
        while name.endswith("[]"):
            name, dims = name[:-2], dims + 1
        if name in _PRIMITIVES:
            desc = _PRIMITIVES[name]
        elif name.startswith("[") or (name.startswith("L") and name.endswith(";")) or name in _CODES:
            desc = name.replace(".", "/")
        else:
            desc = "L" + name.replace(".", "/") + ";"
        parts.append("[" * dims + desc)
    result = "".join(parts)
    parse_descriptor(result)
    return result


import_c_accel(globals(), "sidecar.codecs._c_dubbo_messages")
