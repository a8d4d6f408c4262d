"""A bounded memo for the codecs: what a key (a header line, a form piece) was worked out to, for
keys that come again and again.

Most of what a client sends per call repeats byte for byte (``Host``, ``Content-Type``, the form's
field names, the interface and the method), and a dictionary lookup is cheaper than parsing it
again. Some of it never repeats: a request id in a header, a short random parameter. Kept like the
rest, those would fill the memo with entries that are never read, and its memory (thousands of
small objects, cleared and refilled every few thousand calls) would push the useful entries and the
code of the sidecar out of the processor's caches.

So a key is kept only when it comes a second time. Its first sighting sets one bit, chosen by the
key's hash, in a small bitmap (:data:`SEEN_BITS` bits); a key whose bit is already set is kept. Keys
that never repeat only ever set bits: when an eighth of the bitmap has been set, it is cleared, so at
most one key in eight that was never seen before is taken for one that was (and merely kept). The kept
dictionary is cleared whole when full: no bookkeeping per lookup.

>>> memo = Memo(limit=4)
>>> memo.get(b"a") is None
True
>>> memo.remember(b"a", 1)  # the first sighting: only its bit is set
>>> memo.get(b"a") is None
True
>>> memo.remember(b"a", 1)  # the second: kept
>>> memo.get(b"a")
1
"""

from __future__ import annotations

from sidecar._accel import import_c_accel

__all__ = ["Memo", "SEEN_BITS"]

SEEN_BITS = 1 << 16  # bits of the bitmap of keys seen once (8 KiB)
_SEEN_MASK = SEEN_BITS - 1
_SEEN_LIMIT = SEEN_BITS // 8  # keys marked before the bitmap starts over


class Memo:
    """Values by key, kept from a key's second sighting on (see the module docstring); ``limit``
    bounds the kept entries. ``None`` is not a value (it means not found)."""

    __slots__ = ("kept", "limit", "seen", "marked")

    def __init__(self, limit: int):
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit must be a positive int, not {limit!r}")
        self.kept: dict = {}
        self.limit = limit
        self.seen = bytearray(SEEN_BITS // 8)  # one bit per hash value (masked) of a key seen once
        self.marked = 0  # bits set since the bitmap was last cleared

    def __repr__(self) -> str:
        return f"<Memo kept={len(self.kept)}/{self.limit} marked={self.marked}>"

    def __len__(self) -> int:
        return len(self.kept)

    def get(self, key):
        """The value kept for ``key``, or None."""
        return self.kept.get(key)

    def remember(self, key, value) -> None:
        """``key``'s value, worked out after :meth:`get` found nothing: kept if the key was seen
        before, else only marked as seen."""
        if value is None:
            raise ValueError("None is not a value a Memo keeps")
        spot = hash(key) & _SEEN_MASK
        bit = 1 << (spot & 7)
        seen = self.seen
        if seen[spot >> 3] & bit:
            kept = self.kept
            if len(kept) >= self.limit:
                kept.clear()
            kept[key] = value
            return
        if self.marked >= _SEEN_LIMIT:
            self.seen = seen = bytearray(SEEN_BITS // 8)
            self.marked = 0
        seen[spot >> 3] |= bit
        self.marked += 1

    def clear(self) -> None:
        self.kept.clear()
        self.seen = bytearray(SEEN_BITS // 8)
        self.marked = 0


import_c_accel(globals(), "sidecar.codecs._c_memo")
