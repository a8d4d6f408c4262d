# C types for the compiled twin of hashing.py (the Python module stays the implementation).
cimport cython

@cython.locals(text=str, end=Py_ssize_t, start=Py_ssize_t, digits=Py_ssize_t, i=Py_ssize_t, number=cython.longlong,
               run=cython.longlong)
cpdef Py_ssize_t shard_of(name, Py_ssize_t shards) except -1

cdef long long _prefix_hash(str prefix) except -1
