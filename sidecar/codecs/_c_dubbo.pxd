# C types for the compiled twin of dubbo.py (the Python module stays the implementation).
cimport cython

cdef class RequestTemplate:
    cdef public object serialization
    cdef public object flags
    cdef public object _descriptor
    cdef public tuple _types
    cdef public object _writer
    cdef public bytes _head
    cdef public object _tail
    cdef public object _attachments


cdef class DubboDecoder:
    cdef public object max_payload
    cdef public bint parse_bodies
    cdef public bytearray _buffer
    cdef public Py_ssize_t _pos
    cdef public bint _eof
    cdef public object _error

    cpdef receive_data(self, data)
    @cython.locals(buffer=bytearray, pos=Py_ssize_t, available=Py_ssize_t, end=Py_ssize_t, length=Py_ssize_t, body=bytes)
    cpdef next_event(self)
    cpdef _fail(self, str reason)


cpdef _writer(serialization)
cpdef _check_length(length, max_payload, request_id, error)
cpdef _text(value, str what)
cpdef bytes _request_body(request)
cpdef _write_arguments(writer, tuple types, arguments)
cpdef bytes _response_body(response)
cpdef parse(frame)
cpdef _status(value)
cpdef dict _attachments(reader)
cpdef _parse_event(frame, reader)
cpdef _parse_request(frame, reader)
cpdef parse_response(data)
cpdef tuple read_reply(data)
cpdef tuple _read_in_place(data)
cpdef _frame_of(data)
cpdef _parse_response(frame, reader)
cpdef _response_of(request_id, serialization, tuple fields)
@cython.locals(tail=bytes)
cpdef tuple _read_fields(status, serialization, reader, data)
