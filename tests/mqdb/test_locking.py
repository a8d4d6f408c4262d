"""One writer process per store; readonly handles beside it see what it flushed."""

import hashlib
import inspect
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mqdb

ROOT = Path(__file__).resolve().parents[2]
OPTS = {"block_size": 512, "write_buffer_bytes": 16 << 20, "slice_size": 32, "write_batch_bytes": 4096, "shards": 4}


def message(queue: str, seq: int) -> bytes:
    size = (3, 61, 0, 1400, 58, 9)[seq % 6]
    return hashlib.shake_128(f"{queue}/{seq}".encode()).digest(size)


WRITER = textwrap.dedent(
    """
    import hashlib, json, sys
    import mqdb

    {source}

    db = mqdb.open(sys.argv[1], **json.loads(sys.argv[2]))
    counts = {{}}

    def put(queues, n):
        for _ in range(n):
            for q in queues:
                seq = counts.get(q, 0)
                assert db.put(q, message(q, seq)) == seq
                counts[q] = seq + 1

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "put":
            put(cmd["queues"], cmd["n"])
            if cmd["flush"]:
                db.flush()
        elif cmd["op"] == "exit":
            db.close()
            print(json.dumps(counts), flush=True)
            break
        print(json.dumps(counts), flush=True)
    """
).format(source=inspect.getsource(message))

OPENER = textwrap.dedent(
    """
    import sys
    import mqdb

    try:
        mqdb.open(sys.argv[1]).close()
        print("opened", flush=True)
    except mqdb.LockedError as e:
        print("LockedError", e, flush=True)
    """
)


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), e.get("PYTHONPATH")]))
    return e


class Writer:
    """A child process holding the store open for writing, driven line by line."""

    def __init__(self, path: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), json.dumps(OPTS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )

    def send(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        assert ready, "the writer did not answer"
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            pytest.fail(f"the writer died with {self.proc.returncode}: {self.proc.stderr.read()}")
        return json.loads(line)

    def put(self, queues, n, flush=True) -> dict:
        return self.send(op="put", queues=queues, n=n, flush=flush)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()


@pytest.fixture
def writer(tmp_path):
    w = Writer(tmp_path / "store")
    yield w
    w.stop()


def assert_sees(db, counts: dict) -> None:
    for q, n in counts.items():
        assert db.count(q) == n, q
        assert db.get(q, 0, n + 1) == [message(q, s) for s in range(n)], q


def test_second_writer_in_another_process_gets_locked_error(tmp_path, writer):
    path = tmp_path / "store"
    writer.put(["a", "b"], 3)
    for opts in ({}, OPTS):
        with pytest.raises(mqdb.LockedError) as e:
            mqdb.open(path, **opts)
        assert str(writer.proc.pid) in str(e.value)
    # the refused open changed nothing for the writer
    assert writer.put(["a"], 1) == {"a": 4, "b": 3}


def test_writer_in_this_process_locks_out_a_child(tmp_path):
    path = tmp_path / "store"
    with mqdb.open(path, **OPTS) as db:
        db.put("q", b"x")
        db.flush()
        out = subprocess.run([sys.executable, "-c", OPENER, str(path)], capture_output=True, text=True, env=env())
        assert out.stdout.startswith("LockedError"), out.stdout + out.stderr
        assert str(os.getpid()) in out.stdout
    out = subprocess.run([sys.executable, "-c", OPENER, str(path)], capture_output=True, text=True, env=env())
    assert out.stdout.strip() == "opened", out.stdout + out.stderr


def test_readonly_beside_writer_sees_flushes_and_refresh_picks_up_later_ones(tmp_path, writer):
    path = tmp_path / "store"
    queues = [f"Queue-{i}" for i in range(10)]
    flushed = writer.put(queues, 20)
    with mqdb.open(path, readonly=True) as ro:
        assert ro.readonly
        assert_sees(ro, flushed)
        assert len(ro) == len(queues)
        with pytest.raises(mqdb.ReadOnlyError):
            ro.put("Queue-0", b"nope")

        # put by the writer but not flushed: not visible, even after refresh
        unflushed = writer.put(queues + ["Late-1"], 30, flush=False)
        assert ro.refresh() == 0
        assert_sees(ro, flushed)
        assert "Late-1" not in ro and ro.count("Late-1") == 0

        # flushed: refresh applies it, new queues included
        later = writer.put(queues + ["Late-1", "Late-2"], 5)
        assert later["Queue-0"] == unflushed["Queue-0"] + 5
        assert ro.refresh() > 0
        assert_sees(ro, later)
        assert "Late-2" in ro
        assert ro.refresh() == 0

        # a second readonly handle opened now sees the same
        with mqdb.open(path, readonly=True) as ro2:
            assert_sees(ro2, later)

        final = writer.send(op="exit")
        writer.proc.wait(timeout=60)
        assert writer.proc.returncode == 0, writer.proc.stderr.read()
        ro.refresh()
        assert_sees(ro, final)
    with mqdb.open(path, **OPTS) as db:  # the writer is gone: the lock is free again
        assert db.recovery == []
        assert_sees(db, final)


def test_lock_is_released_when_the_writer_is_killed(tmp_path, writer):
    path = tmp_path / "store"
    flushed = writer.put(["q1", "q2"], 7)
    with pytest.raises(mqdb.LockedError):
        mqdb.open(path)
    writer.stop()
    with mqdb.open(path, **OPTS) as db:
        assert_sees(db, flushed)


def test_readonly_open_of_a_missing_store_does_not_create_it(tmp_path):
    with pytest.raises(mqdb.StoreNotFoundError):
        mqdb.open(tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing").exists()
