# C types for the compiled twin of coding.py (the Python module stays the implementation).
cimport cython
from libc.stdint cimport uint64_t
# MurmurHash3 as C functions (the murmurhash package's Cython API): the same hashes mmh3 gives Python,
# without a call through Python's arguments and a tuple of results.
from murmurhash.mrmr cimport hash128_x64


cdef inline long long _murmur_low32(bytes raw, Py_ssize_t start, Py_ssize_t end):
    cdef uint64_t out[2]
    hash128_x64(<const char*>raw + start, <int>(end - start), 0, out)
    return out[0] & 0xFFFFFFFF

cpdef long long checksum_at(bytes raw, Py_ssize_t start, Py_ssize_t end) except -1

@cython.locals(value=cython.ulonglong, i=Py_ssize_t)
cpdef unsigned long long le_uint(bytes raw, Py_ssize_t at, Py_ssize_t n) except? 0xFFFFFFFFFFFFFFFF

@cython.locals(end=Py_ssize_t)
cpdef tuple decode_varint(buf, Py_ssize_t pos)

@cython.locals(size=cython.longlong, q=Py_ssize_t, b=cython.longlong, shift=int)
cdef long long _frame(bytes raw, Py_ssize_t p, Py_ssize_t end) except -1

@cython.locals(end=Py_ssize_t, size=cython.longlong, f=cython.longlong, _=Py_ssize_t)
cpdef Py_ssize_t skip(bytes raw, Py_ssize_t p, Py_ssize_t n) except -1

@cython.locals(end=Py_ssize_t, size=cython.longlong, f=cython.longlong, _=Py_ssize_t, stop=Py_ssize_t, data=cython.p_char)
cpdef Py_ssize_t split(bytes raw, Py_ssize_t p, Py_ssize_t n, list out) except -1

@cython.locals(end=Py_ssize_t, nq=Py_ssize_t, p=Py_ssize_t, size=cython.longlong, f=cython.longlong, stop=Py_ssize_t, k=Py_ssize_t, qid=Py_ssize_t, s=cython.longlong)
cpdef measure_runs(int[:] qids, bytes frames, long long[:] sizes, order)

@cython.locals(end=Py_ssize_t, nq=Py_ssize_t, room=Py_ssize_t, p=Py_ssize_t, size=cython.longlong, f=cython.longlong, n=Py_ssize_t, k=Py_ssize_t, qid=Py_ssize_t, at=cython.longlong, i=Py_ssize_t, src=cython.p_char, dst=cython.p_char)
cpdef place_runs(int[:] qids, bytes frames, bytearray out, long long[:] ends)
