"""The read path of a shard: find the block by prefix sums, read it in one I/O, walk its frames.

Called with the shard lock held. A reader that asks for the message right after its previous read
resumes from a cursor (no re-scan of the block), hits a small cache of decoded blocks, and has the
queue's next blocks announced to the kernel (``POSIX_FADV_WILLNEED``) so they are read ahead.
"""

import os
from bisect import bisect_right

import lz4.block

from .coding import VarintError, checksum, decode_varint
from .errors import CorruptionError
from .format import FLAG_LZ4, KIND_BLOCK, RECORD, RECORD_SIZE

_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)


def read(sh, q, offset: int, num: int) -> list[bytes]:
    count = q.count
    if offset >= count or num <= 0:
        return []
    end = min(count, offset + num)
    blocks = q.blocks
    nblocks = len(blocks) // 2 if blocks is not None else 0
    sequential = q.cur_msg == offset
    if sequential:
        j, p = q.cur_block, q.cur_pos
    else:
        sealed = blocks[-1] if blocks is not None else 0
        # the block where message `offset` starts: the first whose running count passes it
        j = bisect_right(memoryview(blocks)[1::2], offset) if offset < sealed else nblocks
        p = -1
    out = []
    k = offset
    try:
        while k < end:
            raw, skip, bcount, first = _load(sh, q, j, nblocks, sequential)
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
                # the message continues in the queue's following blocks
                parts = [raw[p:]]
                need = stop - size
                while need > 0:
                    j += 1
                    raw, skip, bcount, first = _load(sh, q, j, nblocks, sequential)
                    take = min(need, skip)
                    if take < need and skip != len(raw):
                        raise CorruptionError(
                            sh.data_path, _where(q, j), "a continued message is cut", q.name
                        )
                    parts.append(raw[:take])
                    need -= take
                out.append(b"".join(parts))
                p = skip
                k += 1
                last = first + bcount
                size = len(raw)
            if k < end:
                j += 1
                p = -1
                if j > nblocks:
                    raise CorruptionError(
                        sh.data_path, _where(q, j - 1), "the index counts more messages", q.name
                    )
    except (IndexError, VarintError) as e:
        raise CorruptionError(
            sh.data_path, _where(q, j), f"block frames do not parse ({e})", q.name
        ) from None
    q.cur_msg, q.cur_block, q.cur_pos = k, j, p
    return out


def _where(q, j: int) -> int:
    blocks = q.blocks
    if blocks is not None and j < len(blocks) // 2:
        return blocks[2 * j] >> 16
    return -1


def _load(sh, q, j: int, nblocks: int, sequential: bool):
    """(payload, skip, messages starting, index of the first of them) of block ``j`` of ``q``;
    block ``nblocks`` is the unfinished block in the pool."""
    blocks = q.blocks
    if j >= nblocks:
        if j > nblocks:
            raise CorruptionError(
                sh.data_path, _where(q, nblocks - 1), "a message runs past the queue", q.name
            )
        raw = sh.pool.gather(q.chain, q.pos) if q.chain else b""
        return raw, q.skip, q.bcount, (blocks[-1] if blocks is not None else 0)
    entry = blocks[2 * j]
    first = blocks[2 * j - 1] if j else 0
    offset = entry >> 16
    hit = sh.cache.get(offset)
    if hit is not None:
        sh.counters["cache_hits"] += 1
        return hit[0], hit[1], hit[2], first
    size = entry & 0xFFFF
    if offset + size > sh.written:
        sh.write_pending()
    rec = os.pread(sh.fd, size, offset)
    sh.counters["block_reads"] += 1
    path = sh.data_path
    if len(rec) != size:
        raise CorruptionError(path, offset, f"block cut short ({len(rec)} of {size} bytes)", q.name)
    cs, kind, flags, qid, psize, skip, bcount = RECORD.unpack_from(rec)
    if checksum(memoryview(rec)[4:]) != cs:
        raise CorruptionError(path, offset, "block checksum mismatch", q.name)
    if (
        kind != KIND_BLOCK
        or qid != q.qid
        or psize + RECORD_SIZE != size
        or first + bcount != blocks[2 * j + 1]
    ):
        raise CorruptionError(path, offset, "the index and the block header disagree", q.name)
    if flags & FLAG_LZ4:
        raw_len = int.from_bytes(rec[RECORD_SIZE : RECORD_SIZE + 2], "little")
        try:
            raw = lz4.block.decompress(rec[RECORD_SIZE + 2 :], uncompressed_size=raw_len)
        except lz4.block.LZ4BlockError as e:
            raise CorruptionError(path, offset, f"lz4 block does not decompress ({e})", q.name) from None
        if len(raw) != raw_len:
            raise CorruptionError(path, offset, "lz4 block has the wrong length", q.name)
    else:
        raw = rec[RECORD_SIZE:]
    if sequential and sh.cache_blocks:
        cache = sh.cache
        if len(cache) >= sh.cache_blocks:
            del cache[next(iter(cache))]
        cache[offset] = (raw, skip, bcount)
        if sh.readahead and _WILLNEED is not None:
            _readahead(sh, blocks, j + 1, min(nblocks, j + 1 + sh.readahead))
    return raw, skip, bcount, first


def _readahead(sh, blocks, lo: int, hi: int) -> None:
    for jj in range(lo, hi):
        entry = blocks[2 * jj]
        offset = entry >> 16
        if offset in sh.cache or offset >= sh.written:
            continue
        os.posix_fadvise(sh.fd, offset, entry & 0xFFFF, _WILLNEED)
        sh.counters["readahead"] += 1
