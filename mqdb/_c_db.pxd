# C types for the compiled twin of db.py (the Python module stays the implementation). The attributes
# every get and put reads are typed slots of the extension type; every other attribute lives in the
# instance's __dict__, as in the Python class (a read-only handle's put, for one).
cimport cython
from mqdb._c_shard cimport Shard as _Shard


cdef class DB:
    cdef dict __dict__
    cdef public list _shards
    cdef public Py_ssize_t _nshards
    cdef public bint reading
    cdef public bint _closed

    @cython.locals(sh=_Shard, raw=bytes)
    cpdef list get(self, queue, offset, num)
