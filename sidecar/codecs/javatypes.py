"""Small value types for the Java values a Dubbo peer sends that plain Python types cannot tell apart.

Python values map to Java ones like this (both serializations use the same types):

==========================  ======================================================
Python                      Java / Hessian 2
==========================  ======================================================
``None``                    ``null``
``bool``                    ``boolean``
``int``                     ``int`` when it fits 32 bits, else ``long``
:class:`Long`               ``long`` (an ``int`` subclass; decoded longs come back as it)
``float``                   ``double``
``str``                     ``String``
``bytes``                   ``byte[]``
:class:`Date`               ``java.util.Date`` (milliseconds since the epoch, UTC)
``list`` / ``tuple``        ``java.util.ArrayList`` (untyped list)
:class:`TypedList`          a list with a type name, e.g. ``[string`` for ``String[]``
``dict``                    ``java.util.HashMap`` (untyped map)
:class:`TypedMap`           a map with a type name, e.g. ``java.util.TreeMap``
:class:`JavaObject`         any other object: class name and ordered fields
==========================  ======================================================
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Long", "Date", "TypedList", "TypedMap", "JavaObject", "java_exception", "describe_exception"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MILLISECOND = _dt.timedelta(milliseconds=1)


class Long(int):
    """A Java ``long``: encoded with Hessian's long forms even when the value is small."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Long({int(self)})"


class Date(int):
    """A ``java.util.Date``: milliseconds since 1970-01-01T00:00:00Z.

    An ``int`` (so any Java date round-trips, including ``new Date(Long.MAX_VALUE)``), with
    conversions to and from :class:`datetime.datetime`.
    """

    __slots__ = ()

    @classmethod
    def from_datetime(cls, value: _dt.datetime) -> Date:
        """The instant ``value`` (a naive datetime counts as UTC), truncated to the millisecond."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        return cls((value - _EPOCH) // _MILLISECOND)

    def to_datetime(self) -> _dt.datetime:
        """The instant as an aware UTC datetime (``OverflowError`` outside years 1 to 9999)."""
        return _EPOCH + _dt.timedelta(milliseconds=int(self))

    def __repr__(self) -> str:
        return f"Date({int(self)})"


class TypedList(list):
    """A list that carries a Java type name (``[int``, ``[java.lang.String``, ``java.util.LinkedList``)."""

    __slots__ = ("type",)

    def __init__(self, type: str, items: Any = ()):
        super().__init__(items)
        self.type = type

    def __repr__(self) -> str:
        return f"TypedList({self.type!r}, {list.__repr__(self)})"


class TypedMap(dict):
    """A map that carries a Java type name (``java.util.TreeMap``, ``java.util.LinkedHashMap`` ...)."""

    __slots__ = ("type",)

    def __init__(self, type: str, items: Any = ()):
        super().__init__(items)
        self.type = type

    def __repr__(self) -> str:
        return f"TypedMap({self.type!r}, {dict.__repr__(self)})"


@dataclass(eq=True, slots=True)
class JavaObject:
    """An instance of a Java class: its fully qualified name and its fields in declaration order.

    Hessian writes a class definition (name and field names) once per stream and then one instance
    per object; decoding gives back this pair. A class that declares a field with the same name as
    one in its superclass sends both; the later value wins here.
    """

    class_name: str
    fields: dict[str, Any] = field(default_factory=dict)

    __hash__ = object.__hash__  # identity: objects take part in reference tracking


def java_exception(class_name: str, message: str | None) -> JavaObject:
    """A Throwable as a Java peer can read it (the Java side keeps the defaults of absent fields)."""
    return JavaObject(class_name, {"detailMessage": message})


def describe_exception(value: Any) -> tuple[str, str | None]:
    """``(type, message)`` of an exception result, from Hessian (an object) or fastjson (a map)."""
    if isinstance(value, JavaObject):
        message = value.fields.get("detailMessage")
        return value.class_name, message if isinstance(message, str) else None
    if isinstance(value, dict):
        kind = value.get("@type") or getattr(value, "type", None) or "java.lang.Throwable"
        message = value.get("message", value.get("detailMessage"))
        return str(kind), message if isinstance(message, str) else None
    return type(value).__name__, None if value is None else str(value)
