"""The read path of a shard: find the block by prefix sums, read it in one I/O, walk its frames.

Called with the shard lock held. A reader that asks for the message right after its previous read
resumes from a cursor (no re-scan of the block), hits a small cache of verified blocks, and has the
queue's next blocks announced to the kernel (``POSIX_FADV_WILLNEED``) so they are read ahead.
"""

import os
from bisect import bisect_right

import lz4.block

from .coding import VarintError, checksum, decode_varint
from .errors import CorruptionError
from .format import FLAG_LZ4, KIND_BLOCK, RECORD, RECORD_SIZE

OPEN = -1  # the block id that stands for a queue's unfinished block
_MAX_CURSORS = 1 << 16
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)


def locate(sh, qid: int, k: int) -> int:
    """Id of the block where message ``k`` of ``qid`` starts (OPEN if in the unfinished block)."""
    b_end = sh.b_end
    last = sh.last_b[qid]
    if last < 0 or k >= b_end[last]:
        return OPEN
    ids = sh.big.get(qid)
    if ids is not None:
        return ids[bisect_right(ids, k, key=b_end.__getitem__)]
    b = sh.first_b[qid]
    nxt = sh.b_next
    while b_end[b] <= k:
        b = nxt[b]
    return b


def read(sh, qid: int, offset: int, num: int) -> list[bytes]:
    count = sh.count[qid]
    if offset >= count or num <= 0:
        return []
    end = min(count, offset + num)
    cursor = sh.cursors.get(qid)
    sequential = cursor is not None and cursor[0] == offset
    if sequential:
        b, p = cursor[1], cursor[2]
    else:
        b, p = locate(sh, qid, offset), -1
    out = []
    k = offset
    b_next = sh.b_next
    try:
        while k < end:
            raw, skip, bcount, first = _load(sh, qid, b, sequential)
            if p < 0:
                p = skip
                i = first
                while i < k:  # step over the messages before the offset
                    n = raw[p]
                    p = p + 1 + n if n < 0x80 else sum(decode_varint(raw, p))
                    i += 1
            last = first + bcount
            size = len(raw)
            while k < end and k < last:
                n = raw[p]
                if n < 0x80:
                    p += 1
                else:
                    n, p = decode_varint(raw, p)
                stop = p + n
                if stop <= size:
                    out.append(raw[p:stop])
                    p = stop
                    k += 1
                    continue
                parts = [raw[p:]]  # the message continues in the queue's following blocks
                need = stop - size
                while need > 0:
                    b = _after(sh, qid, b, b_next)
                    raw, skip, bcount, first = _load(sh, qid, b, sequential)
                    take = min(need, skip)
                    if take < need and skip != len(raw):
                        raise CorruptionError(sh.data_path, _where(sh, b), "a continued message is cut", sh.names[qid])
                    parts.append(raw[:take])
                    need -= take
                out.append(b"".join(parts))
                p = skip
                k += 1
                last = first + bcount
                size = len(raw)
            if k < end:
                b = _after(sh, qid, b, b_next)
                p = -1
    except (IndexError, VarintError) as e:
        raise CorruptionError(sh.data_path, _where(sh, b), f"frames do not parse ({e})", sh.names[qid]) from None
    cursors = sh.cursors
    if b >= 0:
        if len(cursors) >= _MAX_CURSORS:
            cursors.clear()
        cursors[qid] = (k, b, p)
    elif cursor is not None:
        del cursors[qid]
    return out


def _after(sh, qid: int, b: int, b_next) -> int:
    if b == OPEN:
        raise CorruptionError(sh.data_path, _where(sh, sh.last_b[qid]), "a message runs past the queue", sh.names[qid])
    return b_next[b]


def _where(sh, b: int) -> int:
    return sh.b_entry[b] >> 16 if b >= 0 else -1


def _load(sh, qid: int, b: int, sequential: bool):
    """(payload, skip, messages starting, index of the first of them) of block ``b`` of ``qid``."""
    if b == OPEN:
        raw = sh.open_bytes(qid)
        sealed = sh.sealed_messages(qid)
        return raw, sh.skip[qid], sh.count[qid] - sealed, sealed
    bcount = sh.b_count[b]
    first = sh.b_end[b] - bcount
    hit = sh.cache.get(b)
    if hit is not None:
        sh.counters["cache_hits"] += 1
        return hit[0], hit[1], bcount, first
    entry = sh.b_entry[b]
    offset = entry >> 16
    size = entry & 0xFFFF
    if offset + size > sh.written:
        sh.write_pending()
    rec = os.pread(sh.fd, size, offset)
    sh.counters["block_reads"] += 1
    path = sh.data_path
    name = sh.names[qid]
    if len(rec) != size:
        raise CorruptionError(path, offset, f"block cut short ({len(rec)} of {size} bytes)", name)
    cs, kind, flags, got_qid, psize, skip, got_count = RECORD.unpack_from(rec)
    if checksum(memoryview(rec)[4:]) != cs:
        raise CorruptionError(path, offset, "block checksum mismatch", name)
    if kind != KIND_BLOCK or got_qid != qid or psize + RECORD_SIZE != size or got_count != bcount:
        raise CorruptionError(path, offset, "the index and the block header disagree", name)
    if flags & FLAG_LZ4:
        raw_len = int.from_bytes(rec[RECORD_SIZE : RECORD_SIZE + 2], "little")
        try:
            raw = lz4.block.decompress(rec[RECORD_SIZE + 2 :], uncompressed_size=raw_len)
        except lz4.block.LZ4BlockError as e:
            raise CorruptionError(path, offset, f"lz4 block does not decompress ({e})", name) from None
        if len(raw) != raw_len:
            raise CorruptionError(path, offset, "lz4 block has the wrong length", name)
    else:
        raw = rec[RECORD_SIZE:]
    if sequential and sh.cache_blocks:
        cache = sh.cache
        if len(cache) >= sh.cache_blocks:
            del cache[next(iter(cache))]
        cache[b] = (raw, skip)
        if sh.readahead and _WILLNEED is not None:
            _readahead(sh, b)
    return raw, skip, bcount, first


def _readahead(sh, b: int) -> None:
    nxt = sh.b_next
    for _ in range(sh.readahead):
        b = nxt[b]
        if b < 0:
            return
        entry = sh.b_entry[b]
        offset = entry >> 16
        if b in sh.cache or offset >= sh.written:
            return
        os.posix_fadvise(sh.fd, offset, entry & 0xFFFF, _WILLNEED)
        sh.counters["readahead"] += 1
