"""Typed columns in anonymous memory: a page costs resident memory only once something is written to it.

The write-side state of a queue (its unfinished block, its staged messages) is zero for every queue
that has not been written since the store was opened. Kept in columns of anonymous memory, it costs
a million queues nothing until they are written; each column is a ``memoryview`` cast to its type,
indexed like an ``array``.

Read paths index the ``array`` columns many times a call (:mod:`mqdb.reads`, :mod:`mqdb.directory`)
through :func:`int_at` and :func:`long_at`. In Python they are ``column[i]``; the build also compiles
this module into ``mqdb._c_columns`` (C types in ``_c_columns.pxd``), where the modules that read
columns call them as C functions that read the array's memory instead of making an int object per
item read. Both builds raise the same IndexError past the end, and the same TypeError for what is not
an array of the right type code.
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


def _not_a_column(column, typecode: str) -> TypeError:
    what = f"array({column.typecode!r})" if type(column) is array else type(column).__name__
    return TypeError(f"an array({typecode!r}) column was expected, not {what}")


def int_at(column, i: int) -> int:
    """``column[i]`` of an ``array("i")``."""
    if cython.compiled and type(column) is array:
        typed = column
        if typed.ob_descr.typecode == ord("i") and 0 <= i < len(typed):
            return typed.data.as_ints[i]
    if type(column) is not array or column.typecode != "i":
        raise _not_a_column(column, "i")
    return column[i]


def long_at(column, i: int) -> int:
    """``column[i]`` of an ``array("q")``."""
    if cython.compiled and type(column) is array:
        typed = column
        if typed.ob_descr.typecode == ord("q") and 0 <= i < len(typed):
            return typed.data.as_longlongs[i]
    if type(column) is not array or column.typecode != "q":
        raise _not_a_column(column, "q")
    return column[i]


import_c_accel(globals(), "mqdb._c_columns")
