# C types for the compiled twin of javahash.py (the Python module stays the implementation).
cimport cython


@cython.locals(value=cython.uint, signed=cython.longlong)
cpdef java_string_hash(text)
@cython.locals(char=cython.Py_UCS4, unit=cython.uint, value=cython.uint, mask=cython.uint)
cpdef unsigned int _units_loop(str text) except? 0xFFFFFFFF
