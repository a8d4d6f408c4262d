# C types for the compiled twin of stage.py (the Python module stays the implementation).
cimport cython
from mqdb._c_columns cimport append, item, put_item
from mqdb._c_shard cimport Shard as _Shard

@cython.locals(n=Py_ssize_t, buf=bytearray, head=bytes, c=cython.longlong)
cpdef long long put(_Shard sh, Py_ssize_t qid, msg) except -1

@cython.locals(frames=bytes, total=cython.longlong, i=Py_ssize_t, pmax=Py_ssize_t, qid=Py_ssize_t,
               varint_extra=cython.longlong, at=cython.longlong, n=Py_ssize_t, p=Py_ssize_t, start=Py_ssize_t,
               stop=Py_ssize_t, size=Py_ssize_t, nframes=cython.longlong, filled=cython.longlong, out=bytearray)
cpdef distribute(_Shard sh, bint sealing=*)

@cython.locals(pmax=Py_ssize_t, a=Py_ssize_t, p=Py_ssize_t, k=cython.longlong, n=Py_ssize_t, q=Py_ssize_t,
               end=Py_ssize_t, filled=cython.longlong)
cdef _append_run(_Shard sh, Py_ssize_t qid, bytearray out, view, Py_ssize_t start, Py_ssize_t stop, long long filled)
