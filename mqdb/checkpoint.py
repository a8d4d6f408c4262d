"""The index checkpoint (``NNN.idx``) and the names file (``NNN.names``) of a shard. See FORMAT.md.

A checkpoint is a base and the deltas appended after it. The base is every column of the shard's
sparse index and of its queue directory as typed arrays, one checksummed region each, so loading it
is one read, a checksum and a copy per region, with no work per queue or block. A commit that
changed the shard appends a delta: the names and blocks it added. Once the deltas reach a share of
the base, the next commit writes a new base (temporary file, rename) instead.
"""

import os
import struct
import sys
import time
import zlib
from array import array

import lz4.block

from .coding import VarintError, checksum, decode_varint, encode_varint
from .errors import FormatError
from .format import (
    DELTA,
    DELTA_SIZE,
    INDEX_HEADER,
    INDEX_HEADER_SIZE,
    INDEX_MAGIC,
    INDEX_VERSION,
    INDEX_VERSIONS_READ,
    NAMES_VERSION,
    REGION,
    REGION_LZ4,
    REGION_ZLIB,
    REGIONS,
)

_SWAP = sys.byteorder != "little"  # the file is little-endian; arrays are native
DELTA_MIN_BLOCKS = 1024  # deltas may list this many blocks (or names) before a new base is due ...
DELTA_SHARE = 16  # ... or one block (or name) in this many of the base's, if that is more


class Checkpoint:
    """What an index checkpoint holds: totals, the queue directory (``slots``, ``name_offset``),
    per queue its message count and first and last block, and per block (in file order) its entry
    (file offset and record length, format.pack_entry), the messages of its queue up to its end,
    the messages starting in it and the next block of its queue.

    The tools see the blocks as ``b_qid`` (the queue of each block, derived from the block chains when
    first asked for), ``b_entry`` and ``b_count``; a checkpoint whose blocks were seen that way is
    written from those three columns alone (its chains and counts are derived from them again).
    """

    __slots__ = ("data_len", "names_len", "seq", "messages", "payload", "raw", "stored", "flushed_ns", "names_sum",
                 "slots", "name_offset", "count", "first_block", "last_block", "entry", "end", "block_count",
                 "next_block", "base_queues", "base_blocks", "base_len", "file_len", "delta_stop",
                 "_owners")  # fmt: skip

    def __init__(self):
        self.data_len = self.names_len = self.seq = 0
        self.messages = self.payload = self.raw = self.stored = self.flushed_ns = self.names_sum = 0
        self.slots = array("i")
        self.name_offset, self.count = array("q"), array("q")
        self.first_block, self.last_block = array("i"), array("i")
        self.entry, self.end = array("q"), array("q")
        self.block_count, self.next_block = array("i"), array("i")
        self.base_queues = self.base_blocks = self.base_len = self.file_len = 0
        self.delta_stop: str | None = None  # why the deltas were not read to the end of the file
        self._owners = None

    @property
    def queues(self) -> int:
        return len(self.name_offset)

    @property
    def blocks(self) -> int:
        return len(self.entry)

    @property
    def b_qid(self) -> array:
        if self._owners is None:
            self._owners = owners(self.first_block, self.next_block, len(self.entry))
        return self._owners

    @property
    def b_entry(self) -> array:
        _ = self.b_qid
        return self.entry

    @property
    def b_count(self) -> array:
        _ = self.b_qid
        return self.block_count


def owners(first_block, next_block, blocks: int) -> array:
    """The queue of every block, from the block chains."""
    out = array("i", [-1]) * blocks
    for qid, b in enumerate(first_block):
        while b >= 0:
            out[b] = qid
            b = next_block[b]
    return out


def link(cp: Checkpoint, qid: int, entry: int, bcount: int) -> None:
    """Append a block of ``qid`` to the columns of ``cp``."""
    bid = len(cp.entry)
    last = cp.last_block[qid]
    end = (cp.end[last] if last >= 0 else 0) + bcount
    cp.entry.append(entry)
    cp.end.append(end)
    cp.block_count.append(bcount)
    cp.next_block.append(-1)
    if last >= 0:
        cp.next_block[last] = bid
    else:
        cp.first_block[qid] = bid
    cp.last_block[qid] = bid
    cp.count[qid] = end


def _relink(cp: Checkpoint) -> None:
    qids, entries, counts = cp._owners, array("q", cp.entry), array("i", cp.block_count)
    n = len(cp.name_offset)
    cp.count, cp.first_block, cp.last_block = array("q", bytes(8 * n)), array("i", [-1]) * n, array("i", [-1]) * n
    cp.entry, cp.end, cp.block_count, cp.next_block = array("q"), array("q"), array("i"), array("i")
    for qid, entry, bcount in zip(qids, entries, counts, strict=True):
        link(cp, qid, entry, bcount)
    cp._owners = None


def _columns(cp: Checkpoint) -> list:
    return [getattr(cp, name) for name, _, _ in REGIONS]


# --- writing --------------------------------------------------------------------------------------
def write(path: str, shard: int, cp: Checkpoint, sync: bool) -> int:
    """Write ``cp`` as a new base atomically (a temporary file, then rename); return its length."""
    if cp._owners is not None:
        _relink(cp)
    parts = []
    body_len = 0
    for (_, typecode, _), col in zip(REGIONS, _columns(cp), strict=True):
        col = col if isinstance(col, array) and col.typecode == typecode else array(typecode, col)
        if _SWAP:
            col = array(typecode, col)
            col.byteswap()
        plain = col.tobytes()
        stored, flags = _pack(plain)
        head = bytearray(REGION.pack(0, flags, len(plain), len(stored)))
        struct.pack_into("<I", head, 0, checksum(bytes(head[4:]) + stored))
        parts += [head, stored]
        body_len += len(head) + len(stored)
    header = bytearray(INDEX_HEADER.pack(
        INDEX_MAGIC, INDEX_VERSION, shard, 0, cp.data_len, cp.names_len, cp.seq, cp.queues, cp.blocks,
        cp.messages, cp.payload, cp.raw, cp.stored, cp.flushed_ns or time.time_ns(), body_len, len(cp.slots),
        cp.names_sum,
    ))  # fmt: skip
    struct.pack_into("<I", header, 12, checksum(bytes(header[16:])))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        for part in parts:
            f.write(part)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    return INDEX_HEADER_SIZE + body_len


def _pack(plain: bytes) -> tuple[bytes, int]:
    """(stored bytes, region flags) of a column: LZ4 when it saves an eighth or more; zlib (level 1)
    instead when LZ4 leaves more than half and zlib is smaller. LZ4 is for the columns of runs (counts,
    ends, links), zlib for those of spread values (the name table, offsets, block ids, entries), where
    LZ4 finds few repeats and zlib's entropy coding halves them again."""
    if len(plain) < 64:
        return plain, 0
    stored, flags = plain, 0
    packed = lz4.block.compress(plain, store_size=False)
    if len(packed) < len(plain) - len(plain) // 8:
        stored, flags = packed, REGION_LZ4
    if 2 * len(stored) > len(plain):
        packed = zlib.compress(plain, 1)
        if len(packed) < len(stored):
            stored, flags = packed, REGION_ZLIB
    return stored, flags


def append(path: str, at: int, totals: tuple, names_sum: int, name_offset, qids, entries, counts, sync: bool) -> int:
    """Append a delta at ``at`` (the end of the checkpoint's valid bytes); return the new end.

    ``totals``: (data_len, names_len, seq, queues, blocks, messages, payload, raw, stored, flushed_ns)
    after the commit; then the names and blocks it added."""
    cols = [array("q", name_offset), array("i", qids), array("q", entries), array("i", counts)]
    if _SWAP:
        for col in cols:
            col.byteswap()
    body = b"".join(col.tobytes() for col in cols)
    rec = bytearray(DELTA.pack(0, DELTA_SIZE - 8 + len(body), *totals, names_sum))
    rec += body
    struct.pack_into("<I", rec, 0, checksum(memoryview(rec)[4:]))
    fd = os.open(path, os.O_WRONLY)
    try:
        if os.fstat(fd).st_size > at:
            os.ftruncate(fd, at)  # a delta cut short by a crash, or deltas no longer backed by data
        os.pwrite(fd, rec, at)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return at + len(rec)


# --- reading --------------------------------------------------------------------------------------
def read(path: str, shard: int, names: bytes | None = None, data_size: int | None = None) -> Checkpoint:
    """Read a checkpoint: its base, verified region by region, then each delta that is whole, passes
    its checksum and is backed by the files (the data file holds ``data_size`` bytes, the names file
    begins with ``names``). Raise FormatError naming the file (and the offset) if the base is damaged."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < INDEX_HEADER_SIZE:
        raise FormatError(f"{path}: index header cut short")
    (magic, version, got_shard, header_sum, data_len, names_len, seq, queues, blocks, messages, payload, raw, stored,
     flushed_ns, body_len, nslots, names_sum) = INDEX_HEADER.unpack_from(data)  # fmt: skip
    if magic != INDEX_MAGIC or version not in INDEX_VERSIONS_READ or got_shard != shard:
        raise FormatError(f"{path}: not a version-{INDEX_VERSION} (or -2) index of shard {shard}")
    if checksum(data[16:INDEX_HEADER_SIZE]) != header_sum:
        raise FormatError(f"{path}: index header fails its checksum")
    if len(data) < INDEX_HEADER_SIZE + body_len:
        raise FormatError(f"{path}: index cut short ({len(data)} of {INDEX_HEADER_SIZE + body_len} bytes)")
    if data_size is not None and data_len > data_size or names is not None and names_len > len(names):
        raise FormatError(f"{path}: covers more than the data files hold")
    if names is not None and checksum(names[:names_len]) != names_sum:
        raise FormatError(f"{path}: the names file does not match the index (checksum of its first {names_len} bytes)")
    if nslots & (nslots - 1) or nslots < 3 * queues / 2:
        raise FormatError(f"{path}: a name table of {nslots} slots cannot hold {queues} queues")
    cp = Checkpoint()
    cp.data_len, cp.names_len, cp.seq, cp.messages, cp.payload = data_len, names_len, seq, messages, payload
    cp.raw, cp.stored, cp.flushed_ns, cp.names_sum = raw, stored, flushed_ns, names_sum
    items = {"slots": nslots, "queues": queues, "blocks": blocks}
    pos = INDEX_HEADER_SIZE
    view = memoryview(data)
    for name, typecode, kind in REGIONS:
        col, pos = _region(path, view, pos, INDEX_HEADER_SIZE + body_len, name, typecode, items[kind], version)
        setattr(cp, name, col)
    if pos != INDEX_HEADER_SIZE + body_len:
        raise FormatError(f"{path}: regions end at offset {pos}, the header says {INDEX_HEADER_SIZE + body_len}")
    cp.base_queues, cp.base_blocks, cp.base_len = queues, blocks, pos
    cp.file_len = _deltas(cp, view, pos, names, data_size)
    return cp


def _region(path: str, view, pos: int, limit: int, name: str, typecode: str, items: int, version: int):
    if pos + REGION.size > limit:
        raise FormatError(f"{path}: region {name} at offset {pos} cut short")
    cs, flags, raw_len, stored_len = REGION.unpack_from(view, pos)
    body = pos + REGION.size
    col = array(typecode)
    if raw_len != items * col.itemsize or body + stored_len > limit:
        raise FormatError(f"{path}: region {name} at offset {pos} has the wrong length")
    if checksum(view[pos + 4 : body + stored_len]) != cs:
        raise FormatError(f"{path}: region {name} at offset {pos} fails its checksum")
    stored = view[body : body + stored_len]
    if flags == REGION_LZ4:
        try:
            plain = lz4.block.decompress(stored, uncompressed_size=raw_len)
        except lz4.block.LZ4BlockError as e:
            raise FormatError(f"{path}: region {name} at offset {pos} does not decompress ({e})") from None
    elif flags == REGION_ZLIB and version >= 3:
        unpack = zlib.decompressobj()
        try:
            plain = unpack.decompress(stored, raw_len)
        except zlib.error as e:
            raise FormatError(f"{path}: region {name} at offset {pos} does not decompress ({e})") from None
        if not unpack.eof or unpack.unconsumed_tail or unpack.unused_data:
            raise FormatError(f"{path}: region {name} at offset {pos} does not decompress to its length")
    elif flags == 0:
        plain = stored
    else:
        raise FormatError(f"{path}: region {name} at offset {pos} has unknown flags {flags:#x}")
    if len(plain) != raw_len:
        raise FormatError(f"{path}: region {name} at offset {pos} has the wrong length")
    col.frombytes(plain)
    if _SWAP:
        col.byteswap()
    return col, body + stored_len


def _deltas(cp: Checkpoint, view, pos: int, names, data_size) -> int:
    """Apply the deltas from ``pos``; return where the last one applied ends."""
    end = len(view)
    start = pos
    reason = None
    while pos < end:
        reason = "cut short"
        if pos + DELTA_SIZE > end:
            break
        (cs, length, data_len, names_len, seq, queues, blocks, messages, payload, raw, stored, flushed_ns,
         names_sum) = DELTA.unpack_from(view, pos)  # fmt: skip
        new_q, new_b = queues - cp.queues, blocks - cp.blocks
        if new_q < 0 or new_b < 0 or length != DELTA_SIZE - 8 + 8 * new_q + 16 * new_b:
            reason = "its length does not match its counts"
            break
        if pos + 8 + length > end:
            break
        reason = "checksum mismatch"
        if checksum(view[pos + 4 : pos + 8 + length]) != cs or data_len < cp.data_len or names_len < cp.names_len:
            break
        reason = "it covers more than the data file holds"
        if data_size is not None and data_len > data_size:
            break
        reason = "the names it adds do not match the names file"
        if names is not None and (names_len > len(names) or checksum(names[cp.names_len : names_len]) != names_sum):
            break
        at = pos + DELTA_SIZE
        cols = []
        for typecode, n in (("q", new_q), ("i", new_b), ("q", new_b), ("i", new_b)):
            col = array(typecode)
            col.frombytes(view[at : at + n * col.itemsize])
            if _SWAP:
                col.byteswap()
            cols.append(col)
            at += n * col.itemsize
        offs, qids, entries, counts = cols
        if new_b and (max(qids) >= queues or min(qids) < 0):
            reason = "a block names a queue that does not exist"
            break
        cp.name_offset += offs
        cp.count.frombytes(bytes(8 * new_q))
        cp.first_block += array("i", [-1]) * new_q
        cp.last_block += array("i", [-1]) * new_q
        for qid, entry, bcount in zip(qids, entries, counts, strict=True):
            link(cp, qid, entry, bcount)
        if cp._owners is not None:
            cp._owners += qids
        cp.data_len, cp.names_len, cp.seq, cp.messages, cp.payload = data_len, names_len, seq, messages, payload
        cp.raw, cp.stored, cp.flushed_ns = raw, stored, flushed_ns
        pos += 8 + length
        reason = None
    if reason is not None:
        cp.delta_stop = f"delta at offset {pos} ({reason}; {pos - start} bytes of deltas before it were used)"
    return pos


def delta_room(base: int) -> int:
    """How many blocks (or names) the deltas after a base of ``base`` blocks (or names) may add."""
    return max(DELTA_MIN_BLOCKS, base // DELTA_SHARE)


def delta_due(cp_blocks: int, base_blocks: int, cp_queues: int, base_queues: int) -> bool:
    """Whether the checkpoint, now covering ``cp_blocks`` and ``cp_queues``, may take one more delta
    (else a new base is written)."""
    return cp_blocks - base_blocks <= delta_room(base_blocks) and cp_queues - base_queues <= delta_room(base_queues)


# --- names file: a 16-byte header, then varint(len) + UTF-8 name, one per queue in qid order ----
NAMES_MAGIC = b"MQDBNAM\x00"
NAMES_HEADER = struct.Struct("<8sHHI")


def names_header(shard: int) -> bytes:
    return NAMES_HEADER.pack(NAMES_MAGIC, NAMES_VERSION, shard, 0)


def encode_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    return encode_varint(len(raw)) + raw


def decode_names(path: str, data: bytes, shard: int) -> list[str]:
    """Names in qid order from the bytes of a names file (header included)."""
    if len(data) < NAMES_HEADER.size:
        raise FormatError(f"{path}: names header cut short")
    magic, version, got_shard, _ = NAMES_HEADER.unpack_from(data)
    if magic != NAMES_MAGIC or version != NAMES_VERSION or got_shard != shard:
        raise FormatError(f"{path}: not the version-{NAMES_VERSION} names file of shard {shard}")
    names = []
    pos = NAMES_HEADER.size
    end = len(data)
    while pos < end:
        start = pos
        try:
            n, pos = decode_varint(data, pos)
            if pos + n > end:
                raise ValueError("name runs past the end of the file")
            names.append(data[pos : pos + n].decode("utf-8"))
        except (ValueError, VarintError) as e:
            raise FormatError(f"{path}: bad name at offset {start}: {e}") from None
        pos += n
    return names
