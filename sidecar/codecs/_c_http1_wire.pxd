# C types for the compiled twin of http1_wire.py (the Python module stays the implementation).
cimport cython

# Aliased: the module imports the memo under its own name, as a Python class.
from sidecar.codecs._c_memo cimport Memo as _Memo

cdef class Buffer:
    cdef public object data  # bytes as received, or a bytearray once joined
    cdef public Py_ssize_t pos
    cdef public Py_ssize_t scan
    cdef public bint eof

    @cython.locals(joined=bytearray)
    cpdef feed(self, chunk)
    cpdef bint startswith(self, prefix)
    cpdef discard(self)
    @cython.locals(pos=Py_ssize_t)
    cpdef skip_empty_lines(self)
    cpdef bytes take(self, Py_ssize_t n)
    @cython.locals(idx=Py_ssize_t, end=Py_ssize_t)
    cpdef take_until(self, bytes delimiter, Py_ssize_t limit, too_long)
    cpdef bytes _take(self, Py_ssize_t stop, Py_ssize_t end)
    cpdef _consume(self, Py_ssize_t end)


cdef class Limits:
    cdef public object max_head
    cdef public object max_body
    cdef public object max_headers

    cpdef head_too_long(self)


cdef class LengthReader:
    cdef public Py_ssize_t length
    cdef public Py_ssize_t left

    @cython.locals(n=Py_ssize_t, got=Py_ssize_t)
    cpdef read(self, Buffer buffer)


cdef class UntilCloseReader:
    cdef public object max_body
    cdef public object total

    cpdef read(self, Buffer buffer)


cdef class ChunkedReader:
    cdef public Limits limits
    cdef public int phase
    cdef public object left
    cdef public object total

    @cython.locals(limits=Limits, n=Py_ssize_t, line=bytes, section=bytes)
    cpdef read(self, Buffer buffer)


@cython.locals(fields=list, parsed=_Memo, line=bytes, field=tuple)
cpdef list parse_fields(list lines, max_headers, str where)

@cython.locals(name=bytes, colon=bytes, value=bytes, lowered=str)
cpdef tuple _parse_field(bytes line)

@cython.locals(lines=_Memo, parsed=tuple)
cpdef tuple parse_request_line(bytes line)

@cython.locals(parts=list, method=bytes, target=bytes)
cpdef tuple _parse_request_line(bytes line)

@cython.locals(name=str, value=str)
cpdef bint wants_keep_alive(list headers, str version)

@cython.locals(codings=list, lengths=list, name=str, value=str, digits=str)
cpdef body_reader(list headers, str version, Limits limits, bint until_close=*)

@cython.locals(checked=list)
cpdef list checked_headers(headers)

@cython.locals(parts=list, text=str)
cpdef bytes encode_head(str first_line, headers)

@cython.locals(made=dict, line=str)
cpdef str status_line(status, reason, final)
cpdef str _status_line(status, reason, final)

@cython.locals(values=list, size=Py_ssize_t)
cpdef get_header(headers, str name, default=*)
@cython.locals(lowered=dict)
cpdef _lower(name)

@cython.locals(form=dict, decoded=_Memo, piece=bytes, raw_name=bytes, raw_value=bytes, name=str)
cpdef dict parse_form(body)

@cython.locals(decoded=_Memo)
cpdef str form_value(bytes raw)

@cython.locals(text=str, decoded=_Memo)
cpdef str _form_decode(bytes raw)

@cython.locals(bad=Py_ssize_t)
cpdef str _decode_piece(bytes raw)

@cython.locals(i=Py_ssize_t, byte=cython.uchar)
cpdef Py_ssize_t _control_at(bytes raw)

@cython.locals(size=Py_ssize_t, i=Py_ssize_t)
cpdef Py_ssize_t _bad_escape_at(bytes raw)

@cython.locals(size=Py_ssize_t, out=bytearray, i=Py_ssize_t, j=Py_ssize_t, byte=int, high=int, low=int)
cpdef bytes _unquote_plus(bytes raw)

cdef inline int _hex_digit(int byte)
