"""The shard lock (``mqdb.locks``): the same mutex in both builds, and no lock convoy between writer
threads in the compiled one."""

from __future__ import annotations

import resource
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mqdb
from mqdb import _accel
from tests.support.mqdb_twins import both


@pytest.fixture(scope="module")
def builds():
    return both("mqdb.locks")


def run_ops(lock, ops):
    """What each operation gave, by value or exception class and message. A blocking acquire of a held
    lock would wait for ever in one thread, so it is only asked of a free one."""
    out = []
    for op in ops:
        try:
            if op == "acquire":
                out.append(lock.acquire() if not lock.locked() else lock.acquire(False))
            elif op == "try":
                out.append(lock.acquire(blocking=False))
            elif op == "release":
                out.append(lock.release())
            elif op == "enter":
                if lock.locked():
                    out.append("skipped")
                    continue
                with lock as got:
                    out.append((got, lock.locked()))
                out.append(lock.locked())
            else:
                out.append(lock.locked())
        except Exception as exc:  # noqa: BLE001 - compared across builds
            out.append((type(exc).__name__, str(exc)))
    return out


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.sampled_from(["acquire", "try", "release", "enter", "locked"]), max_size=30))
def test_both_builds_lock_and_fail_alike(builds, ops):
    compiled, pure = builds
    assert run_ops(compiled.ShardLock(), ops) == run_ops(pure.ShardLock(), ops)


@pytest.mark.parametrize("build", ["compiled", "pure"])
def test_threads_exclude_each_other(builds, build):
    """Four threads add to one counter in read-yield-write steps under one lock; with the GIL given away
    in the middle of each step, any overlap would lose additions."""
    lock = builds[build == "pure"].ShardLock()
    box = {"n": 0, "inside": 0, "overlaps": 0}

    def work():
        for _ in range(300):
            with lock:
                box["inside"] += 1
                if box["inside"] > 1:
                    box["overlaps"] += 1
                n = box["n"]
                time.sleep(0)  # let another thread run while the lock is held
                box["n"] = n + 1
                box["inside"] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert box == {"n": 1200, "inside": 0, "overlaps": 0}


def test_a_waiter_gets_the_lock_when_its_holder_lets_go(builds):
    for build in builds:
        lock = build.ShardLock()
        lock.acquire()
        got = threading.Event()

        def waiter(lock=lock, got=got):
            with lock:
                got.set()

        t = threading.Thread(target=waiter)
        t.start()
        assert not got.wait(0.05)  # it waits while the lock is held
        lock.release()
        assert got.wait(10)
        t.join()
        assert not lock.locked()


def test_writer_threads_do_not_hand_the_gil_over_at_every_shared_shard(tmp_path):
    """Four threads putting to queues of every shard. A staging write releases the GIL while its shard
    is held, so other threads meet that shard taken. With a plain threading.Lock per shard they fell
    into a lock convoy: a waiter woken by a release held the shard while it waited for the GIL, so the
    next thread to want that shard (one put in 32) blocked and gave the GIL away; 2M puts cost 170,000
    context switches and ran at 0.7x one thread's speed. Counted here as the process's voluntary context
    switches: one per 22 puts with plain locks in this test, one per 400 with the shard lock (the GIL's
    switch interval and the staging writes), against a bound of one per 100."""
    if _accel.MODULES["mqdb.locks"] != _accel.COMPILED:
        pytest.skip(
            "the Python build's lock gives a waiter the lock before the GIL: only the compiled one cures the convoy"
        )
    per_thread, queues = 50_000, 4096
    with mqdb.open(tmp_path / "s") as db:
        start = threading.Barrier(4)

        def work(t):
            put = db.put
            names = [f"q{i}" for i in range(t, queues, 4)]
            msg = b"m" * 200  # 40 MB in all: every shard writes staging chunks, with the GIL released
            start.wait()
            for i in range(per_thread):
                put(names[i % len(names)], msg)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before
        assert db.count("q0") == per_thread // (queues // 4) + (1 if per_thread % (queues // 4) else 0)
    assert switches < 4 * per_thread / 100, switches
