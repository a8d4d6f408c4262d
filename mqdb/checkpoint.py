"""The index checkpoint (``NNN.idx``) and the names file (``NNN.names``) of a shard. See FORMAT.md."""

import os
import struct
import time
from array import array

import lz4.block

from .coding import VarintError, checksum, decode_varint, encode_varint
from .errors import FormatError
from .format import INDEX_HEADER, INDEX_HEADER_SIZE, INDEX_MAGIC, VERSION


class Checkpoint:
    """What an index checkpoint holds: totals, and every sealed block in file order as three
    columns: owning queue id, entry (file offset and record length, format.pack_entry), messages
    starting in it."""

    __slots__ = ("data_len", "names_len", "seq", "queues", "messages", "payload", "raw", "stored", "flushed_ns",
                 "b_qid", "b_entry", "b_count")  # fmt: skip

    def __init__(self):
        self.data_len = self.names_len = self.seq = self.queues = 0
        self.messages = self.payload = self.raw = self.stored = self.flushed_ns = 0
        self.b_qid = array("l")
        self.b_entry = array("q")
        self.b_count = array("l")


def write(path: str, shard: int, cp: Checkpoint, sync: bool) -> None:
    """Write a checkpoint atomically: a temporary file, then rename over the old one."""
    blocks = len(cp.b_entry)
    plain = array("I", cp.b_qid).tobytes() + cp.b_entry.tobytes() + array("H", cp.b_count).tobytes()
    body = lz4.block.compress(plain, store_size=True)
    header = bytearray(INDEX_HEADER.pack(
        INDEX_MAGIC, VERSION, shard, 0, cp.data_len, cp.names_len, cp.seq, cp.queues, blocks,
        cp.messages, cp.payload, cp.raw, cp.stored, cp.flushed_ns or time.time_ns(), len(body),
    ))  # fmt: skip
    struct.pack_into("<I", header, 12, checksum(bytes(header[16:]) + body))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(body)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path: str, shard: int) -> Checkpoint:
    """Read a checkpoint; raise FormatError naming the file if it is damaged."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < INDEX_HEADER_SIZE:
        raise FormatError(f"{path}: index header cut short")
    (magic, version, got_shard, file_sum, data_len, names_len, seq, queues, blocks, messages, payload, raw, stored,
     flushed_ns, body_len) = INDEX_HEADER.unpack_from(data)  # fmt: skip
    if magic != INDEX_MAGIC or version != VERSION or got_shard != shard:
        raise FormatError(f"{path}: not the version-{VERSION} index of shard {shard}")
    body = data[INDEX_HEADER_SIZE:]
    if len(body) != body_len or checksum(data[16:]) != file_sum:
        raise FormatError(f"{path}: index fails its checksum")
    try:
        plain = lz4.block.decompress(body)
    except lz4.block.LZ4BlockError as e:
        raise FormatError(f"{path}: index body does not decompress ({e})") from None
    if len(plain) != 14 * blocks:
        raise FormatError(f"{path}: index body does not hold {blocks} blocks")
    cp = Checkpoint()
    cp.data_len, cp.names_len, cp.seq, cp.queues = data_len, names_len, seq, queues
    cp.messages, cp.payload, cp.raw, cp.stored, cp.flushed_ns = messages, payload, raw, stored, flushed_ns
    qids = array("I")
    qids.frombytes(plain[: 4 * blocks])
    cp.b_qid = array("l", qids)
    cp.b_entry.frombytes(plain[4 * blocks : 12 * blocks])
    counts = array("H")
    counts.frombytes(plain[12 * blocks :])
    cp.b_count = array("l", counts)
    if blocks and max(cp.b_qid) >= queues:
        raise FormatError(f"{path}: a block names a queue beyond the {queues} known")
    return cp


# --- names file: a 16-byte header, then varint(len) + UTF-8 name, one per queue in qid order ----
NAMES_MAGIC = b"MQDBNAM\x00"
NAMES_HEADER = struct.Struct("<8sHHI")


def names_header(shard: int) -> bytes:
    return NAMES_HEADER.pack(NAMES_MAGIC, VERSION, shard, 0)


def encode_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    return encode_varint(len(raw)) + raw


def decode_names(path: str, data: bytes, shard: int) -> list[str]:
    """Names in qid order from the bytes of a names file (header included)."""
    if len(data) < NAMES_HEADER.size:
        raise FormatError(f"{path}: names header cut short")
    magic, version, got_shard, _ = NAMES_HEADER.unpack_from(data)
    if magic != NAMES_MAGIC or version != VERSION or got_shard != shard:
        raise FormatError(f"{path}: not the version-{VERSION} names file of shard {shard}")
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
