"""The shared write-buffer pool: one arena cut into equal slices, chained per unfinished block.

A queue's unfinished block is a chain of slices (``next`` links them; the last one links to -1).
Sealing a block gathers its chain into one record and gives the slices back; the next block
anywhere reuses them, so nothing is allocated per message. The arena is anonymous memory, so
pages count toward RSS only once a slice on them is used. The pool never grows past its budget:
``alloc`` returns -1 when every slice is taken and the caller makes room (see shard.py).
"""

import mmap
import threading
from array import array


class SlicePool:
    def __init__(self, budget: int, slice_size: int):
        if slice_size & (slice_size - 1):
            raise ValueError(f"slice_size must be a power of two, not {slice_size}")
        self.slice_size = slice_size
        self.slices = max(4, budget // slice_size)
        self.arena = mmap.mmap(-1, self.slices * slice_size)
        self.view = memoryview(self.arena)
        self.next = array("i", [-1]) * self.slices
        self._free = array("i")
        self._fresh = 0  # slices never handed out yet start here
        self._lock = threading.Lock()

    def alloc(self) -> int:
        """A free slice whose link is -1, or -1 if the pool is full."""
        try:
            s = self._free.pop()  # atomic under the GIL
        except IndexError:
            with self._lock:
                if self._fresh >= self.slices:
                    return -1
                s = self._fresh
                self._fresh += 1
        self.next[s] = -1
        return s

    def gather(self, head: int, end: int) -> bytes:
        """The bytes of the chain from ``head``; the last slice ends at arena offset ``end``."""
        size = self.slice_size
        view = self.view
        nxt = self.next
        s = head
        parts = []
        while True:
            start = s * size
            after = nxt[s]
            if after < 0:
                if not parts:
                    return bytes(view[start:end])
                parts.append(view[start:end])
                return b"".join(parts)
            parts.append(view[start : start + size])
            s = after

    def release(self, head: int) -> int:
        """Give back the chain from ``head``; return how many slices it had."""
        nxt = self.next
        chain = []
        s = head
        while s >= 0:
            chain.append(s)
            s = nxt[s]
        self._free.extend(chain)
        return len(chain)

    def chain_length(self, head: int) -> int:
        nxt = self.next
        n = 0
        s = head
        while s >= 0:
            n += 1
            s = nxt[s]
        return n

    @property
    def in_use(self) -> int:
        return self._fresh - len(self._free)

    def stats(self) -> dict:
        return {
            "budget_bytes": self.slices * self.slice_size,
            "slice_size": self.slice_size,
            "slices_in_use": self.in_use,
            "peak_bytes": self._fresh * self.slice_size,  # slices are reused before fresh ones are cut
        }

    def close(self) -> None:
        self.view.release()
        self.arena.close()
        self.next, self._free = array("i"), array("i")  # 4 bytes a slice: 4 MiB for the default budget
