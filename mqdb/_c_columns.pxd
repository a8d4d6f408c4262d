# C types for the compiled twin of columns.py (the Python module stays the implementation).
cimport cython
from cpython cimport array as carray

@cython.locals(typed=carray.array)
cpdef long long item(column, Py_ssize_t i) except? -2

cdef extern from *:
    void prefetch "__builtin_prefetch" (const void *)

@cython.locals(typed=carray.array)
cpdef void touch(column, Py_ssize_t i)
