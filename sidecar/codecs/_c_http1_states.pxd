# C types for the compiled twin of http1_states.py (the Python module stays the implementation).
cimport cython

cdef class _Situation


cdef class ConnectionState:
    cdef readonly object client
    cdef readonly object server
    cdef readonly bint keep_alive
    cdef _Situation _at

    cpdef _enter(self, _Situation at)
    cpdef next_state(self, role, event_type)
    cpdef process_event(self, role, event_type)
    cpdef process_error(self, role)
    cpdef disable_keep_alive(self)
    cpdef start_next_cycle(self)


cdef class _Situation:
    cdef readonly object client
    cdef readonly object server
    cdef readonly bint keep_alive
    cdef readonly dict client_moves
    cdef readonly dict server_moves
    cdef public _Situation client_error
    cdef public _Situation server_error
    cdef public _Situation closing
