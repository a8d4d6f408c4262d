# C types for the compiled twin of tunnel.py (the Python module stays the implementation).
cimport cython

cdef class RequestIds:
    cdef public object consumer_id
    cdef public object _seq
    cdef public object _high

    cpdef next(self, now_ms)


cdef class ReplyBatcher:
    cdef public object consumer_id
    cdef public object limit
    cdef public list _entries

    @cython.locals(largest=Py_ssize_t)
    cpdef add(self, request_id, frame)
    @cython.locals(datagrams=list, batch=list, size=Py_ssize_t, entry_size=Py_ssize_t, entry=tuple)
    cpdef list flush(self)


cpdef make_request_id(consumer_id, now_ms, seq)
cpdef split_request_id(request_id)
cpdef Py_ssize_t max_request_frame(limit=*) except -1
cpdef Py_ssize_t max_reply_frame(limit=*) except -1
cpdef _check_limit(limit)
cpdef tuple _checked_reply(request_id, frame, consumer_id)
@cython.locals(parts=list)
cpdef bytes _pack(list entries)
cpdef decode(datagram)
cpdef list decode_replies(datagram)
cpdef bytes _as_bytes(datagram)
@cython.locals(size=Py_ssize_t)
cpdef tuple _header(bytes datagram)
cpdef _check_flags(flags, int status_hint)
cpdef _decode_request(bytes datagram, flags)
@cython.locals(size=Py_ssize_t, count=Py_ssize_t, entries=list, pos=Py_ssize_t, index=Py_ssize_t, length=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t, status_hint=int)
cpdef list _decode_entries(bytes datagram, flags, bint request)
@cython.locals(size=Py_ssize_t, request_id=cython.ulonglong, at=Py_ssize_t, data=bytes)
cpdef _checked_request(datagram, consumer_id)
@cython.locals(length=Py_ssize_t, body_length=Py_ssize_t, magic=long, dubbo_flags=long, at=Py_ssize_t, high=Py_ssize_t, low=Py_ssize_t)
cpdef _check_frame(bytes data, Py_ssize_t start, Py_ssize_t end, bint request, request_id, error, int status_hint)
cpdef bytes rewrite_id(frame, request_id)
