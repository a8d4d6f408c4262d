# C types for the compiled twin of histogram.py (the Python module stays the implementation).
cimport cython

cdef class Histogram:
    cdef public list counts
    cdef public object count
    cdef public object sum

    cpdef observe(self, value)


@cython.locals(bounds=tuple, low=Py_ssize_t, high=Py_ssize_t, middle=Py_ssize_t, bound=cython.double)
cpdef Py_ssize_t _bucket(double value) except -1
