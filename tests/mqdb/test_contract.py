"""The contract of `mqdb.Store`, run against every store: the embedded one and the Redis Cluster one
(a real cluster of 3 primaries and 3 replicas, see tests/support/redis_cluster.py)."""

import random
import threading

import pytest

import mqdb


@pytest.fixture(params=["embedded", "redis-cluster"])
def target(request, tmp_path):
    """Where a store lives: a directory, or a store name in the shared cluster."""
    if request.param == "embedded":
        return str(tmp_path / "store")
    return request.getfixturevalue("cluster_url")


@pytest.fixture
def store(target):
    db = mqdb.open(target)
    yield db
    db.close()


def test_both_are_stores(store):
    assert isinstance(store, mqdb.Store)
    assert store.path


def test_put_returns_offsets_and_get_reads_them_back(store):
    assert [store.put("q", b"m%d" % i) for i in range(5)] == [0, 1, 2, 3, 4]
    assert store.get("q", 0, 10) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert store.get("q", 3, 1) == [b"m3"]
    assert store.get("q", 5, 10) == []
    assert store.get("q", 2, 0) == []
    assert store.count("q") == 5


def test_unknown_queue_reads_empty(store):
    assert store.get("nope", 0, 10) == []
    assert store.count("nope") == 0
    assert "nope" not in store


def test_reads_see_unflushed_and_flushed_puts_alike(store):
    store.put("q", b"a")
    assert store.get("q", 0, 1) == [b"a"]
    store.flush()
    store.put("q", b"b")
    assert store.get("q", 0, 5) == [b"a", b"b"]


def test_empty_binary_and_large_messages(store):
    msgs = [b"", bytes(range(256)), b"\x00" * 300, b"\xff", random.Random(1).randbytes(3 << 20)]
    for m in msgs:
        store.put("bin", m)
    assert store.get("bin", 0, 10) == msgs
    store.flush()
    assert store.get("bin", 4, 1) == msgs[4:]


def test_iteration_len_contains(store):
    names = {f"Queue-{i}" for i in range(100)} | {"αβγ", "with space", "{braces}", "a{b}c", "*", "back\\slash"}
    for n in names:
        store.put(n, b"x")
    assert set(store) == names
    assert len(store) == len(names)
    assert "αβγ" in store and "{braces}" in store
    store.flush()
    assert set(store) == names


def test_flush_close_and_reopen_keep_everything(target):
    rnd = random.Random(7)
    expect = {}
    with mqdb.open(target) as db:
        for _ in range(3000):
            q = f"Queue-{rnd.randrange(40)}"
            m = rnd.randbytes(rnd.choice([0, 1, 30, 60, 127, 128, 1500]))
            expect.setdefault(q, []).append(m)
            assert db.put(q, m) == len(expect[q]) - 1
        db.flush()
    with mqdb.open(target) as db:
        for q, msgs in expect.items():
            assert db.count(q) == len(msgs)
            assert db.get(q, 0, len(msgs) + 5) == msgs
            assert db.put(q, b"more") == len(msgs)  # appends continue after the stored ones
        assert set(db) == set(expect)


def test_readonly_handle_sees_flushed_puts_and_refuses_puts(target):
    with mqdb.open(target) as db:
        db.put("q", b"one")
        db.flush()
        with mqdb.open(target, readonly=True) as ro:
            assert ro.readonly
            assert ro.get("q", 0, 10) == [b"one"]
            db.put("q", b"two")
            db.flush()
            ro.refresh()
            assert ro.get("q", 0, 10) == [b"one", b"two"]
            assert ro.count("q") == 2
            with pytest.raises(mqdb.ReadOnlyError, match="readonly"):
                ro.put("q", b"x")


def test_readonly_open_of_a_missing_store_is_store_not_found(target):
    with pytest.raises(mqdb.StoreNotFoundError, match="no mqdb store"):
        mqdb.open(target, readonly=True)


def test_context_manager_close_twice_and_repr(target):
    with mqdb.open(target) as db:
        db.put("q", b"x")
        assert "open" in repr(db)
    assert db.closed
    assert "closed" in repr(db)
    db.close()
    for call in (
        lambda: db.put("q", b"y"),
        lambda: db.get("q", 0, 1),
        lambda: db.count("q"),
        lambda: db.flush(),
        lambda: list(db),
        lambda: db.stats(),
    ):
        with pytest.raises(mqdb.ClosedError, match="closed"):
            call()


@pytest.mark.parametrize(
    "queue, msg, exc",
    [
        ("", b"x", ValueError),
        (None, b"x", TypeError),
        (b"q", b"x", TypeError),
        ("q", "text", TypeError),
        ("q", None, TypeError),
        ("bad\ud800", b"x", ValueError),
    ],
)
def test_bad_put_raises_and_writes_nothing(store, queue, msg, exc):
    with pytest.raises(exc):
        store.put(queue, msg)
    assert len(store) == 0


@pytest.mark.parametrize(
    "args, exc",
    [(("q", -1, 1), ValueError), (("q", 0, -1), ValueError), (("q", "0", 1), TypeError), (("", 0, 1), ValueError)],
)
def test_bad_get_raises(store, args, exc):
    store.put("q", b"x")
    with pytest.raises(exc):
        store.get(*args)


def test_bytearray_and_memoryview_messages(store):
    assert store.put("q", bytearray(b"ba")) == 0
    assert store.put("q", memoryview(b"mv")) == 1
    assert store.get("q", 0, 2) == [b"ba", b"mv"]


def test_concurrent_writers_and_readers(store):
    errors = []

    def writer(t):
        try:
            for i in range(1500):
                assert store.put(f"T{t}-{i % 50}", b"%d:%d" % (t, i)) == i // 50
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader():
        try:
            for _ in range(300):
                j = random.randrange(50)
                got = store.get(f"T0-{j}", 0, 1000)
                assert got == [b"0:%d" % (k * 50 + j) for k in range(len(got))]
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(3)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert all(store.count(f"T{t}-{j}") == 30 for t in range(3) for j in range(50))


def test_stats_count_queues_and_messages(store):
    for i in range(10):
        store.put(f"q{i % 3}", b"m")
    store.flush()
    s = store.stats()
    assert s["queues"] == 3
    assert s["messages"] == 10
