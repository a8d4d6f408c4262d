"""One shard: its own map of queues, its own lock, its own files; the write path and the commit.

A queue's messages are framed as varint length + bytes and packed into blocks that belong to that
queue alone. The unfinished block lives in a chain of slices of the shared pool; a finished block
is sealed into a record (header, checksum, optional lz4) written in place into the shard's write
chunk, a buffer of many records queued for one ``pwritev`` with the chunks before it. ``commit``
seals every unfinished block, writes everything, appends a commit record and brings the index
checkpoint up to date (a delta of what changed, or now and then a new base). Reads live in reads.py,
loading and recovery in recovery.py.

Per-queue state is kept in columns (typed arrays indexed by the queue's id in the shard), not in
an object per queue, and sealed blocks in columns indexed by block id, linked per queue; names live
in the shard's directory (directory.py). The write-side columns (unfinished block, staged messages)
are anonymous memory that costs nothing until a queue is written (columns.py), and the queues with
an unfinished block are kept in a set, so a flush visits only those: a million queues cost a few
tens of bytes each, and a flush costs what changed since the last one.

A flush seals a block per queue written, a million times for a million queues, so the build also
compiles this module into ``mqdb._c_shard`` (:mod:`mqdb._accel`). There :class:`Shard` is an extension
type (``_c_shard.pxd``): the attributes that every get, put and seal reads are typed slots, which the
read path and the staging log reach as C fields; every other attribute lives in the instance's
``__dict__``, as in the Python class.
"""

import os
import time
from array import array

import lz4.block

try:
    import cython
except ImportError:  # installed without Cython: runs as the Python source, as it does without the twin
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

from . import checkpoint, format, recovery, stage
from ._accel import import_c_accel
from .coding import checksum, encode_varint, write_record
from .columns import append as append_item  # not append: the name of a Shard method
from .columns import grown, item, put_item, zeroed
from .directory import Directory
from .errors import ReadOnlyError
from .format import (
    FLAG_CONTINUES,
    FLAG_LZ4,
    KIND_BLOCK,
    RECORD_SIZE,
    SPILL,
    entry_length,
    entry_offset,
    pack_entry,
)
from .locks import ShardLock

_IOV_MAX = 1024
_CHUNK_BYTES = 256 << 10  # sealed records are written into chunks of this size (or write_batch_bytes if less)


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
        self.lock = ShardLock()
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
        self._empty_index()
        self._zeroed_columns(1024)
        # the checkpoint file: where its valid bytes end (0: none usable), what its base and the whole cover
        self.cp_end = self.cp_base_queues = self.cp_base_blocks = self.cp_queues = self.cp_blocks = 0
        self.message_total = 0  # messages of the shard, staged ones included
        self.pending: list = []  # sealed records not yet written (write chunks, a commit record)
        self.pending_bytes = 0
        self.chunk = None  # the write chunk being filled with sealed records (a bytearray), and its filled bytes
        self.chunk_fill = 0
        self.chunk_bytes = min(self.batch_bytes, _CHUNK_BYTES)
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
        self.recovery = recovery.load(self, db.migrating)

    # --- queues -----------------------------------------------------------------------------------
    def find(self, raw: bytes) -> int:
        """The qid of the queue whose UTF-8 name is ``raw``, or -1."""
        return self.directory.find(raw)

    def name(self, qid: int) -> str:
        return self.directory.name(qid)

    @property
    def queue_count(self) -> int:
        return len(self.directory)

    def create(self, raw: bytes) -> int:
        """Add the queue whose UTF-8 name is ``raw``; return its qid."""
        qid = self.directory.add(raw)
        entry = encode_varint(len(raw)) + raw
        self.names_pending += entry
        self.names_since_commit += entry
        self.count.append(0)
        self.first_b.append(-1)
        self.last_b.append(-1)
        if qid >= self.room:
            self._zeroed_columns(2 * self.room)
        return qid

    def add_names(self, records) -> int:
        """Add the queues of names-file ``records`` that are already on disk; return how many."""
        n = self.directory.extend(self.names_path, records)
        self.count.frombytes(bytes(8 * n))
        self.first_b += array("i", [-1]) * n
        self.last_b += array("i", [-1]) * n
        if len(self.count) > self.room:
            self._zeroed_columns(2 * len(self.count))
        return n

    def _zeroed_columns(self, room: int) -> None:
        """Make the write-side columns hold ``room`` queues."""
        self.staged, self.pos, self.spilled = (grown(c, room) for c in (self.staged, self.pos, self.spilled))
        self.run_bytes = grown(self.run_bytes, room)
        self.fill, self.skip, self.head = (grown(c, room) for c in (self.fill, self.skip, self.head))
        self.room = room

    def counters(self) -> dict:
        return {
            "spilled_fragments": self.spilled_fragments, "spill_drains": self.spill_drains,
            "block_reads": self.block_reads, "cache_hits": self.cache_hits, "readahead": self.readaheads,
        }  # fmt: skip

    @property
    def blocks(self) -> int:
        return len(self.b_entry)

    def messages(self) -> int:
        return self.message_total

    def payload(self) -> int:
        """Message bytes: every block or staged byte that is not a length prefix."""
        fill = self.fill
        framed = self.raw_bytes + sum(fill[q] for q in self.opened) + self.stage_frames + len(self.stage_buf)
        return framed - self.message_total - self.varint_extra - self.stage_varint_extra

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
        if not self.head[qid]:
            self.head[qid] = s + 1
            self.opened.add(qid)
        else:
            pool.next[(pos - 1) // pool.slice_size] = s
        return s * pool.slice_size

    def seal(self, qid: int, continues: bool) -> None:
        """Turn the unfinished block of ``qid`` into a record and queue it for writing."""
        raw = self.open_bytes(qid)
        head = self.head[qid]
        if head:
            self.pool.release(head - 1)
            self.head[qid] = 0
            self.pos[qid] = 0
        self.spilled[qid] = 0
        self.opened.discard(qid)
        self.seal_bytes(qid, raw, continues)

    def seal_bytes(self, qid: int, raw, continues: bool, start: int = 0, stop: int = -1) -> None:
        """Queue for writing a record of ``qid`` whose block payload is ``raw[start:stop]`` (``raw``
        bytes or a bytearray, ``stop`` -1 for its end): the bytes of its unfinished block (see seal),
        or a run of frames that never went through the pool (see stage.distribute), when ``qid`` has no
        unfinished block. The record is written in place into the shard's current write chunk
        (coding.write_record: in C in the compiled build), not made as an object of its own."""
        if stop < 0:
            stop = len(raw)
        size = stop - start
        flags = FLAG_CONTINUES if continues else 0
        if self.lz4:
            packed = lz4.block.compress(memoryview(raw)[start:stop], store_size=False)
            if len(packed) + 2 < size:
                raw = size.to_bytes(2, "little") + packed
                start, stop = 0, len(raw)
                flags |= FLAG_LZ4
        length = RECORD_SIZE + stop - start
        if cython.compiled:  # the lines of the else branch, as C reads of the columns' memory (sealed_messages inline)
            last = item(self.last_b, qid)
            sealed = item(self.b_end, last) if last >= 0 else 0
            bcount = item(self.count, qid) - sealed + continues
            skip = item(self.skip, qid)
        else:
            bcount = self.count[qid] - self.sealed_messages(qid) + continues  # see append: count lags one
            skip = self.skip[qid]
        chunk = self.chunk
        at = self.chunk_fill
        if chunk is None or at + length > len(chunk):
            chunk = self._new_chunk(length)
            at = 0
        self.chunk_fill = write_record(chunk, at, KIND_BLOCK, flags, qid, skip, bcount, raw, start, stop)
        offset = self.tail
        self.tail = offset + length
        self.add_block(qid, pack_entry(offset, length), bcount)
        if cython.compiled:
            put_item(self.fill, qid, 0)
            put_item(self.skip, qid, 0)
        else:
            self.fill[qid] = self.skip[qid] = 0
        self.pending_bytes += length
        self.raw_bytes += size
        self.stored_bytes += length
        if self.pending_bytes >= self.batch_bytes:
            self.write_pending()

    def _new_chunk(self, room: int) -> bytearray:
        """Queue the filled part of the current write chunk and start a new one with ``room`` bytes or more."""
        self._close_chunk()
        self.chunk = bytearray(max(room, self.chunk_bytes))
        return self.chunk

    def _close_chunk(self) -> None:
        """Queue the filled part of the current write chunk for writing (records are sealed into write
        chunks of ``chunk_bytes``, written with the rest of ``pending``); the next record starts a new one."""
        if self.chunk_fill:
            self.pending.append(memoryview(self.chunk)[: self.chunk_fill])
        self.chunk = None
        self.chunk_fill = 0

    def add_block(self, qid: int, entry: int, bcount: int) -> None:
        """Append a sealed block to the index of ``qid``."""
        bid = len(self.b_entry)
        if cython.compiled:  # the lines of the else branch, as C reads and writes of the columns' memory
            last = item(self.last_b, qid)
            append_item(self.new_qids, qid)
            append_item(self.b_entry, entry)
            append_item(self.b_end, (item(self.b_end, last) if last >= 0 else 0) + bcount)
            append_item(self.b_count, bcount)
            append_item(self.b_next, -1)
            if last >= 0:
                put_item(self.b_next, last, bid)
            else:
                put_item(self.first_b, qid, bid)
            put_item(self.last_b, qid, bid)
        else:
            last = self.last_b[qid]
            self.new_qids.append(qid)
            self.b_entry.append(entry)
            self.b_end.append((self.b_end[last] if last >= 0 else 0) + bcount)
            self.b_count.append(bcount)
            self.b_next.append(-1)
            if last >= 0:
                self.b_next[last] = bid
            else:
                self.first_b[qid] = bid
            self.last_b[qid] = bid
        ids = self.big.get(qid)
        if ids is not None:
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
        self._close_chunk()
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
        off = self.spilled[qid] - 1
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
        if head:
            parts.append(self.pool.gather(head - 1, self.pos[qid]))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def evict(self, exclude: int) -> int:
        """Make room in the pool: move the largest unfinished blocks of this shard (about half of the
        slices it holds; never the block of ``exclude``) to the spill file. Return the slices freed."""
        pos = self.pos
        head = self.head
        fill = self.fill
        held = sorted(((fill[q], q) for q in self.opened if head[q] and q != exclude), reverse=True)
        if not held:
            return 0
        pool = self.pool
        target = max(1, sum(pool.chain_length(head[q] - 1) for _, q in held) // 2)
        freed = 0
        spilled = self.spilled
        pending = self.spill_pending
        for _, q in held:
            h = head[q] - 1
            data = pool.gather(h, pos[q])
            freed += pool.release(h)
            head[q] = 0
            pos[q] = 0
            pending.append(SPILL.pack(spilled[q] - 1))
            pending.append(data)
            spilled[q] = pack_entry(self.spill_tail, len(data)) + 1
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
        for qid in sorted(self.opened):
            if fill[qid]:
                self.seal(qid, False)
        self.write_pending()
        if self.spill_tail:
            os.ftruncate(self.spill_fd, 0)
            self.spill_tail = self.spill_written = 0
        self.drain_due = False

    def commit(self) -> bool:
        """Make everything put so far durable; return False when there was nothing to do."""
        stage.distribute(self, sealing=True)
        self.drain()
        if self.tail == self.committed:
            return False
        self.seq += 1
        rec = format.commit_record(
            self.seq, self.names_written, checksum(self.names_since_commit), self.messages(), self.payload(), self.tail
        )
        self._close_chunk()  # after the records before it
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
        """Bring the checkpoint up to the last commit: append a delta of the names and blocks added
        since, or write a new base when there is none or the deltas have grown past their share."""
        queues, blocks = len(self.count), len(self.b_entry)
        arena = self.directory.arena
        names_len = self.names_written
        totals = (self.committed, names_len, self.seq, queues, blocks, self.messages(), self.payload(),
                  self.raw_bytes, self.stored_bytes, self.flushed_ns)  # fmt: skip
        appended = False
        if self.cp_end and checkpoint.delta_due(blocks, self.cp_base_blocks, queues, self.cp_base_queues):
            names_from = self.directory.offs[self.cp_queues] if queues > self.cp_queues else names_len
            try:
                self.cp_end = checkpoint.append(
                    self.index_path, self.cp_end, totals, checksum(memoryview(arena)[names_from:names_len]),
                    self.directory.offs[self.cp_queues :], self.new_qids, self.b_entry[self.cp_blocks :],
                    self.b_count[self.cp_blocks :], self.sync,
                )  # fmt: skip
                appended = True
            except FileNotFoundError:  # removed under us: write a new base
                pass
        if not appended:
            # room in the name table for the names the next deltas may add, so that opening never places
            # the names of the base again
            self.directory.reserve(queues + checkpoint.delta_room(queues))
            cp = checkpoint.Checkpoint()
            cp.data_len, cp.names_len, cp.seq = self.committed, names_len, self.seq
            cp.messages, cp.payload, cp.raw, cp.stored = totals[5:9]
            cp.flushed_ns = self.flushed_ns
            cp.names_sum = checksum(memoryview(arena)[:names_len])
            cp.slots, cp.name_offset = self.directory.slots, self.directory.offs
            cp.count, cp.first_block, cp.last_block = self.count, self.first_b, self.last_b
            cp.entry, cp.end, cp.block_count, cp.next_block = self.b_entry, self.b_end, self.b_count, self.b_next
            self.cp_end = checkpoint.write(self.index_path, self.number, cp, self.sync)
            self.cp_base_queues, self.cp_base_blocks = queues, blocks
        self.cp_queues, self.cp_blocks = queues, blocks
        self.new_qids = array("i")

    def adopt(self, cp: checkpoint.Checkpoint, names: bytes) -> None:
        """Take the columns of a checkpoint read at open; ``names`` is the names file."""
        self.directory = Directory(bytearray(names[: cp.names_len]), cp.name_offset, cp.slots, cp.base_queues)
        self.count, self.first_b, self.last_b = cp.count, cp.first_block, cp.last_block
        self.b_entry, self.b_end, self.b_count, self.b_next = cp.entry, cp.end, cp.block_count, cp.next_block
        self._zeroed_columns(max(1024, 2 * len(self.count)))
        self.committed, self.names_written, self.seq = cp.data_len, cp.names_len, cp.seq
        self.raw_bytes, self.stored_bytes, self.flushed_ns = cp.raw, cp.stored, cp.flushed_ns
        self.message_total = cp.messages
        self.cp_end, self.cp_base_queues, self.cp_base_blocks = cp.file_len, cp.base_queues, cp.base_blocks
        self.cp_queues, self.cp_blocks = cp.queues, cp.blocks

    def owners(self) -> array:
        """The queue of every sealed block, in block id order."""
        return checkpoint.owners(self.first_b, self.b_next, len(self.b_entry))

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
            self._forget()

    def _empty_index(self) -> None:
        """The directory, the columns, the sparse index and the read caches of a shard with no queue."""
        # queues: name -> qid, and columns indexed by qid
        self.directory = Directory(bytearray(checkpoint.names_header(self.number)), array("q"))
        self.count = array("q")  # messages of the queue in blocks (sealed or unfinished)
        self.first_b = array("i")  # first and last sealed block of the queue, -1 if none
        self.last_b = array("i")
        # write side, zero until the queue is written (columns.zeroed), grown by _zeroed_columns
        self.room = 0
        self.staged = self.pos = self.spilled = zeroed("q", 0)
        self.run_bytes = zeroed("q", 0)  # scratch of stage.distribute, zero between distributions
        self.fill = self.skip = self.head = zeroed("i", 0)
        self.opened: set[int] = set()  # queues with an unfinished block (some bytes, slices or fragments)
        # sealed blocks, by block id: the sparse index
        self.b_entry = array("q")  # file offset and record length as one entry (format.pack_entry)
        self.b_end = array("q")  # messages of the queue that start in this block or before it
        self.b_count = array("i")  # messages that start in this block
        self.b_next = array("i")  # next block of the same queue, -1 if none
        self.new_qids = array("i")  # the queue of each block sealed since the checkpoint
        self.big: dict[int, array] = {}  # qid -> block ids, for queues with many blocks (made when read)
        self.cursors: dict[int, tuple] = {}  # qid -> (next message, block where it starts)
        self.cache: dict[int, tuple] = {}  # block id -> the block split into messages (reads.Decoded)
        self.cache_order: list[int] = []  # the block ids of the cache in a ring, evicted oldest first
        self.cache_next = 0  # where the ring holds the oldest, once it is full

    def _forget(self) -> None:
        """Let go of the directory, the index and the caches (about 100 bytes a queue), so that a closed
        handle someone still holds costs no memory; every use of a closed shard checks ``closed`` first."""
        self._empty_index()
        self.pending, self.spill_pending = [], []
        self.chunk, self.chunk_fill = None, 0
        self.stage_buf, self.stage_qids = bytearray(), array("i")


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


import_c_accel(globals(), "mqdb._c_shard")
