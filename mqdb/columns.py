"""Typed columns in anonymous memory: a page costs resident memory only once something is written to it.

The write-side state of a queue (its unfinished block, its staged messages) is zero for every queue
that has not been written since the store was opened. Kept in columns of anonymous memory, it costs
a million queues nothing until they are written; each column is a ``memoryview`` cast to its type,
indexed like an ``array``.

Read paths index the columns many times a call (:mod:`mqdb.reads`, :mod:`mqdb.directory`) through
:func:`item`, which is ``column[i]`` in Python; every put goes through :func:`put_item` and
:func:`append` (:mod:`mqdb.stage`). A column is an ``array("i")`` or ``array("q")``, or a
``memoryview`` of either format from :func:`zeroed`. The build also compiles this module into
``mqdb._c_columns`` (C types in ``_c_columns.pxd``), where the modules that use columns call these as
C functions that read and write the column's memory, instead of going through the array's or the
view's Python methods and an int object per item. The compiled functions take that path only for an
index in range and a value that fits; everything else runs the Python lines below, so both builds
raise the same IndexError, OverflowError, ValueError and TypeError alike. :func:`touch` lets a read
start the cache misses of several columns at once.
"""

import mmap
from array import array
from operator import getitem, setitem

from ._accel import import_c_accel

try:
    import cython
except ImportError:  # installed without Cython: runs as the Python source, as it does without the twin
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

_ITEM = {"i": 4, "q": 8}


def zeroed(typecode: str, n: int) -> memoryview:
    """A column of ``n`` zero items of ``typecode`` (``"i"`` or ``"q"``)."""
    return memoryview(mmap.mmap(-1, max(1, n) * _ITEM[typecode])).cast(typecode)


def grown(column: memoryview, n: int) -> memoryview:
    """A column of ``n`` items that starts with the items of ``column``, the rest zero."""
    out = zeroed(column.format, n)
    out[: len(column)] = column
    return out


def item(column, i: int) -> int:
    """``column[i]``."""
    if cython.compiled:
        if type(column) is array:
            typed = column
            if 0 <= i < len(typed):
                if typed.ob_descr.typecode == ord("q"):
                    return typed.data.as_longlongs[i]
                if typed.ob_descr.typecode == ord("i"):
                    return typed.data.as_ints[i]
        elif type(column) is memoryview:
            got = 0
            if _c_view_get(column, i, cython.address(got)):  # noqa: F821 (a C function of _c_columns.pxd)
                return got
    _check(column)
    return getitem(column, i)  # not column[i]: compiled, that would count a negative i from the end twice for a view


def put_item(column, i: int, value: int) -> None:
    """``column[i] = value``."""
    if cython.compiled and type(value) is int:
        v = 0
        fits = _c_as_longlong(value, cython.address(v))  # noqa: F821 (a C function of _c_columns.pxd)
        if fits:
            if type(column) is array:
                typed = column
                if 0 <= i < len(typed):
                    if typed.ob_descr.typecode == ord("q"):
                        typed.data.as_longlongs[i] = v
                        return
                    if typed.ob_descr.typecode == ord("i") and -0x80000000 <= v <= 0x7FFFFFFF:
                        typed.data.as_ints[i] = v
                        return
            elif type(column) is memoryview and _c_view_put(column, i, v):  # noqa: F821
                return
    _check(column)
    setitem(column, i, value)  # not column[i] = value, as in item


def append(column, value: int) -> None:
    """``column.append(value)`` of an ``array("i")`` or ``array("q")`` (a view of :func:`zeroed` has a
    fixed length: it raises TypeError)."""
    if cython.compiled and type(column) is array and type(value) is int:
        v = 0
        if _c_as_longlong(value, cython.address(v)):  # noqa: F821
            typed = column
            n = len(typed)
            if typed.ob_descr.typecode == ord("q"):
                carray.resize_smart(typed, n + 1)  # noqa: F821 (cimported in _c_columns.pxd)
                typed.data.as_longlongs[n] = v
                return
            if typed.ob_descr.typecode == ord("i") and -0x80000000 <= v <= 0x7FFFFFFF:
                carray.resize_smart(typed, n + 1)  # noqa: F821
                typed.data.as_ints[n] = v
                return
    if type(column) is not array:
        raise TypeError(f"only an array column grows, not a {type(column).__name__}")
    _check(column)
    column.append(value)


def _check(column) -> None:
    """TypeError unless ``column`` is a column: an array or a one-dimensional memoryview of "i" or "q"."""
    if type(column) is array:
        if column.typecode in ("i", "q"):
            return
        what = f"array({column.typecode!r})"
    elif type(column) is memoryview:
        if column.format in ("i", "q") and column.ndim == 1:  # ValueError if released, as for column[i]
            return
        what = f"memoryview of format {column.format!r} and {column.ndim} dimension(s)"
    else:
        what = type(column).__name__
    raise TypeError(f"a column is an array or a memoryview of 'i' or 'q', not {what}")


def touch(column, i: int) -> None:
    """Say that ``column[i]`` of an ``array("i")`` or ``array("q")`` is about to be read. The compiled
    twin asks the CPU to start loading its cache line now, so that the cache misses of the columns a
    read looks up (a million queues do not fit any cache) overlap instead of coming one after another.
    Python does nothing; neither build checks anything or raises."""
    if cython.compiled and type(column) is array:
        typed = column
        if 0 <= i < len(typed):
            prefetch(typed.data.as_chars + i * typed.ob_descr.itemsize)  # noqa: F821 (a C builtin, _c_columns.pxd)


import_c_accel(globals(), "mqdb._c_columns")
