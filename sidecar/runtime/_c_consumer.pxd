# C types for the compiled twin of consumer.py (the Python module stays the implementation).
cimport cython

# Aliased: the module imports the caller under its own name, as a Python class.
from sidecar.runtime._c_caller cimport TunnelCaller as _TunnelCaller


cdef class ConsumerSidecar:
    cdef public object config
    cdef public object registry
    cdef public _TunnelCaller caller
    cdef public object _workers
    cdef public object _listener
    cdef public object _server
    cdef public object _serialization
    cdef public bint _stopping
    cdef public bint _access_log
    cdef public bint _provider_header
    cdef public double io_collect
    cdef public object _collector
    cdef object __weakref__

    cpdef _answer(self, request, call, result, respond, started, client, form=*)
    cpdef _send(self, request, reply, respond, started, client, frame=*, tunnel_id=*, provider=*)


cdef class _Exchange:
    cdef ConsumerSidecar sidecar
    cdef object request
    cdef object call
    cdef object respond
    cdef double started
    cdef object client
