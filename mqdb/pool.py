"""The shared write-buffer pool: one arena cut into equal slices.

A queue's unfinished block is a chain of slices; finished blocks give their slices back, and the
next block anywhere reuses them. Nothing is allocated per message. The pool never grows past its
budget: ``alloc`` returns -1 when every slice is taken and the caller makes room (see shard.py).
"""

import threading
from array import array


class SlicePool:
    def __init__(self, budget: int, slice_size: int):
        self.slice_size = slice_size
        self.slices = budget // slice_size
        self.arena = bytearray(self.slices * slice_size)  # zero pages: RSS grows only as slices are used
        self.view = memoryview(self.arena)
        self._free = array("i")
        self._fresh = 0  # slices never handed out yet start here
        self._lock = threading.Lock()
        self.in_use = 0
        self.peak = 0

    def alloc(self) -> int:
        with self._lock:
            if self._free:
                s = self._free.pop()
            elif self._fresh < self.slices:
                s = self._fresh
                self._fresh += 1
            else:
                return -1
            self.in_use += 1
            if self.in_use > self.peak:
                self.peak = self.in_use
            return s

    def release(self, chain) -> None:
        with self._lock:
            self._free.extend(chain)
            self.in_use -= len(chain)

    def gather(self, chain, last_end: int) -> bytes:
        """Bytes of a chain: every slice whole but the last, which ends at arena offset ``last_end``."""
        size = self.slice_size
        view = self.view
        if len(chain) == 1:
            start = chain[0] * size
            return bytes(view[start:last_end])
        parts = [view[s * size : s * size + size] for s in chain[:-1]]
        parts.append(view[chain[-1] * size : last_end])
        return b"".join(parts)

    def stats(self) -> dict:
        return {
            "budget_bytes": self.slices * self.slice_size,
            "slice_size": self.slice_size,
            "slices_in_use": self.in_use,
            "peak_bytes": self.peak * self.slice_size,
        }

    def close(self) -> None:
        self.view.release()
