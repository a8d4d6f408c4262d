# C types for the compiled twin of db.py (the Python module stays the implementation). The attributes
# every get and put reads are typed slots of the extension type; every other attribute lives in the
# instance's __dict__, as in the Python class (a read-only handle's put, for one).
cimport cython
from mqdb._c_directory cimport Directory as _Directory
from mqdb._c_hashing cimport shard_of
from mqdb._c_reads cimport read_queue
from mqdb._c_stage cimport put as stage_put
from mqdb._c_locks cimport ShardLock as _ShardLock
from mqdb._c_shard cimport Shard as _Shard


cdef class DB:
    cdef dict __dict__
    cdef public list _shards
    cdef public Py_ssize_t _nshards
    cdef public bint reading
    cdef public bint _closed

    @cython.locals(sh=_Shard, name=str, raw=bytes, lock=_ShardLock, directory=_Directory, qid=Py_ssize_t, c=cython.longlong)
    cpdef put(self, queue, msg)

    @cython.locals(sh=_Shard, name=str, raw=bytes, lock=_ShardLock)
    cpdef list get(self, queue, offset, num)
