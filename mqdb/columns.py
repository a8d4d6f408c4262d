"""Typed columns in anonymous memory: a page costs resident memory only once something is written to it.

The write-side state of a queue (its unfinished block, its staged messages) is zero for every queue
that has not been written since the store was opened. Kept in columns of anonymous memory, it costs
a million queues nothing until they are written; each column is a ``memoryview`` cast to its type,
indexed like an ``array``.
"""

import mmap

_ITEM = {"i": 4, "q": 8}


def zeroed(typecode: str, n: int) -> memoryview:
    """A column of ``n`` zero items of ``typecode`` (``"i"`` or ``"q"``)."""
    return memoryview(mmap.mmap(-1, max(1, n) * _ITEM[typecode])).cast(typecode)


def grown(column: memoryview, n: int) -> memoryview:
    """A column of ``n`` items that starts with the items of ``column``, the rest zero."""
    out = zeroed(column.format, n)
    out[: len(column)] = column
    return out
