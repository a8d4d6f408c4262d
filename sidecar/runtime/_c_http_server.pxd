# C types for the compiled twin of http_server.py (the Python module stays the implementation).
cimport cython

cdef class Connection

# Aliased: the module imports these under their own names, as Python objects.
from sidecar.codecs._c_http1 cimport ServerConnection as _ServerConnection
from sidecar.policies._c_connections cimport ConnectionLimits as _ConnectionLimits


cdef class HttpServer:
    cdef public object listener
    cdef public object handler
    cdef public object limits
    cdef public _ConnectionLimits connections
    cdef public set open
    cdef public object loop
    cdef public bint stopping
    cdef public Py_ssize_t body_in_use
    cdef public bint _trim_pending
    cdef public dict counters
    cdef public object _accepting
    cdef public object _reaper
    cdef public list _later
    cdef public object _next_turn
    cdef public list _writes
    cdef public bint _writing
    cdef object __weakref__

    cpdef later(self, connection)
    cpdef write_soon(self, connection, data)
    @cython.locals(writes=list, connection=Connection)
    cpdef _write_all(self)
    cpdef reserve(self, size, total)
    cpdef release(self, size)


cdef class Connection:
    cdef public HttpServer server
    cdef public object sock
    cdef public int fd
    cdef public object address
    cdef public _ServerConnection conn
    cdef public object reader
    cdef public object writer
    cdef public object out
    cdef public object request
    cdef public list body
    cdef public Py_ssize_t reserved
    cdef public bint declared
    cdef public object rejected
    cdef public object route
    cdef public double started
    cdef public bint waiting_turn
    cdef public bint answering
    cdef public bint closed
    cdef public bint eof
    cdef public bint draining
    cdef public Py_ssize_t drained
    cdef public bint in_process
    cdef public str stage
    cdef public object due
    cdef public double due_deadline
    cdef object __weakref__

    cpdef _phase(self, phase, double deadline)
    cpdef settle(self)
    # What a request passes through, called as C methods within the server:
    cpdef _head_begins(self)
    cpdef process(self)
    cpdef _process(self)
    cpdef _end(self)
    cpdef _begin(self, request)
    cpdef _reserve(self, size)
    cpdef _read_more(self)
    cpdef _pause_reading(self)
    cpdef _resume_reading(self)
    cpdef respond(self, response)
    cpdef _write(self, data)
    cpdef _sent(self)
    cpdef _fail(self, status, reason, headers=*)
    cpdef _release(self)
    cpdef close(self)
