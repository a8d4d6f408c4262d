"""Damaged files: flipped bytes, torn tails, garbage, lost or damaged index checkpoints and manifests.

The data file is read here with its documented layout (a 16-byte file header, then records with a
16-byte ``<IBBIHHH`` header: checksum, kind, flags, queue id, payload size, skip, count), so the
tests can aim at one record and check that the error names exactly that place.
"""

import hashlib
import json
import os
import random
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

import mqdb
from mqdb.coding import checksum
from mqdb.hashing import shard_of

FILE_HEADER = 16
RECORD = struct.Struct("<IBBIHHH")
KIND_BLOCK, KIND_COMMIT = 1, 2
FLAG_CONTINUES = 0x02
INDEX_DATA_LEN = 16  # byte offset of the data-length field in the index header

OPTS = {"block_size": 512, "write_buffer_bytes": 1 << 20, "slice_size": 32, "write_batch_bytes": 4096, "shards": 4}
QUEUES = [f"Queue-{i}" for i in range(12)]
SIZES = (3, 60, 17, 0, 45, 700, 62, 1, 58, 1300, 9, 55)


def message(queue: str, seq: int, tag: str = "") -> bytes:
    size = SIZES[(seq + len(queue)) % len(SIZES)]
    return hashlib.shake_128(f"{tag}{queue}/{seq}".encode()).digest(size)


def write(path: Path, expected: dict, per_queue: int, queues=QUEUES, tag: str = "", **opts) -> dict:
    """Append ``per_queue`` messages to each queue and close (which flushes); extend ``expected``."""
    with mqdb.open(path, **{**OPTS, **opts}) as db:
        for _ in range(per_queue):
            for q in queues:
                msgs = expected.setdefault(q, [])
                m = message(q, len(msgs), tag)
                assert db.put(q, m) == len(msgs)
                msgs.append(m)
    return expected


def check_all(db, expected: dict, skip=()) -> None:
    for q, msgs in expected.items():
        if q in skip:
            continue
        assert db.count(q) == len(msgs), q
        assert db.get(q, 0, len(msgs) + 1) == msgs, q


@dataclass
class Rec:
    offset: int
    kind: int
    flags: int
    qid: int
    size: int
    skip: int
    count: int

    @property
    def end(self) -> int:
        return self.offset + RECORD.size + self.size


def records(dat: Path) -> list[Rec]:
    data = dat.read_bytes()
    out = []
    pos = FILE_HEADER
    while pos + RECORD.size <= len(data):
        _, kind, flags, qid, size, skip, count = RECORD.unpack_from(data, pos)
        if kind not in (KIND_BLOCK, KIND_COMMIT) or pos + RECORD.size + size > len(data):
            break
        out.append(Rec(pos, kind, flags, qid, size, skip, count))
        pos += RECORD.size + size
    return out


def read_names(names_file: Path) -> list[str]:
    data = names_file.read_bytes()
    pos, names = 16, []
    while pos < len(data):
        n, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        names.append(data[pos : pos + n].decode())
        pos += n
    return names


def find_queue(path: Path, queue: str) -> tuple[int, int]:
    """(shard, queue id in the shard) of ``queue``, from the names files."""
    for f in sorted(path.glob("*.names")):
        names = read_names(f)
        if queue in names:
            return int(f.name[:3]), names.index(queue)
    raise AssertionError(f"{queue} is in no names file")


def dat(path: Path, shard: int) -> Path:
    return path / f"{shard:03d}.dat"


def idx(path: Path, shard: int) -> Path:
    return path / f"{shard:03d}.idx"


def flip(file: Path, offset: int, mask: int = 0xFF) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ mask]))


def queue_blocks(path: Path, queue: str) -> tuple[int, list[Rec]]:
    shard, qid = find_queue(path, queue)
    return shard, [r for r in records(dat(path, shard)) if r.kind == KIND_BLOCK and r.qid == qid]


def target_block(blocks: list[Rec]) -> tuple[int, Rec, int]:
    """A block past the first that starts at least one message: (its index, it, first message in it)."""
    first = 0
    for i, rec in enumerate(blocks):
        if i >= 2 and rec.count:
            return i, rec, first
        first += rec.count
    raise AssertionError("no suitable block")


def assert_names_place(err: mqdb.CorruptionError, path: Path, shard: int, offset: int, queue: str) -> None:
    assert err.path.endswith(".dat")
    assert os.path.samefile(err.path, dat(path, shard))
    assert err.offset == offset
    assert err.queue == queue
    assert f"{shard:03d}.dat" in str(err) and str(offset) in str(err)


def damaged_read_checks(path: Path, expected: dict, victim: str, shard: int, blocks: list[Rec], i: int, first: int):
    """Reads of ``victim`` fail exactly at block ``i``, never return wrong bytes; the rest read fine."""
    rec = blocks[i]
    msgs = expected[victim]
    with mqdb.open(path, **OPTS) as db:
        assert db.recovery == []
        with pytest.raises(mqdb.CorruptionError) as e:
            db.get(victim, 0, len(msgs))
        assert_names_place(e.value, path, shard, rec.offset, victim)
        with pytest.raises(mqdb.CorruptionError) as e:
            db.get(victim, first, 1)
        assert_names_place(e.value, path, shard, rec.offset, victim)
        # everything before the damaged block (and not running into it) still reads
        safe = first - 1 if blocks[i - 1].flags & FLAG_CONTINUES else first
        assert db.get(victim, 0, safe) == msgs[:safe]
        # message by message: the right bytes or an error about this record, nothing else
        failed = 0
        for k in range(len(msgs)):
            try:
                assert db.get(victim, k, 1) == [msgs[k]], k
            except mqdb.CorruptionError as err:
                assert err.offset == rec.offset
                failed += 1
        assert failed >= 1
        check_all(db, expected, skip={victim})


# --- (a) a byte flipped in a block payload -------------------------------------------------------
@pytest.mark.parametrize("compression", ["none", "lz4"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_payload_byte_raises_corruption_naming_file_and_offset(tmp_path, compression, where):
    expected = write(tmp_path, {}, 40, compression=compression)
    victim = "Queue-5"
    shard, blocks = queue_blocks(tmp_path, victim)
    i, rec, first = target_block(blocks)
    at = {"first": 0, "middle": rec.size // 2, "last": rec.size - 1}[where]
    flip(dat(tmp_path, shard), rec.offset + RECORD.size + at)
    damaged_read_checks(tmp_path, expected, victim, shard, blocks, i, first)


# --- (a') frames that do not parse in a block that passes its checksum ---------------------------
@pytest.mark.parametrize(("offset", "num"), [(0, 5), (0, 50), (30, 10)])
def test_frames_that_do_not_parse_are_reported_by_every_read_of_the_block(tmp_path, offset, num):
    """A writer bug, not a disk error: the checksum was made over frames that do not parse. A read
    that stops inside the block (and would cache it) and one that takes it to its end report the same
    place and reason."""
    with mqdb.open(tmp_path, shards=1) as db:
        for i in range(40):
            db.put("q", b"%020d" % i)  # frames of 1 + 20 bytes
    data = dat(tmp_path, 0)
    (rec,) = [r for r in records(data) if r.kind == KIND_BLOCK]
    raw = bytearray(data.read_bytes())
    frame = rec.offset + RECORD.size + 2 * 21  # the third frame's length: more than 8 bytes of it
    raw[frame : frame + 9] = b"\xff" * 9
    struct.pack_into("<I", raw, rec.offset, checksum(bytes(raw[rec.offset + 4 : rec.end])))
    data.write_bytes(bytes(raw))
    with mqdb.open(tmp_path, shards=1) as db:
        with pytest.raises(mqdb.CorruptionError) as e:
            db.get("q", offset, num)
        assert e.value.offset == rec.offset and e.value.queue == "q"
        assert "frames do not parse (a frame length longer than 8 bytes at payload byte 42)" in str(e.value)


# --- (a'') a staging chunk damaged on disk before it is distributed ------------------------------
def test_damaged_staging_chunk_is_reported_with_its_file_and_offset_on_every_flush(tmp_path):
    """The staging file holds chunks (u32 messages, u32 frame bytes, u32 qid[messages], frames): a
    frame length damaged under the writer is reported naming the file and the byte of that frame,
    again by a second flush, not distributed as half a stage."""
    db = mqdb.open(tmp_path, shards=1, spill_bytes=1 << 16)  # 8 KiB staging chunks
    try:
        for i in range(300):
            db.put(f"q{i % 3}", b"%040d" % i)  # frames of 1 + 40 bytes
        stage = tmp_path / "000.stage"
        raw = bytearray(stage.read_bytes())
        count, _ = struct.unpack_from("<II", raw, 0)
        assert count > 100  # at least one chunk is on disk
        frame = 8 + 4 * count + 5 * 41  # the length of the sixth frame of the first chunk
        raw[frame : frame + 9] = b"\xff" * 9  # a length of more than 8 bytes
        stage.write_bytes(bytes(raw))
        for _ in range(2):
            with pytest.raises(mqdb.CorruptionError) as e:
                db.flush()
            assert e.value.path == str(stage) and e.value.offset == frame
            assert "staged frames do not parse (a frame length longer than 8 bytes)" in str(e.value)
    finally:
        try:
            db.close()
        except mqdb.CorruptionError:
            pass


# --- (b) a byte flipped in a record header -------------------------------------------------------
@pytest.mark.parametrize("byte", range(RECORD.size))
def test_flipped_record_header_byte_raises_corruption(tmp_path, byte):
    expected = write(tmp_path, {}, 40)
    victim = "Queue-7"
    shard, blocks = queue_blocks(tmp_path, victim)
    i, rec, first = target_block(blocks)
    flip(dat(tmp_path, shard), rec.offset + byte, 0x01 if byte == 5 else 0xFF)
    damaged_read_checks(tmp_path, expected, victim, shard, blocks, i, first)


# --- (c) a damaged index checkpoint --------------------------------------------------------------
def _flip_at(offset: int, mask: int = 0xFF):
    def damage(raw: bytearray) -> bytes:
        raw[offset] ^= mask
        return bytes(raw)

    return damage


IDX_DAMAGE = {
    "magic": _flip_at(0),
    "version": _flip_at(8),
    "shard": _flip_at(10, 0x01),
    "body checksum": _flip_at(12),
    "data length past the file": _flip_at(INDEX_DATA_LEN + 6, 0x01),
    "queue count": _flip_at(40, 0x01),
    "block count": _flip_at(48, 0x01),
    "body length": _flip_at(96, 0x01),
    "body byte": lambda raw: bytes(raw[:-1]) + bytes([raw[-1] ^ 0xFF]),
    "cut short": lambda raw: bytes(raw[: len(raw) // 2]),
    "header only": lambda raw: bytes(raw[:104]),
    "empty": lambda raw: b"",
    "garbage": lambda raw: random.Random(5).randbytes(len(raw)),
}


@pytest.mark.parametrize("damage", sorted(IDX_DAMAGE))
def test_damaged_index_is_rebuilt_from_the_data_file(tmp_path, damage):
    expected = write(tmp_path, {}, 30)
    write(tmp_path, expected, 10, tag="second flush ")
    shard = 2
    f = idx(tmp_path, shard)
    f.write_bytes(IDX_DAMAGE[damage](bytearray(f.read_bytes())))
    sizes = {p.name: p.stat().st_size for p in tmp_path.glob("*.dat")}
    with mqdb.open(tmp_path, **OPTS) as db:
        reports = {r["shard"]: r for r in db.recovery}
        assert list(reports) == [shard], db.recovery
        assert reports[shard]["rebuilt"] is True
        assert reports[shard]["dropped_bytes"] == 0
        assert "index" in reports[shard]["reason"]
        check_all(db, expected)
    assert {p.name: p.stat().st_size for p in tmp_path.glob("*.dat")} == sizes
    with mqdb.open(tmp_path, **OPTS) as db:  # the index was written anew
        assert db.recovery == []
        check_all(db, expected)


def _commit_ends(dat_file: Path) -> list[int]:
    return [r.end for r in records(dat_file) if r.kind == KIND_COMMIT]


def test_index_data_length_bit_flip_loses_no_flushed_data(tmp_path):
    """The index header is checksummed too: a lowered data length must not make a writer open cut
    flushed records off the data file (recovery truncates the data file at that length)."""
    expected = write(tmp_path, {}, 30)
    write(tmp_path, expected, 10, tag="second flush ")
    shard = 1
    f = idx(tmp_path, shard)
    raw = bytearray(f.read_bytes())
    (data_len,) = struct.unpack_from("<Q", raw, INDEX_DATA_LEN)
    bit = next(b for b in range(9, 16) if data_len >> b & 1)
    struct.pack_into("<Q", raw, INDEX_DATA_LEN, data_len ^ 1 << bit)
    f.write_bytes(bytes(raw))
    size = dat(tmp_path, shard).stat().st_size
    with mqdb.open(tmp_path, **OPTS) as db:
        assert dat(tmp_path, shard).stat().st_size == size, f"flushed data cut off: {db.recovery}"
        check_all(db, expected)


def test_index_data_length_at_an_older_commit_does_not_duplicate_messages(tmp_path):
    """An index whose data length was changed to end at an older commit must not be trusted: recovery
    would scan the records after that commit again and add their blocks a second time (counts grow,
    get() returns messages twice)."""
    expected = write(tmp_path, {}, 30)
    write(tmp_path, expected, 10, tag="second flush ")
    shard = 0
    ends = _commit_ends(dat(tmp_path, shard))
    assert len(ends) >= 2
    f = idx(tmp_path, shard)
    raw = bytearray(f.read_bytes())
    struct.pack_into("<Q", raw, INDEX_DATA_LEN, ends[-2])
    f.write_bytes(bytes(raw))
    with mqdb.open(tmp_path, **OPTS) as db:
        check_all(db, expected)


# --- (d) a lost index checkpoint -----------------------------------------------------------------
def test_deleted_index_is_rebuilt_and_every_message_reads_back(tmp_path):
    expected = write(tmp_path, {}, 30)
    write(tmp_path, expected, 10, tag="second flush ")
    idx(tmp_path, 3).unlink()
    with mqdb.open(tmp_path, **OPTS) as db:
        assert all(r["dropped_bytes"] == 0 for r in db.recovery)
        check_all(db, expected)
    assert idx(tmp_path, 3).exists()
    with mqdb.open(tmp_path, **OPTS) as db:
        assert db.recovery == []
        check_all(db, expected)


def test_deleted_every_index_is_rebuilt(tmp_path):
    expected = write(tmp_path, {}, 30)
    for f in tmp_path.glob("*.idx"):
        f.unlink()
    with mqdb.open(tmp_path, **OPTS) as db:
        check_all(db, expected)
        assert db.stats()["messages"] == sum(len(m) for m in expected.values())


def test_deleted_index_rebuild_is_reported(tmp_path):
    """db.recovery keeps only reports with dropped bytes or a reason: a rebuild of a missing index
    needs a reason to show up there."""
    write(tmp_path, {}, 30)
    idx(tmp_path, 3).unlink()
    with mqdb.open(tmp_path, **OPTS) as db:
        reports = {r["shard"]: r for r in db.recovery}
        assert 3 in reports, db.recovery
        assert reports[3]["rebuilt"] is True


# --- (e) a torn write at the tail ----------------------------------------------------------------
@pytest.mark.parametrize("cut", ["in a payload", "in a header"])
@pytest.mark.parametrize("index", ["older than the tail", "covering the cut tail"])
def test_torn_tail_is_dropped_and_reported(tmp_path, cut, index):
    expected = write(tmp_path, {}, 30)
    committed = {s: dat(tmp_path, s).stat().st_size for s in range(OPTS["shards"])}
    old_index = {s: idx(tmp_path, s).read_bytes() for s in range(OPTS["shards"])}
    before = {q: list(m) for q, m in expected.items()}
    newcomers = [f"Late-{i}" for i in range(8)]
    write(tmp_path, expected, 12, queues=QUEUES + newcomers, tag="lost ")
    shard = max(range(OPTS["shards"]), key=lambda s: dat(tmp_path, s).stat().st_size - committed[s])
    tail = [r for r in records(dat(tmp_path, shard)) if r.offset >= committed[shard]]
    blocks = [r for r in tail if r.kind == KIND_BLOCK]
    assert len(blocks) >= 3
    torn = blocks[len(blocks) // 2]
    at = torn.offset + (RECORD.size + torn.size // 2 if cut == "in a payload" else 7)
    os.truncate(dat(tmp_path, shard), at)
    if index == "older than the tail":
        idx(tmp_path, shard).write_bytes(old_index[shard])

    with mqdb.open(tmp_path, **OPTS) as db:
        reports = {r["shard"]: r for r in db.recovery}
        assert list(reports) == [shard], db.recovery
        report = reports[shard]
        assert report["dropped_bytes"] == at - committed[shard]
        assert report["dropped_blocks"] == blocks.index(torn)
        assert "cut short" in report["reason"] and str(torn.offset) in report["reason"]
        assert report["rebuilt"] is (index == "covering the cut tail")
        assert dat(tmp_path, shard).stat().st_size == committed[shard]
        for q in QUEUES + newcomers:
            want = before.get(q, []) if shard_of(q, OPTS["shards"]) == shard else expected[q]
            assert db.count(q) == len(want), q
            assert db.get(q, 0, len(want) + 1) == want, q
        # the store goes on normally
        db.put("Queue-0", b"after the cut")
    with mqdb.open(tmp_path, **OPTS) as db:
        assert db.recovery == []
        assert db.get("Queue-0", db.count("Queue-0") - 1, 1) == [b"after the cut"]


# --- (f) garbage after the last record -----------------------------------------------------------
def _valid_uncommitted_record(path: Path, shard: int) -> bytes:
    rec = next(r for r in records(dat(path, shard)) if r.kind == KIND_BLOCK)
    return dat(path, shard).read_bytes()[rec.offset : rec.end]


@pytest.mark.parametrize("garbage", ["random", "zeros", "a whole block record without a commit"])
def test_garbage_appended_to_data_file_is_dropped_and_reported(tmp_path, garbage):
    expected = write(tmp_path, {}, 30)
    shard = 1
    size = dat(tmp_path, shard).stat().st_size
    extra = {
        "random": random.Random(3).randbytes(1000),
        "zeros": bytes(4096),
        "a whole block record without a commit": _valid_uncommitted_record(tmp_path, shard),
    }[garbage]
    with open(dat(tmp_path, shard), "ab") as f:
        f.write(extra)
    with mqdb.open(tmp_path, **OPTS) as db:
        reports = {r["shard"]: r for r in db.recovery}
        assert list(reports) == [shard], db.recovery
        assert reports[shard]["dropped_bytes"] == len(extra)
        assert reports[shard]["dropped_blocks"] == (1 if garbage.startswith("a whole") else 0)
        assert reports[shard]["reason"]
        assert dat(tmp_path, shard).stat().st_size == size
        check_all(db, expected)
    write(tmp_path, expected, 3, tag="after ")
    with mqdb.open(tmp_path, **OPTS) as db:
        assert db.recovery == []
        check_all(db, expected)


# --- (g) damage in the middle with much valid data after it --------------------------------------
def _digest(path: Path) -> dict:
    files = sorted(p for p in path.iterdir() if p.suffix in (".dat", ".names", ".idx"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("index", ["deleted", "damaged"])
def test_damage_followed_by_much_data_refuses_to_open_and_changes_nothing(tmp_path, index):
    opts = {"block_size": 4096, "shards": 1, "write_buffer_bytes": 4 << 20}
    queues = [f"Big-{i}" for i in range(16)]
    with mqdb.open(tmp_path, **opts) as db:
        for seq in range(560):  # about 9 MB
            for q in queues:
                db.put(q, hashlib.shake_128(f"{q}/{seq}".encode()).digest(1000))
            if seq % 100 == 99:
                db.flush()
    f = dat(tmp_path, 0)
    size = f.stat().st_size
    rec = next(r for r in records(f) if r.kind == KIND_BLOCK and r.offset > 1 << 20)
    assert size - rec.offset > 5 << 20
    flip(f, rec.offset + RECORD.size + 100)
    if index == "deleted":
        idx(tmp_path, 0).unlink()
    else:
        flip(idx(tmp_path, 0), 0)
    before = _digest(tmp_path)
    for _ in range(2):  # the failed open left no lock behind
        with pytest.raises(mqdb.CorruptionError) as e:
            mqdb.open(tmp_path)
        assert os.path.samefile(e.value.path, f)
        assert e.value.offset == rec.offset
        assert str(rec.offset) in str(e.value)
        assert _digest(tmp_path) == before
    assert f.stat().st_size == size


# --- (h) a damaged manifest ----------------------------------------------------------------------
GOOD_MANIFEST = {"block_size": 512, "format": "mqdb", "shards": 4, "version": 2}

MANIFEST_DAMAGE = {
    "empty": b"",
    "not json": b"hello, world",
    "cut short": json.dumps(GOOD_MANIFEST).encode()[:-7],
    "a list": b"[1, 2, 3]",
    "another format": json.dumps({**GOOD_MANIFEST, "format": "mqdc"}).encode(),
    "another version": json.dumps({**GOOD_MANIFEST, "version": 3}).encode(),
    "no shards": json.dumps({k: v for k, v in GOOD_MANIFEST.items() if k != "shards"}).encode(),
    "block size as text": json.dumps({**GOOD_MANIFEST, "block_size": "512"}).encode(),
    "another block size": json.dumps({**GOOD_MANIFEST, "block_size": 1024}).encode(),
}


@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize("damage", sorted(MANIFEST_DAMAGE))
def test_damaged_manifest_raises_format_error(tmp_path, damage, readonly):
    write(tmp_path, {}, 2)
    (tmp_path / "MANIFEST").write_bytes(MANIFEST_DAMAGE[damage])
    with pytest.raises(mqdb.FormatError):
        mqdb.open(tmp_path, readonly=readonly)
    if not readonly:
        with pytest.raises(mqdb.FormatError):  # and the lock was given back
            mqdb.open(tmp_path)


MANIFEST_SHARDS_OR_ENCODING = {
    "bytes that are not UTF-8": b"\xff\xfe" + json.dumps(GOOD_MANIFEST).encode(),
    "zero shards": json.dumps({**GOOD_MANIFEST, "shards": 0}).encode(),
    "one shard fewer": json.dumps({**GOOD_MANIFEST, "shards": 3}).encode(),
}


@pytest.mark.parametrize("damage", sorted(MANIFEST_SHARDS_OR_ENCODING))
def test_manifest_not_utf8_or_with_a_wrong_shard_count_raises_format_error(tmp_path, damage):
    """Bytes that do not decode must not escape as UnicodeDecodeError; a shard count of 0, or lower
    than the data files present, must not open (the queues of the shards past it would vanish)."""
    write(tmp_path, {}, 2)
    (tmp_path / "MANIFEST").write_bytes(MANIFEST_SHARDS_OR_ENCODING[damage])
    with pytest.raises(mqdb.FormatError):
        mqdb.open(tmp_path).close()
