# C types for the compiled twin of columns.py (the Python module stays the implementation).
cimport cython
from cpython cimport array as carray
from cpython.array cimport array
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.memoryview cimport PyMemoryView_GET_BUFFER
from cpython.exc cimport PyErr_Clear, PyErr_Occurred

cdef extern from "Python.h":
    ctypedef struct PyMemoryViewObject:
        int flags
    int _Py_MEMORYVIEW_RELEASED


cdef inline bint _c_as_longlong(value, long long *out) noexcept:
    """The int ``value`` as a C long long, if it fits."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or (v == -1 and PyErr_Occurred() != NULL):
        PyErr_Clear()
        return False
    out[0] = v
    return True


cdef inline char *_c_view_at(view, Py_ssize_t i) noexcept:
    """Where item ``i`` of ``view`` lies if ``view`` is a live, one-dimensional, contiguous memoryview of
    "q" (8 bytes) or "i" (4 bytes) and ``i`` is in range; else NULL (the caller then takes the Python
    path). The view's itemsize tells the two apart."""
    if (<PyMemoryViewObject *>view).flags & _Py_MEMORYVIEW_RELEASED:
        return NULL
    cdef Py_buffer *b = PyMemoryView_GET_BUFFER(view)
    if b.ndim != 1 or b.format == NULL or b.format[1] != 0 or b.strides == NULL:
        return NULL
    if not ((b.format[0] == b'q' and b.itemsize == 8) or (b.format[0] == b'i' and b.itemsize == 4)):
        return NULL
    if not (0 <= i < b.shape[0]) or b.strides[0] != b.itemsize:
        return NULL
    return <char *>b.buf + i * b.itemsize


cdef inline bint _c_view_get(view, Py_ssize_t i, long long *out) noexcept:
    cdef char *at = _c_view_at(view, i)
    if at == NULL:
        return False
    out[0] = (<long long *>at)[0] if PyMemoryView_GET_BUFFER(view).itemsize == 8 else (<int *>at)[0]
    return True


cdef inline bint _c_view_put(view, Py_ssize_t i, long long v) noexcept:
    if PyMemoryView_GET_BUFFER(view).readonly:
        return False
    cdef char *at = _c_view_at(view, i)
    if at == NULL:
        return False
    if PyMemoryView_GET_BUFFER(view).itemsize == 8:
        (<long long *>at)[0] = v
        return True
    if -0x80000000 <= v <= 0x7FFFFFFF:
        (<int *>at)[0] = <int>v
        return True
    return False


@cython.locals(typed=carray.array, got=cython.longlong)
cpdef long long item(column, Py_ssize_t i) except? -2

@cython.locals(typed=carray.array, v=cython.longlong)
cpdef void put_item(column, Py_ssize_t i, value) except *

@cython.locals(typed=carray.array, v=cython.longlong, n=Py_ssize_t)
cpdef void append(column, value) except *

cdef extern from *:
    void prefetch "__builtin_prefetch" (const void *)

@cython.locals(typed=carray.array)
cpdef void touch(column, Py_ssize_t i)
