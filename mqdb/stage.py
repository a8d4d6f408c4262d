"""The staging log of a shard: where every put lands first.

A put appends its frame (varint length + bytes) to the shard's staging buffer and its queue id to a
column beside it: a few C-level appends, whatever the number of queues. Full buffers go to the
shard's staging file as chunks. The staged messages are *distributed* to their queues' blocks all at
once — on flush, when a reader asks for a queue that has staged messages, or when the staging file
outgrows its share of ``spill_bytes`` — so each queue gets its messages in one run instead of one
message at a time: a million queues of ten messages each become a million blocks written once, not
ten million small appends competing for the write-buffer pool.

Staging chunks in ``NNN.stage`` (scratch: emptied by every distribution, created empty on open):
    chunk := u32 messages  u32 frame_bytes  u32 qid[messages]  frame{messages}

Every put passes through :func:`put`, and a flush of a million queues through the loop of
:func:`distribute` a million times, so the build also compiles this module into ``mqdb._c_stage``
(C types in ``_c_stage.pxd``; :mod:`mqdb._accel`).
"""

import os
import struct
from array import array

try:
    import cython
except ImportError:  # installed without Cython: runs as the Python source, as it does without the twin
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

from ._accel import import_c_accel
from .coding import FrameError, decode_varint, encode_varint, measure_runs, place_runs
from .columns import append, item, put_item
from .errors import CorruptionError

CHUNK = struct.Struct("<II")
CHUNK_BYTES = 256 << 10  # staging buffer size before it goes to the file (smaller if the stage's share is small)


def chunk_bytes(spill_limit: int) -> int:
    return min(CHUNK_BYTES, max(4096, spill_limit // 8))


def put(sh, qid: int, msg) -> int:
    """Stage a message of any size for queue ``qid``; return its offset in the queue."""
    n = len(msg)
    buf = sh.stage_buf
    if n < 0x80:  # one length byte
        buf.append(n)
    else:
        head = encode_varint(n)
        buf += head
        sh.stage_varint_extra += len(head) - 1
    buf += msg
    staged = sh.staged
    if cython.compiled:  # the same four lines as C reads and writes of the columns' memory
        append(sh.stage_qids, qid)
        c = item(staged, qid)
        put_item(staged, qid, c + 1)
        c += item(sh.count, qid)
    else:
        sh.stage_qids.append(qid)
        c = staged[qid]
        staged[qid] = c + 1
        c += sh.count[qid]
    sh.message_total += 1
    if len(buf) >= sh.stage_chunk:
        write_chunk(sh)
    return c


def write_chunk(sh) -> None:
    """Move the staging buffer to the staging file (and distribute if the file is over its share)."""
    qids = sh.stage_qids
    if not qids:
        return
    buf = sh.stage_buf
    parts = [CHUNK.pack(len(qids), len(buf)), qids, buf]
    size = CHUNK.size + 4 * len(qids) + len(buf)
    done = os.pwritev(sh.stage_fd, parts, sh.stage_tail)
    if done != size:
        os.pwrite(sh.stage_fd, b"".join(bytes(p) for p in parts)[done:], sh.stage_tail + done)
    sh.stage_tail += size
    sh.stage_frames += len(buf)
    sh.stage_buf = bytearray()
    sh.stage_qids = array("i")
    sh.grew = True
    if sh.stage_tail > sh.spill_limit:
        distribute(sh)


def _chunks(sh):
    """(queue ids, frames, offset of the frames in the file or -1) of every staged chunk, the file's
    first, then the buffer's."""
    pos = 0
    fd = sh.stage_fd
    while pos < sh.stage_tail:
        count, size = CHUNK.unpack(os.pread(fd, CHUNK.size, pos))
        qids = array("i")
        qids.frombytes(os.pread(fd, 4 * count, pos + CHUNK.size))
        frames = os.pread(fd, size, pos + CHUNK.size + 4 * count)
        yield qids, frames, pos + CHUNK.size + 4 * count
        pos += CHUNK.size + 4 * count + size
    if sh.stage_qids:
        yield sh.stage_qids, bytes(sh.stage_buf), -1


def _stage_error(sh, where: int, e: FrameError, what: str) -> CorruptionError:
    """The CorruptionError for a FrameError in a chunk whose frames start at ``where`` in the staging
    file (-1: the chunk still in memory, which has no file offset)."""
    return CorruptionError(sh.stage_path, where + e.offset if where >= 0 else -1, f"{what} ({e.reason})")


def distribute(sh, sealing: bool = False) -> None:
    """Append every staged message to its queue's blocks, in put order per queue; empty the stage.

    ``sealing``: every unfinished block is sealed right after (a commit), so the run of a queue that
    has no unfinished block and fits one block becomes its record at once, without passing through
    the write-buffer pool: a flush of a million short queues then touches none of the pool's memory.
    """
    if not sh.stage_qids and not sh.stage_tail:
        return
    # A counting sort: measure every queue's run, lay the runs out side by side in the order of each
    # queue's first staged frame, then copy each frame to its place. No object per message. The chunks
    # are read one at a time, once to measure and once more to place: the stage is never in memory
    # twice over (its chunks and the runs laid out), only the runs and one chunk.
    sizes = sh.run_bytes
    order = array("i")
    try:
        for qids, frames, where in _chunks(sh):
            try:
                measure_runs(qids, frames, sizes, order)
            except FrameError as e:
                raise _stage_error(sh, where, e, "staged frames do not parse") from None
        total = 0
        for i in range(len(order)):
            qid = order[i]
            n = sizes[qid]
            sizes[qid] = total  # where the run of qid starts
            total += n
        out = bytearray(total)
        for qids, frames, where in _chunks(sh):
            try:
                place_runs(qids, frames, out, sizes)  # the frames measured above, read again
            except FrameError as e:  # only if the staging file changed under the shard's lock
                raise _stage_error(sh, where, e, "staged frames changed while read") from None
    except BaseException:
        for i in range(len(order)):
            sizes[order[i]] = 0
        raise
    view = memoryview(out)
    varint_extra = sh.varint_extra + sh.stage_varint_extra
    pmax = sh.payload_max
    fill = sh.fill
    count = sh.count
    staged = sh.staged
    start = 0
    for i in range(len(order)):
        if cython.compiled:  # the lines of the else branch, as C reads and writes of the columns' memory
            qid = item(order, i)
            stop = item(sizes, qid)
            put_item(sizes, qid, 0)
            nframes = item(staged, qid)
            put_item(staged, qid, 0)
            filled = item(fill, qid)
        else:
            qid = order[i]
            stop = sizes[qid]  # place_runs left it at the end of the run
            sizes[qid] = 0
            nframes = staged[qid]
            staged[qid] = 0
            filled = fill[qid]
        size = stop - start
        if sealing and not filled and size <= pmax:  # a run of one block, sealed at once
            if cython.compiled:
                put_item(count, qid, item(count, qid) + nframes)
            else:
                count[qid] += nframes
            sh.seal_bytes(qid, out, False, start, stop)
        elif filled + size <= pmax:  # the whole run fits the unfinished block
            sh.write_frames(qid, view[start:stop])
            count[qid] += nframes
        else:  # the run goes past the unfinished block: see _append_run
            _append_run(sh, qid, out, view, start, stop, filled)
        start = stop
    sh.varint_extra = varint_extra  # every staged length prefix is now in a block, counted once
    if sh.stage_tail:
        os.ftruncate(sh.stage_fd, 0)
    sh.stage_tail = sh.stage_frames = sh.stage_varint_extra = 0
    sh.stage_buf = bytearray()
    sh.stage_qids = array("i")


def _append_run(sh, qid: int, out: bytearray, view: memoryview, start: int, stop: int, filled: int) -> None:
    """Append the run of frames ``out[start:stop]`` to the blocks of ``qid``, whose unfinished block
    holds ``filled`` bytes, with the blocks that Shard.append would make of them one message at a time.
    A frame that fits the unfinished block whole is only bytes added to it, as append adds them: such
    frames go in spans, one Shard.write_frames per span; a message that would cross the block's end
    goes through Shard.append, which seals the block (and any it fills whole) as it writes."""
    pmax = sh.payload_max
    count = sh.count
    a = p = start  # the span of whole frames not yet written: a..p
    k = 0  # its frames
    while p < stop:
        n = out[p]
        if n < 0x80:
            q = p + 1
        else:
            n, q = decode_varint(out, p)
        end = q + n
        if filled + end - p <= pmax:  # the frame fits whole
            filled += end - p
            k += 1
            p = end
            continue
        if k:
            sh.write_frames(qid, view[a:p])
            count[qid] += k
            k = 0
        sh.append(qid, view[q:end])
        filled = sh.fill[qid]
        a = p = end
    if k:
        sh.write_frames(qid, view[a:p])
        count[qid] += k


import_c_accel(globals(), "mqdb._c_stage")
