"""The embedded store's own API beyond the contract every store keeps (tests/mqdb/test_contract.py):
its files, options, handles and errors."""

import os
import random
import threading
import tracemalloc

import pytest

import mqdb
from mqdb.format import FILE_HEADER_SIZE, FLAG_CONTINUES, KIND_BLOCK
from mqdb.hashing import shard_of
from mqdb.scan import scan


def test_empty_and_binary_messages(store):
    msgs = [b"", bytes(range(256)), b"\x00" * 300, b"\xff"]
    for m in msgs:
        store.put("bin", m)
    assert store.get("bin", 0, 10) == msgs


@pytest.mark.parametrize("size", [4080, 4081, 4096, 10_000, 3 * 1024 * 1024 + 7])
def test_messages_cross_blocks(tmp_path, size):
    rnd = random.Random(size)
    big = rnd.randbytes(size)
    with mqdb.open(tmp_path) as db:
        db.put("q", b"before")
        db.put("q", big)
        db.put("q", b"after")
        assert db.get("q", 0, 3) == [b"before", big, b"after"]
    with mqdb.open(tmp_path) as db:
        assert db.get("q", 1, 1) == [big]
        assert db.get("q", 2, 1) == [b"after"]
        assert db.get("q", 0, 3) == [b"before", big, b"after"]


def test_many_sizes_across_blocks_roundtrip(tmp_path):
    rnd = random.Random(7)
    expect = {}
    opts = dict(block_size=512, write_buffer_bytes=64 << 10, slice_size=32, write_batch_bytes=4096)
    with mqdb.open(tmp_path, **opts) as db:
        for _i in range(3000):
            q = f"Queue-{rnd.randrange(40)}"
            m = rnd.randbytes(rnd.choice([0, 1, 30, 60, 100, 127, 128, 300, 495, 496, 497, 1500]))
            expect.setdefault(q, []).append(m)
            assert db.put(q, m) == len(expect[q]) - 1
        for q, msgs in expect.items():
            assert db.get(q, 0, len(msgs) + 5) == msgs
    with mqdb.open(tmp_path, **opts) as db:
        for q, msgs in expect.items():
            assert db.count(q) == len(msgs)
            for off in range(0, len(msgs), 7):
                assert db.get(q, off, 7) == msgs[off : off + 7]
            got = []
            while len(got) < len(msgs):  # sequential reader in steps of 3
                got += db.get(q, len(got), 3)
            assert got == msgs


def _blocks_by_queue(path) -> dict:
    """Every block record of the store at ``path``, per queue name in queue order: (flags, skip,
    messages that start in it, payload)."""
    out: dict = {}
    with mqdb.open(path, readonly=True) as db:
        for sh in db._shards:
            names = sh.directory.names()
            fd = os.open(sh.data_path, os.O_RDONLY)
            try:
                stop: list = []
                for rec in scan(fd, FILE_HEADER_SIZE, os.fstat(fd).st_size, sh.block_size, stop):
                    if rec.kind == KIND_BLOCK:
                        out.setdefault(names[rec.qid], []).append((rec.flags, rec.skip, rec.count, rec.payload))
            finally:
                os.close(fd)
            assert stop[0].reason is None
    return out


@pytest.mark.parametrize("spill_bytes", [2 << 30, 64 << 10])
def test_staged_runs_make_the_blocks_that_appending_one_message_at_a_time_makes(tmp_path, spill_bytes):
    """A queue's staged messages reach its blocks as runs: frames that fit its unfinished block whole
    in spans, a message that crosses the block's end one at a time (stage._append_run). The blocks
    are the ones Shard.append makes of the same messages one by one: the same payloads, skips,
    counts and flags, whether the stage is distributed once (at the flush) or many times (a small
    staging budget)."""
    rnd = random.Random(11)
    sizes = [0, 1, 30, 60, 100, 126, 127, 128, 129, 300, 490, 495, 496, 497, 1500, 5000]
    puts = [(f"Queue-{rnd.randrange(30)}", rnd.randbytes(rnd.choice(sizes))) for _ in range(4000)]
    opts = dict(block_size=512, shards=4, spill_bytes=spill_bytes)
    with mqdb.open(tmp_path / "staged", **opts) as db:
        for q, m in puts:
            db.put(q, m)
    with mqdb.open(tmp_path / "appended", **opts) as db:
        for q, m in puts:
            sh = db._shards[shard_of(q, len(db._shards))]
            with sh.lock:
                qid = sh.find(q.encode())
                sh.append(sh.create(q.encode()) if qid < 0 else qid, m)
    staged, appended = _blocks_by_queue(tmp_path / "staged"), _blocks_by_queue(tmp_path / "appended")
    assert staged.keys() == appended.keys() and len(staged) == 30
    for q in staged:
        assert staged[q] == appended[q], q
    assert any(flags & FLAG_CONTINUES for blocks in staged.values() for flags, *_ in blocks)


def test_iteration_len_contains(store):
    names = {f"Queue-{i}" for i in range(100)} | {"αβγ", "with space"}
    for n in names:
        store.put(n, b"x")
    assert set(store) == names
    assert len(store) == len(names)
    assert "αβγ" in store


def test_lz4_compression_roundtrip_and_shrinks(tmp_path):
    with mqdb.open(tmp_path, compression="lz4") as db:
        for i in range(2000):
            db.put(f"q{i % 10}", b"hello world, hello world %d " % i * 4)
        db.flush()
        stats = db.stats()
        assert stats["compression_ratio"] > 2
    with mqdb.open(tmp_path) as db:  # compression may change between opens
        assert db.get("q3", 0, 1) == [b"hello world, hello world 3 " * 4]
        db.put("q3", b"plain")
        assert db.get("q3", 200, 1) == [b"plain"]


def test_small_pool_evicts_and_keeps_everything(small_store):
    db = small_store
    expect = {}
    for r in range(60):
        for i in range(200):
            m = b"%d/%d" % (i, r) * 8
            db.put(f"Q{i}", m)
            expect.setdefault(f"Q{i}", []).append(m)
    st = db.stats()
    assert st["spilled_fragments"] > 0
    assert st["pool"]["peak_bytes"] <= 64 << 10
    for q, msgs in expect.items():
        assert db.get(q, 0, 100) == msgs


def test_spill_budget_seals_blocks_early_and_keeps_everything(tmp_path):
    opts = dict(block_size=512, write_buffer_bytes=64 << 10, slice_size=32, spill_bytes=4 * 8192, shards=4)
    expect = {}
    with mqdb.open(tmp_path, **opts) as db:
        for r in range(30):
            for i in range(300):
                m = b"%d/%d" % (i, r) * 4
                db.put(f"Q{i}", m)
                expect.setdefault(f"Q{i}", []).append(m)
        st = db.stats()
        assert st["spill_drains"] > 0
        for q, msgs in expect.items():
            assert db.get(q, 0, 100) == msgs
    with mqdb.open(tmp_path, **opts) as db:
        for q, msgs in expect.items():
            assert db.get(q, 0, 100) == msgs


def test_concurrent_writers_and_readers(tmp_path):
    db = mqdb.open(tmp_path, write_buffer_bytes=256 << 10)
    errors = []

    def writer(t):
        try:
            for i in range(3000):
                q = f"T{t}-{i % 50}"
                assert db.put(q, b"%d:%d" % (t, i)) == i // 50
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader():
        try:
            for _ in range(2000):
                q = f"T0-{random.randrange(50)}"
                got = db.get(q, 0, 1000)
                assert got == [b"0:%d" % (q_i * 50 + int(q.split("-")[1])) for q_i in range(len(got))]
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for t in range(4):
        for j in range(50):
            assert db.count(f"T{t}-{j}") == 60
    db.close()


def test_context_manager_close_twice_and_repr(tmp_path):
    with mqdb.open(tmp_path) as db:
        db.put("q", b"x")
        assert "open" in repr(db)
    assert db.closed
    assert "closed" in repr(db)
    db.close()  # harmless
    with pytest.raises(mqdb.ClosedError):
        db.put("q", b"y")
    with pytest.raises(mqdb.ClosedError):
        db.get("q", 0, 1)
    with pytest.raises(mqdb.ClosedError):
        db.count("q")
    with pytest.raises(mqdb.ClosedError):
        db.flush()
    with pytest.raises(mqdb.ClosedError):
        list(db)
    with pytest.raises(mqdb.ClosedError):
        db.stats()


@pytest.mark.parametrize(
    "queue, msg, exc",
    [
        ("", b"x", ValueError),
        (None, b"x", TypeError),
        (b"q", b"x", TypeError),
        (7, b"x", TypeError),
        ("q", "text", TypeError),
        ("q", None, TypeError),
        ("q", 5, TypeError),
        ("bad\ud800", b"x", ValueError),
    ],
)
def test_bad_put_raises_and_writes_nothing(store, queue, msg, exc):
    with pytest.raises(exc):
        store.put(queue, msg)
    assert len(store) == 0
    assert store.stats()["messages"] == 0


def test_bytes_like_messages_are_accepted(store):
    store.put("q", bytearray(b"ba"))
    store.put("q", memoryview(b"mv"))
    assert store.get("q", 0, 2) == [b"ba", b"mv"]


@pytest.mark.parametrize(
    "args, exc",
    [(("q", -1, 1), ValueError), (("q", 0, -1), ValueError), (("q", "0", 1), TypeError),
     (("q", 0, 1.5), TypeError), (("q", True, 1), TypeError), (("", 0, 1), ValueError), ((3, 0, 1), TypeError)],
)  # fmt: skip
def test_bad_get_arguments(store, args, exc):
    store.put("q", b"x")
    with pytest.raises(exc):
        store.get(*args)


def test_unknown_option_and_bad_values(tmp_path):
    with pytest.raises(TypeError, match="unknown option"):
        mqdb.open(tmp_path, blocksize=4096)
    with pytest.raises(ValueError, match="compression"):
        mqdb.open(tmp_path, compression="zstd")
    with pytest.raises(ValueError, match="block_size"):
        mqdb.open(tmp_path, block_size=100)


def test_default_options_documented():
    opts = mqdb.DEFAULT_OPTIONS
    assert opts["block_size"] == 4096
    assert opts["shards"] == 32
    assert opts["compression"] == "none"
    assert {"sync", "readonly", "write_buffer_bytes"} <= set(opts)
    with pytest.raises(TypeError):
        opts["block_size"] = 1  # read-only mapping


def test_layout_fixed_at_creation(tmp_path):
    mqdb.open(tmp_path, shards=8).close()
    with mqdb.open(tmp_path) as db:  # adopts the stored layout
        assert db.options["shards"] == 8
    with pytest.raises(mqdb.Error, match="shards=8"):
        mqdb.open(tmp_path, shards=32)


def test_second_writer_is_locked_out(tmp_path):
    db = mqdb.open(tmp_path)
    try:
        with pytest.raises(mqdb.LockedError, match=str(os.getpid())):
            mqdb.open(tmp_path)
    finally:
        db.close()
    mqdb.open(tmp_path).close()  # free again after close


def test_readonly_beside_writer_sees_flushed(tmp_path):
    db = mqdb.open(tmp_path)
    db.put("q", b"one")
    db.flush()
    db.put("q", b"unflushed")
    ro = mqdb.open(tmp_path, readonly=True)
    assert ro.get("q", 0, 10) == [b"one"]
    with pytest.raises(mqdb.ReadOnlyError):
        ro.put("q", b"x")
    db.put("new", b"n1")
    db.flush()
    assert ro.refresh() > 0
    assert ro.get("q", 0, 10) == [b"one", b"unflushed"]
    assert ro.get("new", 0, 10) == [b"n1"]
    assert "new" in ro
    ro.close()
    db.close()


def test_readonly_on_missing_store(tmp_path):
    with pytest.raises(mqdb.StoreNotFoundError):
        mqdb.open(tmp_path / "absent", readonly=True)


def test_small_queues_do_not_cost_a_block(tmp_path):
    with mqdb.open(tmp_path) as db:
        for i in range(2000):
            db.put(f"Queue-{i}", b"x" * 60)
        payload = db.stats()["payload_bytes"]
    disk = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert disk < 2 * payload  # 2000 whole 4 KB blocks would be 8 MB


def test_stats_fields(store):
    for i in range(10):
        store.put(f"q{i}", b"abc")
    store.flush()
    st = store.stats()
    for key in ("queues", "messages", "payload_bytes", "blocks", "bytes_on_disk", "queues_per_shard",
                "shard_balance", "last_flush_ns", "pool", "format_version", "compression_ratio"):  # fmt: skip
        assert key in st
    assert st["queues"] == 10 and st["messages"] == 10 and st["payload_bytes"] == 30
    assert len(st["queues_per_shard"]) == 32


def test_reading_after_a_write_phase_gives_the_pool_back(tmp_path):
    opts = dict(write_buffer_bytes=256 << 10, slice_size=64, shards=4, spill_bytes=4 << 20)
    with mqdb.open(tmp_path, **opts) as db:
        for i in range(3000):
            db.put(f"Q{i}", b"x" * 50)
        assert db.stats()["staged_bytes"] == 3000 * 51
        assert db.get("Q1", 0, 1) == [b"x" * 50]
        st = db.stats()
        assert st["staged_bytes"] == 0
        assert st["pool"]["slices_in_use"] == 0
        assert st["pool"]["peak_bytes"] > (256 << 10) // 2
        assert db.count("Q2999") == 1


def test_a_flush_seals_short_queues_without_the_pool(tmp_path):
    opts = dict(write_buffer_bytes=256 << 10, slice_size=64, shards=4, spill_bytes=64 << 20)
    with mqdb.open(tmp_path, **opts) as db:
        for seq in range(3):
            for i in range(3000):  # 9000 x 51 bytes staged: far more than the pool holds
                db.put(f"Q{i}", b"%d" % seq * 50)
        db.flush()
        st = db.stats()
        assert st["pool"]["peak_bytes"] == 0
        assert st["blocks"] == 3000 and st["staged_bytes"] == 0
        assert db.get("Q2999", 0, 5) == [b"0" * 50, b"1" * 50, b"2" * 50]
        db.put("Q7", b"3" * 50)  # a queue whose block was sealed by the flush goes on in a new one
        db.flush()
        assert db.get("Q7", 1, 5) == [b"1" * 50, b"2" * 50, b"3" * 50]
    with mqdb.open(tmp_path, **opts) as db:
        assert db.get("Q7", 0, 5) == [b"0" * 50, b"1" * 50, b"2" * 50, b"3" * 50]
        assert db.count("Q0") == 3


def test_a_closed_handle_lets_go_of_its_memory(tmp_path):
    with mqdb.open(tmp_path) as db:
        for i in range(20000):
            db.put(f"Queue-{i}", b"x")
    tracemalloc.start()
    try:
        db = mqdb.open(tmp_path)
        assert db.count("Queue-19999") == 1
        held = tracemalloc.get_traced_memory()[0]
        db.close()
        left = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held > 20000 * 20  # the directory and the index of 20000 queues
    assert left < held // 10, (held, left)
    with pytest.raises(mqdb.ClosedError):
        db.get("Queue-1", 0, 1)


def test_sequential_reader_reads_ahead_and_hits_the_cache(tmp_path):
    with mqdb.open(tmp_path) as db:
        for i in range(5000):
            db.put("long", b"%06d" % i * 10)
            db.put("other", b"y" * 70)
    with mqdb.open(tmp_path) as db:
        got = []
        while len(got) < 5000:
            got += db.get("long", len(got), 10)
        assert got == [b"%06d" % i * 10 for i in range(5000)]
        st = db.stats()
        assert st["readahead"] > 0
        assert st["cache_hits"] > st["block_reads"]


def test_random_reads_in_a_queue_with_many_blocks(tmp_path):
    rnd = random.Random(3)
    msgs = [rnd.randbytes(rnd.randrange(0, 300)) for _ in range(4000)]
    with mqdb.open(tmp_path, block_size=1024) as db:
        for m in msgs:
            db.put("q", m)
        db.flush()
        for _ in range(300):
            off = rnd.randrange(4100)
            assert db.get("q", off, 7) == msgs[off : off + 7]


def test_regression_full_pool_while_a_long_message_is_written_keeps_its_slices(tmp_path):
    # The pool filling up in the middle of writing one message used to relink the queue's slice
    # chain from a stale position, losing the slices written by that same call.
    rnd = random.Random(1)
    opts = dict(block_size=512, write_buffer_bytes=64 << 10, slice_size=32, write_batch_bytes=4096, shards=4)
    expect = [[] for _ in range(200)]
    with mqdb.open(tmp_path, **opts) as db:
        for i in range(6000):
            q = rnd.randrange(200)
            m = rnd.randbytes(rnd.choice((3, 60, 60, 60, 1500, 4000)))
            expect[q].append(m)
            db.put(f"Q{q}", m)
            if i % 1500 == 0:
                db.flush()
        for q, msgs in enumerate(expect):
            assert db.get(f"Q{q}", 0, len(msgs)) == msgs


def test_regression_in_on_a_closed_handle_raises_closed_error(tmp_path):
    db = mqdb.open(tmp_path)
    db.put("Queue-1", b"x")
    db.close()
    with pytest.raises(mqdb.ClosedError):
        "Queue-1" in db  # noqa: B015
    with pytest.raises(mqdb.ClosedError):
        "never-written" in db  # noqa: B015


def test_regression_readonly_refresh_counts_long_message_payload_once(tmp_path):
    w = mqdb.open(tmp_path)
    w.put("q", b"a")
    w.flush()
    with mqdb.open(tmp_path, readonly=True) as ro:
        for size in (200, 127, 128, 20_000, 0):
            w.put("q", b"x" * size)
            w.put("r", b"y" * size)
            w.flush()
            assert ro.refresh() > 0
            with mqdb.open(tmp_path, readonly=True) as fresh:
                assert ro.stats()["payload_bytes"] == w.stats()["payload_bytes"] == fresh.stats()["payload_bytes"]
    assert w.stats()["payload_bytes"] == 1 + 2 * (200 + 127 + 128 + 20_000)
    w.close()


@pytest.mark.parametrize("size", [127, 128, 150, 255, 256, 1000])
def test_regression_a_name_of_128_to_255_bytes_is_one_queue(tmp_path, size):
    """The first byte of a two-byte length prefix equals the length itself for 128..255 bytes: the name
    lookup once took it for a one-byte prefix, missed the queue and made a new one on every put."""
    name = "n" * (size - 3) + "\u00e9q"  # size bytes of UTF-8
    with mqdb.open(tmp_path, shards=1) as db:
        assert [db.put(name, b"%d" % i) for i in range(3)] == [0, 1, 2]
        assert len(db) == 1 and name in db and db.count(name) == 3
    with mqdb.open(tmp_path, readonly=True) as db:
        assert list(db) == [name] and db.get(name, 0, 5) == [b"0", b"1", b"2"]


def test_a_read_to_the_end_of_a_block_keeps_nothing_and_one_that_stops_inside_keeps_it(tmp_path):
    """Short queues read whole (the million-queue case) load their block on every read and leave the
    cache alone; a read that stops before the block's last message keeps it for the next read."""
    with mqdb.open(tmp_path) as db:
        for q in ("whole", "part"):
            for i in range(10):
                db.put(q, b"%s-%d" % (q.encode(), i))
    with mqdb.open(tmp_path) as db:
        for off in (0, 3, 9, 0):
            assert db.get("whole", off, 10) == [b"whole-%d" % i for i in range(off, 10)]
        st = db.stats()
        assert (st["block_reads"], st["cache_hits"]) == (4, 0)
        assert db.get("part", 2, 3) == [b"part-2", b"part-3", b"part-4"]
        assert db.get("part", 5, 2) == [b"part-5", b"part-6"]
        assert db.get("part", 7, 10) == [b"part-7", b"part-8", b"part-9"]
        st = db.stats()
        assert (st["block_reads"], st["cache_hits"]) == (5, 2)


def test_a_reader_of_whole_blocks_loads_each_block_once_and_reads_ahead(tmp_path):
    msgs = [b"%05d" % i * 12 for i in range(3000)]
    with mqdb.open(tmp_path) as db:
        for m in msgs:
            db.put("long", m)
        db.flush()
        blocks = db.stats()["blocks"]
    assert blocks > 20
    with mqdb.open(tmp_path) as db:
        got, gets = [], 0
        while len(got) < len(msgs):
            batch = db.get("long", len(got), 500)
            assert batch
            got += batch
            gets += 1
        assert got == msgs
        st = db.stats()
    assert st["readahead"] > 0
    # only the block where a get stops is kept, for the get after it
    assert 0 < st["cache_hits"] <= gets - 1
    # every block loaded once, and once more at most for the end of a message that crosses into it
    assert blocks <= st["block_reads"] <= 2 * blocks - 1


def test_a_distribution_holds_the_staged_messages_in_memory_once(tmp_path):
    """Puts are staged to a file in chunks; a flush distributes them to their queues' blocks, laying
    each queue's run out in one buffer. It reads the chunks one at a time, to measure the runs and then
    to place them, so its memory peak is that buffer and a chunk, not the whole stage twice over."""
    rnd = random.Random(5)
    with mqdb.open(tmp_path, shards=1) as db:
        staged = 0
        while staged < 8 << 20:
            msg = rnd.randbytes(rnd.randrange(20, 200))
            db.put(f"q{rnd.randrange(3000)}", msg)
            staged += len(msg)
        staged = db.stats()["staged_bytes"]  # the frames: each message and its length prefix
        assert staged > 8 << 20
        tracemalloc.start()
        try:
            db.flush()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert db.stats()["staged_bytes"] == 0
        assert sum(db.count(f"q{i}") for i in range(3000)) > 8 << 20 >> 8
    assert peak < 1.4 * staged, (peak, staged)
