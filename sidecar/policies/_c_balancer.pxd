# C types for the compiled twin of balancer.py (the Python module stays the implementation).
cimport cython


cdef class _Provider:
    cdef public object key
    cdef public object weight
    cdef public object threshold
    cdef public Py_ssize_t in_flight
    cdef public Py_ssize_t answered
    cdef public Py_ssize_t errors
    cdef public Py_ssize_t timeouts
    cdef public Py_ssize_t ejections
    cdef public object ejected_until
    cdef public Py_ssize_t consecutive_timeouts
    cdef public object streak  # a Python int: 2 ** streak must not overflow
    cdef public object probe

    cpdef bint available(self, now)
    cpdef bint shut(self, now)


cdef class Balancer:
    cdef public object threshold
    cdef public object queue_size
    cdef public object eject_after
    cdef public object backoff
    cdef public object max_backoff
    cdef public dict _providers
    cdef public dict _draining
    cdef public dict _calls
    cdef public object _queue
    cdef public set _queued
    cdef public list _expired

    # What every call passes through, called as C methods by the caller:
    cpdef tuple submit(self, call_id, deadline, now)
    @cython.locals(target=_Provider)
    cpdef list complete(self, call_id, provider, now, outcome)
    @cython.locals(released=list, provider=_Provider)
    cpdef list release(self, now)
    @cython.locals(provider=_Provider, best=_Provider, load=cython.double, best_load=cython.double)
    cpdef _pick(self, now)
    cpdef _send(self, call_id, _Provider provider)
    cpdef _health(self, _Provider provider, call_id, now, outcome)
    cpdef _eject(self, _Provider provider, now)


cpdef bint _ahead(_Provider provider, _Provider other)
