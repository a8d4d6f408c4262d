# C types for the compiled twin of hashing.py (the Python module stays the implementation).
cimport cython
from murmurhash.mrmr cimport hash32


cdef inline long long _murmur_u64(unsigned long long value) noexcept:
    """mmh3.hash(value.to_bytes(8, "little"), 0, signed=False)"""
    cdef unsigned char b[8]
    cdef int i
    for i in range(8):
        b[i] = (value >> (8 * i)) & 0xFF
    return hash32(b, 8, 0)

@cython.locals(text=str, end=Py_ssize_t, start=Py_ssize_t, digits=Py_ssize_t, i=Py_ssize_t, number=cython.longlong,
               run=cython.longlong, last=tuple, prefix=str, head=cython.longlong)
cpdef Py_ssize_t shard_of(name, Py_ssize_t shards) except -1

cdef long long _prefix_hash(str prefix) except -1
