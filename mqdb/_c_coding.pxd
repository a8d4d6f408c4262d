# C types for the compiled twin of coding.py (the Python module stays the implementation).
cimport cython

@cython.locals(end=Py_ssize_t)
cpdef tuple decode_varint(buf, Py_ssize_t pos)

@cython.locals(size=cython.longlong, q=Py_ssize_t, b=cython.longlong, shift=int)
cdef long long _frame(bytes raw, Py_ssize_t p, Py_ssize_t end) except -1

@cython.locals(end=Py_ssize_t, size=cython.longlong, f=cython.longlong, _=Py_ssize_t)
cpdef Py_ssize_t skip(bytes raw, Py_ssize_t p, Py_ssize_t n) except -1

@cython.locals(end=Py_ssize_t, size=cython.longlong, f=cython.longlong, _=Py_ssize_t, stop=Py_ssize_t, data=cython.p_char)
cpdef Py_ssize_t split(bytes raw, Py_ssize_t p, Py_ssize_t n, list out) except -1

@cython.locals(end=Py_ssize_t, nq=Py_ssize_t, p=Py_ssize_t, size=cython.longlong, f=cython.longlong, stop=Py_ssize_t, k=Py_ssize_t, qid=Py_ssize_t, s=cython.longlong)
cpdef measure_runs(int[:] qids, bytes frames, long long[:] sizes, order)

@cython.locals(end=Py_ssize_t, nq=Py_ssize_t, room=Py_ssize_t, p=Py_ssize_t, size=cython.longlong, f=cython.longlong, n=Py_ssize_t, k=Py_ssize_t, qid=Py_ssize_t, at=cython.longlong, i=Py_ssize_t, src=cython.p_char, dst=cython.p_char)
cpdef place_runs(int[:] qids, bytes frames, bytearray out, long long[:] ends)
