"""Which shard owns a queue: mmh3, aware of numeric suffixes.

Names such as ``Queue-123456`` share a prefix and differ only in their last digits. The prefix is
hashed with mmh3; the numeric suffix is added to it, so every run of consecutive numbers deals its
queues to the shards in turn (an exact spread), and each run of ``shards`` numbers is rotated by an
mmh3 hash of its run number, so strided names (``Queue-0``, ``Queue-32``, ...) spread too. Names
without a numeric suffix are hashed whole.
"""

import mmh3

from ._accel import import_c_accel

_DIGITS = "0123456789"
_MAX_DIGITS = 18


def shard_of(name: str, shards: int) -> int:
    stem = name.rstrip(_DIGITS)
    digits = len(name) - len(stem)
    if digits == 0 or digits > _MAX_DIGITS:
        return mmh3.hash(name, signed=False) % shards
    number = int(name[len(stem) :])
    run = mmh3.hash((number // shards).to_bytes(8, "little"), signed=False)
    return (mmh3.hash(stem, signed=False) + number + run) % shards


import_c_accel(globals(), "mqdb._c_hashing")
