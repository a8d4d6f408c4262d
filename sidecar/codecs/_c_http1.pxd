# C types for the compiled twin of http1.py (the Python module stays the implementation).
cimport cython
from sidecar.codecs._c_http1_states cimport ConnectionState
from sidecar.codecs._c_http1_wire cimport Buffer, Limits


cdef class _Connection:
    cdef public Limits _limits
    cdef public ConnectionState _state
    cdef public Buffer _buffer
    cdef public object _reader
    cdef public object _error

    @cython.locals(buffer=Buffer)
    cpdef receive_data(self, data)
    cpdef next_event(self)
    cpdef _closed_or_need_data(self)


cdef class ServerConnection(_Connection):
    cdef public object _request

    @cython.locals(buffer=Buffer, head=bytes)
    cpdef _next_event(self)
    @cython.locals(lines=list, headers=list, hosts=Py_ssize_t)
    cpdef tuple _parse_head(self, bytes head)
    @cython.locals(fields=list, headers=list, close=bint, body=bytes, data=bytes)
    cpdef bytes send(self, event)
    cpdef start_next_cycle(self)


cdef class ClientConnection(_Connection):
    cdef public object host
    cdef public object _method
    cdef public object _response
    cdef public list _parts
