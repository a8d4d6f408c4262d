# C types for the compiled twin of directory.py (the Python module stays the implementation).
cimport cython
from libc.string cimport memcmp
from murmurhash.mrmr cimport hash32
from mqdb._c_columns cimport item, touch


cdef inline bint _same_bytes(bytearray arena, Py_ssize_t at, bytes raw):
    cdef Py_ssize_t n = len(raw)
    return 0 <= at and at + n <= len(arena) and memcmp(<char*>arena + at, <char*>raw, n) == 0


cdef inline long long _murmur32(bytes raw, unsigned int seed):
    return hash32(<char*>raw, <int>len(raw), seed)

cpdef bint _holds(bytearray arena, Py_ssize_t at, bytes raw) except -1
cpdef long long name_hash(bytes raw) except -1

@cython.locals(size=Py_ssize_t, known=Py_ssize_t, s=Py_ssize_t, o=Py_ssize_t, n=Py_ssize_t, b=Py_ssize_t, k=Py_ssize_t)
cpdef Py_ssize_t probe(slots, Py_ssize_t mask, bytearray arena, offs, bytes raw, Py_ssize_t i, tuple then=*,
                       tuple blocks=*) except? -2


cdef class Directory:
    cdef public bytearray arena
    cdef public object offs
    cdef public object slots
    cdef public Py_ssize_t mask

    cpdef Py_ssize_t find(self, bytes raw, tuple then=*, tuple blocks=*) except? -2
