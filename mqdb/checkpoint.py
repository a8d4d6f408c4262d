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
    """What an index checkpoint holds: totals, and each queue's block table in qid order."""

    __slots__ = (
        "data_len",
        "names_len",
        "seq",
        "messages",
        "payload",
        "raw",
        "stored",
        "flushed_ns",
        "tables",
    )

    def __init__(self):
        self.data_len = 0
        self.names_len = 0
        self.seq = 0
        self.messages = 0
        self.payload = 0
        self.raw = 0
        self.stored = 0
        self.flushed_ns = 0
        self.tables: list[array | None] = []


def write(path: str, shard: int, cp: Checkpoint, sync: bool) -> None:
    """Write a checkpoint atomically: a temporary file, then rename over the old one."""
    lengths = array("I", (0 if t is None else len(t) // 2 for t in cp.tables))
    entries = array("q")
    for t in cp.tables:
        if t is not None:
            entries.extend(t)
    body = lz4.block.compress(lengths.tobytes() + entries.tobytes(), store_size=True)
    header = INDEX_HEADER.pack(
        INDEX_MAGIC,
        VERSION,
        shard,
        checksum(body),
        cp.data_len,
        cp.names_len,
        cp.seq,
        len(cp.tables),
        cp.messages,
        cp.payload,
        cp.raw,
        cp.stored,
        cp.flushed_ns or time.time_ns(),
        len(body),
    )
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
    (magic, version, got_shard, body_sum, data_len, names_len, seq, queues, messages, payload, raw, stored,
     flushed_ns, body_len) = INDEX_HEADER.unpack_from(data)  # fmt: skip
    if magic != INDEX_MAGIC or version != VERSION or got_shard != shard:
        raise FormatError(f"{path}: not the version-{VERSION} index of shard {shard}")
    body = data[INDEX_HEADER_SIZE:]
    if len(body) != body_len or checksum(body) != body_sum:
        raise FormatError(f"{path}: index body fails its checksum")
    try:
        plain = lz4.block.decompress(body)
    except lz4.block.LZ4BlockError as e:
        raise FormatError(f"{path}: index body does not decompress ({e})") from None
    if len(plain) < 4 * queues:
        raise FormatError(f"{path}: index body too short for {queues} queues")
    lengths = array("I")
    lengths.frombytes(plain[: 4 * queues])
    entries = array("q")
    rest = plain[4 * queues :]
    if len(rest) % 8 or len(rest) // 16 != sum(lengths):
        raise FormatError(f"{path}: index body does not match its block counts")
    entries.frombytes(rest)
    cp = Checkpoint()
    cp.data_len, cp.names_len, cp.seq = data_len, names_len, seq
    cp.messages, cp.payload, cp.raw, cp.stored, cp.flushed_ns = messages, payload, raw, stored, flushed_ns
    tables = cp.tables
    pos = 0
    for n in lengths:
        if n:
            tables.append(entries[pos : pos + 2 * n])
            pos += 2 * n
        else:
            tables.append(None)
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
