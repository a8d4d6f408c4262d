"""Byte layouts of every mqdb file, shared by their writers and readers. See FORMAT.md."""

import json
import struct

from .coding import RECORD, RECORD_SIZE, write_record  # noqa: F401 (RECORD: the data file's layout, exported here)
from .errors import FormatError

VERSION = 2  # of the store as a whole: the MANIFEST says it
OLD_VERSIONS = (1,)  # stores a writer migrates on open (their index checkpoints are rebuilt)
DATA_VERSION = 1  # of the NNN.dat file header
NAMES_VERSION = 1  # of the NNN.names file header
INDEX_VERSION = 3  # of the NNN.idx file header
INDEX_VERSIONS_READ = (2, 3)  # 2 is 3 without zlib regions: read as it is

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

# record header: checksum, kind, flags, qid, size, skip, count: RECORD, 16 bytes, defined in coding.py
# beside write_record, which writes a block record in C in the compiled build

KIND_BLOCK = 1
KIND_COMMIT = 2

FLAG_LZ4 = 0x01  # payload is one lz4 block
FLAG_CONTINUES = 0x02  # the block's last message continues in the queue's next block

# commit payload: commit sequence, names-file length, checksum of the names added since the last
# commit, messages, payload bytes, own file offset
COMMIT = struct.Struct("<QQQQQQ")


def pack_file_header(shard: int, block_size: int) -> bytes:
    return FILE_HEADER.pack(DATA_MAGIC, DATA_VERSION, shard, block_size)


def check_file_header(path: str, raw: bytes, shard: int, block_size: int) -> None:
    if len(raw) < FILE_HEADER_SIZE:
        raise FormatError(f"{path}: file header cut short ({len(raw)} of {FILE_HEADER_SIZE} bytes)")
    magic, version, got_shard, got_block = FILE_HEADER.unpack_from(raw)
    if magic != DATA_MAGIC:
        raise FormatError(f"{path}: not an mqdb data file (magic {magic!r})")
    if version != DATA_VERSION:
        raise FormatError(f"{path}: data file version {version}, this mqdb reads version {DATA_VERSION}")
    if got_shard != shard or got_block != block_size:
        raise FormatError(f"{path}: belongs to shard {got_shard} with {got_block}-byte blocks")


def commit_record(seq: int, names_len: int, names_sum: int, messages: int, payload: int, offset: int):
    body = COMMIT.pack(seq, names_len, names_sum, messages, payload, offset)
    buf = bytearray(RECORD_SIZE + COMMIT.size)
    write_record(buf, 0, KIND_COMMIT, 0, 0, 0, 0, body, 0, len(body))
    return buf


# --- index checkpoint: a header, the base regions, then deltas appended by later commits ---------
INDEX_MAGIC = b"MQDBIDX\x00"
# magic, version, shard, header checksum, then the totals the base covers: data length, names length,
# commit seq, queues, blocks, messages, payload bytes, raw block bytes, stored block bytes, flush time
# (ns), then the bytes of all regions, the slots of the name table, the checksum of the names file
# up to the names length
INDEX_HEADER = struct.Struct("<8sHHIQQQQQQQQQQQQQ")
INDEX_HEADER_SIZE = INDEX_HEADER.size  # 120
# region header: checksum (of the rest of the header and the stored bytes), flags, raw length,
# stored length
REGION = struct.Struct("<IIQQ")
REGION_LZ4 = 0x01
REGION_ZLIB = 0x02  # index version 3 on
# the base regions in file order: (name, array typecode, items: "slots", "queues" or "blocks")
REGIONS = (
    ("slots", "i", "slots"),  # name table: queue id + 1 per slot, 0 = empty
    ("name_offset", "q", "queues"),  # offset in NNN.names of each queue's name record
    ("count", "q", "queues"),  # messages of each queue
    ("first_block", "i", "queues"),  # first and last block of each queue, -1 if none
    ("last_block", "i", "queues"),
    ("entry", "q", "blocks"),  # file offset and record length of each block (pack_entry)
    ("end", "q", "blocks"),  # messages of the block's queue up to and including the block
    ("block_count", "i", "blocks"),  # messages that start in the block
    ("next_block", "i", "blocks"),  # next block of the same queue, -1 if none
)
# delta record: checksum (of everything after it), length of everything after the first 8 bytes,
# then the totals after the delta's commit (as in the header, from data length to flush time), then
# the checksum of the names added: u64 name_offset[new queues] u32 qid[new blocks] u64 entry[new
# blocks] u32 count[new blocks]
DELTA = struct.Struct("<IIQQQQQQQQQQQ")
DELTA_SIZE = DELTA.size  # 96
# the name table's hash of a name: mmh3 (32-bit, unsigned) of its UTF-8 bytes with this seed, so it
# is independent of the shard hash (hashing.py) that already sorted the names into shards
NAME_SEED = 0x6D716462


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
    version = data.get("version")
    if version != VERSION and (version not in OLD_VERSIONS or isinstance(version, bool)):
        raise FormatError(f"{path}: format version {version!r}, this mqdb reads {VERSION}")
    for key, low, high in (("shards", 1, 1024), ("block_size", 512, 65535)):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise FormatError(f"{path}: manifest has no valid {key} ({value!r})")
    return data
