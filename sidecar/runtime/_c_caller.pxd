# C types for the compiled twin of caller.py (the Python module stays the implementation).
cimport cython

# Aliased: the module imports these under their own names, as Python classes.
from sidecar.codecs._c_tunnel cimport RequestIds as _RequestIds
from sidecar.policies._c_balancer cimport Balancer as _Balancer
from sidecar.policies._c_histogram cimport Histogram as _Histogram


cdef class _Pending:
    cdef public object done
    cdef public bytes datagram
    cdef public double deadline
    cdef public object provider
    cdef public object address
    cdef public double sent


cdef class TunnelCaller:
    cdef public object consumer_id
    cdef public object auth
    cdef public object wall_clock
    cdef public object _request_limit
    cdef public object bind
    cdef public object threshold
    cdef public object call_timeout
    cdef public object retry_after
    cdef public object datagram_limit
    cdef public object clock
    cdef public _Balancer balancer
    cdef public _RequestIds _ids
    cdef public dict _pending
    cdef public object _deadlines
    cdef public dict _addresses
    cdef public list _entries
    cdef public object _resolving
    cdef public object _sock
    cdef public object _reader
    cdef public object _sweeper
    cdef public object _out
    cdef public object _batching
    cdef public dict _batches
    cdef public bint _flush_scheduled
    cdef public object _loop
    cdef public object counters
    cdef public object dropped
    cdef public dict latency
    cdef dict __dict__  # a test or an operator may tune a class constant (TICK, DRAIN ...) on one caller

    cpdef _send(self, _Pending pending, key, now)
    cpdef _wake(self, _Pending pending, value)
    @cython.locals(pending=_Pending)
    cpdef submit(self, encode, done)
    @cython.locals(pending=_Pending)
    cpdef _dispatch(self, list released)
    @cython.locals(pending=_Pending)
    cpdef _fail(self, request_id, error)
    @cython.locals(pending=_Pending, pending_calls=dict, released=list, replies=list, answers=list, balancer=_Balancer,
                   histogram=_Histogram)
    cpdef _read_replies(self)
