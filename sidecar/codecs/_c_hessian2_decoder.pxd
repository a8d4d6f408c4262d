# C types for the compiled twin of hessian2_decoder.py (the Python module stays the implementation).
cimport cython

cdef class Hessian2Decoder:
    cdef public bytes _data
    cdef public Py_ssize_t _pos
    cdef public Py_ssize_t _end
    cdef public object _max_depth
    cdef public Py_ssize_t _depth
    cdef public list _refs
    cdef public list _types
    cdef public list _classes

    cpdef bint at_end(self)
    cpdef expect_end(self)
    @cython.locals(tag=int)
    cpdef read(self)
    @cython.locals(tag=int)
    cpdef read_string(self)
    @cython.locals(tag=int)
    cpdef read_int(self)
    cpdef _error(self, str reason, Py_ssize_t offset)
    @cython.locals(have=Py_ssize_t)
    cpdef _truncated(self, Py_ssize_t need)
    @cython.locals(pos=Py_ssize_t)
    cpdef int _byte(self) except -1
    @cython.locals(pos=Py_ssize_t)
    cpdef bytes _take(self, Py_ssize_t count)
    @cython.locals(pos=Py_ssize_t)
    cpdef _unpack(self, fmt)
    @cython.locals(offset=Py_ssize_t)
    cpdef _length(self, what)
    cpdef _int(self, int tag)
    cpdef _long(self, int tag)
    @cython.locals(data=bytes, end=Py_ssize_t, start=Py_ssize_t, units=Py_ssize_t, last=Py_ssize_t, width=Py_ssize_t, chunk=bytes, leads=bytes)
    cpdef Py_ssize_t _utf8_span(self, Py_ssize_t units) except -1
    @cython.locals(pos=Py_ssize_t, raw=bytes)
    cpdef _string_part(self, Py_ssize_t units, list parts)
    @cython.locals(pos=Py_ssize_t, units=Py_ssize_t, end=Py_ssize_t, start=Py_ssize_t, raw=bytes, parts=list)
    cpdef str _string(self, int tag)
    cpdef _enter(self)
    @cython.locals(offset=Py_ssize_t, tag=int)
    cpdef str _type(self)
    cpdef bint _peek_not_end(self) except -1
    @cython.locals(offset=Py_ssize_t)
    cpdef _map(self, int tag)


cpdef int _sequence_length(int lead)
