"""Leaf helpers shared by every format: varints, the block checksum, and the per-message loops.

The loops that run once per message live here so that one module can be compiled for all of them:
stepping over and splitting the frames of a block (``frame := varint(len) byte{len}``, see FORMAT.md;
every read splits a block into its messages once and keeps them, :mod:`mqdb.reads`), and
:func:`measure_runs` and :func:`place_runs`, which sort the frames of staging chunks by queue.

This module is the implementation; the build also compiles it with Cython into its twin
``mqdb._c_coding`` (C types in ``_c_coding.pxd``), which takes over at import unless
``DUBBOMESH_PURE_PYTHON=1`` (:mod:`mqdb._accel`). Both give the same values and the same errors
(``tests/mqdb/test_twins.py``).

A frame walk checks what it reads: a frame that starts past the end of its buffer, a length that runs
past the end, or a length of more than :data:`MAX_LENGTH_BYTES` bytes raises :class:`FrameError` with
the offset of the frame in the buffer. Only the last frame a walk reads may run past the end of its
buffer (it goes on in the queue's next block): the position after it is then past the end, and the
message taken from it is cut at the end of the buffer.
"""

import struct

import mmh3

try:
    import cython
except ImportError:  # installed without Cython: runs as the Python source, as it does without the twin
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

from ._accel import import_c_accel
from .errors import Error, FrameError

__all__ = [
    "VarintError",
    "FrameError",
    "MAX_LENGTH_BYTES",
    "encode_varint",
    "decode_varint",
    "checksum",
    "checksum_at",
    "RECORD",
    "write_record",
    "le_uint",
    "skip",
    "split",
    "measure_runs",
    "place_runs",
]

#: At most this many bytes in the length of a frame (lengths below 2**56): a longer one is corrupt.
MAX_LENGTH_BYTES = 8

#: The header of a record of a data file, little-endian: checksum, kind, flags, qid, payload size,
#: skip, count (FORMAT.md). Defined here, beside :func:`write_record`, which the compiled twin runs as C
#: stores at these offsets; :mod:`mqdb.format` exports it with the rest of the data file's layout.
RECORD = struct.Struct("<IBBIHHH")
RECORD_SIZE = RECORD.size  # 16
_CHECKSUM = struct.Struct("<I")


class VarintError(Error):
    """A varint ran past its buffer or past 10 bytes."""


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low bits first, high bit set on all but the last byte."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(buf, pos: int) -> tuple[int, int]:
    """Return ``(value, next_pos)`` of the varint at ``buf[pos]``; raise VarintError if it is cut."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise VarintError("varint runs past the end of its buffer")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise VarintError("varint longer than 10 bytes")


def checksum(data) -> int:
    """32-bit checksum of a record: the low 32 bits of the first word of MurmurHash3_x64_128."""
    return mmh3.mmh3_x64_128_utupledigest(data, 0)[0] & 0xFFFFFFFF


def checksum_at(raw: bytes, start: int, end: int) -> int:
    """``checksum(raw[start:end])``. The compiled twin hashes the bytes where they lie, through the C
    function of the ``murmurhash`` package, instead of copying them and calling mmh3 from Python. A range
    outside ``raw`` is a ValueError in both builds."""
    if not 0 <= start <= end <= len(raw):
        raise ValueError(f"checksum of bytes {start}..{end} of a buffer of {len(raw)}")
    if cython.compiled and end - start < 0x7FFFFFFF:
        return _murmur_low32(raw, start, end)  # noqa: F821 (a C function of _c_coding.pxd)
    return checksum(raw[start:end])


def write_record(
    buf: bytearray, at: int, kind: int, flags: int, qid: int, skip: int, count: int, src, start: int, stop: int
) -> int:
    """Write at ``buf[at:]`` the record whose payload is ``src[start:stop]`` (``src`` bytes or a
    bytearray): its header (:data:`RECORD`), the payload, then in the header's first field the checksum
    of everything after that field; return where the record ends. Every record of a data file is
    written here, block and commit records alike. The compiled twin stores the fields, copies the
    payload and hashes it in C, with no object made. A field that does not fit, a range outside
    ``src`` or a record past the end of ``buf`` is a ValueError in both builds, with nothing written."""
    if type(buf) is not bytearray or not (type(src) is bytes or type(src) is bytearray):
        what = f"{type(buf).__name__} from {type(src).__name__}"
        raise TypeError(f"a record is written to a bytearray from bytes or a bytearray, not to a {what}")
    size = stop - start
    end = at + RECORD_SIZE + size
    if not (0 <= start <= stop <= len(src) and 0 <= at and end <= len(buf)):
        what = f"bytes {start}..{stop} of {len(src)}"
        raise ValueError(f"a record of {what} does not fit at {at} of a buffer of {len(buf)}")
    if not (0 <= kind <= 0xFF and 0 <= flags <= 0xFF and 0 <= qid <= 0xFFFFFFFF and size <= 0xFFFF):
        raise ValueError(f"record fields out of range: kind {kind}, flags {flags}, qid {qid}, size {size}")
    if not (0 <= skip <= 0xFFFF and 0 <= count <= 0xFFFF):
        raise ValueError(f"record fields out of range: skip {skip}, count {count}")
    if cython.compiled:
        _c_write_record(buf, at, kind, flags, qid, size, skip, count, src, start)  # noqa: F821 (_c_coding.pxd)
        return end
    RECORD.pack_into(buf, at, 0, kind, flags, qid, size, skip, count)
    buf[at + RECORD_SIZE : end] = memoryview(src)[start:stop]
    _CHECKSUM.pack_into(buf, at, checksum(memoryview(buf).toreadonly()[at + 4 : end]))
    return end


def le_uint(raw: bytes, at: int, n: int) -> int:
    """The unsigned little-endian integer of ``raw[at:at + n]`` (``n`` at most 8), read in place by the
    compiled twin; a range outside ``raw`` is a ValueError in both builds."""
    if not (0 <= at and 0 <= n <= 8 and at + n <= len(raw)):
        raise ValueError(f"bytes {at}..{at + n} of a buffer of {len(raw)}")
    value = 0
    for i in range(at + n - 1, at - 1, -1):
        value = (value << 8) | raw[i]
    return value


def _frame(raw: bytes, p: int, end: int) -> int:
    """The length of the frame at ``p`` and the bytes of its prefix, folded into one integer (a C
    integer in the compiled twin, no tuple): ``length * 16 + prefix_bytes``; raise FrameError if the
    frame does not parse."""
    if p >= end:
        raise FrameError(p, "a frame starts past the end of its buffer")
    size = raw[p]
    if size < 0x80:
        return (size << 4) | 1
    q = p + 1
    size &= 0x7F
    shift = 7
    while True:
        if q >= end:
            raise FrameError(p, "a frame length runs past the end of its buffer")
        b = raw[q]
        q += 1
        size |= (b & 0x7F) << shift
        if b < 0x80:
            return (size << 4) | (q - p)
        shift += 7
        if shift >= 7 * MAX_LENGTH_BYTES:
            raise FrameError(p, f"a frame length longer than {MAX_LENGTH_BYTES} bytes")


def skip(raw: bytes, p: int, n: int) -> int:
    """Step over ``n`` frames of ``raw`` from ``p``; return where the next one starts (past the end of
    ``raw`` when the last of them goes on in the next block)."""
    end = len(raw)
    for _ in range(n):
        size = raw[p] if p < end else 0x80  # a frame past the end: _frame raises
        if size < 0x80:
            p += 1 + size
        else:
            f = _frame(raw, p, end)
            p += (f & 15) + (f >> 4)
    return p


def split(raw: bytes, p: int, n: int, out: list) -> int:
    """Append the messages of ``n`` frames of ``raw`` from ``p`` to ``out``; return where the next frame
    starts. A position past the end of ``raw`` means the last message goes on in the next block: ``out``
    then ends with its first part."""
    end = len(raw)
    data = raw  # the compiled twin takes a C pointer to the bytes: each cut is one bytes object made
    for _ in range(n):
        size = raw[p] if p < end else 0x80
        if size < 0x80:
            p += 1
        else:
            f = _frame(raw, p, end)
            p += f & 15
            size = f >> 4
        stop = p + size
        out.append(data[p : stop if stop < end else end])  # p <= end: _frame checked the prefix
        p = stop
    return p


def measure_runs(qids, frames: bytes, sizes, order) -> None:
    """First pass of sorting the frames of staging chunks by queue (:func:`mqdb.stage.distribute`).

    ``frames`` holds one frame per queue id of ``qids``, in put order. Add the bytes of each frame,
    length prefix included, to ``sizes[qid]`` (a column with an item per queue of the shard, zero for
    every queue not yet seen), and append to ``order`` each queue id whose size was zero, so that
    ``order`` lists the queues in the order of their first frame. Raise FrameError if the chunk does
    not hold exactly those frames or names a queue id outside ``sizes``; ``sizes`` and ``order`` then
    hold the frames before the bad one."""
    end = len(frames)
    nq = len(sizes)
    p = 0
    for k in range(len(qids)):
        qid = qids[k]
        size = frames[p] if p < end else 0x80
        if size < 0x80:
            stop = p + 1 + size
        else:
            f = _frame(frames, p, end)
            stop = p + (f & 15) + (f >> 4)
        if stop > end:
            raise FrameError(p, "a staged frame runs past the end of its chunk")
        if qid < 0 or qid >= nq:
            raise FrameError(p, f"a staged frame names queue id {qid}, not one of the shard's {nq}")
        s = sizes[qid]
        if s == 0:
            order.append(qid)
        sizes[qid] = s + (stop - p)
        p = stop
    if p != end:
        raise FrameError(p, "a staging chunk holds more bytes than its frames")


def place_runs(qids, frames: bytes, out: bytearray, ends) -> None:
    """Second pass: copy each frame of a chunk that :func:`measure_runs` accepted to
    ``out[ends[qid]:]`` and advance ``ends[qid]`` past it. With ``ends[qid]`` set to where the run of
    each queue starts in ``out``, the chunks of a stage placed in order leave every queue's frames
    side by side in put order. Raise FrameError, having copied the frames before it, for a frame that
    does not parse or that would land outside ``out``."""
    end = len(frames)
    nq = len(ends)
    room = len(out)
    src = frames  # the compiled twin takes C pointers to both buffers and copies in C, no objects
    dst = out
    p = 0
    for k in range(len(qids)):
        qid = qids[k]
        size = frames[p] if p < end else 0x80
        if size < 0x80:
            n = 1 + size
        else:
            f = _frame(frames, p, end)
            n = (f & 15) + (f >> 4)
        if p + n > end or qid < 0 or qid >= nq or ends[qid] < 0 or ends[qid] + n > room:
            raise FrameError(p, "a staged frame does not fit the runs measured for its chunk")
        at = ends[qid]
        if cython.compiled:
            for i in range(n):
                dst[at + i] = src[p + i]
        else:
            out[at : at + n] = frames[p : p + n]
        ends[qid] = at + n
        p += n


import_c_accel(globals(), "mqdb._c_coding")
