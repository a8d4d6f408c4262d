"""The codecs' bounded memo: kept from the second sighting, bounded, and never a home for keys that
do not come again."""

from __future__ import annotations

import doctest

import pytest

from sidecar.codecs import http1_wire, memo
from sidecar.codecs.memo import SEEN_BITS, Memo


def test_doctests():
    assert doctest.testmod(memo).failed == 0


def test_a_key_is_kept_at_its_second_sighting_and_read_from_then_on():
    cache = Memo(8)
    assert cache.get(b"k") is None
    cache.remember(b"k", "first")
    assert cache.get(b"k") is None and len(cache) == 0 and cache.marked == 1
    cache.remember(b"k", "second")
    assert cache.get(b"k") == "second" and len(cache) == 1
    assert cache.marked == 1  # keeping marks nothing more


def test_keys_seen_once_are_never_kept_and_cost_no_memory_but_the_bitmap():
    cache = Memo(4096)
    for n in range(100_000):  # request ids: each comes once
        key = b"X-Request-Id: %d" % n
        assert cache.get(key) is None
        cache.remember(key, ("x-request-id", str(n)))
    # A new key whose bit an older one set is taken for one seen before: at most one in eight.
    assert len(cache) < 100_000 // 8
    assert len(cache.seen) == SEEN_BITS // 8
    assert cache.marked <= SEEN_BITS // 8  # the bitmap started over whenever an eighth was set


def test_keys_that_repeat_are_kept_even_among_many_that_do_not():
    cache = Memo(4096)
    lengths = [b"Content-Length: %d" % n for n in range(1100)]
    for n in range(20_000):
        for key in (b"X-Request-Id: %d" % n, lengths[(n * 7919) % 1100]):
            if cache.get(key) is None:
                cache.remember(key, key.decode())
    assert all(cache.get(key) == key.decode() for key in lengths)


def test_the_kept_entries_are_bounded():
    cache = Memo(3)
    for n in range(10):
        cache.remember(n, n)
        cache.remember(n, n)
        assert len(cache) <= 3
    assert cache.get(9) == 9  # the newest survives a clearing
    cache.clear()
    assert len(cache) == 0 and cache.marked == 0 and cache.get(9) is None


@pytest.mark.parametrize("limit", [0, -1, 1.5, "8", None])
def test_a_bad_limit_is_refused(limit):
    with pytest.raises(ValueError, match="limit must be a positive int"):
        Memo(limit)


def test_none_is_not_a_value():
    with pytest.raises(ValueError, match="None is not a value"):
        Memo(2).remember(b"k", None)


def test_unique_header_lines_do_not_fill_the_parser_memo():
    fields = http1_wire._PARSED_FIELDS
    fields.clear()
    for n in range(20_000):
        lines = [b"Host: a", b"Content-Type: text/plain", b"X-Request-Id: %d" % n]
        assert http1_wire.parse_fields(lines, 100, "request head")[2] == ("x-request-id", str(n))
    assert fields.get(b"Host: a") == ("host", "a")
    assert len(fields) < 20_000 // 8
