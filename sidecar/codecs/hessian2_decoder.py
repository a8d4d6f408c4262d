"""Hessian 2.0 decoder: bytes in, Python values out (see :mod:`sidecar.codecs.hessian2` for the encoder).

Every failure is a :class:`~sidecar.errors.RemoteProtocolError` that names the offset and the reason.
Declared lengths are never trusted for allocation: strings and binaries are sliced from the input
(so they cannot be longer than it), lists grow one decoded element at a time, and nesting is capped
at :data:`MAX_DEPTH`, so hostile input costs at most time and memory linear in its own size.
"""

from __future__ import annotations

import struct
from typing import Any

from sidecar._accel import import_c_accel
from sidecar.codecs.javatypes import Date, JavaObject, Long, TypedList, TypedMap
from sidecar.errors import RemoteProtocolError

__all__ = ["Hessian2Decoder", "MAX_DEPTH"]

MAX_DEPTH = 128  # lists, maps and objects inside each other

_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")

_CONTINUATION = bytes(range(0x80, 0xC0))
_NOT_FOUR_BYTE_LEAD = bytes(b for b in range(256) if not 0xF0 <= b <= 0xF7)
_STRING_TAGS = frozenset([*range(0x00, 0x20), 0x30, 0x31, 0x32, 0x33, 0x52, 0x53])
_BINARY_TAGS = frozenset([*range(0x20, 0x30), 0x34, 0x35, 0x36, 0x37, 0x41, 0x42])
_INT_TAGS = frozenset([*range(0x80, 0xD8), 0x49])
_TAG_NAMES = {0x40: "reserved", 0x45: "reserved", 0x47: "reserved", 0x50: "reserved", 0x5A: "end marker 'Z'"}


def _sequence_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC0 <= lead < 0xE0:
        return 2
    if 0xE0 <= lead < 0xF0:
        return 3
    if 0xF0 <= lead < 0xF8:
        return 4
    return 0


class Hessian2Decoder:
    """Reads consecutive Hessian 2 values from ``data[start:end]``.

    Class definitions, type names and back-references are shared by all values of one decoder, as
    in a Dubbo body. Strings must be well-formed: each UTF-16 unit as UTF-8 would write that code
    point (surrogates as 3-byte sequences); four-byte UTF-8 sequences, which some non-Java writers
    send for characters outside the BMP, are accepted as two units. After an error the position is
    unspecified: discard the decoder.
    """

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        start: int = 0,
        end: int | None = None,
        *,
        max_depth: int = MAX_DEPTH,
    ):
        self._data = data if isinstance(data, bytes) else bytes(data)
        self._pos = start
        self._end = len(self._data) if end is None else min(end, len(self._data))
        self._max_depth = max_depth
        self._depth = 0
        self._refs: list[Any] = []
        self._types: list[str] = []
        self._classes: list[tuple[str, tuple[str, ...]]] = []

    @property
    def position(self) -> int:
        return self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def expect_end(self) -> None:
        if self._pos < self._end:
            raise self._error(f"{self._end - self._pos} unexpected bytes after the value", self._pos)

    def read(self) -> Any:
        """The next value."""
        tag = self._byte()
        return _DISPATCH[tag](self, tag)

    def read_string(self) -> str | None:
        """The next value, which must be a string or null (Dubbo's ``readUTF``)."""
        tag = self._byte()
        if tag == 0x4E:
            return None
        if tag not in _STRING_TAGS:
            raise self._error(f"expected a string, found tag 0x{tag:02x}", self._pos - 1)
        return self._string(tag)

    def read_int(self) -> int:
        """The next value, which must be an int (lengths, references, Dubbo's ``readByte``)."""
        tag = self._byte()
        if tag not in _INT_TAGS:
            raise self._error(f"expected an int, found tag 0x{tag:02x}", self._pos - 1)
        return _DISPATCH[tag](self, tag)

    # -- input -----------------------------------------------------------------------------------
    def _error(self, reason: str, offset: int) -> RemoteProtocolError:
        return RemoteProtocolError(f"bad Hessian 2 data at offset {offset}: {reason}")

    def _truncated(self, need: int) -> RemoteProtocolError:
        have = self._end - self._pos
        return self._error(f"truncated: needs {need} more bytes, {have} left", self._pos)

    def _byte(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise self._truncated(1)
        self._pos = pos + 1
        return self._data[pos]

    def _take(self, count: int) -> bytes:
        pos = self._pos
        if count > self._end - pos:
            raise self._truncated(count)
        self._pos = pos + count
        return self._data[pos : pos + count]

    def _unpack(self, fmt: struct.Struct) -> Any:
        pos = self._pos
        if fmt.size > self._end - pos:
            raise self._truncated(fmt.size)
        self._pos = pos + fmt.size
        return fmt.unpack_from(self._data, pos)[0]

    def _length(self, what: str) -> int:
        offset = self._pos
        value = self.read_int()
        if value < 0:
            raise self._error(f"negative {what} {value}", offset)
        return value

    # -- scalars ---------------------------------------------------------------------------------
    def _reserved(self, tag: int) -> Any:
        name = _TAG_NAMES.get(tag, "unexpected")
        raise self._error(f"{name} tag 0x{tag:02x} where a value should start", self._pos - 1)

    def _int(self, tag: int) -> int:
        if tag >= 0xD0:
            return ((tag - 0xD4) << 16) + self._unpack(_U16)
        if tag >= 0xC0:
            return ((tag - 0xC8) << 8) + self._byte()
        if tag >= 0x80:
            return tag - 0x90
        return self._unpack(_I32)

    def _long(self, tag: int) -> Long:
        if tag >= 0xF0:
            return Long(((tag - 0xF8) << 8) + self._byte())
        if tag >= 0xD8:
            return Long(tag - 0xE0)
        if tag < 0x40:
            return Long(((tag - 0x3C) << 16) + self._unpack(_U16))
        return Long(self._unpack(_I32 if tag == 0x59 else _I64))

    def _double(self, tag: int) -> float:
        if tag == 0x44:
            return self._unpack(_F64)
        if tag == 0x5F:
            return 0.001 * self._unpack(_I32)
        if tag == 0x5E:
            return float(self._unpack(_I16))
        if tag == 0x5D:
            byte = self._byte()
            return float(byte - 256 if byte > 0x7F else byte)
        return 0.0 if tag == 0x5B else 1.0

    def _date(self, tag: int) -> Date:
        if tag == 0x4B:
            return Date(self._unpack(_I32) * 60000)
        return Date(self._unpack(_I64))

    def _constant(self, tag: int) -> Any:
        return None if tag == 0x4E else tag == 0x54

    # -- strings and binaries --------------------------------------------------------------------
    def _utf8_span(self, units: int) -> int:
        """End offset of ``units`` UTF-16 units of (CESU-8 style) UTF-8 starting at the position."""
        data, end, start = self._data, self._pos, self._pos
        while units > 0:
            if units > self._end - end:
                raise self._truncated(units)
            chunk = data[end : end + units]
            leads = chunk.translate(None, _CONTINUATION)
            if not leads:
                raise self._error("bad UTF-8: continuation byte without a lead byte", end)
            last = chunk.rindex(leads[-1:])
            width = _sequence_length(chunk[last])
            if not width:
                raise self._error(f"bad UTF-8 lead byte 0x{chunk[last]:02x}", end + last)
            units -= len(leads) + len(leads.translate(None, _NOT_FOUR_BYTE_LEAD))
            end = max(end + len(chunk), end + last + width)
        if units < 0:
            raise self._error("a 4-byte UTF-8 character straddles the declared string length", start)
        if end > self._end:
            raise self._truncated(end - self._pos)
        return end

    def _string_part(self, units: int, parts: list[bytes]) -> None:
        pos = self._pos
        raw = self._data[pos : pos + units]
        if len(raw) == units and raw.isascii():
            self._pos = pos + units
        else:
            end = self._utf8_span(units)
            raw = self._data[pos:end]
            self._pos = end
        parts.append(raw)

    def _string(self, tag: int) -> str:
        if tag < 0x34 and (tag < 0x20 or tag >= 0x30):  # one chunk: try it as ASCII first
            pos = self._pos
            if tag < 0x20:
                units = tag
            elif pos < self._end:
                units, pos = ((tag - 0x30) << 8) + self._data[pos], pos + 1
            else:
                raise self._truncated(1)
            end = pos + units
            if end <= self._end:
                raw = self._data[pos:end]
                if raw.isascii():  # one byte per unit
                    self._pos = end
                    return raw.decode("ascii")
        start = self._pos - 1
        parts: list[bytes] = []
        while True:
            if tag < 0x20:
                self._string_part(tag, parts)
                break
            if tag < 0x34:
                self._string_part(((tag - 0x30) << 8) + self._byte(), parts)
                break
            self._string_part(self._unpack(_U16), parts)
            if tag == 0x53:
                break
            tag = self._byte()
            if tag not in _STRING_TAGS:
                raise self._error(f"string chunk followed by tag 0x{tag:02x}", self._pos - 1)
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        if raw.isascii():
            return raw.decode("ascii")
        try:
            text = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise self._error(f"bad UTF-8 in string: {exc.reason}", start) from None
        if b"\xed" in raw:  # surrogates written one by one: join the pairs
            text = text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "surrogatepass")
        return text

    def _binary(self, tag: int) -> bytes:
        parts: list[bytes] = []
        while True:
            if tag < 0x30:
                parts.append(self._take(tag - 0x20))
                break
            if tag < 0x38:
                parts.append(self._take(((tag - 0x34) << 8) + self._byte()))
                break
            parts.append(self._take(self._unpack(_U16)))
            if tag == 0x42:
                break
            tag = self._byte()
            if tag not in _BINARY_TAGS:
                raise self._error(f"binary chunk followed by tag 0x{tag:02x}", self._pos - 1)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- containers ------------------------------------------------------------------------------
    def _enter(self) -> None:
        self._depth += 1
        if self._depth > self._max_depth:
            raise self._error(f"values nested deeper than {self._max_depth} levels", self._pos - 1)

    def _type(self) -> str:
        offset = self._pos
        tag = self._byte()
        if tag in _STRING_TAGS:
            name = self._string(tag)
            self._types.append(name)
            return name
        if tag not in _INT_TAGS:
            raise self._error(f"expected a type name or type reference, found tag 0x{tag:02x}", offset)
        ref = self._int(tag)
        if not 0 <= ref < len(self._types):
            raise self._error(f"type reference {ref} but {len(self._types)} types defined", offset)
        return self._types[ref]

    def _list(self, tag: int) -> list:
        typed = tag in (0x55, 0x56) or 0x70 <= tag <= 0x77
        kind = self._type() if typed else ""
        items: list = TypedList(kind) if kind else []
        if tag in (0x55, 0x57):
            length = -1
        elif tag in (0x56, 0x58):
            length = self._length("list length")
        else:
            length = tag & 0x07
        self._refs.append(items)
        self._enter()
        if length < 0:
            while self._peek_not_end():
                items.append(self.read())
        else:
            for _ in range(length):
                items.append(self.read())
        self._depth -= 1
        return items

    def _peek_not_end(self) -> bool:
        if self._pos >= self._end:
            raise self._truncated(1)
        if self._data[self._pos] == 0x5A:
            self._pos += 1
            return False
        return True

    def _map(self, tag: int) -> dict:
        kind = self._type() if tag == 0x4D else ""
        result: dict = TypedMap(kind) if kind else {}
        self._refs.append(result)
        self._enter()
        while self._peek_not_end():
            offset = self._pos
            key = self.read()
            value = self.read()
            try:
                result[key] = value
            except TypeError:
                raise self._error(f"map key of type {type(key).__name__} is not supported", offset) from None
        self._depth -= 1
        return result

    def _class_definition(self, tag: int) -> Any:
        # 'C' name field-count field-names: a definition, then the value that (usually) uses it.
        while tag == 0x43:
            name = self.read_string()
            if not name:
                raise self._error("class definition without a class name", self._pos)
            count = self._length("field count")
            fields = []
            for _ in range(count):
                field = self.read_string()
                if field is None:
                    raise self._error(f"null field name in class {name}", self._pos)
                fields.append(field)
            self._classes.append((name, tuple(fields)))
            tag = self._byte()
        return _DISPATCH[tag](self, tag)

    def _object(self, tag: int) -> JavaObject:
        offset = self._pos - 1
        ref = tag - 0x60 if tag >= 0x60 else self.read_int()
        if not 0 <= ref < len(self._classes):
            raise self._error(f"object of class #{ref} but {len(self._classes)} classes defined", offset)
        name, fields = self._classes[ref]
        obj = JavaObject(name, {})
        self._refs.append(obj)
        self._enter()
        values = obj.fields
        for field in fields:
            values[field] = self.read()
        self._depth -= 1
        return obj

    def _reference(self, tag: int) -> Any:
        offset = self._pos - 1
        ref = self.read_int()
        if not 0 <= ref < len(self._refs):
            raise self._error(f"reference #{ref} but {len(self._refs)} values can be referenced", offset)
        return self._refs[ref]


def _dispatch_table() -> list:
    """Handler per first byte; the grammar's tag ranges (every tag not listed is reserved)."""
    d = Hessian2Decoder
    tags = {
        d._string: [*range(0x00, 0x20), *range(0x30, 0x34), 0x52, 0x53],
        d._binary: [*range(0x20, 0x30), *range(0x34, 0x38), 0x41, 0x42],
        d._int: [*range(0x80, 0xD8), 0x49],
        d._long: [*range(0xD8, 0x100), *range(0x38, 0x40), 0x4C, 0x59],
        d._double: [0x44, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F],
        d._constant: [0x4E, 0x54, 0x46],
        d._date: [0x4A, 0x4B],
        d._list: [*range(0x70, 0x80), 0x55, 0x56, 0x57, 0x58],
        d._map: [0x48, 0x4D],
        d._class_definition: [0x43],
        d._object: [*range(0x60, 0x70), 0x4F],
        d._reference: [0x51],
    }
    table: list = [d._reserved] * 256
    for handler, codes in tags.items():
        for code in codes:
            table[code] = handler
    return table


_DISPATCH = _dispatch_table()


import_c_accel(globals(), "sidecar.codecs._c_hessian2_decoder")
