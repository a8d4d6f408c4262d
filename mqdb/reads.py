"""The read path of a shard: find the block by prefix sums, read it in one I/O, split its frames.

Called with the shard lock held. A read finds the block where the first wanted message starts: a
random read by bisecting the running message counts (or a short walk), a sequential reader (one that
asks for the message right after its previous read) from the cursor its previous read left; a
queue's last block is found from the queue's own columns, without a walk. The block is read and
verified (:func:`_load`). A read that stops before the block's last message splits it whole
(:func:`mqdb.coding.split`) and keeps it so in a small per-shard cache, since the reader will most
likely come back for the rest: every further read of the block is a list slice. A read that takes
the block to its end steps over the frames before the first it wants and splits only the rest, and
keeps nothing: no reader needs the block again soon, and a read of a million short queues would
otherwise only churn the cache (and the garbage collector, through the lists it holds). For a
sequential reader the queue's next blocks are announced to the kernel (``POSIX_FADV_WILLNEED``) so
they are read ahead.

The build also compiles this module into ``mqdb._c_reads`` (:mod:`mqdb._accel`): a get is a dozen
Python-level calls and attribute reads, and running them compiled takes a sixth or so off a random get.
The columns it reads go through :func:`mqdb.columns.item`, a C call in the twin.
"""

import os
from array import array
from bisect import bisect_right
from typing import NamedTuple

import lz4.block

try:
    import cython
except ImportError:  # installed without Cython: runs as the Python source, as it does without the twin
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

from ._accel import import_c_accel
from .coding import FrameError, checksum_at, le_uint, split
from .coding import skip as skip_frames
from .columns import item
from .errors import ClosedError, CorruptionError
from .format import ENTRY_LENGTH, ENTRY_SHIFT, FLAG_LZ4, KIND_BLOCK, RECORD, RECORD_SIZE, entry_offset
from .stage import distribute

OPEN = -1  # the block id that stands for a queue's unfinished block
BIG_QUEUE_BLOCKS = 8  # past this many blocks a queue keeps an array of its block ids, once read
_MAX_CURSORS = 1 << 16
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)
_unpack_record = RECORD.unpack_from


def locate(sh, qid: int, k: int) -> int:
    """Id of the block where message ``k`` of ``qid`` starts (OPEN if in the unfinished block)."""
    b_end = sh.b_end
    last = item(sh.last_b, qid)
    if last < 0:
        return OPEN
    end = item(b_end, last)
    if k >= end:
        return OPEN
    if k >= end - item(sh.b_count, last):  # in the last block, as in every queue of one block
        return last
    ids = sh.big.get(qid)
    if ids is None:
        b = item(sh.first_b, qid)
        nxt = sh.b_next
        for _ in range(BIG_QUEUE_BLOCKS):
            if item(b_end, b) > k:
                return b
            b = item(nxt, b)
        ids = sh.big[qid] = array("i", sh.block_ids(qid))  # a long queue: bisect its blocks from now on
    return ids[bisect_right(ids, k, key=b_end.__getitem__)]


def read_queue(sh, raw: bytes, offset: int, num: int) -> list[bytes] | None:
    """DB.get in shard ``sh`` (its lock held): up to ``num`` messages from ``offset`` on of the queue
    whose UTF-8 name is ``raw``, or None if the shard has no such queue. One call from DB.get, so the
    compiled twin finds the queue and reads it without going back to Python in between."""
    if sh.closed:
        raise ClosedError()
    directory = sh.directory  # a C method call in the twin
    # read() reads the queue's count and last block first, and locate() that block's columns
    qid = directory.find(raw, (sh.count,), (sh.last_b, sh.b_end, sh.b_count, sh.b_entry))
    return read(sh, qid, offset, num) if qid >= 0 else None


def read(sh, qid: int, offset: int, num: int) -> list[bytes]:
    """read_queue once the queue is found (whose lookup has started the cache misses of the columns read here)."""
    count = item(sh.count, qid)
    if (sh.stage_qids or sh.stage_tail) and sh.staged[qid]:  # some of its messages are still staged
        distribute(sh)
        count = item(sh.count, qid)
    if offset >= count or num <= 0:
        return []
    end = offset + num if offset + num < count else count
    cursors = sh.cursors
    cursor = cursors.get(qid) if cursors else None  # empty unless reads stopped inside sealed blocks
    try:
        if cursor is not None and cursor[0] == offset:  # a sequential reader: read its next blocks ahead
            return _messages(sh, qid, offset, end, cursor[1], sh.readahead)
        # offset 0 is most likely a reader starting at the head of the queue: read ahead for it too
        return _messages(sh, qid, offset, end, locate(sh, qid, offset), 0 if offset else sh.readahead)
    except _BadFrames as e:
        start, b, err = e.args
        where = f"payload byte {err.offset - start}" if b >= 0 else f"byte {err.offset} of the unfinished block"
        raise CorruptionError(
            sh.data_path, _where(sh, b), f"frames do not parse ({err.reason} at {where})", sh.name(qid)
        ) from None


class _BadFrames(Exception):
    """A FrameError with the block it came from: (where its payload starts, block id, error)."""


# The two records of every read are plain tuples, made and unpacked in C by the compiled twin (a
# NamedTuple costs a type call to make, and every read makes both, once per block not cached):
#
# Block, a block of a queue loaded and verified (_load): (raw, start, skip, count, first)
#   raw    the buffer that holds the payload: the record itself unless it was compressed
#   start  where the payload starts in ``raw``
#   skip   leading payload bytes that finish the message the previous block left unfinished
#   count  messages that start in the block
#   first  the queue index of the first of them
#
# Decoded, a block split into messages as every reader keeps it in the cache (_decoded):
# (msgs, first, tail, missing)
#   msgs     the whole messages that start in the block
#   first    the queue index of the first of them
#   tail     the start of a last message that goes on in the next block, or None
#   missing  bytes of that message still to come
Block = tuple
Decoded = tuple


class Continued(NamedTuple):
    """A message finished from the blocks after the one where it starts."""

    msg: bytes
    b: int  # the block where it ends


def _messages(sh, qid: int, k: int, end: int, b: int, ahead: int) -> list[bytes]:
    """Messages ``k`` up to ``end`` of ``qid``, the first of them starting in block ``b``; ``ahead``:
    blocks of the queue to announce to the kernel after each block loaded."""
    out = None
    cache = sh.cache
    while True:
        hit = cache.get(b) if b >= 0 and cache else None
        if hit is None:
            raw, start, skip, count, first = _load(sh, qid, b)
            # blocks after b to read ahead; none after the queue's last (whose id is in a cache line
            # the read has just used: the next-block column would cost a cache miss of its own)
            if ahead and b >= 0 and _WILLNEED is not None and b != item(sh.last_b, qid):
                _readahead(sh, b, ahead)
            if end - first < count:  # the read stops before the block's last message: split it all
                hit = _decoded(sh, b, raw, start, skip, count, first)  # and keep it, for the next read
            else:  # the read takes the block to its end: split just what it takes, keep nothing
                i = k - first
                if out is None:
                    out = []
                try:
                    p = split(raw, skip_frames(raw, start + skip, i), count - i, out)
                except FrameError as e:
                    raise _BadFrames(start, b, e) from None
                k = first + count
                if p > len(raw):  # the block's last message goes on in the next blocks
                    cont = _continued(sh, qid, b, out.pop(), p - len(raw))
                    out.append(cont.msg)
                    b = cont.b
                    if k >= end:
                        break
                    continue
                # where message k starts, the reader's next block: the unfinished one after the last
                b = OPEN if b < 0 or b == item(sh.last_b, qid) else item(sh.b_next, b)
                if k >= end:
                    break
                continue
        else:
            sh.cache_hits += 1
        msgs, first, tail, missing = hit
        i = k - first
        take = msgs[i : i + end - k]  # a new list: the cached one stays as it is
        if out is None:  # most reads take all they want from one block
            out = take
        else:
            out += take
        k += len(take)
        if k >= end:
            break
        if tail is not None and k == first + len(msgs):  # the block's last message goes on
            cont = _continued(sh, qid, b, tail, missing)
            out.append(cont.msg)
            b = cont.b
            k += 1
            if k >= end:
                break
            continue
        b = _after(sh, qid, b)
    _remember(sh, qid, k, b)
    return out


def _remember(sh, qid: int, k: int, b: int) -> None:
    cursors = sh.cursors
    if b >= 0:
        if len(cursors) >= _MAX_CURSORS:
            cursors.clear()
        cursors[qid] = (k, b)
    elif cursors and qid in cursors:
        del cursors[qid]


def _decoded(sh, b: int, raw: bytes, start: int, skip: int, count: int, first: int) -> Decoded:
    """Block ``b``, loaded (:data:`Block`), split into messages; kept in the shard's cache if sealed."""
    msgs: list[bytes] = []
    try:
        p = split(raw, start + skip, count, msgs)
    except FrameError as e:
        raise _BadFrames(start, b, e) from None
    over = p - len(raw)
    hit = (msgs, first, msgs.pop(), over) if over > 0 else (msgs, first, None, 0)
    if b < 0 or not sh.cache_blocks:
        return hit
    cache = sh.cache
    order = sh.cache_order  # the cached block ids, a ring: the oldest goes first
    if len(order) < sh.cache_blocks:
        order.append(b)
    else:
        i = sh.cache_next
        del cache[order[i]]
        order[i] = b
        sh.cache_next = i + 1 if i + 1 < len(order) else 0
    cache[b] = hit
    return hit


def _continued(sh, qid: int, b: int, head, need: int) -> Continued:
    """Finish a message whose first ``head`` bytes are in block ``b`` and ``need`` bytes are still to come."""
    parts = [head]
    while True:
        b = _after(sh, qid, b)
        raw, start, skip = _load(sh, qid, b)[:3]
        if need <= skip:
            parts.append(raw[start : start + need])
            return Continued(b"".join(parts), b)
        if start + skip != len(raw):
            raise CorruptionError(sh.data_path, _where(sh, b), "a continued message is cut", sh.name(qid))
        parts.append(raw[start:])
        need -= skip


def _after(sh, qid: int, b: int) -> int:
    if b == OPEN:
        raise CorruptionError(sh.data_path, _where(sh, sh.last_b[qid]), "a message runs past the queue", sh.name(qid))
    return item(sh.b_next, b)


def _where(sh, b: int) -> int:
    return entry_offset(item(sh.b_entry, b)) if b >= 0 else -1


def _load(sh, qid: int, b: int) -> Block:
    """Block ``b`` of ``qid``, read and verified (or the unfinished block, for OPEN)."""
    if b == OPEN:
        sealed = sh.sealed_messages(qid)
        return (sh.open_bytes(qid), 0, sh.skip[qid], sh.count[qid] - sealed, sealed)
    bcount = item(sh.b_count, b)
    entry = item(sh.b_entry, b)
    offset = entry >> ENTRY_SHIFT
    size = entry & ENTRY_LENGTH
    if offset + size > sh.written:
        sh.write_pending()
    rec = _pread(sh.fd, size, offset)
    sh.block_reads += 1
    if len(rec) != size:
        raise CorruptionError(sh.data_path, offset, f"block cut short ({len(rec)} of {size} bytes)", sh.name(qid))
    if size < RECORD_SIZE:
        raise CorruptionError(sh.data_path, offset, f"the index gives a block of {size} bytes", sh.name(qid))
    if cython.compiled:  # the header read in place, without a tuple of seven ints
        cs, kind, flags, got_qid = le_uint(rec, 0, 4), rec[4], rec[5], le_uint(rec, 6, 4)
        psize, skip, got_count = le_uint(rec, 10, 2), le_uint(rec, 12, 2), le_uint(rec, 14, 2)
    else:
        cs, kind, flags, got_qid, psize, skip, got_count = _unpack_record(rec)
    if checksum_at(rec, 4, size) != cs:
        raise CorruptionError(sh.data_path, offset, "block checksum mismatch", sh.name(qid))
    if kind != KIND_BLOCK or got_qid != qid or psize + RECORD_SIZE != size or got_count != bcount:
        raise CorruptionError(sh.data_path, offset, "the index and the block header disagree", sh.name(qid))
    if flags & FLAG_LZ4:
        return (_decompress(sh, qid, offset, rec), 0, skip, bcount, item(sh.b_end, b) - bcount)
    return (rec, RECORD_SIZE, skip, bcount, item(sh.b_end, b) - bcount)


def _pread(fd: int, size: int, offset: int) -> bytes:
    """``os.pread``. The compiled twin calls the C function, the GIL released as os.pread releases it,
    without a call through Python and its arguments; both raise OSError and retry on EINTR alike."""
    if cython.compiled:
        return _c_pread(fd, size, offset)  # noqa: F821 (a C function of _c_reads.pxd)
    return os.pread(fd, size, offset)


def _decompress(sh, qid: int, offset: int, rec: bytes) -> bytes:
    raw_len = int.from_bytes(rec[RECORD_SIZE : RECORD_SIZE + 2], "little")
    try:
        raw = lz4.block.decompress(rec[RECORD_SIZE + 2 :], uncompressed_size=raw_len)
    except lz4.block.LZ4BlockError as e:
        raise CorruptionError(sh.data_path, offset, f"lz4 block does not decompress ({e})", sh.name(qid)) from None
    if len(raw) != raw_len:
        raise CorruptionError(sh.data_path, offset, "lz4 block has the wrong length", sh.name(qid))
    return raw


def _readahead(sh, b: int, ahead: int) -> None:
    nxt = sh.b_next
    for _ in range(ahead):
        b = item(nxt, b)
        if b < 0 or b in sh.cache:
            return
        entry = item(sh.b_entry, b)
        offset = entry >> ENTRY_SHIFT
        if offset >= sh.written:
            return
        os.posix_fadvise(sh.fd, offset, entry & ENTRY_LENGTH, _WILLNEED)
        sh.readaheads += 1


import_c_accel(globals(), "mqdb._c_reads")
