"""Byte layouts of every mqdb file, shared by their writers and readers. See FORMAT.md."""

import json
import struct

from .coding import checksum
from .errors import FormatError

VERSION = 1

MANIFEST = "MANIFEST"
LOCK = "LOCK"
MANIFEST_MAGIC = "mqdb"


def data_name(shard: int) -> str:
    return f"{shard:03d}.dat"


def names_name(shard: int) -> str:
    return f"{shard:03d}.names"


def index_name(shard: int) -> str:
    return f"{shard:03d}.idx"


def spill_name(shard: int) -> str:
    return f"{shard:03d}.spill"


def stage_name(shard: int) -> str:
    return f"{shard:03d}.stage"


# --- entries: where a record or fragment is, as one integer ---------------------------------------
# entry = offset * 65536 + length: the index keeps one per block (FORMAT.md, NNN.idx), the spill file
# one per fragment; every length fits 16 bits because a block is at most 65535 bytes.
ENTRY_SHIFT = 16
ENTRY_LENGTH = (1 << ENTRY_SHIFT) - 1


def pack_entry(offset: int, length: int) -> int:
    return offset << ENTRY_SHIFT | length


def entry_offset(entry: int) -> int:
    return entry >> ENTRY_SHIFT


def entry_length(entry: int) -> int:
    return entry & ENTRY_LENGTH


# spill fragment header: the queue's previous fragment as an entry (-1: none)
SPILL = struct.Struct("<q")


# --- data file: file header, then records -------------------------------------------------------
DATA_MAGIC = b"MQDBDAT\x00"
FILE_HEADER = struct.Struct("<8sHHI")  # magic, version, shard, block_size
FILE_HEADER_SIZE = FILE_HEADER.size  # 16

# record header: checksum, kind, flags, qid, size, skip, count
RECORD = struct.Struct("<IBBIHHH")
RECORD_SIZE = RECORD.size  # 16

KIND_BLOCK = 1
KIND_COMMIT = 2

FLAG_LZ4 = 0x01  # payload is one lz4 block
FLAG_CONTINUES = 0x02  # the block's last message continues in the queue's next block

# commit payload: commit sequence, names-file length, checksum of the names added since the last
# commit, messages, payload bytes, own file offset
COMMIT = struct.Struct("<QQQQQQ")


def pack_file_header(shard: int, block_size: int) -> bytes:
    return FILE_HEADER.pack(DATA_MAGIC, VERSION, shard, block_size)


def check_file_header(path: str, raw: bytes, shard: int, block_size: int) -> None:
    if len(raw) < FILE_HEADER_SIZE:
        raise FormatError(f"{path}: file header cut short ({len(raw)} of {FILE_HEADER_SIZE} bytes)")
    magic, version, got_shard, got_block = FILE_HEADER.unpack_from(raw)
    if magic != DATA_MAGIC:
        raise FormatError(f"{path}: not an mqdb data file (magic {magic!r})")
    if version != VERSION:
        raise FormatError(f"{path}: format version {version}, this mqdb reads version {VERSION}")
    if got_shard != shard or got_block != block_size:
        raise FormatError(f"{path}: belongs to shard {got_shard} with {got_block}-byte blocks")


def seal_record(buf: bytearray) -> bytearray:
    """Write the checksum of a record whose header fields (from byte 4) and payload are in place."""
    struct.pack_into("<I", buf, 0, checksum(memoryview(buf).toreadonly()[4:]))
    return buf


def commit_record(seq: int, names_len: int, names_sum: int, messages: int, payload: int, offset: int):
    buf = bytearray(RECORD_SIZE + COMMIT.size)
    RECORD.pack_into(buf, 0, 0, KIND_COMMIT, 0, 0, COMMIT.size, 0, 0)
    COMMIT.pack_into(buf, RECORD_SIZE, seq, names_len, names_sum, messages, payload, offset)
    return seal_record(buf)


# --- index checkpoint ----------------------------------------------------------------------------
INDEX_MAGIC = b"MQDBIDX\x00"
# magic, version, shard, body checksum, data length covered, names length covered, commit seq,
# queues, blocks, messages, payload bytes, raw block bytes, stored block bytes, flush time (ns),
# body length
INDEX_HEADER = struct.Struct("<8sHHIQQQQQQQQQQQ")
INDEX_HEADER_SIZE = INDEX_HEADER.size


# --- manifest ------------------------------------------------------------------------------------
def manifest_text(shards: int, block_size: int) -> str:
    return json.dumps(
        {"format": MANIFEST_MAGIC, "version": VERSION, "shards": shards, "block_size": block_size},
        sort_keys=True,
    )


def parse_manifest(path: str, text: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise FormatError(f"{path}: not an mqdb manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_MAGIC:
        raise FormatError(f"{path}: not an mqdb manifest")
    if data.get("version") != VERSION:
        raise FormatError(f"{path}: format version {data.get('version')}, this mqdb reads {VERSION}")
    for key, low, high in (("shards", 1, 1024), ("block_size", 512, 65535)):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise FormatError(f"{path}: manifest has no valid {key} ({value!r})")
    return data
