# C types for the compiled twin of shard.py (the Python module stays the implementation).
# The attributes that every get and put reads are typed slots of the extension type; every other
# attribute lives in the instance's __dict__, as in the Python class.
cimport cython
from mqdb._c_coding cimport write_record
from mqdb._c_columns cimport append as append_item, item, put_item


cdef class Shard:
    cdef dict __dict__
    # the read path (reads.py)
    cdef public bint closed
    cdef public object directory
    cdef public object count
    cdef public object staged
    cdef public object first_b
    cdef public object last_b
    cdef public object b_entry
    cdef public object b_end
    cdef public object b_count
    cdef public object b_next
    cdef public dict big
    cdef public dict cursors
    cdef public dict cache
    cdef public list cache_order
    cdef public Py_ssize_t cache_next
    cdef public Py_ssize_t cache_blocks
    cdef public Py_ssize_t readahead
    cdef public long long cache_hits
    cdef public long long block_reads
    cdef public long long readaheads
    cdef public long long written
    cdef public int fd
    cdef public str data_path
    # the put path (stage.py)
    cdef public object stage_buf
    cdef public object stage_qids
    cdef public long long stage_tail
    cdef public long long stage_varint_extra
    cdef public long long message_total
    cdef public Py_ssize_t stage_chunk
    # the write path and the commit (this module)
    cdef public long long batch_bytes
    cdef public object chunk
    cdef public Py_ssize_t chunk_fill
    cdef public Py_ssize_t chunk_bytes
    cdef public object block_size
    cdef public object committed
    cdef public object cp_base_blocks
    cdef public object cp_base_queues
    cdef public object cp_blocks
    cdef public object cp_end
    cdef public object cp_queues
    cdef public object db
    cdef public object dir
    cdef public object drain_due
    cdef public object fill
    cdef public object flushed_ns
    cdef public object grew
    cdef public object head
    cdef public object index_path
    cdef public object lock
    cdef public object names_fd
    cdef public object names_path
    cdef public object names_pending
    cdef public object names_since_commit
    cdef public object names_written
    cdef public object new_qids
    cdef public object nshards
    cdef public object number
    cdef public object payload_max
    cdef public object pending
    cdef public long long pending_bytes
    cdef public object pool
    cdef public object pos
    cdef public long long raw_bytes
    cdef public object readonly
    cdef public object recovery
    cdef public object room
    cdef public object seq
    cdef public object skip
    cdef public object spill_drains
    cdef public object spill_fd
    cdef public object spill_limit
    cdef public object spill_path
    cdef public object spill_pending
    cdef public object spill_tail
    cdef public object spill_written
    cdef public object spilled
    cdef public object spilled_fragments
    cdef public object stage_fd
    cdef public object stage_frames
    cdef public object stage_path
    cdef public long long stored_bytes
    cdef public object sync
    cdef public long long tail
    cdef public object varint_extra
    cdef public object opened

    @cython.locals(size=Py_ssize_t, length=Py_ssize_t, last=Py_ssize_t, sealed=cython.longlong, bcount=cython.longlong,
                   skip=cython.longlong, at=Py_ssize_t, offset=cython.longlong, flags=cython.int)
    cpdef seal_bytes(self, Py_ssize_t qid, raw, bint continues, Py_ssize_t start=*, Py_ssize_t stop=*)

    @cython.locals(bid=Py_ssize_t, last=Py_ssize_t)
    cpdef add_block(self, Py_ssize_t qid, long long entry, long long bcount)
