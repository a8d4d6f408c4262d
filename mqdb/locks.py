"""A shard's mutex, taken so that waiting for it never builds a lock convoy.

Every put and get holds its shard's lock for a few microseconds, and a thread runs Python only while
it holds the interpreter lock (the GIL). A plain ``threading.Lock`` goes wrong here once two threads
meet at one shard: the waiter blocks with the GIL released, the owner's release hands the lock to it
as it wakes, and the waiter then holds the shard while it waits for the GIL. The thread that has the
GIL soon wants that shard again (one put in 32 on the default 32 shards), blocks, and hands the GIL
over: from then on every thread switch goes through a lock handoff, a few hundred times more often
than the GIL's own switch interval (4 writer threads measured 170,000 context switches for 2M puts,
and were 0.7x as fast as one).

:class:`ShardLock` waits differently: a thread that finds the lock taken waits, with the GIL
released, only until the lock is *free* — it takes the lock and at once lets it go — and then tries
again with the GIL held. So a thread holds a shard only while it runs, or while it does I/O with the
GIL released; never while it waits for the GIL.

The compiled twin (``mqdb._c_locks``) waits on a ``PyThread`` lock of its own with the GIL released
for both the take and the letting go; the Python class waits on a ``threading.Lock``, where the
letting go needs the GIL back, so it keeps the same behaviour (mutual exclusion, the same methods and
errors) but not the convoy's cure.
"""

import threading

try:
    import cython
except ImportError:  # installed without Cython: runs as the Python source, as it does without the twin
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

from ._accel import import_c_accel


class ShardLock:
    """A non-reentrant mutex with ``threading.Lock``'s ``acquire(blocking=True)``, ``release()``,
    ``locked()`` and context manager; releasing it unlocked raises RuntimeError as that does."""

    def __init__(self) -> None:
        self._held = False
        if cython.compiled:
            self._c = _c_new()  # noqa: F821 (a C function of _c_locks.pxd)
        else:
            self._lock = threading.Lock()

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; with ``blocking=False``, only if it is free at once. True if taken."""
        if not self._held and self._try():
            return True
        if not blocking:
            return False
        while True:
            self._wait_free()
            if self._try():
                return True

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("release unlocked lock")
        self._held = False
        self._give()

    def locked(self) -> bool:
        return self._held

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<mqdb ShardLock {'locked' if self._held else 'unlocked'}>"

    # --- the underlying lock: threading.Lock here, a PyThread lock in the compiled twin ---------------
    def _try(self) -> bool:
        """Take the underlying lock if it is free at once, without releasing the GIL."""
        if cython.compiled:
            taken = _c_try(self._c)  # noqa: F821 (a C function of _c_locks.pxd)
        else:
            taken = self._lock.acquire(False)
        if taken:
            self._held = True
        return taken

    def _wait_free(self) -> None:
        """Return once the lock was free at some moment since the call, not holding it."""
        if cython.compiled:
            _c_wait_free(self._c)  # noqa: F821 (a C function of _c_locks.pxd)
        else:
            self._lock.acquire()
            self._lock.release()

    def _give(self) -> None:
        if cython.compiled:
            _c_give(self._c)  # noqa: F821 (a C function of _c_locks.pxd)
        else:
            self._lock.release()

    def __dealloc__(self) -> None:
        """Compiled twin only (a plain class never calls it): free the PyThread lock."""
        if cython.compiled:
            _c_free(self._c)  # noqa: F821 (a C function of _c_locks.pxd)


import_c_accel(globals(), "mqdb._c_locks")
