"""The queue directory of a shard: queue name -> queue id, with no object per queue.

Three typed buffers, whatever the number of queues:

- ``arena``: the bytes of the shard's names file (``NNN.names``), header included, so a name's
  offset in the arena is its offset in the file. A name is stored once, as ``varint(len) utf8``.
- ``offs``: per queue id, the arena offset of its name record.
- ``slots``: an open-addressing table (linear probing, at most two thirds full) of queue id + 1,
  0 for an empty slot, placed by the mmh3 hash of the name (``format.NAME_SEED``). A lookup hashes
  the name, probes, and verifies each candidate against its bytes in the arena.

The index checkpoint saves ``offs`` and ``slots`` as they are, so opening a store loads them with one
read each (see checkpoint.py) instead of hashing every name again.

Every put and get looks a name up, so the build also compiles this module into ``mqdb._c_directory``
(C types in ``_c_directory.pxd``; :mod:`mqdb._accel`), which takes over at import unless
``DUBBOMESH_PURE_PYTHON=1``.
"""

from array import array

import mmh3

try:
    import cython
except ImportError:  # installed without Cython: runs as the Python source, as it does without the twin
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

from ._accel import import_c_accel
from .coding import VarintError, decode_varint, encode_varint
from .columns import item, touch
from .errors import FormatError
from .format import NAME_SEED

MIN_SLOTS = 64


def slots_for(queues: int) -> int:
    """Table size for ``queues`` names: a power of two, at most two thirds full."""
    cap = MIN_SLOTS
    while 3 * queues > 2 * cap:
        cap *= 2
    return cap


def probe(slots, mask: int, arena: bytearray, offs, raw: bytes, i: int, then: tuple = (), blocks: tuple = ()) -> int:
    """The queue id of the UTF-8 name ``raw`` whose hash gives slot ``i``, or -1 (the loop of
    :meth:`Directory.find`). The signed hash of a name has the low bits of the unsigned one.
    ``then``: columns indexed by queue id that the caller reads next; the item of each candidate is
    touched (:func:`mqdb.columns.touch`) as soon as the candidate is known, so that their cache misses
    overlap those of checking the name. ``blocks``: a column of block ids indexed by queue id, then
    columns indexed by block id that the caller reads next. The candidate's block id is touched with
    ``then``, so it arrives with the name's offset; it is then read, and that block's items are touched
    before the name is checked, so that their cache misses overlap the name's instead of following it."""
    size = len(raw)
    known = len(offs)
    while True:
        s = item(slots, i)
        if not s:
            return -1
        if s > known:
            raise FormatError(f"the name table of the index checkpoint names queue {s - 1} of {known}")
        for column in then:
            touch(column, s - 1)
        if blocks:
            touch(blocks[0], s - 1)
        o = item(offs, s - 1)
        if blocks and cython.compiled:  # touching does nothing in Python: no need to find the block
            ids = blocks[0]
            if s - 1 < len(ids):
                b = item(ids, s - 1)
                if b >= 0:
                    for k in range(1, len(blocks)):
                        touch(blocks[k], b)
        n = arena[o]
        if n < 0x80:
            if n == size and _holds(arena, o + 1, raw):
                return s - 1
        elif size >= 0x80:  # a two-byte length prefix (its first byte alone may equal a size of 128..255)
            n, p = decode_varint(arena, o)
            if n == size and _holds(arena, p, raw):
                return s - 1
        i = (i + 1) & mask


def _holds(arena: bytearray, at: int, raw: bytes) -> bool:
    """Whether ``raw`` lies in ``arena`` at ``at``: a ``memcmp`` in the compiled twin, no method call."""
    if cython.compiled:
        return _same_bytes(arena, at, raw)  # noqa: F821 (a C function of _c_directory.pxd)
    return at >= 0 and arena.startswith(raw, at)


def name_hash(raw: bytes) -> int:
    """The hash that places the UTF-8 name ``raw`` in the table: mmh3's, unsigned; the compiled twin
    computes the same through murmurhash's C function."""
    if cython.compiled:
        return _murmur32(raw, NAME_SEED)  # noqa: F821 (a C function of _c_directory.pxd)
    return mmh3.hash(raw, NAME_SEED, signed=False)


class Directory:
    __slots__ = ("arena", "offs", "slots", "mask")

    def __init__(self, arena: bytearray, offs: array, slots: array | None = None, covered: int = 0):
        """``slots`` holds the first ``covered`` queues of ``offs``; the rest are placed here."""
        self.arena = arena
        self.offs = offs
        if slots is None or len(slots) < slots_for(len(offs)):
            slots, covered = array("i", bytes(4 * slots_for(len(offs)))), 0
        self.slots = slots
        self.mask = len(slots) - 1
        for qid in range(covered, len(offs)):
            self._place(qid, name_hash(self.raw(qid)))

    def __len__(self) -> int:
        return len(self.offs)

    def find(self, raw: bytes, then: tuple = (), blocks: tuple = ()) -> int:
        """The queue id of the UTF-8 name ``raw``, or -1; ``then`` and ``blocks`` as for :func:`probe`."""
        mask = self.mask
        return probe(self.slots, mask, self.arena, self.offs, raw, name_hash(raw) & mask, then, blocks)

    def add(self, raw: bytes) -> int:
        """Append the UTF-8 name ``raw`` (not yet present); return its queue id."""
        qid = len(self.offs)
        self._grow_for(qid + 1)
        self.offs.append(len(self.arena))
        self.arena += encode_varint(len(raw))
        self.arena += raw
        self._place(qid, name_hash(raw))
        return qid

    def extend(self, path: str, records) -> int:
        """Append name records (``varint(len) utf8``, as in the names file); return how many. Raises
        FormatError, naming ``path`` and the file offset, for a record that does not parse."""
        base = len(self.arena)
        pos, end = 0, len(records)
        new = array("q")
        while pos < end:
            try:
                n, p = decode_varint(records, pos)
                if p + n > end:
                    raise ValueError("name runs past the end of the file")
                raw = bytes(records[p : p + n])
                raw.decode("utf-8")
            except (ValueError, VarintError) as e:
                raise FormatError(f"{path}: bad name at offset {base + pos}: {e}") from None
            new.append(base + pos)
            pos = p + n
        first = len(self.offs)
        self._grow_for(first + len(new))
        self.arena += records
        self.offs += new
        for qid in range(first, len(self.offs)):
            self._place(qid, name_hash(self.raw(qid)))
        return len(new)

    def raw(self, qid: int) -> bytes:
        """The UTF-8 bytes of the name of ``qid``."""
        arena = self.arena
        o = self.offs[qid]
        n = arena[o]
        if n < 0x80:
            return bytes(arena[o + 1 : o + 1 + n])
        n, p = decode_varint(arena, o)
        return bytes(arena[p : p + n])

    def name(self, qid: int) -> str:
        return self.raw(qid).decode("utf-8")

    def names(self) -> list[str]:
        """Every name in queue id order."""
        return [self.name(qid) for qid in range(len(self.offs))]

    def reserve(self, queues: int) -> None:
        """Make the table hold ``queues`` names without growing."""
        self._grow_for(queues)

    def _place(self, qid: int, h: int) -> None:
        slots, mask = self.slots, self.mask
        i = h & mask
        while slots[i]:
            i = (i + 1) & mask
        slots[i] = qid + 1

    def _grow_for(self, queues: int) -> None:
        """Make room for ``queues`` names, placing the ones already held again if the table grows."""
        cap = slots_for(queues)
        if cap <= len(self.slots):
            return
        self.slots = array("i", bytes(4 * cap))
        self.mask = cap - 1
        for qid in range(len(self.offs)):
            self._place(qid, name_hash(self.raw(qid)))


import_c_accel(globals(), "mqdb._c_directory")
