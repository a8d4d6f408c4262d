# C types for the compiled twin of locks.py (the Python module stays the implementation): the lock is a
# PyThread lock of the object's own, waited on with the GIL released for both the take and the letting go.
from cpython.pythread cimport (NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
                               PyThread_free_lock, PyThread_release_lock, PyThread_type_lock)


cdef inline PyThread_type_lock _c_new() except NULL:
    cdef PyThread_type_lock lock = PyThread_allocate_lock()
    if lock == NULL:
        raise MemoryError("cannot allocate a shard lock")
    return lock


cdef inline void _c_free(PyThread_type_lock lock) noexcept:
    if lock != NULL:
        PyThread_free_lock(lock)


cdef inline bint _c_try(PyThread_type_lock lock) noexcept:
    return PyThread_acquire_lock(lock, NOWAIT_LOCK) != 0


cdef inline void _c_wait_free(PyThread_type_lock lock) noexcept:
    with nogil:
        PyThread_acquire_lock(lock, WAIT_LOCK)
        PyThread_release_lock(lock)


cdef inline void _c_give(PyThread_type_lock lock) noexcept:
    PyThread_release_lock(lock)


cdef class ShardLock:
    cdef PyThread_type_lock _c
    cdef bint _held

    cpdef bint acquire(self, bint blocking=*) except -1
    cpdef release(self)
    cpdef bint locked(self)
    cdef bint _try(self) noexcept
    cdef void _wait_free(self) noexcept
    cdef void _give(self) noexcept
