# C types for the compiled twin of hessian2.py (the Python module stays the implementation).
cimport cython

cdef class Hessian2Encoder:
    cdef public bytearray _out
    cdef public object _max_depth
    cdef public Py_ssize_t _depth
    cdef public Py_ssize_t _ref_count
    cdef public dict _refs
    cdef public list _alive
    cdef public dict _types
    cdef public dict _classes

    cpdef bytes getvalue(self)
    cpdef write(self, value)
    @cython.locals(out=bytearray)
    cpdef write_int(self, value)
    @cython.locals(out=bytearray)
    cpdef write_long(self, value)
    @cython.locals(out=bytearray, length=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t, rest=Py_ssize_t)
    cpdef write_string(self, value)
    cpdef bint _back_reference(self, value, shareable)
    cpdef _type_name(self, name)
    cpdef _enter(self)

@cython.locals(char=cython.Py_UCS4, code=cython.uint, high=cython.uint, size=Py_ssize_t, units=Py_ssize_t,
               i=Py_ssize_t, out=bytearray)
cpdef tuple _java_utf8(str value)
cpdef _string_length(bytearray out, Py_ssize_t units)
