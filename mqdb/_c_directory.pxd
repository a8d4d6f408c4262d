# C types for the compiled twin of directory.py (the Python module stays the implementation).
cimport cython
from mqdb._c_columns cimport item

@cython.locals(size=Py_ssize_t, known=Py_ssize_t, s=Py_ssize_t, o=Py_ssize_t, n=Py_ssize_t)
cpdef Py_ssize_t probe(slots, Py_ssize_t mask, bytearray arena, offs, bytes raw, Py_ssize_t i) except? -2


cdef class Directory:
    cdef public bytearray arena
    cdef public object offs
    cdef public object slots
    cdef public Py_ssize_t mask

    cpdef Py_ssize_t find(self, bytes raw) except? -2
