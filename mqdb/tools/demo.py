"""`mqdb demo`: a store of 100,000 queues written, reopened and read back in well under a minute.

Everything runs on the embedded defaults (`mqdb.open(path)`) with the benchmark's message scheme
(`mqdb.tools.bench.message`), so every message read back is checked byte for byte. Library only: the click
command in `mqdb.cli` calls `run_demo()` and prints `format_demo()`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from array import array

from mqdb.tools.bench import Progress, consume_phase, disk_usage, message, no_progress, payload_bytes, put_phase

SAMPLE_QUEUE = 42  # the queue whose first messages the demo shows
SAMPLE_MESSAGES = 3


def run_demo(
    path: str | None = None,
    queues: int = 100_000,
    per_queue: int = 10,
    progress: Progress | None = None,
    seed: int = 1,
    options: dict | None = None,
) -> dict:
    """Write queues x per_queue messages to a new store at `path`, flush, reopen, read all back.

    path None: a temporary directory, removed afterwards. An existing `path` must be empty (the demo
    checks offsets, so it needs a store of its own); otherwise ValueError.
    progress(phase, done, total) is called with the phases "write" and "read".
    write_s runs from the first put to the end of the flush; read_s counts the gets only (each chunk
    of messages is verified after its clock stops).
    Returns plain data: counts, timings, throughput, sizes, files and a few sample messages.
    """
    import mqdb

    if queues < 1 or per_queue < 1:
        raise ValueError("queues and per_queue must be at least 1")
    progress = progress or no_progress
    options = options or {}
    temporary = path is None
    if temporary:
        path = tempfile.mkdtemp(prefix="mqdb-demo-")
    elif os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise ValueError(f"{path} is not an empty directory: give the demo a new or empty directory")
    order = list(range(queues))
    random.Random(seed).shuffle(order)
    total = queues * per_queue
    result: dict = {"path": None if temporary else os.path.abspath(path), "queues": queues}
    result.update(per_queue=per_queue, messages=total, payload_bytes=payload_bytes(queues, per_queue))
    try:
        db = mqdb.open(path, **options)
        t0 = time.perf_counter()
        put_phase(db.put, array("q", order), per_queue, 1, progress, "write")
        db.flush()
        result["write_s"] = time.perf_counter() - t0
        db.close()
        result["disk_bytes"], _ = disk_usage(path)
        result["files"] = _files(path)

        t0 = time.perf_counter()
        db = mqdb.open(path, **options)
        result["reopen_s"] = time.perf_counter() - t0
        try:
            read_s, read, errors = consume_phase(db.get, order, per_queue, progress, "read")
            listed = sum(1 for _ in db)
            sample = SAMPLE_QUEUE if SAMPLE_QUEUE < queues else 0
            counted = db.count(f"Queue-{sample}")
            shown = db.get(f"Queue-{sample}", 0, SAMPLE_MESSAGES)
            stats = db.stats()
        finally:
            db.close()
    finally:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
    errors += (listed != queues) + (counted != per_queue)
    errors += sum(m != message(sample, seq) for seq, m in enumerate(shown))
    result.update(
        puts_per_s=total / result["write_s"],
        read_s=read_s,
        read=read,
        reads_per_s=read / read_s if read_s else 0.0,
        verify_errors=errors,
        queues_listed=listed,
        bytes_per_payload=result["disk_bytes"] / result["payload_bytes"],
        sample_queue=f"Queue-{sample}",
        sample=[m.decode("ascii", "replace") for m in shown],
        stats=json.loads(json.dumps(stats, default=str)),
    )
    return result


def _files(path: str) -> list[dict]:
    """Every file under path with its size, largest first."""
    files = []
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            files.append({"name": os.path.relpath(full, path), "bytes": os.path.getsize(full)})
    return sorted(files, key=lambda f: (-f["bytes"], f["name"]))


def format_demo(result: dict) -> str:
    """The result of run_demo as a short text report."""
    r = result
    where = r["path"] or "a temporary directory (removed)"
    errors = r["verify_errors"]
    verdict = "no errors" if errors == 0 else f"{errors:,} ERRORS"
    lines = [
        f"mqdb demo: {r['queues']:,} queues x {r['per_queue']:,} messages = {r['messages']:,} messages, "
        f"{r['payload_bytes'] / 1e6:,.1f} MB payload, in {where}",
        f"  write   {r['messages']:,} puts in {r['write_s']:.2f} s (with flush) = {r['puts_per_s']:,.0f}/s",
        f"  reopen  {r['reopen_s']:.2f} s",
        f"  read    {r['read']:,} messages in {r['read_s']:.2f} s = {r['reads_per_s']:,.0f}/s",
        f"  verify  every message byte for byte, the queue list and a count: {verdict}",
        f"  disk    {r['disk_bytes'] / 1e6:,.1f} MB in {len(r['files']):,} files = "
        f"{r['bytes_per_payload']:.2f} bytes per payload byte",
    ]
    biggest = ", ".join(f"{f['name']} {f['bytes'] / 1e6:,.1f} MB" for f in r["files"][:3])
    if biggest:
        lines.append(f"          largest: {biggest}")
    lines.append(f"  {r['sample_queue']}, first {len(r['sample'])} messages:")
    lines += [f"    {i}: {text}" for i, text in enumerate(r["sample"])]
    return "\n".join(lines)
