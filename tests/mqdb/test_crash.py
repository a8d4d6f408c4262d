"""Durability against a real crash: a child process writing to the store is killed with SIGKILL.

The child appends messages whose bytes follow from (queue, sequence number) alone, flushes now and
then, and after each flush appends the per-queue counts to an acknowledgement file. The parent kills
it at a random moment, reopens the store and checks that everything acknowledged is there byte for
byte, that nothing else but further expected messages is there, and that what reopening cut off is
reported in ``db.recovery``. The next round resumes writing on top of the same store.
"""

import hashlib
import inspect
import json
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mqdb

ROOT = Path(__file__).resolve().parents[2]
SMALL = {
    "block_size": 512, "write_buffer_bytes": 64 << 10, "slice_size": 32, "write_batch_bytes": 4096, "shards": 4,
    "spill_bytes": 4 * (16 << 10),
}  # fmt: skip
ROOMY = {**SMALL, "write_buffer_bytes": 16 << 20}  # never fills with the queues below
QUEUES = 400


def queue_name(q: int) -> str:
    return f"Queue-{q}"


def expected_message(q: int, seq: int) -> bytes:
    """Message ``seq`` of queue ``q``: tiny, about 60 bytes, or several 512-byte blocks long."""
    key = b"%d:%d" % (q, seq)
    h = hashlib.blake2b(key, digest_size=8).digest()
    if h[0] < 110:
        n = h[1] % 9
    elif h[0] < 244:
        n = 50 + h[1] % 21
    else:
        n = 1500 + int.from_bytes(h[2:4], "little") % 4500
    return hashlib.shake_128(key).digest(n)


CHILD = textwrap.dedent(
    """
    import hashlib, json, os, random, sys
    import mqdb

    {source}

    path, ack_path, seed, queues, opts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    rnd = random.Random(seed)
    db = mqdb.open(path, **json.loads(opts))
    names = [f"Queue-{{q}}" for q in range(queues)]
    counts = [db.count(name) for name in names]
    hot = rnd.sample(range(queues), 8)
    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print("ready", flush=True)
    full = False
    while True:
        for _ in range(rnd.choice((1, 5, 50, 400, 2500, 6000))):
            q = rnd.choice(hot) if rnd.random() < 0.2 else rnd.randrange(queues)
            offset = db.put(names[q], expected_message(q, counts[q]))
            assert offset == counts[q], (q, offset, counts[q])
            counts[q] += 1
        # a reader between flushes: the staged messages go to unfinished blocks in the pool
        assert db.get(names[q], counts[q] - 1, 1) == [expected_message(q, counts[q] - 1)]
        pool = db.stats()["pool"]
        if not full and pool["peak_bytes"] >= pool["budget_bytes"]:
            full = True
            print("pool full", flush=True)
        db.flush()
        line = json.dumps({{"counts": counts}}) + "\\n"
        os.write(ack, line.encode())
        os.fsync(ack)
    """
).format(source=inspect.getsource(expected_message))

CLOSE_CHILD = textwrap.dedent(
    """
    import hashlib, json, sys, time
    import mqdb

    {source}

    path, queues, per_queue, opts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    db = mqdb.open(path, **json.loads(opts))
    for seq in range(per_queue):
        for q in range(queues):
            db.put(f"Queue-{{q}}", expected_message(q, seq))
    db.close()
    print("closed", flush=True)
    if sys.argv[5] == "linger":
        time.sleep(60)
    """
).format(source=inspect.getsource(expected_message))


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Expected:
    """The messages every queue should hold, generated once and extended on demand."""

    def __init__(self):
        self.msgs = [[] for _ in range(QUEUES)]

    def prefix(self, q: int, n: int) -> list[bytes]:
        have = self.msgs[q]
        for seq in range(len(have), n):
            have.append(expected_message(q, seq))
        return have[:n]


def last_ack(ack_path: Path):
    """The last complete acknowledgement line, or None."""
    if not ack_path.exists():
        return None
    lines = ack_path.read_bytes().split(b"\n")
    for line in reversed(lines[:-1]):  # the piece after the last newline may be cut short
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def wait_for_line(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "child did not start in time"
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        pytest.fail(f"child exited with {proc.returncode}: {proc.stderr.read()}")
    return line.strip()


def data_sizes(path: Path) -> dict[int, int]:
    return {int(p.name[:3]): p.stat().st_size for p in path.glob("*.dat")}


def kill_round(
    path: Path, ack_path: Path, opts: dict, seed: int, rnd: random.Random, early: bool, after_full: bool = False
) -> bool:
    """Start a writer child and SIGKILL it at a random moment (with ``after_full``, a random moment
    after its write-buffer pool first filled); return whether its pool had filled."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(ack_path), str(seed), str(QUEUES), json.dumps(opts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        if early:  # anywhere from interpreter start-up through opening (and recovering) the store
            time.sleep(rnd.uniform(0.0, 0.4))
        else:
            assert wait_for_line(proc) == "ready"
            if after_full:
                assert wait_for_line(proc) == "pool full"
            time.sleep(rnd.uniform(0.0, 0.35))
        if proc.poll() is not None:
            pytest.fail(f"child exited on its own with {proc.returncode}: {proc.stderr.read()}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        return after_full or "pool full" in proc.stdout.read().split("\n")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def check_contents(db, acked: list[int], expected: Expected) -> list[int]:
    """Every queue holds at least what was acknowledged, and only the expected bytes; return counts."""
    counts = [db.count(queue_name(q)) for q in range(QUEUES)]
    for q in range(QUEUES):
        assert counts[q] >= acked[q], f"{queue_name(q)}: {counts[q]} messages, {acked[q]} were flushed"
        got = db.get(queue_name(q), 0, counts[q] + 10)
        assert len(got) == counts[q]
        want = expected.prefix(q, counts[q])
        if got != want:
            bad = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
            pytest.fail(f"{queue_name(q)} message {bad}: {got[bad][:40]!r} is not what was put")
    assert sum(counts) == db.stats()["messages"]
    return counts


def verify_after_crash(path: Path, opts: dict, acked: list[int], expected: Expected, writer: bool):
    """Look at the store after a kill: readonly, then (if ``writer``) with a writer open, which cuts
    off what was not flushed. Return the counts found and the bytes cut off."""
    before = data_sizes(path)
    with mqdb.open(path, readonly=True) as ro:
        counts = check_contents(ro, acked, expected)
    assert data_sizes(path) == before, "a readonly open changed the data files"
    if not writer:  # the next child recovers the store itself
        return counts, 0

    db = mqdb.open(path, **opts)
    try:
        after = data_sizes(path)
        reports = {r["shard"]: r for r in db.recovery}
        dropped_total = 0
        for shard, size in before.items():
            dropped = size - after[shard]
            assert dropped >= 0
            dropped_total += dropped
            if dropped:
                assert shard in reports, f"shard {shard}: {dropped} bytes cut off but not reported: {db.recovery}"
                assert reports[shard]["dropped_bytes"] == dropped
                assert reports[shard]["reason"]
            else:
                assert reports.get(shard, {"dropped_bytes": 0})["dropped_bytes"] == 0
        assert check_contents(db, acked, expected) == counts, "readonly and writer opens disagree"
    finally:
        db.close()
    return counts, dropped_total


def crash_rounds(path: Path, opts: dict, rounds: int, seed: int, pressure: bool = False) -> dict:
    """Kill a writer child ``rounds`` times. Every third round the parent only looks (readonly) and
    leaves the recovery to the next child, which is then sometimes killed early, while recovering.
    With ``pressure``, every other child is killed only once its write-buffer pool has filled (how
    soon that happens depends on how fast this machine is at the moment)."""
    rnd = random.Random(seed)
    expected = Expected()
    acked = [0] * QUEUES
    summary = {"dropped_rounds": 0, "pool_full": False, "beyond_ack": 0, "messages": 0}
    for r in range(rounds):
        early = r % 6 == 5
        writer = r % 3 != 1 or r == rounds - 1
        ack_path = path.parent / f"acks-{r}.jsonl"
        after_full = pressure and not early and r % 2 == 0
        summary["pool_full"] |= kill_round(path, ack_path, opts, seed * 1000 + r, rnd, early, after_full)
        ack = last_ack(ack_path)
        if ack is not None:
            assert all(a >= b for a, b in zip(ack["counts"], acked, strict=True)), "counts went backwards"
            acked = ack["counts"]
        counts, dropped = verify_after_crash(path, opts, acked, expected, writer)
        summary["dropped_rounds"] += dropped > 0
        summary["beyond_ack"] += counts != acked
        summary["messages"] = sum(counts)
        acked = counts  # the next child resumes from what survived
    return summary


def test_sigkill_while_writing_loses_nothing_flushed(tmp_path):
    path = tmp_path / "store"
    summary = crash_rounds(path, ROOMY, rounds=20, seed=1)
    assert summary["messages"] > 1000, summary
    assert summary["dropped_rounds"] > 0, f"no round was killed with unflushed data on disk: {summary}"
    with mqdb.open(path, **ROOMY) as db:
        assert db.recovery == []


def test_sigkill_while_writing_under_pool_pressure_loses_nothing_flushed(tmp_path):
    """The write-buffer pool fills up, so unfinished blocks are pushed out early between flushes."""
    path = tmp_path / "store"
    summary = crash_rounds(path, SMALL, rounds=20, seed=3, pressure=True)
    assert summary["messages"] > 1000, summary
    assert summary["dropped_rounds"] > 0, f"no round was killed with unflushed data on disk: {summary}"
    assert summary["pool_full"], f"the write-buffer pool never filled: {summary}"


def test_sigkill_with_sync_and_lz4_loses_nothing_flushed(tmp_path):
    path = tmp_path / "store"
    summary = crash_rounds(path, {**ROOMY, "sync": True, "compression": "lz4"}, rounds=6, seed=2)
    assert summary["messages"] > 0, summary


def test_pool_running_dry_mid_message_keeps_the_message_whole(tmp_path):
    """A message that crosses two slice boundaries while the pool runs dry at the second: the new
    slice must be linked after the slice being written, not after the one where the message began
    (the write position of a put in progress lives in a local variable until the message is done)."""
    opts = {"block_size": 512, "write_buffer_bytes": 64 << 10, "slice_size": 32, "shards": 1}
    with mqdb.open(tmp_path, **opts) as db:
        pool = db.stats()["pool"]
        slices = pool["budget_bytes"] // pool["slice_size"]
        first = bytes(range(20))
        db.put("victim", first)  # 21 bytes of the victim's first slice
        for i in range(slices - 2):  # every slice but one taken
            db.put(f"other-{i}", b"x" * 20)
        second = bytes(range(100, 160))  # crosses two slice boundaries; the pool runs dry at the second
        db.put("victim", second)
        assert db.get("victim", 0, 3) == [first, second]
    with mqdb.open(tmp_path, **opts) as db:
        assert db.get("victim", 0, 3) == [first, second]
        assert db.get("other-7", 0, 2) == [b"x" * 20]


@pytest.mark.parametrize("after_close", ["exit", "linger"])
def test_clean_close_then_reopen_loses_nothing(tmp_path, after_close):
    path = tmp_path / "store"
    queues, per_queue = 60, 40
    proc = subprocess.Popen(
        [sys.executable, "-c", CLOSE_CHILD, str(path), str(queues), str(per_queue), json.dumps(SMALL), after_close],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert wait_for_line(proc) == "closed"
        if after_close == "linger":
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == (-signal.SIGKILL if after_close == "linger" else 0), proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    sizes = data_sizes(path)
    with mqdb.open(path, **SMALL) as db:
        assert db.recovery == []
        assert data_sizes(path) == sizes
        for q in range(queues):
            assert db.count(queue_name(q)) == per_queue
            assert db.get(queue_name(q), 0, per_queue + 1) == [expected_message(q, s) for s in range(per_queue)]
