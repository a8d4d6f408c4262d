# C types for the compiled twin of connections.py (the Python module stays the implementation).
cimport cython


cdef class ConnectionLimits:
    cdef public object max_connections
    cdef public dict _phases
    cdef public object _ticks  # a Python int: it only grows

    cpdef idle(self, key, deadline)
    cpdef waiting(self, key, deadline)
    cpdef busy(self, key)
    cpdef closed(self, key)
    cpdef _set(self, key, phase, deadline)
