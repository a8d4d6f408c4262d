# C types for the compiled twin of http1.py (the Python module stays the implementation).
cimport cython

# Aliased: the module imports these classes under their own names, as Python objects.
from sidecar.codecs._c_http1_states cimport ConnectionState as _State
from sidecar.codecs._c_http1_wire cimport Buffer as _Buffer
# The functions of the wire grammar the parser calls per request, called as C (the module imports
# them under the same names, as Python functions).
from sidecar.codecs._c_http1_wire cimport (
    body_reader, checked_headers, encode_head, parse_fields, parse_request_line, status_line, wants_keep_alive,
)


cdef class _Connection:
    cdef public object _limits
    cdef public _State _state
    cdef public _Buffer _buffer
    cdef public object _reader
    cdef public object _error
    cdef readonly object _peer

    cpdef _their_state(self)
    cpdef receive_data(self, data)
    cpdef next_event(self)
    cpdef _next_event(self)


cdef class ServerConnection(_Connection):
    cdef public object _request

    cpdef _next_event(self)
    cpdef take_body(self)
    cpdef send(self, event)
    cpdef start_next_cycle(self)


cdef class ClientConnection(_Connection):
    cdef public object host
    cdef public object _method
    cdef public object _response
    cdef public list _parts

    cpdef next_event(self)
    cpdef _next_event(self)
