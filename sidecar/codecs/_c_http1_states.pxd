# C types for the compiled twin of http1_states.py (the Python module stays the implementation).
cimport cython

cdef class ConnectionState:
    cdef public dict states
    cdef public bint keep_alive

    cpdef next_state(self, role, event_type)
    cpdef process_event(self, role, event_type)
    cpdef process_error(self, role)
    cpdef disable_keep_alive(self)
    cpdef start_next_cycle(self)
    @cython.locals(states=dict, key=tuple, settled=tuple)
    cpdef _fire_state_triggered(self)
