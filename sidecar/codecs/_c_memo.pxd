# C types for the compiled twin of memo.py (the Python module stays the implementation).
cimport cython

cdef class Memo:
    cdef readonly dict kept
    cdef readonly Py_ssize_t limit
    cdef readonly bytearray seen
    cdef readonly Py_ssize_t marked

    cpdef get(self, key)
    @cython.locals(spot=Py_ssize_t, bit=int, seen=bytearray, kept=dict)
    cpdef remember(self, key, value)
    cpdef clear(self)
