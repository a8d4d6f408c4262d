"""Queues spread evenly over the shards, for numbered names and for arbitrary ones alike."""

import random
import string
from collections import Counter

from mqdb.hashing import shard_of

SHARDS = 32
NAMES = 1_000_000
ALPHABET = string.ascii_letters + string.digits
LENGTHS = range(1, 25)
CUT = 256 - 256 % len(ALPHABET)  # bytes from CUT up would favour the first letters
DROPPED = bytes(range(CUT, 256))


def assert_balanced(counts: Counter) -> None:
    assert sorted(counts) == list(range(SHARDS)), "some shard got no queue at all"
    assert sum(counts.values()) == NAMES
    fullest, emptiest = max(counts.values()), min(counts.values())
    assert fullest <= emptiest * 1.05, f"fullest shard {fullest}, emptiest {emptiest}: {sorted(counts.values())}"


def test_numbered_queue_names_spread_evenly():
    assert_balanced(Counter(shard_of(f"Queue-{i}", SHARDS) for i in range(NAMES)))


def uniform_letters(rnd: random.Random, count: int) -> str:
    """``count`` letters of ALPHABET, each equally likely: random bytes, those past the last whole
    multiple of its size dropped, the others mapped to a letter by their remainder."""
    table = bytes(ord(ALPHABET[b % len(ALPHABET)]) if b < CUT else 0 for b in range(256))
    letters = b""
    while len(letters) < count:
        letters += rnd.randbytes(count).translate(table, DROPPED)
    return letters[:count].decode()


def distinct_random_names(n: int, seed: int):
    """``n`` different names of 1..24 letters and digits (a store's queues are distinct, and short
    lengths have few possible names, so repeats are skipped rather than counted twice). The letters of
    a batch of names are drawn at once and cut at lengths drawn the same way: each name is as random as
    one drawn by itself, and a million take about a second instead of eleven."""
    rnd = random.Random(seed)
    seen: set[str] = set()
    while True:
        lengths = rnd.choices(LENGTHS, k=n)
        letters = uniform_letters(rnd, sum(lengths))
        end = 0
        for length in lengths:
            start, end = end, end + length
            name = letters[start:end]
            if name not in seen:
                seen.add(name)
                yield name
                if len(seen) == n:
                    return


def test_random_names_spread_evenly():
    assert_balanced(Counter(shard_of(name, SHARDS) for name in distinct_random_names(NAMES, seed=20240601)))


def test_shard_of_is_stable_and_in_range():
    for name in ("Queue-0", "Queue-31", "Queue-32", "x", "123", "a" * 300, "Queue-" + "9" * 30, "Ünïcode-7"):
        s = shard_of(name, SHARDS)
        assert 0 <= s < SHARDS
        assert shard_of(name, SHARDS) == s
