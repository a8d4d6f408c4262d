"""Which shard owns a queue: mmh3, aware of numeric suffixes.

Names such as ``Queue-123456`` share a prefix and differ only in their last digits. The prefix is
hashed with mmh3; the numeric suffix is added to it, so every run of consecutive numbers deals its
queues to the shards in turn (an exact spread), and each run of ``shards`` numbers is rotated by an
mmh3 hash of its run number, so strided names (``Queue-0``, ``Queue-32``, ...) spread too. Names
without a numeric suffix are hashed whole.
"""

import mmh3

try:
    import cython
except ImportError:  # installed without Cython: runs as the Python source, as it does without the twin
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

from ._accel import import_c_accel

_MAX_DIGITS = 18
_MAX_PREFIXES = 1024
_hash = mmh3.hash  # called with positional arguments: (key, seed, signed); keywords cost a parse per call
_prefixes: dict[str, int] = {}  # prefix -> its hash: a store's names share a few prefixes
_last = ("", _hash("", 0, False))  # (prefix, its hash) of the last name with a numeric suffix


def shard_of(name: str, shards: int) -> int:
    text: str = name
    end = len(text)
    start = end
    while start > 0 and "0" <= text[start - 1] <= "9":  # what name.rstrip(_DIGITS) would leave
        start -= 1
    digits = end - start
    if digits == 0 or digits > _MAX_DIGITS:
        return _hash(name, 0, False) % shards
    number = 0
    for i in range(start, end):  # int(name[start:]), without making the string and parsing it
        number = number * 10 + (ord(text[i]) - 48)
    if cython.compiled:  # the same hash, of the same 8 bytes, through murmurhash's C function
        run = _murmur_u64(number // shards)  # noqa: F821 (a C function of _c_hashing.pxd)
    else:
        run = _hash((number // shards).to_bytes(8, "little"), 0, False)
    last = _last  # the prefix met last, and its hash: one store's names mostly share a prefix
    prefix = last[0]
    if len(prefix) == start and text.startswith(prefix):
        head = last[1]
    else:
        head = _prefix_hash(text[:start])
    return (head + number + run) % shards


def _prefix_hash(prefix: str) -> int:
    global _last
    head = _prefixes.get(prefix)
    if head is None:
        if len(_prefixes) >= _MAX_PREFIXES:
            _prefixes.clear()
        head = _prefixes[prefix] = _hash(prefix, 0, False)
    _last = (prefix, head)
    return head


import_c_accel(globals(), "mqdb._c_hashing")
