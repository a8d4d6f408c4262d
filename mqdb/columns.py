"""Typed columns in anonymous memory: a page costs resident memory only once something is written to it.

The write-side state of a queue (its unfinished block, its staged messages) is zero for every queue
that has not been written since the store was opened. Kept in columns of anonymous memory, it costs
a million queues nothing until they are written; each column is a ``memoryview`` cast to its type,
indexed like an ``array``.

Read paths index the ``array`` columns many times a call (:mod:`mqdb.reads`, :mod:`mqdb.directory`)
through :func:`item`, which is ``column[i]`` in Python. The build also compiles this module into
``mqdb._c_columns`` (C types in ``_c_columns.pxd``), where the modules that read columns call it as a
C function that reads the array's memory instead of making an int object per item read. Both builds
raise the same IndexError past the end, and the same TypeError for anything but an ``array("i")`` or
``array("q")``. :func:`touch` lets a read start the cache misses of several columns at once.
"""

import mmap
from array import array

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
    """``column[i]`` of an ``array("i")`` or ``array("q")``."""
    if cython.compiled and type(column) is array:
        typed = column
        if 0 <= i < len(typed):
            if typed.ob_descr.typecode == ord("q"):
                return typed.data.as_longlongs[i]
            if typed.ob_descr.typecode == ord("i"):
                return typed.data.as_ints[i]
    if type(column) is not array or column.typecode not in ("i", "q"):
        what = f"array({column.typecode!r})" if type(column) is array else type(column).__name__
        raise TypeError(f"a column is an array('i') or array('q'), not {what}")
    return column[i]


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
