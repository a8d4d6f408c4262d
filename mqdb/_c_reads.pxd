# C types for the compiled twin of reads.py (the Python module stays the implementation). The helpers
# behind read() are cpdef: read() calls them as C functions, and Python (the tests) still can.
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.errno cimport EINTR, errno
from posix.unistd cimport pread
from mqdb._c_columns cimport item
from mqdb._c_coding cimport checksum_at, le_uint
# Aliased: reads.py imports neither; the shard and its directory are typed by them.
from mqdb._c_directory cimport Directory as _Directory
from mqdb._c_shard cimport Shard as _Shard


cdef inline bytes _c_pread(int fd, Py_ssize_t size, long long offset):
    """os.pread(fd, size, offset): a fresh bytes object read into, cut to what was read."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char *buf = PyBytes_AS_STRING(out)
    cdef Py_ssize_t n
    while True:
        with nogil:
            n = pread(fd, buf, size, offset)
        if n >= 0:
            return out if n == size else out[:n]
        if errno != EINTR:
            PyErr_SetFromErrno(OSError)  # raises
        PyErr_CheckSignals()  # interrupted: a signal handler that raises ends the read, as in os.pread

@cython.locals(qid=Py_ssize_t, directory=_Directory)
cpdef list read_queue(_Shard sh, bytes raw, offset, num)

@cython.locals(cursors=dict)
cpdef list read(_Shard sh, Py_ssize_t qid, offset, num)

@cython.locals(last=Py_ssize_t, b=Py_ssize_t, end=cython.longlong)
cpdef Py_ssize_t locate(_Shard sh, Py_ssize_t qid, long long k) except? -2

@cython.locals(i=Py_ssize_t, first=cython.longlong, out=list, take=list, msgs=list, cache=dict, start=Py_ssize_t, skip=Py_ssize_t, count=Py_ssize_t, p=Py_ssize_t)
cpdef list _messages(_Shard sh, Py_ssize_t qid, long long k, long long end, Py_ssize_t b, Py_ssize_t ahead)

@cython.locals(cursors=dict)
cpdef _remember(_Shard sh, Py_ssize_t qid, long long k, Py_ssize_t b)

cpdef bytes _pread(int fd, Py_ssize_t size, long long offset)

@cython.locals(offset=cython.longlong, entry=cython.longlong, _=Py_ssize_t)
cpdef _readahead(_Shard sh, Py_ssize_t b, Py_ssize_t ahead)

@cython.locals(cache=dict, order=list, i=Py_ssize_t, msgs=list, p=Py_ssize_t, over=Py_ssize_t)
cpdef tuple _decoded(_Shard sh, Py_ssize_t b, bytes raw, Py_ssize_t start, Py_ssize_t skip, Py_ssize_t count, long long first)

@cython.locals(start=Py_ssize_t, skip=Py_ssize_t)
cpdef _continued(_Shard sh, Py_ssize_t qid, Py_ssize_t b, head, Py_ssize_t need)

cpdef Py_ssize_t _after(_Shard sh, Py_ssize_t qid, Py_ssize_t b) except? -2

@cython.locals(bcount=Py_ssize_t, entry=cython.longlong, offset=cython.longlong, size=Py_ssize_t, skip=Py_ssize_t, flags=Py_ssize_t, got_qid=Py_ssize_t, psize=Py_ssize_t, got_count=Py_ssize_t, kind=Py_ssize_t, sealed=cython.longlong, cs=cython.longlong, rec=bytes)
cpdef tuple _load(_Shard sh, Py_ssize_t qid, Py_ssize_t b)
