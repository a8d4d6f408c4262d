# C types for the compiled twin of coding.py (the Python module stays the implementation).
cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport uint64_t
from libc.string cimport memmove
# MurmurHash3 as C functions (the murmurhash package's Cython API): the same hashes mmh3 gives Python,
# without a call through Python's arguments and a tuple of results.
from murmurhash.mrmr cimport hash128_x64


cdef inline long long _murmur_low32(bytes raw, Py_ssize_t start, Py_ssize_t end):
    cdef uint64_t out[2]
    hash128_x64(<const char*>raw + start, <int>(end - start), 0, out)
    return out[0] & 0xFFFFFFFF

cpdef long long checksum_at(bytes raw, Py_ssize_t start, Py_ssize_t end) except -1


cdef inline void _c_le(unsigned char *p, unsigned long long value, int n) noexcept:
    cdef int i
    for i in range(n):
        p[i] = (value >> (8 * i)) & 0xFF


cdef inline void _c_write_record(bytearray buf, Py_ssize_t at, long long kind, long long flags, long long qid,
                                 Py_ssize_t size, long long skip, long long count, src, Py_ssize_t start) noexcept:
    """write_record once its arguments are checked: the fields of coding.RECORD stored at their offsets
    (checksum 0, kind 4, flags 5, qid 6, size 10, skip 12, count 14), the payload copied after them, and
    the checksum of bytes 4 to the end stored in the first field."""
    cdef unsigned char *p = <unsigned char *>PyByteArray_AS_STRING(buf) + at
    cdef const char *s = PyBytes_AS_STRING(src) if type(src) is bytes else PyByteArray_AS_STRING(src)
    cdef uint64_t out[2]
    p[4] = <unsigned char>kind
    p[5] = <unsigned char>flags
    _c_le(p + 6, <unsigned long long>qid, 4)
    _c_le(p + 10, <unsigned long long>size, 2)
    _c_le(p + 12, <unsigned long long>skip, 2)
    _c_le(p + 14, <unsigned long long>count, 2)
    memmove(p + 16, s + start, size)
    hash128_x64(<const char *>p + 4, <int>(12 + size), 0, out)
    _c_le(p, out[0] & 0xFFFFFFFF, 4)


@cython.locals(size=Py_ssize_t, end=Py_ssize_t)
cpdef Py_ssize_t write_record(buf, Py_ssize_t at, long long kind, long long flags, long long qid, long long skip,
                              long long count, src, Py_ssize_t start, Py_ssize_t stop) except -1

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
