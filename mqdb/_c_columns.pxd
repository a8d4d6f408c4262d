# C types for the compiled twin of columns.py (the Python module stays the implementation).
cimport cython
from cpython cimport array as carray

@cython.locals(typed=carray.array)
cpdef int int_at(column, Py_ssize_t i) except? -2

@cython.locals(typed=carray.array)
cpdef long long long_at(column, Py_ssize_t i) except? -2
