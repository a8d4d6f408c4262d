"""Thread-safe for many writers and readers; reads see every earlier put, flushed or not.

Writers put to a shared queue and to a queue of their own and read each message back at once; readers
follow the shared queue and check messages that writers announce; a flusher flushes all along. Every
writer's messages must come out of each queue in put order, none lost, none twice. The same workload
runs on threads and on gevent greenlets (in one thread, with no monkey-patching: mqdb takes its locks
only inside a call, and the greenlets yield between calls).
"""

import threading
import time

import pytest

import mqdb

WRITERS = 4
READERS = 2
PER_WRITER = 300
DEADLINE_S = 120
SHARED = "shared"
SIZES = (0, 1, 60, 127, 128, 300, 700)  # short and long length prefixes, messages across 512-byte blocks


def message(w: int, i: int) -> bytes:
    head = b"%d:%d:" % (w, i)
    return head + bytes([65 + w]) * SIZES[(i * 7 + w) % len(SIZES)]


def parse(msg: bytes) -> tuple[int, int]:
    w, i, body = msg.split(b":", 2)
    w, i = int(w), int(i)
    assert msg == message(w, i), f"message {w}:{i} is damaged"
    return w, i


def workload(db, spawn, join, pause) -> None:
    """Run writers, readers and a flusher on ``db``; ``spawn(fn)`` starts one, ``join(all)`` waits for
    them, ``pause()`` lets the others run."""
    deadline = time.monotonic() + DEADLINE_S
    done = threading.Event()
    announced: list = []  # (queue, offset, message) of puts already made, in the order announced
    announce_lock = threading.Lock()
    errors: list = []

    def guarded(fn):
        def run(*args):
            try:
                fn(*args)
            except BaseException as e:  # reported by the test, with the thread's own failure
                errors.append(e)
                done.set()

        return run

    def writer(w: int) -> None:
        own = f"private-{w}"
        for i in range(PER_WRITER):
            if time.monotonic() > deadline or errors:
                return
            msg = message(w, i)
            for queue in (SHARED, own):
                off = db.put(queue, msg)
                assert db.get(queue, off, 1) == [msg], f"writer {w} does not see its own put {i} in {queue}"
                with announce_lock:
                    announced.append((queue, off, msg))
                pause()
            assert off == i

    def reader(r: int) -> None:
        seen = [-1] * WRITERS
        offset = 0
        checks = 0
        while time.monotonic() < deadline and not errors:
            finished = done.is_set()
            with announce_lock:
                pick = announced[(checks * 7919 + r) % len(announced)] if announced else None
            if pick is not None:
                queue, off, msg = pick
                assert db.get(queue, off, 1) == [msg], f"reader {r} does not see an announced put in {queue}"
                checks += 1
            for msg in db.get(SHARED, offset, 16):
                w, i = parse(msg)
                assert i == seen[w] + 1, f"reader {r}: writer {w}'s message {i} follows {seen[w]}"
                seen[w] = i
                offset += 1
            pause()
            if finished and offset == db.count(SHARED):
                break
        assert seen == [PER_WRITER - 1] * WRITERS, f"reader {r} saw {seen} by the deadline"

    def flusher() -> None:
        while not done.is_set() and time.monotonic() < deadline:
            db.flush()
            pause()

    writers = [spawn(guarded(writer), w) for w in range(WRITERS)]
    others = [spawn(guarded(reader), r) for r in range(READERS)] + [spawn(guarded(flusher))]
    join(writers)
    done.set()
    join(others)
    if errors:
        raise errors[0]
    assert time.monotonic() <= deadline, "the workload did not finish by its deadline"
    seen = [[] for _ in range(WRITERS)]
    for msg in db.get(SHARED, 0, WRITERS * PER_WRITER + 1):
        w, i = parse(msg)
        seen[w].append(i)
    assert seen == [list(range(PER_WRITER))] * WRITERS
    for w in range(WRITERS):
        assert db.get(f"private-{w}", 0, PER_WRITER + 1) == [message(w, i) for i in range(PER_WRITER)]


def check_reopened(path) -> None:
    with mqdb.open(path) as db:
        assert db.count(SHARED) == WRITERS * PER_WRITER
        assert sorted(parse(m) for m in db.get(SHARED, 0, WRITERS * PER_WRITER)) == sorted(
            (w, i) for w in range(WRITERS) for i in range(PER_WRITER)
        )


def test_threads_put_read_and_flush_without_loss_duplicates_or_reordering(small_store):
    def spawn(fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        return t

    def join(threads):
        for t in threads:
            t.join(DEADLINE_S + 10)
            assert not t.is_alive(), "a thread is stuck"

    workload(small_store, spawn, join, lambda: time.sleep(0))
    small_store.close()
    check_reopened(small_store.path)


def test_greenlets_put_read_and_flush_without_loss_duplicates_or_reordering(small_store):
    gevent = pytest.importorskip("gevent")

    def join(greenlets):
        gevent.joinall(greenlets, timeout=DEADLINE_S + 10, raise_error=True)
        assert all(g.ready() for g in greenlets), "a greenlet is stuck"

    workload(small_store, gevent.spawn, join, lambda: gevent.sleep(0))
    small_store.close()
    check_reopened(small_store.path)
