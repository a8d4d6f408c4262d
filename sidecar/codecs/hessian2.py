"""Hessian 2.0 serialization as Dubbo speaks it (Caucho Hessian 4.0 / Dubbo hessian-lite byte forms).

Pure: bytes in, values out. :func:`dumps` and :func:`loads` handle one value; Dubbo writes several
values into one stream (a request body is seven or more of them) that share class definitions, type
names and back-references, which is what :class:`Hessian2Encoder` and :class:`Hessian2Decoder` keep.
The Python types used for Java values are in :mod:`sidecar.codecs.javatypes`.

Encoding picks the shortest form exactly as ``com.caucho.hessian.io.Hessian2Output`` does, so the
bytes match a Java peer's byte for byte (see ``PROTOCOLS.md`` and the conformance tests).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import struct
from typing import Any

from sidecar._accel import import_c_accel

try:
    import cython
except ImportError:  # Cython is needed only to build the compiled twins
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

from sidecar.codecs.hessian2_decoder import MAX_DEPTH, Hessian2Decoder
from sidecar.codecs.javatypes import Date, JavaObject, Long, TypedList, TypedMap
from sidecar.errors import LocalProtocolError

__all__ = ["Hessian2Encoder", "Hessian2Decoder", "dumps", "loads", "MAX_DEPTH", "STRING_CHUNK"]

STRING_CHUNK = 0x8000  # UTF-16 units per non-final string chunk ('R')
BINARY_CHUNK = 0x8000  # bytes per non-final binary chunk ('A')

_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_NON_BMP = re.compile("[\U00010000-\U0010ffff]")


def _split_surrogates(match: re.Match[str]) -> str:
    cp = ord(match.group()) - 0x10000
    return chr(0xD800 + (cp >> 10)) + chr(0xDC00 + (cp & 0x3FF))


def _java_utf8(value: str) -> tuple[bytes, int]:
    """The bytes Hessian writes for the characters of ``value``, and their count in UTF-16 units: UTF-8,
    except that a character outside the BMP goes out as its two surrogates, three bytes each (as
    Java's ``String`` holds it), and a lone surrogate as its three bytes.

    The compiled twin counts and writes in one loop over the characters each; Python splits the
    characters outside the BMP with a regular expression (a call per character) and encodes the result.
    """
    if cython.compiled:
        size = units = 0
        for char in value:
            if char < 0x80:
                size += 1
            elif char < 0x800:
                size += 2
            elif char < 0x10000:
                size += 3
            else:
                size += 6
                units += 1
            units += 1
        out = bytearray(size)
        i = 0
        for char in value:
            code = char
            if code < 0x80:
                out[i] = code
                i += 1
                continue
            if code < 0x800:
                out[i] = 0xC0 | (code >> 6)
                out[i + 1] = 0x80 | (code & 0x3F)
                i += 2
                continue
            if code >= 0x10000:  # its high surrogate here, its low one below
                code -= 0x10000
                high = 0xD800 + (code >> 10)
                code = 0xDC00 + (code & 0x3FF)
                out[i] = 0xE0 | (high >> 12)
                out[i + 1] = 0x80 | ((high >> 6) & 0x3F)
                out[i + 2] = 0x80 | (high & 0x3F)
                i += 3
            out[i] = 0xE0 | (code >> 12)
            out[i + 1] = 0x80 | ((code >> 6) & 0x3F)
            out[i + 2] = 0x80 | (code & 0x3F)
            i += 3
        return bytes(out), units
    if _NON_BMP.search(value):
        value = _NON_BMP.sub(_split_surrogates, value)
    return value.encode("utf-8", "surrogatepass"), len(value)


def _string_length(out: bytearray, units: int) -> None:
    """The head of a final string chunk of ``units`` UTF-16 units (at most ``STRING_CHUNK``)."""
    if units <= 0x1F:
        out.append(units)
    elif units <= 0x3FF:
        out += bytes((0x30 + (units >> 8), units & 0xFF))
    else:
        out += bytes((0x53, units >> 8, units & 0xFF))


def _java_int_cast(value: float) -> int:
    """Java's ``(int) value``: truncate toward zero, saturate at the int range, NaN gives 0."""
    if value != value:
        return 0
    if value >= 2147483647.0:
        return 2147483647
    if value <= -2147483648.0:
        return -2147483648
    return int(value)


class Hessian2Encoder:
    """Writes Hessian 2 values into one stream: class definitions, type names and references are
    shared by every value written with the same encoder, as with one Java ``Hessian2Output``.

    After a :class:`LocalProtocolError` the stream is incomplete; start a new encoder.
    """

    def __init__(self, *, max_depth: int = MAX_DEPTH):
        self._out = bytearray()
        self._max_depth = max_depth
        self._depth = 0
        self._ref_count = 0  # every list, map and object gets the next number, as the reader counts
        self._refs: dict[int, int] = {}  # id(container) -> reference number
        self._alive: list[Any] = []  # keeps ids stable while the stream is being written
        self._types: dict[str, int] = {}
        self._classes: dict[tuple[str, tuple[str, ...]], int] = {}

    def getvalue(self) -> bytes:
        return bytes(self._out)

    def write(self, value: Any) -> None:
        """Append one value; raises :class:`LocalProtocolError` for a value Hessian cannot carry."""
        if type(value) is str:  # the common value, written without the table (compiled: a C call)
            self.write_string(value)
            return
        writer = _WRITERS.get(type(value))
        if writer is None:
            writer = _writer_for_subclass(value)
        writer(self, value)

    # -- scalars ---------------------------------------------------------------------------------
    def _null(self, _value: None) -> None:
        self._out.append(0x4E)

    def _bool(self, value: bool) -> None:
        self._out.append(0x54 if value else 0x46)

    def _int(self, value: int) -> None:
        if -0x80000000 <= value <= 0x7FFFFFFF:
            self.write_int(value)
        else:
            self.write_long(value)

    def write_int(self, value: int) -> None:
        out = self._out
        if -0x10 <= value <= 0x2F:
            out.append(0x90 + value)
        elif -0x800 <= value <= 0x7FF:
            out += bytes((0xC8 + (value >> 8), value & 0xFF))
        elif -0x40000 <= value <= 0x3FFFF:
            out += bytes((0xD4 + (value >> 16), (value >> 8) & 0xFF, value & 0xFF))
        else:
            out.append(0x49)
            out += _I32.pack(value)

    def write_long(self, value: int) -> None:
        out = self._out
        if -0x8 <= value <= 0xF:
            out.append(0xE0 + value)
        elif -0x800 <= value <= 0x7FF:
            out += bytes((0xF8 + (value >> 8), value & 0xFF))
        elif -0x40000 <= value <= 0x3FFFF:
            out += bytes((0x3C + (value >> 16), (value >> 8) & 0xFF, value & 0xFF))
        elif -0x80000000 <= value <= 0x7FFFFFFF:
            out.append(0x59)
            out += _I32.pack(value)
        elif -(1 << 63) <= value < (1 << 63):
            out.append(0x4C)
            out += _I64.pack(value)
        else:
            raise LocalProtocolError(f"integer {value} does not fit a Java long (64 bits)")

    def _double(self, value: float) -> None:
        out = self._out
        as_int = _java_int_cast(value)
        if as_int == value:
            if as_int == 0:
                out.append(0x5B)
                return
            if as_int == 1:
                out.append(0x5C)
                return
            if -0x80 <= as_int < 0x80:
                out += bytes((0x5D, as_int & 0xFF))
                return
            if -0x8000 <= as_int < 0x8000:
                out += bytes((0x5E, (as_int >> 8) & 0xFF, as_int & 0xFF))
                return
        mills = _java_int_cast(value * 1000) if math.isfinite(value) else 0
        if 0.001 * mills == value:
            out.append(0x5F)
            out += _I32.pack(mills)
        else:
            out.append(0x44)
            out += _F64.pack(value)

    def _date(self, value: int) -> None:
        millis = int(value)
        if not -(1 << 63) <= millis < (1 << 63):
            raise LocalProtocolError(f"date {millis} ms does not fit a Java long")
        minutes, rest = divmod(millis, 60000)
        if rest == 0 and -0x80000000 <= minutes <= 0x7FFFFFFF:
            self._out.append(0x4B)
            self._out += _I32.pack(minutes)
        else:
            self._out.append(0x4A)
            self._out += _I64.pack(millis)

    def _datetime(self, value: _dt.datetime) -> None:
        self._date(Date.from_datetime(value))

    def write_string(self, value: str) -> None:
        """A string; lengths count UTF-16 units and non-BMP characters go out as two surrogates."""
        out = self._out
        length = len(value)
        if length <= 0x1F and value.isascii():  # the common case: short ASCII names and values
            out.append(length)
            out += value.encode("ascii")
            return
        if not value.isascii():
            data, units = _java_utf8(value)
            if units <= STRING_CHUNK:  # one final chunk
                _string_length(out, units)
                out += data
                return
            value = _NON_BMP.sub(_split_surrogates, value)  # chunked below one UTF-16 unit per character
            length = len(value)
        start = 0
        while length - start > STRING_CHUNK:
            end = start + STRING_CHUNK
            if 0xD800 <= ord(value[end - 1]) <= 0xDBFF:
                end -= 1  # a chunk never ends between the two halves of a pair
            out += bytes((0x52, (end - start) >> 8, (end - start) & 0xFF))
            out += value[start:end].encode("utf-8", "surrogatepass")
            start = end
        _string_length(out, length - start)
        out += value[start:].encode("utf-8", "surrogatepass")

    def _binary(self, value: bytes | bytearray | memoryview) -> None:
        data = bytes(value)
        out = self._out
        start, length = 0, len(data)
        while length - start > BINARY_CHUNK:
            out += b"\x41\x80\x00"
            out += data[start : start + BINARY_CHUNK]
            start += BINARY_CHUNK
        rest = length - start
        if rest <= 0xF:
            out.append(0x20 + rest)
        elif rest <= 0x3FF:
            out += bytes((0x34 + (rest >> 8), rest & 0xFF))
        else:
            out += bytes((0x42, rest >> 8, rest & 0xFF))
        out += data[start:]

    # -- containers ------------------------------------------------------------------------------
    def _back_reference(self, value: Any, shareable: bool) -> bool:
        """Write ``Q ref`` if ``value`` was written before; otherwise give it the next number."""
        if shareable:
            ref = self._refs.get(id(value))
            if ref is not None:
                self._out.append(0x51)
                self.write_int(ref)
                return True
            self._refs[id(value)] = self._ref_count
            self._alive.append(value)
        self._ref_count += 1
        return False

    def _type_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise LocalProtocolError(f"a Hessian type name must be a non-empty string, not {name!r}")
        ref = self._types.get(name)
        if ref is None:
            self._types[name] = len(self._types)
            self.write_string(name)
        else:
            self.write_int(ref)

    def _enter(self) -> None:
        self._depth += 1
        if self._depth > self._max_depth:
            raise LocalProtocolError(f"value nested deeper than {self._max_depth} levels")

    def _list(self, value: list | tuple) -> None:
        if self._back_reference(value, not isinstance(value, tuple)):
            return
        out = self._out
        length = len(value)
        kind = value.type if isinstance(value, TypedList) else None
        if length <= 7:
            if kind is None:
                out.append(0x78 + length)
            else:
                out.append(0x70 + length)
                self._type_name(kind)
        else:
            if kind is None:
                out.append(0x58)
            else:
                out.append(0x56)
                self._type_name(kind)
            self.write_int(length)
        self._enter()
        for item in value:
            self.write(item)
        self._depth -= 1

    def _map(self, value: dict) -> None:
        if self._back_reference(value, True):
            return
        if isinstance(value, TypedMap):
            self._out.append(0x4D)
            self._type_name(value.type)
        else:
            self._out.append(0x48)
        self._enter()
        for key, item in value.items():
            self.write(key)
            self.write(item)
        self._depth -= 1
        self._out.append(0x5A)

    def _object(self, value: JavaObject) -> None:
        if self._back_reference(value, True):
            return
        names = tuple(value.fields)
        key = (value.class_name, names)
        ref = self._classes.get(key)
        if ref is None:
            if not isinstance(value.class_name, str) or not value.class_name:
                raise LocalProtocolError(f"a Java class name must be a non-empty string: {value!r}")
            ref = self._classes[key] = len(self._classes)
            self._out.append(0x43)
            self.write_string(value.class_name)
            self.write_int(len(names))
            for name in names:
                if not isinstance(name, str):
                    raise LocalProtocolError(f"field names must be strings, not {name!r}")
                self.write_string(name)
        if ref <= 0xF:
            self._out.append(0x60 + ref)
        else:
            self._out.append(0x4F)
            self.write_int(ref)
        self._enter()
        for item in value.fields.values():
            self.write(item)
        self._depth -= 1


# The writer of each type but str, which write() takes first.
_WRITERS: dict[type, Any] = {
    type(None): Hessian2Encoder._null,
    bool: Hessian2Encoder._bool,
    int: Hessian2Encoder._int,
    Long: Hessian2Encoder.write_long,
    float: Hessian2Encoder._double,
    bytes: Hessian2Encoder._binary,
    bytearray: Hessian2Encoder._binary,
    memoryview: Hessian2Encoder._binary,
    Date: Hessian2Encoder._date,
    _dt.datetime: Hessian2Encoder._datetime,
    list: Hessian2Encoder._list,
    tuple: Hessian2Encoder._list,
    TypedList: Hessian2Encoder._list,
    dict: Hessian2Encoder._map,
    TypedMap: Hessian2Encoder._map,
    JavaObject: Hessian2Encoder._object,
}

# Checked in order for subclasses (an IntEnum, a str subclass ...): the first match wins.
_SUBCLASS_WRITERS = (
    (bool, Hessian2Encoder._bool),
    (Long, Hessian2Encoder.write_long),
    (Date, Hessian2Encoder._date),
    (int, Hessian2Encoder._int),
    (float, Hessian2Encoder._double),
    (str, Hessian2Encoder.write_string),
    ((bytes, bytearray, memoryview), Hessian2Encoder._binary),
    (_dt.datetime, Hessian2Encoder._datetime),
    ((list, tuple), Hessian2Encoder._list),
    (dict, Hessian2Encoder._map),
    (JavaObject, Hessian2Encoder._object),
)


def _writer_for_subclass(value: Any) -> Any:
    for kind, writer in _SUBCLASS_WRITERS:
        if isinstance(value, kind):
            return writer
    raise LocalProtocolError(f"cannot encode a value of type {type(value).__qualname__} as Hessian 2")


def dumps(value: Any) -> bytes:
    """The Hessian 2 bytes of one value."""
    encoder = Hessian2Encoder()
    encoder.write(value)
    return encoder.getvalue()


def loads(data: bytes | bytearray | memoryview) -> Any:
    """The one value in ``data``; raises :class:`~sidecar.errors.RemoteProtocolError` for anything
    else (garbage, truncation, bytes left over)."""
    decoder = Hessian2Decoder(data)
    value = decoder.read()
    decoder.expect_end()
    return value


import_c_accel(globals(), "sidecar.codecs._c_hessian2")
