"""One shard: its own map of queues, its own lock, its own files; the write path and the commit.

A queue's messages are framed as varint length + bytes and packed into blocks that belong to that
queue alone. The unfinished block lives in a chain of slices of the shared pool; a finished block
is sealed into a record (header, checksum, optional lz4) and queued for one ``pwritev`` with many
others. ``commit`` seals every unfinished block, writes everything, appends a commit record and
rewrites the index checkpoint. Reads live in reads.py, loading and recovery in recovery.py.

Per-queue state is kept in columns (typed arrays indexed by the queue's id in the shard), not in
an object per queue, and sealed blocks in columns indexed by block id, linked per queue: a million
queues cost a few tens of bytes each.
"""

import os
import threading
import time
from array import array

import lz4.block

from . import checkpoint, format, recovery, stage
from .coding import checksum, encode_varint
from .errors import ReadOnlyError
from .format import (
    FLAG_CONTINUES,
    FLAG_LZ4,
    KIND_BLOCK,
    RECORD,
    RECORD_SIZE,
    SPILL,
    entry_length,
    entry_offset,
    pack_entry,
    seal_record,
)

_IOV_MAX = 1024
BIG_QUEUE_BLOCKS = 8  # past this many blocks a queue also keeps an array of its block ids


class Shard:
    def __init__(self, db, number: int, opts: dict, pool):
        self.db = db
        self.number = number
        self.nshards = opts["shards"]
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
        self.fd = self.names_fd = -1
        self.data_path = os.path.join(self.dir, format.data_name(number))
        self.names_path = os.path.join(self.dir, format.names_name(number))
        self.index_path = os.path.join(self.dir, format.index_name(number))
        self.spill_path = os.path.join(self.dir, format.spill_name(number))
        self.spill_fd = -1
        self.stage_path = os.path.join(self.dir, format.stage_name(number))
        self.stage_fd = -1
        self.stage_buf = bytearray()  # frames of staged puts not yet in the staging file
        self.stage_qids = array("i")  # their queue ids
        self.stage_tail = self.stage_frames = self.stage_varint_extra = 0
        self.spill_tail = self.spill_written = 0
        self.spill_pending: list = []
        self.spill_limit = opts["spill_bytes"] // opts["shards"]  # for the spill file and for the stage
        self.stage_chunk = stage.chunk_bytes(self.spill_limit)
        self.drain_due = False
        self.grew = False  # staged a chunk or took a pool slice since the db last looked (see DB.reading)
        # queues: name -> qid, and columns indexed by qid
        self.queues: dict[str, int] = {}
        self.names: list[str] = []
        self.count = array("q")  # messages of the queue in blocks (sealed or unfinished)
        self.total = array("q")  # messages of the queue, staged ones included (see stage.py)
        self.pos = array("q")  # arena offset after the last byte of the unfinished block (0: no slice)
        self.fill = array("i")  # bytes in the unfinished block
        self.skip = array("i")  # leading bytes of the unfinished block that end the previous message
        self.head = array("i")  # first pool slice of the unfinished block, -1 if none
        self.spilled = array("q")  # entry of the block's last spilled fragment, -1 if none
        self.first_b = array("i")  # first and last sealed block of the queue, -1 if none
        self.last_b = array("i")
        self.nblk = array("i")  # sealed blocks of the queue
        # sealed blocks, by block id: the sparse index
        self.b_qid = array("i")  # the queue that owns the block
        self.b_entry = array("q")  # file offset and record length as one entry (format.pack_entry)
        self.b_end = array("q")  # messages of the queue that start in this block or before it
        self.b_count = array("i")  # messages that start in this block
        self.b_next = array("i")  # next block of the same queue, -1 if none
        self.big: dict[int, array] = {}  # qid -> block ids, for queues with many blocks
        self.cursors: dict[int, tuple] = {}  # qid -> (next message, block where it starts)
        self.cache: dict[int, tuple] = {}  # block id -> (its messages, index of the first), for sequential readers
        self.pending: list = []  # sealed records not yet written
        self.pending_bytes = 0
        self.names_pending = bytearray()  # names of new queues not yet written
        self.names_since_commit = bytearray()
        # file positions: tail = end including pending, written = end on disk, committed = last commit end
        self.tail = self.written = self.committed = format.FILE_HEADER_SIZE
        self.names_written = 0
        self.seq = 0
        self.varint_extra = 0  # length-prefix bytes beyond the first of each message
        self.raw_bytes = 0
        self.stored_bytes = 0
        self.flushed_ns = 0
        self.spilled_fragments = self.spill_drains = 0
        self.block_reads = self.cache_hits = self.readaheads = 0
        self.recovery = recovery.load(self)

    # --- queues -----------------------------------------------------------------------------------
    def create(self, name: str, persist: bool = True) -> int:
        """Add queue ``name``; return its qid."""
        qid = len(self.names)
        if persist:
            entry = checkpoint.encode_name(name)
            self.names_pending += entry
            self.names_since_commit += entry
        self.names.append(name)
        self.queues[name] = qid
        for col, value in (
            (self.count, 0), (self.total, 0), (self.pos, 0), (self.fill, 0), (self.skip, 0), (self.head, -1),
            (self.spilled, -1), (self.first_b, -1), (self.last_b, -1), (self.nblk, 0),
        ):  # fmt: skip
            col.append(value)
        return qid

    def counters(self) -> dict:
        return {
            "spilled_fragments": self.spilled_fragments, "spill_drains": self.spill_drains,
            "block_reads": self.block_reads, "cache_hits": self.cache_hits, "readahead": self.readaheads,
        }  # fmt: skip

    @property
    def blocks(self) -> int:
        return len(self.b_entry)

    def messages(self) -> int:
        return sum(self.total)

    def payload(self) -> int:
        """Message bytes: every block or staged byte that is not a length prefix."""
        framed = self.raw_bytes + sum(self.fill) + self.stage_frames + len(self.stage_buf)
        return framed - self.messages() - self.varint_extra - self.stage_varint_extra

    def sealed_messages(self, qid: int) -> int:
        last = self.last_b[qid]
        return self.b_end[last] if last >= 0 else 0

    # --- write path (shard lock held) -------------------------------------------------------------
    def append(self, qid: int, msg) -> int:
        """Append one message of any size to queue ``qid``; return its offset in the queue."""
        if self.readonly:
            raise ReadOnlyError(f"{self.dir} was opened readonly; open it without readonly=True to write")
        n = len(msg)
        pmax = self.payload_max
        fill = self.fill
        if n < 0x80 and fill[qid] + n < pmax:  # one length byte, and the block has room
            self._write_small(qid, n, msg)
        else:
            self._append_any(qid, n, msg)
        c = self.count[qid]
        self.count[qid] = c + 1
        if self.drain_due:
            self.spill_drains += 1
            self.drain()
        return c

    def _write_small(self, qid: int, n: int, msg) -> None:
        """Write a length byte and a short message that fit the block, crossing slices as needed."""
        pool = self.pool
        arena = pool.arena
        mask = pool.slice_size - 1
        pos = self.pos[qid]
        if not -pos & mask:
            pos = self._grow(qid, pos)
        arena[pos] = n
        pos += 1
        done = 0
        while done < n:
            room = -pos & mask
            if not room:
                pos = self._grow(qid, pos)
                room = mask + 1
            take = n - done if n - done <= room else room
            arena[pos : pos + take] = msg[done : done + take]
            pos += take
            done += take
        self.pos[qid] = pos
        self.fill[qid] += n + 1

    def _append_any(self, qid: int, n: int, msg) -> None:
        """Append a message of any size, sealing blocks as it fills them."""
        head = encode_varint(n)
        pmax = self.payload_max
        fill = self.fill
        if fill[qid] + len(head) > pmax:  # a length prefix never straddles two blocks
            self.seal(qid, False)
        self.write_frames(qid, head)
        self.varint_extra += len(head) - 1
        view = memoryview(msg)
        done = 0
        while True:
            take = min(pmax - fill[qid], n - done)
            if take:
                self.write_frames(qid, view[done : done + take])
                done += take
            if done == n:
                break
            self.seal(qid, True)
            self.skip[qid] = min(n - done, pmax)

    def write_frames(self, qid: int, data) -> None:
        """Write bytes (whole frames, or parts of one) to the unfinished block of ``qid``."""
        size = len(data)
        arena = self.pool.arena
        slice_size = self.pool.slice_size
        pos = self.pos[qid]
        done = 0
        while done < size:
            room = -pos & (slice_size - 1)
            if room == 0:
                pos = self._grow(qid, pos)
                room = slice_size
            take = min(room, size - done)
            arena[pos : pos + take] = data[done : done + take]
            pos += take
            done += take
        self.pos[qid] = pos
        self.fill[qid] += size

    def _grow(self, qid: int, pos: int) -> int:
        """Chain a new slice to the unfinished block of ``qid``; return its arena offset."""
        pool = self.pool
        self.grew = True
        s = pool.alloc()
        while s < 0:  # make_room never touches the block being written, so ``pos`` stays valid
            self.db.make_room(self, qid)
            s = pool.alloc()
        if self.head[qid] < 0:
            self.head[qid] = s
        else:
            pool.next[(pos - 1) // pool.slice_size] = s
        return s * pool.slice_size

    def seal(self, qid: int, continues: bool) -> None:
        """Turn the unfinished block of ``qid`` into a record and queue it for writing."""
        raw = self.open_bytes(qid)
        head = self.head[qid]
        if head >= 0:
            self.pool.release(head)
            self.head[qid] = -1
            self.pos[qid] = 0
        self.spilled[qid] = -1
        flags = FLAG_CONTINUES if continues else 0
        payload = raw
        if self.lz4:
            packed = lz4.block.compress(raw, store_size=False)
            if len(packed) + 2 < len(raw):
                payload = len(raw).to_bytes(2, "little") + packed
                flags |= FLAG_LZ4
        size = len(payload)
        bcount = self.count[qid] - self.sealed_messages(qid) + continues  # see append: count lags one
        rec = bytearray(RECORD_SIZE + size)
        RECORD.pack_into(rec, 0, 0, KIND_BLOCK, flags, qid, size, self.skip[qid], bcount)
        rec[RECORD_SIZE:] = payload
        seal_record(rec)
        offset = self.tail
        self.tail = offset + len(rec)
        self.add_block(qid, pack_entry(offset, len(rec)), bcount)
        self.fill[qid] = self.skip[qid] = 0
        self.pending.append(rec)
        self.pending_bytes += len(rec)
        self.raw_bytes += len(raw)
        self.stored_bytes += len(rec)
        if self.pending_bytes >= self.batch_bytes:
            self.write_pending()

    def add_block(self, qid: int, entry: int, bcount: int) -> None:
        """Append a sealed block to the index of ``qid``."""
        bid = len(self.b_entry)
        last = self.last_b[qid]
        self.b_qid.append(qid)
        self.b_entry.append(entry)
        self.b_end.append((self.b_end[last] if last >= 0 else 0) + bcount)
        self.b_count.append(bcount)
        self.b_next.append(-1)
        if last >= 0:
            self.b_next[last] = bid
        else:
            self.first_b[qid] = bid
        self.last_b[qid] = bid
        n = self.nblk[qid] + 1
        self.nblk[qid] = n
        if n > BIG_QUEUE_BLOCKS:
            ids = self.big.get(qid)
            if ids is None:
                self.big[qid] = array("i", self.block_ids(qid))
            else:
                ids.append(bid)

    def block_ids(self, qid: int):
        """Block ids of ``qid`` in queue order."""
        nxt = self.b_next
        b = self.first_b[qid]
        while b >= 0:
            yield b
            b = nxt[b]

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
            offset = _pwrite_all(self.fd, pending[i : i + _IOV_MAX], offset)
        self.written = offset
        self.pending = []
        self.pending_bytes = 0

    def open_bytes(self, qid: int) -> bytes:
        """The unfinished block of ``qid``: its spilled fragments, then its slices in the pool."""
        parts = []
        off = self.spilled[qid]
        if off >= 0:
            if self.spill_pending:
                self.write_spill()
            fd = self.spill_fd
            while off >= 0:
                frag = os.pread(fd, SPILL.size + entry_length(off), entry_offset(off))
                parts.append(frag[SPILL.size :])
                off = SPILL.unpack_from(frag)[0]
            parts.reverse()
        head = self.head[qid]
        if head >= 0:
            parts.append(self.pool.gather(head, self.pos[qid]))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def evict(self, exclude: int) -> int:
        """Make room in the pool: move the largest unfinished blocks of this shard (about half of the
        slices it holds; never the block of ``exclude``) to the spill file. Return the slices freed."""
        pos = self.pos
        head = self.head
        held = sorted(
            ((self.fill[q], q) for q, h in enumerate(head) if h >= 0 and q != exclude),
            reverse=True,
        )
        if not held:
            return 0
        pool = self.pool
        target = max(1, sum(pool.chain_length(head[q]) for _, q in held) // 2)
        freed = 0
        spilled = self.spilled
        pending = self.spill_pending
        for _, q in held:
            h = head[q]
            data = pool.gather(h, pos[q])
            freed += pool.release(h)
            head[q] = -1
            pos[q] = 0
            pending.append(SPILL.pack(spilled[q]))
            pending.append(data)
            spilled[q] = pack_entry(self.spill_tail, len(data))
            self.spill_tail += SPILL.size + len(data)
            self.spilled_fragments += 1
            if freed >= target:
                break
        self.write_spill()
        if self.spill_tail > self.spill_limit:
            self.drain_due = True  # drained once no message is half-written (see append)
        return freed

    def write_spill(self) -> None:
        pending = self.spill_pending
        offset = self.spill_written
        for i in range(0, len(pending), _IOV_MAX):
            offset = _pwrite_all(self.spill_fd, pending[i : i + _IOV_MAX], offset)
        self.spill_written = offset
        self.spill_pending = []

    def drain(self) -> None:
        """Seal every unfinished block and write everything (memory goes back to the pool)."""
        fill = self.fill
        for qid in [q for q, f in enumerate(fill) if f]:
            self.seal(qid, False)
        self.write_pending()
        if self.spill_tail:
            os.ftruncate(self.spill_fd, 0)
            self.spill_tail = self.spill_written = 0
        self.drain_due = False

    def commit(self) -> bool:
        """Make everything put so far durable; return False when there was nothing to do."""
        stage.distribute(self)
        self.drain()
        if self.tail == self.committed:
            return False
        self.seq += 1
        rec = format.commit_record(
            self.seq, self.names_written, checksum(self.names_since_commit), self.messages(), self.payload(), self.tail
        )
        self.pending.append(rec)
        self.tail += len(rec)
        self.write_pending()
        if self.sync:
            os.fsync(self.names_fd)
            os.fsync(self.fd)
        self.committed = self.tail
        self.names_since_commit = bytearray()
        self.flushed_ns = time.time_ns()
        self.write_checkpoint()
        return True

    def write_checkpoint(self) -> None:
        cp = checkpoint.Checkpoint()
        cp.data_len, cp.names_len, cp.seq = self.committed, self.names_written, self.seq
        cp.messages, cp.payload, cp.raw, cp.stored = self.messages(), self.payload(), self.raw_bytes, self.stored_bytes
        cp.flushed_ns = self.flushed_ns
        cp.queues = len(self.names)
        cp.b_qid, cp.b_entry, cp.b_count = self.b_qid, self.b_entry, self.b_count
        checkpoint.write(self.index_path, self.number, cp, self.sync)

    # --- reads ------------------------------------------------------------------------------------

    def refresh(self) -> int:
        return recovery.refresh(self)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self.readonly and self.fd >= 0:
                self.commit()
        finally:
            self.closed = True
            for fd in (self.fd, self.names_fd, self.spill_fd, self.stage_fd):
                if fd >= 0:
                    os.close(fd)


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
