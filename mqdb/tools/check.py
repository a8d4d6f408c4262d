"""`check`: verify a store, live or stopped, without changing it. Library only (no click).

1. Every index checkpoint (``NNN.idx``) reads and fits its data file.
2. Every record of every data file is scanned (``mqdb.scan``) and its checksum verified; a damaged
   record is reported and the scan goes on at the next block the index knows.
3. The sparse index is held against the records: every indexed block is a block record at its offset
   with the same queue, message count and length; every committed block record is indexed; per queue
   the messages counted by the block headers add up to the queue's count; the last commit record's
   message total matches the index.
4. Every message of every queue is read through ``db.get``, so every frame is parsed.

Bytes after the last commit are unflushed (a writer is running, or crashed before flushing); they are
a problem only when more follows a bad record than an interrupted write can leave (FORMAT.md, rule 6).
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass

from .. import checkpoint
from ..db import open as open_db
from ..errors import CorruptionError, FormatError
from ..format import FILE_HEADER_SIZE, KIND_COMMIT, entry_length, entry_offset
from ..scan import scan
from .inspect import ShardView, shard_views

TORN_TAIL_BLOCKS = 1025  # bytes after a bad record that one interrupted write can leave, in blocks
_CHUNK = 4096  # messages per get in the read phase
_PROGRESS_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: the file, the offset in it (None if not one place), the queue (None if unknown)."""

    file: str
    offset: int | None
    queue: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.offset is None else f"{self.file}:{self.offset}"
        queue = "" if self.queue is None else f" queue {self.queue!r}:"
        return f"{where}:{queue} {self.reason}"

    def as_dict(self) -> dict:
        return {"file": self.file, "offset": self.offset, "queue": self.queue, "reason": self.reason}


class Report(list):
    """The problems found (a list of :class:`Problem`, in file and offset order) and what was checked."""

    def __init__(self):
        super().__init__()
        self.files = self.bytes = self.records = self.blocks = self.queues = self.messages = 0


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


def check(path, progress=None) -> Report:
    """Check the store at ``path`` (opened read-only); return the problems found, none if it is sound.

    ``progress(phase, done, total)`` is called with the phases "scan" (bytes) and "read" (queues).
    A missing store raises StoreNotFoundError; a store too damaged to open is one problem.
    """
    progress = progress or _no_progress
    report = Report()
    try:
        db = open_db(path, readonly=True)
    except CorruptionError as e:
        report.append(Problem(e.path, e.offset, e.queue, e.reason))
        return report
    except FormatError as e:
        file, _, reason = str(e).partition(": ")
        report.append(Problem(file, None, None, reason) if reason else Problem(os.fspath(path), None, None, file))
        return report
    found: list[Problem] = []
    with db:
        views = shard_views(db)
        sizes = [os.path.getsize(v.data_path) for v in views]
        total = sum(sizes)
        done = 0
        progress("scan", 0, total)
        for v, size in zip(views, sizes, strict=True):
            found += _check_checkpoint(v, size)
            found += _Records(v, size, report, lambda at, base=done: progress("scan", base + at, total)).run()
            done += size
            progress("scan", done, total)
        report.files, report.bytes = len(views), total
        found += _read_all(db, views, report, progress)
    seen = set()
    for p in sorted(found, key=lambda p: (p.file, -1 if p.offset is None else p.offset)):
        if (p.file, p.offset) not in seen or p.offset is None:  # the scan and a read may name one record
            seen.add((p.file, p.offset))
            report.append(p)
    return report


def _check_checkpoint(v: ShardView, size: int) -> list[Problem]:
    if not os.path.exists(v.index_path):
        return []
    try:
        cp = checkpoint.read(v.index_path, v.number)
    except FormatError as e:
        return [Problem(v.index_path, None, None, str(e).removeprefix(f"{v.index_path}: "))]
    except OSError as e:  # gone between the exists and the read: a writer replaced it; fine
        return [] if not os.path.exists(v.index_path) else [Problem(v.index_path, None, None, str(e))]
    size = max(size, os.path.getsize(v.data_path))  # a writer writes the data before the checkpoint
    if cp.data_len > size:
        reason = f"the file ends here, but its index checkpoint covers {cp.data_len} bytes"
        return [Problem(v.data_path, size, None, reason)]
    return []


class _Records:
    """Scan one data file and hold its records against the shard's index, in one pass in file order."""

    def __init__(self, v: ShardView, size: int, report: Report, progress):
        self.v, self.size, self.report, self.progress = v, size, report, progress
        self.problems: list[Problem] = []
        offs = [entry_offset(e) for e in v.b_entry]
        order = list(range(len(offs)))
        if any(offs[b] >= offs[b + 1] for b in range(len(offs) - 1)):
            order.sort(key=offs.__getitem__)
        self.offs, self.order = offs, order
        self.i = 0  # next indexed block (in file order) not yet met
        self.held = array("q", bytes(8 * len(v.names)))  # messages counted by the block headers, per queue
        self.damaged: set[int] = set()  # queues with a problem already
        self.last_commit = None
        self.reported = 0  # bytes scanned when progress was last told

    def name(self, qid: int | None) -> str | None:
        names = self.v.names
        return names[qid] if qid is not None and 0 <= qid < len(names) else None

    def problem(self, offset: int | None, qid: int | None, reason: str) -> None:
        self.problems.append(Problem(self.v.data_path, offset, self.name(qid), reason))
        if qid is not None:
            self.damaged.add(qid)

    def next_indexed(self) -> int:
        """File offset of the next indexed block not yet met (past the end of the file if none)."""
        return self.offs[self.order[self.i]] if self.i < len(self.order) else 1 << 62

    def take(self) -> int:
        b = self.order[self.i]
        self.i += 1
        return b

    def missing_before(self, offset: int, reason: str = "the index has a block here, but no record starts here"):
        while self.next_indexed() < offset:
            b = self.take()
            self.problem(self.offs[b], self.v.b_qid[b], reason)

    def run(self) -> list[Problem]:
        v = self.v
        pos = FILE_HEADER_SIZE
        fd = os.open(v.data_path, os.O_RDONLY)
        try:
            while True:
                stops: list = []
                for rec in scan(fd, pos, self.size, v.block_size, stops):
                    self.record(rec)
                stop = stops[-1]
                if stop.reason is None or not self.damage(stop.offset, stop.reason):
                    break
                pos = self.next_indexed()  # go on at the next block the index knows
        finally:
            os.close(fd)
        self.missing_before(v.committed, f"the index has a block here, but the readable data ends at {self.size}")
        self.totals()
        return self.problems

    def record(self, rec) -> None:
        if rec.offset - self.reported >= _PROGRESS_BYTES:
            self.progress(rec.offset)
            self.reported = rec.offset
        self.report.records += 1
        if rec.offset >= self.v.committed:  # not flushed yet, or never: the index cannot know it
            return
        self.missing_before(rec.offset)
        indexed = self.next_indexed() == rec.offset
        if rec.kind == KIND_COMMIT:
            self.last_commit = rec
            if indexed:
                self.problem(rec.offset, self.v.b_qid[self.take()], "the index has a block here, not a commit record")
            return
        self.report.blocks += 1
        if rec.qid < len(self.held):
            self.held[rec.qid] += rec.count
        if not indexed:
            self.problem(rec.offset, rec.qid, "a committed block record that the index does not have")
            return
        b = self.take()
        reason = _disagreement(self.v, b, rec, self.name)
        if reason:
            self.problem(rec.offset, self.v.b_qid[b], reason)
            self.damaged.add(rec.qid)  # its count cannot add up either: one problem is enough

    def damage(self, x: int, reason: str) -> bool:
        """The scan stopped at a bad record at ``x``: report it; return whether to go on scanning."""
        self.missing_before(x)
        if x >= self.v.committed and self.i >= len(self.order):  # past everything flushed: an unflushed tail
            if self.size - x > TORN_TAIL_BLOCKS * self.v.block_size:
                after = self.size - x
                self.problem(x, None, f"{reason}, with {after} bytes after it (more than an interrupted write leaves)")
            return False
        self.problem(x, self.v.b_qid[self.take()] if self.next_indexed() == x else None, reason)
        return self.i < len(self.order)

    def totals(self) -> None:
        v = self.v
        for qid, n in enumerate(v.counts):
            if qid not in self.damaged and self.held[qid] != n:
                self.problem(None, qid, f"the index counts {n} messages, the block records {self.held[qid]}")
        rec = self.last_commit
        if rec is not None and rec.offset + rec.length == v.committed:
            messages, indexed = rec.commit()[3], sum(v.counts)
            if messages != indexed:
                self.problem(rec.offset, None, f"the commit record counts {messages} messages, the index {indexed}")


def _disagreement(v: ShardView, b: int, rec, name) -> str | None:
    if rec.qid != v.b_qid[b]:
        header = repr(name(rec.qid)) if name(rec.qid) is not None else f"id {rec.qid}"
        return f"the index says the block belongs to queue {name(v.b_qid[b])!r}, its header says queue {header}"
    if rec.count != v.b_count[b]:
        return f"the index says {v.b_count[b]} messages start in the block, its header says {rec.count}"
    if rec.length != entry_length(v.b_entry[b]):
        return f"the index says the record is {entry_length(v.b_entry[b])} bytes, it is {rec.length}"
    return None


def _read_all(db, views: list[ShardView], report: Report, progress) -> list[Problem]:
    """Read every queue through, so every message frame is parsed."""
    problems = []
    names = [name for v in views for name in v.names]
    progress("read", 0, len(names))
    for k, queue in enumerate(names, 1):
        n = db.count(queue)
        offset = 0
        try:
            while offset < n:
                msgs = db.get(queue, offset, _CHUNK)
                if not msgs:
                    problems.append(Problem(db.path, None, queue, f"holds {n} messages, reading stops at {offset}"))
                    break
                offset += len(msgs)
        except CorruptionError as e:
            problems.append(Problem(e.path, e.offset if e.offset >= 0 else None, e.queue or queue, e.reason))
        report.messages += offset
        if not k % 1024 or k == len(names):
            progress("read", k, len(names))
    report.queues = len(names)
    return problems
