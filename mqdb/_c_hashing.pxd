# C types for the compiled twin of hashing.py (the Python module stays the implementation).
cimport cython

@cython.locals(text=str, end=Py_ssize_t, start=Py_ssize_t, digits=Py_ssize_t, i=Py_ssize_t, number=cython.longlong)
cpdef shard_of(name, shards)
