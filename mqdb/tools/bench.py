"""`mqdb bench`: mqdb against SQLite, LMDB and RocksDB on the million-queue workload.

The workload: queues `Queue-<n>`; messages of 30 to 100 bytes (about 60 on average) that encode their
queue and sequence, so every message read back is checked byte for byte (`message()`).

For each store and each thread count (1 and 4 by default) a fresh store is filled: round after round,
one message to every queue, the queues in a shuffled order; with several threads each thread owns a
disjoint share of the queues. Puts/s count from the first put to the end of the final flush, and
include making each message (a few hundred nanoseconds, the same for every store); the final flush is
also timed on its own. The store filled by the first thread count is then closed, reopened (timed:
the open time) and read:

- random gets: `get(queue, random offset, 10)` at random queues;
- consume: a sample of the queues, each read from start to end in `get(queue, offset, 10)` steps.

Reads run in chunks of 1%: the clock covers the gets only, and every message of a chunk is verified
after the clock stops. The stores filled by the other thread counts are spot-checked, untimed.

Every run (one store, one thread count) happens in a fresh Python process, so its peak RSS is its
own. The reading runs of all the stores are alive together: they fill and reopen their stores one
after another, then take their read phases in turns, 10% of the gets (or of the consumed queues) at
a time (`measure_interleaved`), so that whatever else loads the machine during the reads weighs on
every store's figures alike instead of on whichever store happened to be reading. (Turns of 1% cost
the store that reads next its warm CPU caches too often: mqdb's consumption measured 0.72x of its
own figure alone, LMDB's less.)

Library only: the click command in `mqdb.cli` calls `run_bench()` and prints `format_report()`.

`redis-cluster` (mqdb over a Redis Cluster) runs against a cluster of 3 primaries and 3 replicas that
the bench starts on loopback in its work directory (`mqdb.tools.redis_cluster`), or the one at
`redis_url`; its row adds the cluster's memory per message, and its disk/payload is not measured.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from array import array
from collections.abc import Callable

from mqdb.tools.bench_peers import PEERS, MqdbStore

Progress = Callable[[str, int, int], None]
Gate = Callable[[], None]

SIZES = {
    "tiny": (10_000, 10),
    "small": (100_000, 20),
    "medium": (1_000_000, 10),
    "large": (1_000_000, 100),
}
DEFAULT_STORES = ("mqdb", "sqlite", "lmdb", "rocksdb", "redis-cluster")
GET_BATCH = 10  # messages asked for by every get
GET_SAMPLES = 200_000  # random gets, at most; at most total messages / 5
TURN_CHUNKS = 10  # chunks of 1% a store reads in one turn when the stores read in turns (run_bench)
CONSUME_SHARE = 10  # consume 1 queue in 10 ...
CONSUME_MIN = 2_000  # ... but at least this many

# The message scheme. (queue index qi, sequence seq) -> h = (qi * _K1 + seq * _K2) & _MASK; the message
# is b"<qi>:<seq>:" followed by FILLER[h:], cut so the whole message is LENGTHS[h & 0xFF] bytes long.
# Both tables are fixed, so any reader can regenerate any message. The filler is 1 MiB of random
# letters and digits: messages do not repeat each other's bytes, as real payloads would not.
_K1 = 2654435761
_K2 = 40503
_MASK = 0xFFFFF
_ALNUM = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_tables = random.Random(0x5EED)
LENGTHS = bytes(min(100, max(30, round(_tables.gauss(60, 12)))) for _ in range(256))
FILLER = _tables.randbytes(_MASK + 101).translate(bytes(_ALNUM[i % len(_ALNUM)] for i in range(256)))
del _tables


def message(qi: int, seq: int) -> bytes:
    """The message number `seq` of queue `Queue-<qi>`. The put loop inlines this formula."""
    h = (qi * _K1 + seq * _K2) & _MASK
    head = b"%d:%d:" % (qi, seq)
    return head + FILLER[h : h + LENGTHS[h & 0xFF] - len(head)]


def parse_message(msg: bytes) -> tuple[int, int]:
    """(queue index, sequence) of a benchmark message; ValueError if it is not exactly one."""
    try:
        qi, seq, _ = msg.split(b":", 2)
        qi, seq = int(qi), int(seq)
    except ValueError:
        raise ValueError(f"not a benchmark message: {msg[:40]!r}") from None
    if message(qi, seq) != msg:
        raise ValueError(f"benchmark message {qi}:{seq} has wrong content: {msg[:40]!r}")
    return qi, seq


def payload_bytes(queues: int, per_queue: int) -> int:
    """Sum of all message lengths. A length depends only on qi and seq modulo 256."""
    per_residue = [queues // 256 + (1 if r < queues % 256 else 0) for r in range(256)]
    total = 0
    for seq in range(per_queue):
        s2 = seq * _K2
        total += sum(n * LENGTHS[(r * _K1 + s2) & 0xFF] for r, n in enumerate(per_residue) if n)
    return total


STORES = {"mqdb": MqdbStore, **PEERS}


class BenchError(Exception):
    """A store's benchmark run failed; the message carries the child's traceback."""


def no_progress(phase: str, done: int, total: int) -> None:
    pass


def make_plan(queues: int, per_queue: int, seed: int = 1, get_samples: int | None = None) -> dict:
    """The workload as plain data; every run regenerates its orders and samples from `seed`."""
    if queues < 1 or per_queue < 1:
        raise ValueError("queues and per_queue must be at least 1")
    total = queues * per_queue
    if get_samples is None:
        get_samples = max(1, min(GET_SAMPLES, total // 5))
    return {
        "queues": queues,
        "per_queue": per_queue,
        "messages": total,
        "payload_bytes": payload_bytes(queues, per_queue),
        "seed": seed,
        "get_samples": get_samples,
        "get_batch": GET_BATCH,
        "consume_queues": min(queues, max(queues // CONSUME_SHARE, CONSUME_MIN)),
    }


def _put_loop(put, order, per_queue: int, done: list, slot: int) -> None:
    fill, lens, k1, k2, mask = FILLER, LENGTHS, _K1, _K2, _MASK
    chunk = max(1, math.ceil(len(order) * per_queue / 100))
    n = 0
    for seq in range(per_queue):
        s2 = seq * k2
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            for qi in part:
                h = (qi * k1 + s2) & mask
                head = b"%d:%d:" % (qi, seq)
                put(f"Queue-{qi}", head + fill[h : h + lens[h & 0xFF] - len(head)])
            n += len(part)
            done[slot] = n


def put_phase(put, order, per_queue: int, threads: int, progress: Progress, phase: str) -> None:
    """Every queue in `order` gets `per_queue` messages; thread t serves order[t::threads]."""
    total = len(order) * per_queue
    done = [0] * threads
    failures: list[BaseException] = []

    def work(slot: int) -> None:
        try:
            _put_loop(put, order[slot::threads], per_queue, done, slot)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(0.25)
        while worker.is_alive():
            progress(phase, sum(done), total)
            worker.join(0.25)
    if failures:
        raise failures[0]
    progress(phase, total, total)


def get_phase(
    get,
    qis,
    offsets,
    per_queue: int,
    progress: Progress,
    phase: str,
    gate: Gate | None = None,
    cpu: list | None = None,
) -> tuple[float, int, int]:
    """get(queue, offset, GET_BATCH) for each pair: (seconds in gets, messages read, verify errors).

    Gets run in chunks of 1%; each chunk is verified after its clock stops. ``gate``, if given, is
    called outside the clock before every TURN_CHUNKS-th chunk, the first included. ``cpu``, if given,
    a one-item list: the process's CPU seconds while the clock ran are added to its item.
    """
    batch, clock, cpu_clock = GET_BATCH, time.perf_counter, time.process_time
    n = len(qis)
    step = max(1, n // 100)
    seconds = 0.0
    read = errors = 0
    for start in range(0, n, step):
        if gate is not None and start % (step * TURN_CHUNKS) == 0:
            gate()
        part_q, part_o = qis[start : start + step], offsets[start : start + step]
        c0, t0 = cpu_clock(), clock()
        got = [get(f"Queue-{qi}", off, batch) for qi, off in zip(part_q, part_o, strict=True)]
        seconds += clock() - t0
        if cpu is not None:
            cpu[0] += cpu_clock() - c0
        for qi, off, msgs in zip(part_q, part_o, got, strict=True):
            read += len(msgs)
            errors += (len(msgs) != min(batch, per_queue - off)) + _wrong(qi, off, msgs)
        progress(phase, min(start + step, n), n)
    return seconds, read, errors


def consume_phase(
    get, qis, per_queue: int, progress: Progress, phase: str, gate: Gate | None = None, cpu: list | None = None
) -> tuple[float, int, int]:
    """Read each queue start to end, GET_BATCH per get: (seconds in gets, messages read, verify errors).
    Chunks of 1%, ``gate`` and ``cpu`` as in get_phase."""
    batch, clock, cpu_clock = GET_BATCH, time.perf_counter, time.process_time
    n = len(qis)
    step = max(1, n // 100)
    seconds = 0.0
    read = errors = 0
    for start in range(0, n, step):
        if gate is not None and start % (step * TURN_CHUNKS) == 0:
            gate()
        part = qis[start : start + step]
        got = []
        c0, t0 = cpu_clock(), clock()
        for qi in part:
            name = f"Queue-{qi}"
            whole: list = []
            while True:
                msgs = get(name, len(whole), batch)
                whole += msgs
                if len(msgs) < batch:
                    break
            got.append(whole)
        seconds += clock() - t0
        if cpu is not None:
            cpu[0] += cpu_clock() - c0
        for qi, msgs in zip(part, got, strict=True):
            read += len(msgs)
            errors += (len(msgs) != per_queue) + _wrong(qi, 0, msgs)
        progress(phase, min(start + step, n), n)
    return seconds, read, errors


def _wrong(qi: int, first: int, msgs: list) -> int:
    """How many of msgs differ from messages first, first + 1, ... of queue qi."""
    return sum(m != message(qi, seq) for seq, m in enumerate(msgs, first))


def disk_usage(path: str) -> tuple[int, int]:
    """(bytes, files) of every file under path."""
    size = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                size += os.stat(os.path.join(root, name)).st_size
                files += 1
            except FileNotFoundError:
                pass
    return size, files


def _samples(plan: dict, n: int) -> tuple[array, array]:
    rng = random.Random(plan["seed"] * 7919 + 1)
    queues, per_queue = plan["queues"], plan["per_queue"]
    qis = array("q", (rng.randrange(queues) for _ in range(n)))
    offsets = array("q", (rng.randrange(per_queue) for _ in range(n)))
    return qis, offsets


def measure(
    store_cls,
    plan: dict,
    threads: int,
    path: str,
    progress: Progress | None = None,
    read: bool = True,
    options: dict | None = None,
    gate: Gate | None = None,
) -> dict:
    """One run in this process: fill a fresh store at `path`, then read it back (or spot-check it).
    ``gate`` is called before each turn of the timed read phases (see run_bench)."""
    progress = progress or no_progress
    options = options or {}
    label = f"{store_cls.name} "
    per_queue = plan["per_queue"]
    order = list(range(plan["queues"]))
    random.Random(plan["seed"]).shuffle(order)
    order = array("q", order)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    out: dict = {"threads": threads}

    store = store_cls(path, plan, **options)
    t0 = time.perf_counter()
    put_phase(store.put, order, per_queue, threads, progress, f"{label}put, {threads} thread(s)")
    t1 = time.perf_counter()
    store.flush()
    out["flush_s"] = time.perf_counter() - t1
    out["put_s"] = time.perf_counter() - t0
    out["puts_per_s"] = plan["messages"] / out["put_s"]
    extra = getattr(store, "figures", dict)()
    store.close()
    del store  # the reopened store is measured alone, not beside the closed one
    out["disk_bytes"], out["files"] = disk_usage(path)
    out.update(extra)

    t0 = time.perf_counter()
    store = store_cls(path, plan, **options)
    out["reopen_s"] = time.perf_counter() - t0
    if read:
        qis, offsets = _samples(plan, plan["get_samples"])
        get_cpu, consume_cpu = [0.0], [0.0]
        out["get_s"], read_msgs, get_errors = get_phase(
            store.get, qis, offsets, per_queue, progress, f"{label}random get", gate, get_cpu
        )
        out["gets"], out["get_messages"] = len(qis), read_msgs
        out["gets_per_s"] = len(qis) / out["get_s"]
        out["get_cpu_us"] = get_cpu[0] / len(qis) * 1e6
        sample = random.Random(plan["seed"] + 1).sample(range(plan["queues"]), plan["consume_queues"])
        out["consume_s"], consumed, consume_errors = consume_phase(
            store.get, sample, per_queue, progress, f"{label}consume", gate, consume_cpu
        )
        out["consumed"] = consumed
        out["consume_per_s"] = consumed / out["consume_s"]
        out["consume_cpu_us"] = consume_cpu[0] / max(1, consumed) * 1e6
        out["verify_errors"] = get_errors + consume_errors
    else:  # untimed spot check of what these threads wrote
        qis, offsets = _samples(plan, max(1, plan["get_samples"] // 10))
        out["verify_errors"] = get_phase(store.get, qis, offsets, per_queue, progress, f"{label}check")[2]
    store.close()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def store_class(spec):
    """An adapter class from a name in STORES, a "module:Class" path, or the class itself."""
    if not isinstance(spec, str):
        return spec
    if spec in STORES:
        return STORES[spec]
    if ":" not in spec:
        raise ValueError(f"unknown store {spec!r}: choose from {', '.join(STORES)}")
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _child_main() -> None:
    """Entry of the child process: a job as JSON on stdin, JSON lines on stdout. A gated job sends
    ``{"gate": true}`` before each turn of its read phases and waits for a line on stdin."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed goes to stderr

    def send(**msg) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    def gate() -> None:
        send(gate=True)
        if not sys.stdin.readline():
            raise BenchError("the benchmark's parent went away")

    try:
        job = json.loads(sys.stdin.readline())
        report = lambda phase, done, total: send(progress=[phase, done, total])
        store_cls = store_class(job.pop("spec"))
        gated = job.pop("gated", False)
        send(result=measure(store_cls, progress=report, gate=gate if gated else None, **job))
    except BaseException:
        send(error=traceback.format_exc())


class _Child:
    """`measure()` in a fresh Python process, so peak RSS is this run's; progress is relayed. A gated
    child stops before each turn of its read phases: `step()` returns True there, and `go()` lets
    it read the next turn."""

    def __init__(self, spec, plan, threads, path, progress, read, options, gated: bool = False) -> None:
        self.progress = progress or no_progress
        if not isinstance(spec, str):
            spec = f"{spec.__module__}:{spec.__qualname__}"
        job = {"spec": spec, "plan": plan, "threads": threads, "path": path, "read": read, "options": options}
        job["gated"] = gated
        paths = [p for p in sys.path if p] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))  # the child imports what this process can
        code = "import mqdb.tools.bench; mqdb.tools.bench._child_main()"
        self.result = self.error = None
        self.errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            env=env,
        )
        self.proc.stdin.write(json.dumps(job).encode() + b"\n")
        self.proc.stdin.flush()
        if not gated:
            self.proc.stdin.close()

    def step(self) -> bool:
        """Relay the child's messages until it waits at a gate (True) or has ended (False)."""
        try:
            for line in self.proc.stdout:
                msg = json.loads(line)
                if "progress" in msg:
                    self.progress(*msg["progress"])
                elif "gate" in msg:
                    return True
                elif "result" in msg:
                    self.result = msg["result"]
                else:
                    self.error = msg["error"]
        except BaseException:
            self.proc.kill()
            raise
        return False

    def go(self) -> None:
        try:
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # it died: step() finds out why
            pass

    def finish(self) -> dict:
        """The run's figures; BenchError with the child's traceback or exit status if it failed."""
        proc = self.proc
        if proc.poll() is None and self.result is None and self.error is None:
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        proc.wait()
        error = self.error
        if self.result is None and error is None:
            self.errors.seek(0)
            tail = self.errors.read()[-2000:].decode(errors="replace").strip()
            error = f"the benchmark process exited with code {proc.returncode}"
            if tail:
                error += f":\n{tail}"
        self.errors.close()
        if error is not None:
            raise BenchError(error.rstrip())
        return self.result


def measure_isolated(
    spec,
    plan: dict,
    threads: int,
    path: str,
    progress: Progress | None = None,
    read: bool = True,
    options: dict | None = None,
) -> dict:
    """`measure()` in a fresh Python process, so peak RSS is this run's; progress is relayed."""
    child = _Child(spec, plan, threads, path, progress, read, options)
    child.step()
    return child.finish()


def measure_interleaved(jobs: list, progress: Progress | None = None) -> list:
    """Reading runs of several stores, each in a process of its own (see `measure_isolated`), their
    read phases taken in turns: the stores fill and reopen one after another, then each reads 10% of
    its gets (or consumed queues) in turn, so that whatever else loads the machine meanwhile weighs
    on every store's figures alike. ``jobs``: (spec, plan, threads, path, options) per store; the
    result per job is its figures or the exception it failed with."""
    children: list = []
    waiting: list = []
    for spec, plan, threads, path, options in jobs:
        try:
            child = _Child(spec, plan, threads, path, progress, True, options, gated=True)
        except OSError as exc:
            children.append(exc)
            continue
        children.append(child)
        try:
            if child.step():  # filled and reopened: it waits before its first read
                waiting.append(child)
        except BaseException:
            for c in children:
                if isinstance(c, _Child):
                    c.proc.kill()
            raise
    try:
        while waiting:
            for child in list(waiting):
                child.go()
                if not child.step():
                    waiting.remove(child)
    finally:
        for child in waiting:
            child.proc.kill()
    results = []
    for child in children:
        if isinstance(child, Exception):
            results.append(child)
            continue
        try:
            results.append(child.finish())
        except BenchError as exc:
            results.append(exc)
    return results


def run_bench(
    queues: int,
    per_queue: int,
    threads=(1, 4),
    stores=DEFAULT_STORES,
    workdir: str | None = None,
    progress: Progress | None = None,
    seed: int = 1,
    get_samples: int | None = None,
    isolate: bool = True,
    mqdb_options: dict | None = None,
    keep: bool = False,
    redis_url: str | None = None,
) -> dict:
    """Benchmark each store on one workload and return plain data (see `format_report`).

    stores: names from STORES, or adapter classes (tests pass fakes). The store directories live in
    `workdir` (a temporary directory when None) and are removed after each run unless `keep`.
    isolate=False runs in this process: peak RSS is then this process's, not the store's.
    redis_url: the Redis Cluster for `redis-cluster` (default: one started in `workdir` for the run).
    """
    plan = make_plan(queues, per_queue, seed, get_samples)
    threads = tuple(threads)
    if not threads or min(threads) < 1:
        raise ValueError("threads must list at least one thread count, each at least 1")
    store_classes = [(spec, store_class(spec)) for spec in stores]
    own_dir = workdir is None
    workdir = tempfile.mkdtemp(prefix="mqdb-bench-") if own_dir else workdir
    results = {}
    cluster = None
    try:
        runnable = []
        for spec, store_cls in store_classes:
            options = mqdb_options if store_cls.name == "mqdb" else None
            if store_cls.name == "redis-cluster" and not store_cls.missing():
                if redis_url is None and cluster is None:
                    cluster, redis_url = _start_cluster(workdir)
                if redis_url is None:
                    results[store_cls.name] = {"status": cluster}
                    continue
                options = {"url": redis_url}
            runnable.append((spec, store_cls, options))
        firsts = {}  # store name -> its first run's figures, or the exception it failed with
        if isolate:  # the reading runs (the first thread count) of all stores, read phases in turns
            ready = [(spec, store_cls, options) for spec, store_cls, options in runnable if not store_cls.missing()]
            n = threads[0]
            jobs = [(spec, plan, n, _run_path(workdir, cls, n), _run_options(opts, n)) for spec, cls, opts in ready]
            firsts = dict(zip([cls.name for _, cls, _ in ready], measure_interleaved(jobs, progress), strict=True))
        for spec, store_cls, options in runnable:
            results[store_cls.name] = _bench_store(
                spec, store_cls, plan, threads, workdir, progress, isolate, options, keep, firsts.get(store_cls.name)
            )
    finally:
        if cluster is not None and not isinstance(cluster, str):
            cluster.stop()
        if own_dir and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return compare(plan, threads, results, isolate)


def _start_cluster(workdir: str):
    """(a started LocalCluster, its URL), or (why it cannot start, None)."""
    from mqdb.tools.redis_cluster import ClusterStartError, LocalCluster

    try:
        cluster = LocalCluster(os.path.join(workdir, "redis-cluster")).start()
    except ClusterStartError as e:
        return str(e), None
    return cluster, cluster.url


def _run_path(workdir: str, store_cls, n: int) -> str:
    return os.path.join(workdir, f"{store_cls.name}-{n}thr")


def _run_options(options: dict | None, n: int) -> dict | None:
    if options and "url" in options:  # a store name of this run's own in the cluster
        return {**options, "url": f"{options['url']}/bench-{os.getpid()}-{n}thr"}
    return options


def _bench_store(spec, store_cls, plan, threads, workdir, progress, isolate, options, keep, first=None) -> dict:
    """The runs of one store, one per thread count; ``first``: the first run's figures (or the
    exception it failed with) when it was already measured (measure_interleaved)."""
    why = store_cls.missing()
    if why:
        return {"status": why}
    runs = []
    for i, n in enumerate(threads):
        path = _run_path(workdir, store_cls, n)
        run_options = _run_options(options, n)
        try:
            if i == 0 and first is not None:
                if isinstance(first, Exception):
                    raise first
                runs.append(first)
            elif isolate:
                runs.append(measure_isolated(spec, plan, n, path, progress, i == 0, run_options))
            else:
                runs.append(measure(store_cls, plan, n, path, progress, i == 0, run_options))
        except Exception as exc:
            return {"status": "failed", "error": str(exc) or type(exc).__name__, "runs": runs}
        finally:
            if not keep:
                shutil.rmtree(path, ignore_errors=True)
                if run_options and "url" in run_options:
                    from mqdb.tools.redis_cluster import drop_store

                    drop_store(run_options["url"])
    first = runs[0]
    entry = {"status": "ok"}
    for run in runs:
        entry[f"puts_per_s_{run['threads']}thr"] = run["puts_per_s"]
    disk = first["disk_bytes"]
    entry.update(
        gets_per_s=first["gets_per_s"],
        consume_per_s=first["consume_per_s"],
        get_cpu_us=first["get_cpu_us"],
        consume_cpu_us=first["consume_cpu_us"],
        open_s=first["reopen_s"],
        flush_s=first["flush_s"],
        bytes_per_payload=None if disk is None else disk / plan["payload_bytes"],
        peak_rss_mb=max(run["peak_rss_mb"] for run in runs),
        verify_errors=sum(run["verify_errors"] for run in runs),
        disk_bytes=first["disk_bytes"],
        files=first["files"],
        runs=runs,
    )
    for key in ("cluster_bytes_per_msg", "cluster_primary_bytes_per_msg"):
        if key in first:
            entry[key] = first[key]
    return entry


# The goals mqdb is measured against: (column key, kind, bound). "peer": mqdb / best peer >= bound;
# "absolute": mqdb's own value <= bound; "rocksdb": mqdb / RocksDB's value <= bound; "one thread":
# mqdb with N > 1 writer threads / mqdb with 1 >= bound (more writers must not be slower).
ONE_THREAD = "puts_per_s_1thr"
TARGETS = (
    ("puts_per_s_*", "peer", 1.5),
    ("puts_per_s_*", "one thread", 1.0),
    ("gets_per_s", "peer", 1.0),
    ("consume_per_s", "peer", 1.5),
    ("bytes_per_payload", "absolute", 1.10),
    ("peak_rss_mb", "rocksdb", 1.5),
)


def _columns(threads, stores: dict | None = None) -> list[dict]:
    puts = [{"key": f"puts_per_s_{n}thr", "title": f"puts/s {n} thr", "better": "higher"} for n in threads]
    cluster = any("cluster_bytes_per_msg" in e for e in (stores or {}).values())
    extra = [{"key": "cluster_bytes_per_msg", "title": "cluster B/msg", "better": None}] if cluster else []
    return puts + [
        {"key": "gets_per_s", "title": "gets/s", "better": "higher"},
        {"key": "consume_per_s", "title": "consumed msg/s", "better": "higher"},
        {"key": "open_s", "title": "open s", "better": "lower"},
        {"key": "flush_s", "title": "final flush s", "better": "lower"},
        {"key": "bytes_per_payload", "title": "disk/payload", "better": "lower"},
        {"key": "peak_rss_mb", "title": "peak RSS MB", "better": "lower"},
        {"key": "verify_errors", "title": "verify errors", "better": None},
        *extra,
    ]


def compare(plan: dict, threads, stores: dict, isolated: bool = True) -> dict:
    """The result of run_bench: the per-store figures plus mqdb's ratio to the best peer per column."""
    columns = _columns(threads, stores)
    mine = stores.get("mqdb", {})
    mine = mine if mine.get("status") == "ok" else None
    peers = {name: e for name, e in stores.items() if name != "mqdb" and e.get("status") == "ok"}
    ratios = {}
    for col in columns:
        key, better = col["key"], col["better"]
        measured = {name: e for name, e in peers.items() if e.get(key) is not None}
        if better is None or not measured:
            continue
        pick = max if better == "higher" else min
        best = pick(measured, key=lambda name, key=key: measured[name][key])
        value = measured[best][key]
        ratio = mine[key] / value if mine is not None and mine.get(key) is not None and value else None
        ratios[key] = {"best_peer": best, "best": value, "ratio": ratio, "better": better}
    targets = []
    for pattern, kind, bound in TARGETS:
        for col in columns:
            key = col["key"]
            if key != pattern and not (pattern.endswith("*") and key.startswith(pattern[:-1])):
                continue
            if kind == "peer":
                value, goal = ratios.get(key, {}).get("ratio"), f">= {bound:.2f}x best peer"
            elif kind == "one thread":
                if key == ONE_THREAD:
                    continue
                ok = mine and mine.get(key) is not None and mine.get(ONE_THREAD)
                value, goal = (mine[key] / mine[ONE_THREAD] if ok else None), f">= {bound:.2f}x mqdb 1 thr"
            elif kind == "absolute":
                value, goal = (mine[key] if mine else None), f"<= {bound:.2f}"
            else:
                rocks = stores.get("rocksdb", {})
                ok = mine and rocks.get("status") == "ok" and rocks[key]
                value, goal = (mine[key] / rocks[key] if ok else None), f"<= {bound:.2f}x RocksDB"
            at_least = kind in ("peer", "one thread")
            met = None if value is None else (value >= bound if at_least else value <= bound)
            target = {"column": key, "title": col["title"], "goal": goal, "value": value, "met": met}
            targets.append(dict(target, ratio=kind != "absolute"))
    return {
        "workload": plan,
        "threads": list(threads),
        "isolated": isolated,
        "columns": columns,
        "stores": stores,
        "ratios": ratios,
        "targets": targets,
    }


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "bytes_per_payload":
        return f"{value:.2f}"
    if key == "peak_rss_mb":
        return f"{value:,.1f}"
    if key == "cluster_bytes_per_msg":
        return f"{value:,.0f}"
    if key in ("open_s", "flush_s"):
        return f"{value:.3f}"
    return f"{value:,.0f}"


def _table(rows: list[list[str]]) -> list[str]:
    full = [row for row in rows if len(row) == len(rows[0])]
    widths = [max(len(row[i]) for row in full) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        if len(row) == 2 and len(rows[0]) > 2:  # a store that did not run: name and status
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
            continue
        cells = [f"{row[0]:<{widths[0]}}"] + [f"{c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_report(result: dict) -> str:
    """The result of run_bench as an aligned text table with mqdb's ratios and the targets."""
    plan, columns, stores, ratios = result["workload"], result["columns"], result["stores"], result["ratios"]
    lines = [
        f"mqdb bench: {plan['queues']:,} queues x {plan['per_queue']:,} messages = {plan['messages']:,} "
        f"messages, {plan['payload_bytes'] / 1e6:,.1f} MB payload (seed {plan['seed']})",
        f"random gets: {plan['get_samples']:,} x get(queue, random offset, {plan['get_batch']}); "
        f"consume: {plan['consume_queues']:,} queues, each read start to end, {plan['get_batch']} per get",
        "",
    ]
    rows = [["store"] + [col["title"] for col in columns]]
    for name, entry in stores.items():
        if entry.get("status") != "ok":
            status = entry.get("status", "?")
            if status == "failed":  # the last line of a traceback names the exception
                status += ": " + ((entry.get("error") or "").strip().splitlines() or ["?"])[-1]
            rows.append([name, status])
        else:
            rows.append([name] + [_cell(col["key"], entry.get(col["key"])) for col in columns])
    if ratios and stores.get("mqdb", {}).get("status") == "ok":
        rows.append(["mqdb/best"] + [_ratio(ratios.get(col["key"])) for col in columns])
    if ratios:
        rows.append(["best peer"] + [ratios.get(col["key"], {}).get("best_peer", "") for col in columns])
    lines += _table(rows)
    lines += [
        "",
        "Higher is better for puts/s, gets/s and consumed msg/s; lower is better for disk/payload and",
        "peak RSS (there a mqdb/best ratio below 1.00x is better). Puts/s include the final flush;",
        "disk/payload = bytes of all files after close / payload bytes. Lower is better for open s (opening",
        "the filled store again after closing it) and final flush s (the flush after the last put).",
    ]
    cpu = [(name, e) for name, e in stores.items() if e.get("status") == "ok" and e.get("get_cpu_us") is not None]
    if cpu:
        lines += [
            "",
            "CPU per read, while the read clocks ran (the process's CPU time, its other threads included;",
            "where it is well below the wall time per read, the store was waiting, or other work had the CPU):",
        ]
        rows = [["store", "CPU µs/get", "wall µs/get", "CPU µs/consumed msg", "wall µs/consumed msg"]]
        for name, e in cpu:
            rows.append(
                [
                    name,
                    f"{e['get_cpu_us']:.2f}",
                    f"{1e6 / e['gets_per_s']:.2f}",
                    f"{e['consume_cpu_us']:.3f}",
                    f"{1e6 / e['consume_per_s']:.3f}",
                ]
            )
        lines += ["  " + line for line in _table(rows)]
    if any(col["key"] == "cluster_bytes_per_msg" for col in columns):
        lines += [
            "redis-cluster is mqdb over a Redis Cluster (3 primaries, 3 replicas on loopback unless given by URL);",
            "cluster B/msg = used_memory of every node after the flush, less before the puts, per message",
            "(primaries and replicas: two copies of each message); its disk/payload is not measured.",
        ]
    if not result.get("isolated", True):
        lines.append("All stores ran in this process: peak RSS is the whole process's, not one store's.")
    if result["targets"]:
        lines += ["", "targets for mqdb:"]
        rows = [[t["title"], t["goal"], _target_value(t), _verdict(t["met"])] for t in result["targets"]]
        lines += ["  " + line for line in _table(rows)]
    return "\n".join(lines)


def _ratio(r: dict | None) -> str:
    return "" if not r or r["ratio"] is None else f"{r['ratio']:.2f}x"


def _target_value(t: dict) -> str:
    if t["value"] is None:
        return "-"
    return f"{t['value']:.2f}x" if t["ratio"] else f"{t['value']:.2f}"


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "MISSED")
