"""fastjson serialization (Dubbo serialization id 6) as Dubbo's FastJsonObjectOutput writes it.

Every value is one compact JSON text followed by a newline; a body is those lines one after another,
and the reader takes one line per value. Java values map as fastjson writes them: a ``Date`` is its
milliseconds, a ``byte[]`` is a base64 string, a bean is an object of its fields, a NaN or infinite
double is ``null``. Reading gives plain JSON values (the Java side types them by the method
signature; here the caller knows what to expect).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
from typing import Any

from sidecar.codecs.javatypes import Date, JavaObject
from sidecar.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["FastjsonEncoder", "FastjsonDecoder", "dumps", "loads", "MAX_DEPTH"]

MAX_DEPTH = 128


def _default(value: Any) -> Any:
    if isinstance(value, JavaObject):
        return value.fields
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, _dt.datetime):
        return int(Date.from_datetime(value))
    raise TypeError(f"cannot encode a value of type {type(value).__qualname__} as JSON")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default)
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=_default)


def _finite(value: Any, seen: set[int], depth: int) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (what fastjson writes for them)."""
    if depth > MAX_DEPTH:
        raise LocalProtocolError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, JavaObject):
        value = value.fields
    if isinstance(value, (dict, list, tuple)):
        if id(value) in seen:
            raise LocalProtocolError("cannot encode a value that contains itself as JSON")
        seen.add(id(value))
        if isinstance(value, dict):
            result: Any = {k: _finite(v, seen, depth + 1) for k, v in value.items()}
        else:
            result = [_finite(v, seen, depth + 1) for v in value]
        seen.discard(id(value))
        return result
    return value


def dumps(value: Any) -> bytes:
    """One value as fastjson writes it: compact JSON and a newline."""
    try:
        text = _ENCODER.encode(value)
    except ValueError:  # NaN / infinity, or a cycle: _finite tells them apart
        text = _encode_checked(_finite(value, set(), 0))
    except (TypeError, RecursionError) as exc:
        raise LocalProtocolError(f"cannot encode as JSON: {exc}") from None
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # lone surrogates: JSON escapes carry them, raw UTF-8 cannot
        return _ASCII_ENCODER.encode(json.loads(text)).encode("ascii") + b"\n"


def _encode_checked(value: Any) -> str:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(f"cannot encode as JSON: {exc}") from None


def loads(data: bytes | bytearray | memoryview) -> Any:
    """The one value in ``data`` (one line; the final newline may be missing)."""
    decoder = FastjsonDecoder(data)
    value = decoder.read()
    decoder.expect_end()
    return value


class FastjsonEncoder:
    """Writes consecutive values, one line each (same interface as the Hessian 2 encoder)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, value: Any) -> None:
        self._parts.append(dumps(value))

    def write_string(self, value: str | None) -> None:
        self._parts.append(dumps(value))

    def write_int(self, value: int) -> None:
        self._parts.append(b"%d\n" % value)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class FastjsonDecoder:
    """Reads consecutive values from ``data[start:end]``, one line each.

    A line ends with ``\\n`` (a ``\\r`` before it is dropped); JSON text never holds a raw line
    break, so this is the split Java's ``BufferedReader.readLine`` makes."""

    def __init__(self, data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None):
        self._data = data if isinstance(data, bytes) else bytes(data)
        self._pos = start
        self._end = len(self._data) if end is None else min(end, len(self._data))

    @property
    def position(self) -> int:
        return self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def expect_end(self) -> None:
        if self._pos < self._end:
            raise RemoteProtocolError(f"bad fastjson data: {self._end - self._pos} bytes after the value")

    def _line(self) -> tuple[bytes, int]:
        start = self._pos
        if start >= self._end:
            raise RemoteProtocolError(f"bad fastjson data at offset {start}: truncated, expected a line")
        newline = self._data.find(b"\n", start, self._end)
        stop = self._end if newline < 0 else newline
        self._pos = self._end if newline < 0 else newline + 1
        line = self._data[start:stop]
        return (line[:-1] if line.endswith(b"\r") else line), start

    def read(self) -> Any:
        line, offset = self._line()
        if not line.strip():
            return None  # fastjson parses an empty text as null
        try:
            return json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            reason = f"bad UTF-8: {exc.reason}"
        except RecursionError:
            reason = "JSON nested too deeply"
        except ValueError as exc:
            reason = f"bad JSON: {exc}"
        raise RemoteProtocolError(f"bad fastjson data at offset {offset}: {reason}")

    def read_string(self) -> str | None:
        offset = self._pos
        value = self.read()
        if value is not None and not isinstance(value, str):
            raise RemoteProtocolError(f"bad fastjson data at offset {offset}: expected a string")
        return value

    def read_int(self) -> int:
        offset = self._pos
        value = self.read()
        if type(value) is not int:
            raise RemoteProtocolError(f"bad fastjson data at offset {offset}: expected an int")
        return value
