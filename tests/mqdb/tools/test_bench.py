"""The benchmark harness and the demo, on tiny workloads: fake stores, SQLite, and mqdb when present."""

import json
import os
import pickle
import re
import threading
import time
from array import array

import pytest

import mqdb
from mqdb.tools import bench
from mqdb.tools.bench import SIZES, compare, format_report, message, parse_message, payload_bytes, run_bench

QUEUES, PER_QUEUE = 300, 5
COLUMN_TITLES = (
    "puts/s 1 thr",
    "puts/s 4 thr",
    "gets/s",
    "consumed msg/s",
    "open s",
    "final flush s",
    "disk/payload",
    "peak RSS MB",
    "verify errors",
)


class FakeStore:
    """In memory; a close writes the queues to one file, so reopening and disk usage work."""

    name = "fake"

    @staticmethod
    def missing():
        return None

    def __init__(self, path, hint=None):
        self.file = os.path.join(path, "queues.pickle")
        self.queues = {}
        if os.path.exists(self.file):
            with open(self.file, "rb") as f:
                self.queues = pickle.load(f)
        self.lock = threading.Lock()

    def put(self, queue, msg):
        with self.lock:
            q = self.queues.setdefault(queue, [])
            q.append(msg)
            return len(q) - 1

    def get(self, queue, offset, num):
        return self.queues.get(queue, [])[offset : offset + num]

    def flush(self):
        with open(self.file, "wb") as f:
            pickle.dump(self.queues, f)

    def close(self):
        self.flush()


class CorruptingStore(FakeStore):
    """Flips a byte of every third message it returns and loses the last message of each queue."""

    name = "corrupt"

    def get(self, queue, offset, num):
        msgs = self.queues.get(queue, [])[:-1][offset : offset + num]
        return [m[:-1] + b"!" if (offset + i) % 3 == 0 else m for i, m in enumerate(msgs)]


class BrokenStore(FakeStore):
    name = "broken"

    def put(self, queue, msg):
        raise OSError("disk on fire")


class AbsentStore(FakeStore):
    name = "absent"

    @staticmethod
    def missing():
        return "not installed"


def run_fake(tmp_path, *stores, isolate=False, **kw):
    return run_bench(QUEUES, PER_QUEUE, stores=stores, workdir=str(tmp_path), isolate=isolate, **kw)


# The message scheme


def test_messages_round_trip():
    for qi, seq in [(0, 0), (1, 2), (42, 7), (299, 4), (999_999, 99), (123_456, 1_000_000)]:
        msg = message(qi, seq)
        assert msg.startswith(b"%d:%d:" % (qi, seq))
        assert parse_message(msg) == (qi, seq)
        assert message(qi, seq) == msg


def test_message_lengths_are_30_to_100_bytes_about_60():
    lengths = [len(message(qi, seq)) for qi in range(0, 1_000_000, 997) for seq in range(10)]
    assert min(lengths) >= 30 and max(lengths) <= 100
    assert 55 <= sum(lengths) / len(lengths) <= 65


def test_messages_differ_between_queues_and_sequences():
    msgs = {message(qi, seq)[8:] for qi in range(100) for seq in range(10)}
    assert len(msgs) == 1000


@pytest.mark.parametrize("bad", [b"", b"garbage", b"1:2:", message(1, 2)[:-1], message(1, 2)[:-1] + b"!"])
def test_parse_message_rejects_anything_else(bad):
    with pytest.raises(ValueError):
        parse_message(bad)


def test_payload_bytes_is_the_sum_of_message_lengths():
    expected = sum(len(message(qi, seq)) for qi in range(QUEUES) for seq in range(PER_QUEUE))
    assert payload_bytes(QUEUES, PER_QUEUE) == expected


def test_sizes():
    assert SIZES == {
        "tiny": (10_000, 10),
        "small": (100_000, 20),
        "medium": (1_000_000, 10),
        "large": (1_000_000, 100),
    }


# The loops


@pytest.mark.parametrize("threads", [1, 4])
def test_put_phase_writes_every_queue_in_order(threads):
    store = FakeStore.__new__(FakeStore)
    store.queues, store.lock = {}, threading.Lock()
    calls = []
    order = array("q", [5, 3, 0, 4, 1, 2])
    bench.put_phase(store.put, order, 7, threads, lambda *a: calls.append(a), "put")
    assert store.queues == {f"Queue-{qi}": [message(qi, seq) for seq in range(7)] for qi in range(6)}
    assert calls[-1] == ("put", 42, 42)
    assert all(done <= total for _, done, total in calls)


def test_get_and_consume_phases_verify_every_message():
    store = FakeStore.__new__(FakeStore)
    store.queues = {f"Queue-{qi}": [message(qi, seq) for seq in range(12)] for qi in range(4)}
    seconds, read, errors = bench.get_phase(store.get, [0, 1, 3], [0, 5, 11], 12, bench.no_progress, "g")
    assert (read, errors) == (10 + 7 + 1, 0)
    cpu = [0.0]
    seconds, read, errors = bench.consume_phase(store.get, [2, 0], 12, bench.no_progress, "c", cpu=cpu)
    assert (read, errors) == (24, 0)
    assert 0 <= cpu[0] <= time.process_time()  # the process's CPU seconds while its clock ran
    store.queues["Queue-2"][3] = b"2:3:wrong"
    assert bench.consume_phase(store.get, [2, 0], 12, bench.no_progress, "c")[2] == 1
    assert bench.consume_phase(store.get, [2, 0], 13, bench.no_progress, "c")[2] == 3  # and both too short


# Whole runs


def test_fake_store_run_reports_every_column_and_no_errors(tmp_path):
    seen = []
    result = run_fake(tmp_path, FakeStore, progress=lambda *a: seen.append(a))
    entry = result["stores"]["fake"]
    assert entry["status"] == "ok"
    assert entry["verify_errors"] == 0
    for key in ("puts_per_s_1thr", "puts_per_s_4thr", "gets_per_s", "consume_per_s", "peak_rss_mb"):
        assert entry[key] > 0
    assert entry["get_cpu_us"] >= 0 and entry["consume_cpu_us"] >= 0
    first = entry["runs"][0]
    assert (entry["open_s"], entry["flush_s"]) == (first["reopen_s"], first["flush_s"])
    assert 0 < entry["flush_s"] < first["put_s"] and entry["open_s"] > 0
    assert entry["bytes_per_payload"] == entry["disk_bytes"] / payload_bytes(QUEUES, PER_QUEUE)
    first = entry["runs"][0]
    assert first["consumed"] == result["workload"]["consume_queues"] * PER_QUEUE == QUEUES * PER_QUEUE
    assert first["gets"] == result["workload"]["get_samples"]
    phases = {phase for phase, _, _ in seen}
    assert {"fake put, 1 thread(s)", "fake put, 4 thread(s)", "fake random get", "fake consume"} <= phases
    assert all(0 <= done <= total for _, done, total in seen)
    report = format_report(result)
    for title in COLUMN_TITLES:
        assert title in report
    assert "CPU µs/get" in report and "CPU µs/consumed msg" in report
    assert "fake" in report
    assert "in this process" in report
    json.dumps(result)
    assert os.listdir(tmp_path) == []


def test_corrupting_store_produces_verify_errors(tmp_path):
    result = run_fake(tmp_path, FakeStore, CorruptingStore)
    assert result["stores"]["fake"]["verify_errors"] == 0
    errors = result["stores"]["corrupt"]["verify_errors"]
    assert errors > 0
    row = next(line for line in format_report(result).splitlines() if line.startswith("corrupt"))
    assert row.endswith(f"{errors:,}")


def test_missing_and_failing_stores_are_reported_and_skipped(tmp_path):
    result = run_fake(tmp_path, AbsentStore, BrokenStore, FakeStore)
    stores = result["stores"]
    assert stores["absent"] == {"status": "not installed"}
    assert stores["broken"]["status"] == "failed"
    assert "disk on fire" in stores["broken"]["error"]
    assert stores["fake"]["status"] == "ok"
    report = format_report(result)
    assert re.search(r"^absent +not installed$", report, re.M)
    assert re.search(r"^broken +failed: disk on fire$", report, re.M)


def test_sqlite_run_in_a_child_process(tmp_path):
    seen = []
    record = lambda *a: seen.append(a)
    result = run_bench(QUEUES, PER_QUEUE, stores=("sqlite",), workdir=str(tmp_path), progress=record)
    entry = result["stores"]["sqlite"]
    assert entry["status"] == "ok", entry.get("error")
    assert entry["verify_errors"] == 0
    assert entry["bytes_per_payload"] > 1.0
    assert entry["peak_rss_mb"] > 0
    assert result["isolated"] is True
    assert (
        "sqlite consume",
        result["workload"]["consume_queues"],
        result["workload"]["consume_queues"],
    ) in seen
    report = format_report(result)
    for title in COLUMN_TITLES:
        assert title in report
    assert os.listdir(tmp_path) == []


def test_child_process_failure_carries_the_traceback(tmp_path):
    result = run_fake(tmp_path, BrokenStore, isolate=True)
    entry = result["stores"]["broken"]
    assert entry["status"] == "failed"
    assert "Traceback" in entry["error"] and "OSError: disk on fire" in entry["error"]
    assert "failed: OSError: disk on fire" in format_report(result)


class OtherStore(FakeStore):
    name = "other"


def test_stores_read_in_turns_each_in_its_own_process(tmp_path):
    """The stores fill one after another, then take their read phases in turns, 10% at a time: a
    second store's gets come between the first store's, and every figure is still each store's own."""
    seen = []
    result = run_fake(tmp_path, FakeStore, OtherStore, isolate=True, progress=lambda *a: seen.append(a[0]))
    for name in ("fake", "other"):
        entry = result["stores"][name]
        assert entry["status"] == "ok", entry.get("error")
        assert entry["verify_errors"] == 0 and entry["gets_per_s"] > 0 and entry["consume_per_s"] > 0
    reads = [phase for phase in seen if phase.endswith(("random get", "consume"))]
    puts = [i for i, phase in enumerate(seen) if " put, 1 thread" in phase]
    assert max(puts) < seen.index(reads[0])  # both filled before either reads
    turns = sum(1 for a, b in zip(reads, reads[1:], strict=False) if a.split()[0] != b.split()[0])
    assert turns >= 20  # 10 turns of gets and 10 of consumption each


def test_a_store_failing_while_the_others_read_in_turns_is_reported_alone(tmp_path):
    result = run_fake(tmp_path, FakeStore, BrokenStore, OtherStore, isolate=True)
    assert result["stores"]["broken"]["status"] == "failed"
    assert "OSError: disk on fire" in result["stores"]["broken"]["error"]
    assert result["stores"]["fake"]["status"] == result["stores"]["other"]["status"] == "ok"


@pytest.mark.parametrize("peer", ["lmdb", "rocksdb"])
def test_key_value_peers(tmp_path, peer):
    if bench.STORES[peer].missing():
        pytest.skip(f"{peer} is not installed")
    result = run_fake(tmp_path, peer, threads=(2,))
    assert result["stores"][peer]["status"] == "ok", result["stores"][peer].get("error")
    assert result["stores"][peer]["verify_errors"] == 0


@pytest.mark.parametrize("peer", ["sqlite", "lmdb", "rocksdb"])
def test_peer_reopen_appends_after_existing_messages(tmp_path, peer):
    store_cls = bench.STORES[peer]
    if store_cls.missing():
        pytest.skip(f"{peer} is not installed")
    store = store_cls(str(tmp_path), {})
    assert [store.put("Queue-1", b"a"), store.put("Queue-12", b"b"), store.put("Queue-1", b"c")] == [0, 0, 1]
    assert store.get("Queue-1", 0, 10) == [b"a", b"c"]
    store.close()
    store = store_cls(str(tmp_path), {})
    assert store.put("Queue-1", b"d") == 2
    assert store.put("Queue-2", b"e") == 0
    assert store.get("Queue-1", 1, 10) == [b"c", b"d"]
    assert store.get("Queue-1", 3, 10) == []
    assert store.get("Queue-12", 0, 1) == [b"b"]
    store.close()


# Ratios and targets


def test_compare_picks_the_best_peer_per_column():
    def entry(puts, gets, consume, disk, rss):
        return {
            "status": "ok",
            "puts_per_s_1thr": puts,
            "gets_per_s": gets,
            "consume_per_s": consume,
            "bytes_per_payload": disk,
            "peak_rss_mb": rss,
            "verify_errors": 0,
        }

    stores = {
        "mqdb": entry(300.0, 100.0, 600.0, 1.05, 90.0),
        "sqlite": entry(100.0, 50.0, 300.0, 1.5, 30.0),
        "rocksdb": entry(200.0, 120.0, 400.0, 1.2, 50.0),
        "lmdb": {"status": "not installed"},
    }
    result = compare({}, (1,), stores)
    ratios = result["ratios"]
    assert ratios["puts_per_s_1thr"] == {
        "best_peer": "rocksdb",
        "best": 200.0,
        "ratio": 1.5,
        "better": "higher",
    }
    assert ratios["gets_per_s"]["best_peer"] == "rocksdb"
    assert ratios["bytes_per_payload"]["best_peer"] == "rocksdb"
    assert ratios["peak_rss_mb"] == {"best_peer": "sqlite", "best": 30.0, "ratio": 3.0, "better": "lower"}
    assert "verify_errors" not in ratios
    met = {t["column"]: (t["value"], t["met"]) for t in result["targets"]}
    assert met == {
        "puts_per_s_1thr": (1.5, True),
        "gets_per_s": (100.0 / 120.0, False),
        "consume_per_s": (1.5, True),
        "bytes_per_payload": (1.05, True),
        "peak_rss_mb": (90.0 / 50.0, False),
    }


def test_more_writer_threads_are_held_to_the_puts_of_one():
    def entry(one, four):
        keys = ("gets_per_s", "consume_per_s", "bytes_per_payload", "peak_rss_mb")
        return {"status": "ok", "puts_per_s_1thr": one, "puts_per_s_4thr": four, **dict.fromkeys(keys, 1.0)}

    for four, met in ((240.0, True), (180.0, False)):
        result = compare({}, (1, 4), {"mqdb": entry(200.0, four), "rocksdb": entry(100.0, 100.0)})
        scaling = [t for t in result["targets"] if t["goal"] == ">= 1.00x mqdb 1 thr"]
        assert [(t["column"], t["value"], t["met"]) for t in scaling] == [("puts_per_s_4thr", four / 200.0, met)]


def test_compare_without_mqdb_measures_no_target():
    keys = ("puts_per_s_1thr", "gets_per_s", "consume_per_s", "bytes_per_payload", "peak_rss_mb")
    stores = {"sqlite": {"status": "ok", **dict.fromkeys(keys, 1.0)}, "mqdb": {"status": "not installed"}}
    result = compare({}, (1,), stores)
    assert result["ratios"]["puts_per_s_1thr"]["ratio"] is None
    assert all(t["met"] is None for t in result["targets"])


# With the real engine

needs_mqdb = pytest.mark.skipif(not hasattr(mqdb, "open"), reason="mqdb.open is not available yet")


@needs_mqdb
def test_mqdb_run(tmp_path):
    result = run_bench(QUEUES, PER_QUEUE, stores=("mqdb", "sqlite"), workdir=str(tmp_path))
    entry = result["stores"]["mqdb"]
    assert entry["status"] == "ok", entry.get("error")
    assert entry["verify_errors"] == 0
    assert result["ratios"]["gets_per_s"]["best_peer"] == "sqlite"
    assert "targets for mqdb" in format_report(result)


@needs_mqdb
def test_demo(tmp_path):
    from mqdb.tools.demo import format_demo, run_demo

    seen = []
    result = run_demo(str(tmp_path / "store"), queues=500, per_queue=3, progress=lambda *a: seen.append(a))
    assert result["verify_errors"] == 0
    assert result["read"] == result["messages"] == 1500
    assert result["payload_bytes"] == payload_bytes(500, 3)
    assert result["disk_bytes"] == sum(f["bytes"] for f in result["files"]) > result["payload_bytes"]
    assert result["sample"][0] == message(42, 0).decode()
    assert {phase for phase, _, _ in seen} == {"write", "read"}
    text = format_demo(result)
    assert ": no errors" in text and "Queue-42" in text
    json.dumps(result)
    with pytest.raises(ValueError, match="not an empty directory"):
        run_demo(str(tmp_path / "store"), queues=10, per_queue=1)
