"""One shard: its own map of queues, its own lock, its own files; the write path and the commit.

A queue's messages are framed as varint length + bytes and packed into blocks that belong to that
queue alone. The unfinished block lives in slices of the shared pool; a finished block is sealed
into a record (header, checksum, optional lz4) and queued for one ``pwritev`` with many others.
``commit`` seals every unfinished block, writes everything, appends a commit record and rewrites
the index checkpoint. Reads live in reads.py, loading and recovery in recovery.py.
"""

import os
import threading
import time
from array import array

import lz4.block

from . import checkpoint, format, reads, recovery
from .coding import checksum, encode_varint
from .errors import ReadOnlyError
from .format import FLAG_CONTINUES, FLAG_LZ4, KIND_BLOCK, RECORD, RECORD_SIZE, seal_record

_IOV_MAX = 1024


class Queue:
    """State of one queue. ``blocks`` is the queue's sparse index: a flat array of pairs
    (file offset * 65536 + record size, messages started up to and including this block)."""

    __slots__ = (
        "name", "qid", "shard", "count", "blocks",
        "chain", "pos", "lim", "fill", "bcount", "skip",
        "cur_msg", "cur_block", "cur_pos",
    )  # fmt: skip

    def __init__(self, name: str, qid: int, shard: "Shard"):
        self.name = name
        self.qid = qid
        self.shard = shard
        self.count = 0  # messages in the queue
        self.blocks = None  # array('q') of sealed blocks, or None
        self.chain = None  # pool slices of the unfinished block
        self.pos = 0  # arena offset of the next byte of the unfinished block
        self.lim = 0  # arena offset where the current slice ends
        self.fill = 0  # bytes in the unfinished block
        self.bcount = 0  # messages that start in the unfinished block
        self.skip = 0  # leading bytes of the unfinished block that end the previous block's message
        self.cur_msg = -1  # sequential-read cursor: next message, its block and byte position
        self.cur_block = 0
        self.cur_pos = 0

    def sealed_messages(self) -> int:
        blocks = self.blocks
        return blocks[-1] if blocks is not None else 0


class Shard:
    def __init__(self, db, number: int, opts: dict, pool):
        self.db = db
        self.number = number
        self.dir = db.path
        self.readonly = opts["readonly"]
        self.sync = opts["sync"]
        self.block_size = opts["block_size"]
        self.payload_max = self.block_size - RECORD_SIZE
        self.lz4 = opts["compression"] == "lz4"
        self.batch_bytes = opts["write_batch_bytes"]
        self.cache_blocks = opts["cache_blocks"]
        self.readahead = opts["readahead_blocks"]
        self.pool = pool
        self.lock = threading.Lock()
        self.closed = False
        self.data_path = os.path.join(self.dir, format.data_name(number))
        self.names_path = os.path.join(self.dir, format.names_name(number))
        self.index_path = os.path.join(self.dir, format.index_name(number))
        self.queues: dict[str, Queue] = {}
        self.by_qid: list[Queue] = []
        self.open_queues: set[Queue] = set()  # queues with an unfinished block in the pool
        self.pending: list = []  # sealed records not yet written
        self.pending_bytes = 0
        self.names_pending = bytearray()  # names of new queues not yet written
        self.names_since_commit = bytearray()
        self.cache: dict[int, tuple] = {}  # record offset -> decoded block, for sequential readers
        # file positions: tail = end including pending, written = end on disk, committed = last commit end
        self.tail = self.written = self.committed = format.FILE_HEADER_SIZE
        self.names_written = 0
        self.seq = 0
        self.messages = 0
        self.payload = 0
        self.raw_bytes = 0
        self.stored_bytes = 0
        self.blocks = 0
        self.flushed_ns = 0
        self.changed = False  # anything put since the last commit
        self.counters = {"evicted_blocks": 0, "block_reads": 0, "cache_hits": 0, "readahead": 0}
        self.recovery = recovery.load(self)

    # --- queues -----------------------------------------------------------------------------------
    def create(self, name: str) -> Queue:
        q = Queue(name, len(self.by_qid), self)
        entry = checkpoint.encode_name(name)
        self.names_pending += entry
        self.names_since_commit += entry
        self.by_qid.append(q)
        self.queues[name] = q
        self.db.route[name] = q
        return q

    # --- write path (shard lock held) -------------------------------------------------------------
    def append(self, q: Queue, msg) -> int:
        """Append one message of any size to ``q``; return its offset in the queue."""
        if self.readonly:
            raise ReadOnlyError(f"{self.dir} was opened readonly; open it without readonly=True to write")
        n = len(msg)
        head = encode_varint(n)
        pmax = self.payload_max
        if q.fill + len(head) > pmax:  # a length prefix never straddles two blocks
            self.seal(q, False)
        self._write(q, head)
        q.bcount += 1
        view = memoryview(msg)
        done = 0
        while True:
            take = min(pmax - q.fill, n - done)
            if take:
                self._write(q, view[done : done + take])
                done += take
            if done == n:
                break
            self.seal(q, True)
            q.skip = min(n - done, pmax)
        self.messages += 1
        self.payload += n
        self.changed = True
        c = q.count
        q.count = c + 1
        return c

    def _write(self, q: Queue, data) -> None:
        size = len(data)
        arena = self.pool.arena
        done = 0
        while done < size:
            if q.pos == q.lim:
                self._grow(q)
            take = min(q.lim - q.pos, size - done)
            arena[q.pos : q.pos + take] = data[done : done + take]
            q.pos += take
            done += take
        q.fill += size

    def _grow(self, q: Queue) -> None:
        pool = self.pool
        s = pool.alloc()
        while s < 0:
            self.db.make_room(self, q)
            s = pool.alloc()
        if q.chain is None:
            q.chain = [s]
            self.open_queues.add(q)
        else:
            q.chain.append(s)
        q.pos = s * pool.slice_size
        q.lim = q.pos + pool.slice_size

    def seal(self, q: Queue, continues: bool) -> None:
        """Turn the unfinished block of ``q`` into a record and queue it for writing."""
        chain = q.chain
        pool = self.pool
        raw = pool.gather(chain, q.pos) if chain else b""
        if chain:
            pool.release(chain)
            self.open_queues.discard(q)
        q.chain = None
        q.pos = q.lim = 0
        flags = FLAG_CONTINUES if continues else 0
        payload = raw
        if self.lz4:
            packed = lz4.block.compress(raw, store_size=False)
            if len(packed) + 2 < len(raw):
                payload = len(raw).to_bytes(2, "little") + packed
                flags |= FLAG_LZ4
        size = len(payload)
        rec = bytearray(RECORD_SIZE + size)
        RECORD.pack_into(rec, 0, 0, KIND_BLOCK, flags, q.qid, size, q.skip, q.bcount)
        rec[RECORD_SIZE:] = payload
        seal_record(rec)
        offset = self.tail
        self.tail = offset + len(rec)
        entry = offset * 65536 + len(rec)
        if q.blocks is None:
            q.blocks = array("q", (entry, q.bcount))
        else:
            q.blocks.append(entry)
            q.blocks.append(q.blocks[-2] + q.bcount)
        q.fill = q.bcount = q.skip = 0
        self.pending.append(rec)
        self.pending_bytes += len(rec)
        self.raw_bytes += len(raw)
        self.stored_bytes += len(rec)
        self.blocks += 1
        if self.pending_bytes >= self.batch_bytes:
            self.write_pending()

    def write_pending(self) -> None:
        """Write new names, then every sealed record, in as few system calls as possible."""
        if self.names_pending:
            _pwrite_all(self.names_fd, [self.names_pending], self.names_written)
            self.names_written += len(self.names_pending)
            self.names_pending = bytearray()
        pending = self.pending
        if not pending:
            return
        offset = self.written
        for i in range(0, len(pending), _IOV_MAX):
            chunk = pending[i : i + _IOV_MAX]
            offset = _pwrite_all(self.fd, chunk, offset)
        self.written = offset
        self.pending = []
        self.pending_bytes = 0

    def evict(self, exclude: Queue | None) -> int:
        """Make room in the pool: seal the largest unfinished blocks of this shard, about half of the
        slices it holds. Return the number of slices freed."""
        held = [(q.fill, q.qid, q) for q in self.open_queues if q is not exclude]
        if not held:
            return 0
        held.sort(reverse=True)
        slices = sum(len(q.chain) for _, _, q in held)
        target = max(1, slices // 2)
        freed = 0
        for _, _, q in held:
            freed += len(q.chain)
            self.seal(q, False)
            self.counters["evicted_blocks"] += 1
            if freed >= target:
                break
        self.write_pending()
        return freed

    def drain(self) -> None:
        """Seal every unfinished block and write everything (memory goes back to the pool)."""
        for q in list(self.open_queues):
            self.seal(q, False)
        self.write_pending()

    def commit(self) -> bool:
        """Make everything put so far durable; return False when there was nothing to do."""
        if not self.changed and not self.pending and not self.open_queues:
            return False
        self.drain()
        self.seq += 1
        names_len = self.names_written
        rec = format.commit_record(
            self.seq, names_len, checksum(self.names_since_commit), self.messages, self.payload, self.tail
        )
        self.pending.append(rec)
        self.tail += len(rec)
        self.write_pending()
        if self.sync:
            os.fsync(self.names_fd)
            os.fsync(self.fd)
        self.committed = self.tail
        self.names_since_commit = bytearray()
        self.changed = False
        self.flushed_ns = time.time_ns()
        self.write_checkpoint()
        return True

    def write_checkpoint(self) -> None:
        cp = checkpoint.Checkpoint()
        cp.data_len, cp.names_len, cp.seq = self.committed, self.names_written, self.seq
        cp.messages, cp.payload, cp.raw, cp.stored = (
            self.messages,
            self.payload,
            self.raw_bytes,
            self.stored_bytes,
        )
        cp.flushed_ns = self.flushed_ns
        cp.tables = [q.blocks for q in self.by_qid]
        checkpoint.write(self.index_path, self.number, cp, self.sync)

    # --- reads ------------------------------------------------------------------------------------
    def read(self, q: Queue, offset: int, num: int) -> list[bytes]:
        return reads.read(self, q, offset, num)

    def refresh(self) -> int:
        return recovery.refresh(self)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self.readonly:
                self.commit()
        finally:
            self.closed = True
            os.close(self.fd)
            if self.names_fd >= 0:
                os.close(self.names_fd)


def _pwrite_all(fd: int, bufs: list, offset: int) -> int:
    """pwritev ``bufs`` at ``offset``, finishing any short write; return the end offset."""
    total = sum(len(b) for b in bufs)
    done = os.pwritev(fd, bufs, offset)
    if done < total:
        rest = b"".join(bytes(b) for b in bufs)[done:]
        while rest:
            n = os.pwrite(fd, rest, offset + done)
            done += n
            rest = rest[n:]
    return offset + total
