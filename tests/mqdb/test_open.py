"""Opening a store: work that follows what is read, not the number of queues; a checkpoint that grows by
deltas; its regions verified before use; stores of format version 1 migrated or refused.

Nothing here measures time: opening is measured by the bytes it reads and the Python calls it makes,
a flush by the bytes it writes, memory by the resident set of a fresh process.
"""

import hashlib
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import lz4.block
import pytest

import mqdb
from mqdb.coding import checksum
from mqdb.format import INDEX_VERSION

MILLION = 1_000_000
HEADER = 120  # the index header (FORMAT.md, NNN.idx)
REGION = struct.Struct("<IIQQ")
REGIONS = ("slots", "name_offset", "count", "first_block", "last_block", "entry", "end", "block_count", "next_block")
DELTA = struct.Struct("<IIQQQQQQQQQQQ")


def io_counters() -> dict:
    """This process's read and write totals (Linux /proc/self/io): bytes and system calls."""
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def regions(idx: Path) -> dict:
    """name -> (offset of its region header, stored length) in an index checkpoint, by its documented layout."""
    raw = idx.read_bytes()
    pos, out = HEADER, {}
    for name in REGIONS:
        _, _, _, stored = REGION.unpack_from(raw, pos)
        out[name] = (pos, stored)
        pos += REGION.size + stored
    out["deltas"] = (pos, len(raw) - pos)
    return out


def deltas(idx: Path) -> list[int]:
    """Offsets of the deltas after the base."""
    raw = idx.read_bytes()
    pos, out = regions(idx)["deltas"][0], []
    while pos < len(raw):
        out.append(pos)
        pos += 8 + DELTA.unpack_from(raw, pos)[1]
    return out


def fill(path: Path, queues: int, per_queue: int = 1, **opts) -> None:
    with mqdb.open(path, **opts) as db:
        for seq in range(per_queue):
            for i in range(queues):
                db.put(f"Queue-{i}", b"%d:%d" % (i, seq))


@pytest.fixture(scope="module")
def million(tmp_path_factory) -> Path:
    """A store of a million queues, one message each."""
    path = tmp_path_factory.mktemp("million") / "store"
    fill(path, MILLION)
    return path


# --- opening does work in proportion to what it reads --------------------------------------------
@pytest.mark.parametrize("readonly", [False, True])
def test_a_million_queue_open_reads_the_checkpoints_and_names_only(million, readonly):
    """Opening reads each shard's checkpoint and names file once, with a handful of calls, and makes no
    Python call per queue; the data files are not read."""
    small = sum(p.stat().st_size for p in million.iterdir() if p.suffix in (".idx", ".names"))
    data = sum(p.stat().st_size for p in million.glob("*.dat"))
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event == "call"

    before = io_counters()
    sys.setprofile(count)
    try:
        db = mqdb.open(million, readonly=readonly)
    finally:
        sys.setprofile(None)
    after = io_counters()
    try:
        read = after["rchar"] - before["rchar"]
        assert len(db) == MILLION
        assert read <= small + 64 * 1024, (read, small, data)  # headers of the data files, nothing more
        assert after["syscr"] - before["syscr"] <= 32 * 16
        assert calls < 20_000, calls  # per shard and per region, never per queue
        assert db.get("Queue-999999", 0, 5) == [b"999999:0"]
        assert db.count("Queue-123456") == 1 and "Queue-1000000" not in db
    finally:
        db.close()


_RSS_CHILD = """
import json, sys
import mqdb

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

base = rss()
db = mqdb.open(sys.argv[1], readonly=sys.argv[2] == "readonly")
print(json.dumps({"bytes": rss() - base, "queues": len(db)}))
"""


@pytest.mark.parametrize("mode", ["writer", "readonly"])
def test_a_million_queues_hold_at_most_100_bytes_each_once_open(million, mode):
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(million), mode], capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout)
    assert got["queues"] == MILLION
    assert got["bytes"] / MILLION <= 100, got


# --- a flush writes what changed -------------------------------------------------------------------
def test_a_flush_appends_a_delta_of_what_changed(tmp_path):
    path = tmp_path / "s"
    fill(path, 20_000, shards=4)
    idx = sorted(path.glob("*.idx"))
    sizes = {p: p.stat().st_size for p in idx}
    inodes = {p: p.stat().st_ino for p in idx}
    with mqdb.open(path) as db:
        before = io_counters()
        for i in range(0, 2000, 20):  # 100 puts to existing queues, 2 new queues
            db.put(f"Queue-{i}", b"more")
        db.put("New-1", b"x")
        db.put("New-2", b"y")
        db.flush()
        written = io_counters()["wchar"] - before["wchar"]
    assert {p: p.stat().st_ino for p in idx} == inodes  # appended to, not rewritten
    grown = sum(p.stat().st_size - sizes[p] for p in idx)
    # 102 blocks of about 30 bytes, 4 commit records, 2 names; 4 deltas of 96 bytes + 16 per block
    assert grown <= 4 * 96 + 102 * 16 + 2 * 8
    assert written <= 102 * 64 + 4 * 64 + grown + 64, written
    assert written * 20 < sum(sizes.values())
    with mqdb.open(path, readonly=True) as db:
        assert db.recovery == []
        assert db.get("Queue-20", 0, 5) == [b"20:0", b"more"] and db.get("New-2", 0, 1) == [b"y"]


def test_deltas_give_way_to_a_new_base(tmp_path):
    """Once the deltas list more blocks than their share, the next commit writes a new base."""
    path = tmp_path / "s"
    fill(path, 100, shards=1)
    idx = path / "000.idx"
    with mqdb.open(path, shards=1) as db:
        for round_ in range(40):
            for i in range(100):
                db.put(f"Queue-{i}", b"round %d" % round_)
            db.flush()
            if not deltas(idx):
                break
        else:
            pytest.fail("no new base after 4000 blocks of deltas")
    with mqdb.open(path, shards=1) as db:
        assert db.recovery == []
        assert db.count("Queue-7") == round_ + 2
        assert db.get("Queue-7", round_ + 1, 5) == [b"round %d" % round_]


# --- every region is verified before use ---------------------------------------------------------
@pytest.mark.parametrize("region", REGIONS)
def test_a_damaged_region_is_named_with_its_offset_and_rebuilt(tmp_path, region):
    path = tmp_path / "s"
    fill(path, 300, 3, shards=2)
    idx = path / "001.idx"
    offset, stored = regions(idx)[region]
    raw = bytearray(idx.read_bytes())
    raw[offset + REGION.size + stored // 2] ^= 0x55
    idx.write_bytes(bytes(raw))
    with mqdb.open(path, readonly=True) as db:
        (report,) = db.recovery
        assert report["shard"] == 1 and report["rebuilt"] is True
        assert f"{idx}: region {region} at offset {offset} fails its checksum" in report["reason"]
        assert all(db.get(f"Queue-{i}", 0, 5) == [b"%d:%d" % (i, s) for s in range(3)] for i in range(300))
    with mqdb.open(path) as db:  # a writer writes it anew
        assert db.recovery[0]["rebuilt"] is True
    with mqdb.open(path) as db:
        assert db.recovery == []


# --- region compression: LZ4 for runs, zlib for spread values (index version 3) --------------------
ZLIB, LZ4 = 0x02, 0x01


def region_flags(idx: Path) -> dict:
    raw = idx.read_bytes()
    return {name: REGION.unpack_from(raw, pos)[1] for name, (pos, _) in regions(idx).items() if name != "deltas"}


def rewrite_region(idx: Path, region: str, flags: int | None = None, stored: bytes | None = None) -> int:
    """Give ``region`` other flags or stored bytes, with its checksum made right again (and the header's
    body length); return the region's offset."""
    raw = bytearray(idx.read_bytes())
    pos, length = regions(idx)[region]
    _, old_flags, raw_len, _ = REGION.unpack_from(raw, pos)
    body = bytes(raw[pos + REGION.size : pos + REGION.size + length]) if stored is None else stored
    head = bytearray(REGION.pack(0, old_flags if flags is None else flags, raw_len, len(body)))
    struct.pack_into("<I", head, 0, checksum(bytes(head[4:]) + body))
    raw[pos : pos + REGION.size + length] = head + body
    body_len = struct.unpack_from("<Q", raw, 96)[0] + len(body) - length  # header bytes 96..103
    struct.pack_into("<Q", raw, 96, body_len)
    struct.pack_into("<I", raw, 12, checksum(bytes(raw[16:HEADER])))
    idx.write_bytes(bytes(raw))
    return pos


def set_index_version(idx: Path, version: int) -> None:
    raw = bytearray(idx.read_bytes())
    struct.pack_into("<H", raw, 8, version)
    idx.write_bytes(bytes(raw))


def test_spread_columns_are_stored_with_zlib_and_runs_with_lz4(tmp_path):
    path = tmp_path / "s"
    fill(path, 5000, 2, shards=1)
    flags = region_flags(path / "000.idx")
    assert flags["name_offset"] == flags["first_block"] == flags["last_block"] == flags["entry"] == ZLIB
    assert flags["count"] == flags["end"] == flags["block_count"] == flags["next_block"] == LZ4
    with mqdb.open(path, shards=1) as db:
        assert db.recovery == []
        assert all(db.get(f"Queue-{i}", 0, 9) == [b"%d:%d" % (i, s) for s in range(2)] for i in range(5000))


def test_a_version_2_index_is_read_as_it_is(tmp_path):
    """Version 2 is version 3 without zlib regions: a version-2 checkpoint (every region LZ4 or plain)
    is used as it is, not rebuilt."""
    path = tmp_path / "s"
    fill(path, 3000, 2, shards=1)
    idx = path / "000.idx"
    for region, flag in region_flags(idx).items():
        if flag == ZLIB:
            col = zlib.decompress(idx.read_bytes()[regions(idx)[region][0] + REGION.size :][: regions(idx)[region][1]])
            rewrite_region(idx, region, LZ4, lz4.block.compress(col, store_size=False))
    set_index_version(idx, 2)
    with mqdb.open(path, shards=1, readonly=True) as db:
        assert db.recovery == []
        assert all(db.get(f"Queue-{i}", 0, 9) == [b"%d:%d" % (i, s) for s in range(2)] for i in range(3000))


@pytest.mark.parametrize(
    ("version", "flags", "stored", "reason"),
    [
        (2, ZLIB, None, "has unknown flags 0x2"),  # zlib regions came with version 3
        (3, 0x04, None, "has unknown flags 0x4"),
        (3, ZLIB, b"not zlib at all", "does not decompress (Error -3"),
        (3, ZLIB, zlib.compress(b"\x00" * 8), "has the wrong length"),  # too short
        (3, ZLIB, zlib.compress(b"\x00" * 10**6), "does not decompress to its length"),  # too long
        (3, LZ4, b"\xf0" + b"\xff" * 8, "does not decompress"),  # a literal run longer than the block
        (3, LZ4, lz4.block.compress(b"\x00" * 8, store_size=False), "has the wrong length"),
    ],
)
def test_a_region_that_does_not_unpack_is_named_and_rebuilt(tmp_path, version, flags, stored, reason):
    """Each of these passes its checksum, so only the unpacking can tell: the checkpoint is unusable,
    the message names the region and its offset, and the shard is read from its data file."""
    path = tmp_path / "s"
    fill(path, 3000, 2, shards=1)
    idx = path / "000.idx"
    assert region_flags(idx)["name_offset"] == region_flags(idx)["entry"] == ZLIB
    offset = rewrite_region(idx, "entry", flags, stored)
    where = f"entry at offset {offset}"
    if version == 2:  # then the first zlib region, before entry, is the one refused
        where = f"name_offset at offset {regions(idx)['name_offset'][0]}"
    set_index_version(idx, version)
    with mqdb.open(path, shards=1, readonly=True) as db:
        (report,) = db.recovery
        assert report["rebuilt"] is True
        assert f"{idx}: region {where} {reason}" in report["reason"]
        assert all(db.get(f"Queue-{i}", 0, 9) == [b"%d:%d" % (i, s) for s in range(2)] for i in range(3000))


def test_a_damaged_delta_is_named_and_the_rest_read_from_the_data_file(tmp_path):
    path = tmp_path / "s"
    fill(path, 50, shards=1)
    with mqdb.open(path, shards=1) as db:
        for seq in range(1, 4):
            for i in range(50):
                db.put(f"Queue-{i}", b"%d:%d" % (i, seq))
            db.flush()
    idx = path / "000.idx"
    first, second, third = deltas(idx)
    raw = bytearray(idx.read_bytes())
    raw[second + DELTA.size + 4] ^= 0x01  # in the blocks it adds
    idx.write_bytes(bytes(raw))
    with mqdb.open(path, shards=1) as db:
        (report,) = db.recovery
        assert report["rebuilt"] is True and report["dropped_bytes"] == 0
        assert f"delta at offset {second} (checksum mismatch" in report["reason"]
        assert db.get("Queue-9", 0, 9) == [b"9:%d" % s for s in range(4)]
    assert deltas(idx) == [first, second]  # the writer wrote the rest again over the damaged one
    with mqdb.open(path, shards=1) as db:
        assert db.recovery == []
        assert db.get("Queue-49", 0, 9) == [b"49:%d" % s for s in range(4)]


# --- stores of format version 1 --------------------------------------------------------------------
def _v1_index(dat: Path, names: Path, shard: int) -> bytes:
    """The version-1 checkpoint of a shard (FORMAT.md, "Versions and migration"): one LZ4 block of
    qid, entry and count per block, behind a 104-byte header."""
    raw = dat.read_bytes()
    qids, entries, counts, pos, queues = [], [], [], 16, 0
    while pos < len(raw):
        _, kind, _, qid, size, _, count = struct.unpack_from("<IBBIHHH", raw, pos)
        if kind == 1:
            qids.append(qid)
            entries.append(pos << 16 | (16 + size))
            counts.append(count)
            queues = max(queues, qid + 1)
        pos += 16 + size
    n = len(qids)
    body = lz4.block.compress(
        struct.pack(f"<{n}I", *qids) + struct.pack(f"<{n}q", *entries) + struct.pack(f"<{n}H", *counts)
    )
    head = struct.pack(
        "<8sHHIQQQQQQQQQQQ", b"MQDBIDX\x00", 1, shard, 0, len(raw), names.stat().st_size, 1, queues, n,
        sum(counts), 0, 0, 0, 0, len(body),
    )  # fmt: skip
    return head + body


def make_v1(path: Path) -> dict:
    """A store as version 1 left it: same data and names files, version-1 checkpoints and manifest."""
    fill(path, 200, 2, shards=4, block_size=512)
    for shard in range(4):
        idx = path / f"{shard:03d}.idx"
        idx.write_bytes(_v1_index(path / f"{shard:03d}.dat", path / f"{shard:03d}.names", shard))
    manifest = json.loads((path / "MANIFEST").read_text())
    (path / "MANIFEST").write_text(json.dumps({**manifest, "version": 1}, sort_keys=True))
    return {f"Queue-{i}": [b"%d:%d" % (i, s) for s in range(2)] for i in range(200)}


def _digest(path: Path) -> str:
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sorted(path.iterdir()))).hexdigest()


def test_a_version_1_store_is_migrated_by_a_writer(tmp_path):
    path = tmp_path / "old"
    expected = make_v1(path)
    with mqdb.open(path) as db:
        assert sorted(r["shard"] for r in db.recovery) == [0, 1, 2, 3]
        assert all(r["rebuilt"] and "format version 1" in r["reason"] for r in db.recovery)
        assert all(r["dropped_bytes"] == 0 for r in db.recovery)
        assert all(db.get(q, 0, 9) == msgs for q, msgs in expected.items())
        db.put("Queue-0", b"after")
    assert json.loads((path / "MANIFEST").read_text())["version"] == 2
    for idx in path.glob("*.idx"):
        assert struct.unpack_from("<8sH", idx.read_bytes()) == (b"MQDBIDX\x00", INDEX_VERSION)
    with mqdb.open(path, readonly=True) as db:
        assert db.recovery == []
        assert db.get("Queue-0", 0, 9) == expected["Queue-0"] + [b"after"]
        assert db.stats()["format_version"] == 2


def test_a_version_1_store_is_refused_read_only_and_left_alone(tmp_path):
    path = tmp_path / "old"
    make_v1(path)
    before = _digest(path)
    with pytest.raises(mqdb.FormatError, match="format version 1") as e:
        mqdb.open(path, readonly=True)
    assert "open it once for writing" in str(e.value) and "readonly=True" in str(e.value)
    assert _digest(path) == before


def test_a_version_1_checkpoint_in_a_version_2_store_is_not_misread(tmp_path):
    """A version-1 checkpoint left behind (a migration cut short after the manifest) is never trusted."""
    path = tmp_path / "s"
    fill(path, 200, 2, shards=4, block_size=512)
    idx = path / "002.idx"
    idx.write_bytes(_v1_index(path / "002.dat", path / "002.names", 2))
    with mqdb.open(path) as db:
        (report,) = db.recovery
        assert report["shard"] == 2 and report["rebuilt"] is True
        assert "not a version-3 (or -2) index of shard 2" in report["reason"]
        assert all(db.get(f"Queue-{i}", 0, 9) == [b"%d:%d" % (i, s) for s in range(2)] for i in range(200))


@pytest.mark.skipif(not hasattr(__import__("os"), "O_NOATIME"), reason="no O_NOATIME on this system")
@pytest.mark.parametrize("readonly", [False, True])
def test_the_data_logs_are_read_without_access_time_updates_and_opened_anyway_when_that_is_refused(
    tmp_path, monkeypatch, readonly
):
    """The owner of a store opens its data logs with O_NOATIME; a reader the kernel refuses it to
    (EPERM: not the file's owner) opens them without, and reads the same messages."""
    import fcntl
    import os

    with mqdb.open(tmp_path) as db:
        db.put("q", b"m")
    with mqdb.open(tmp_path, readonly=readonly) as db:
        assert all(fcntl.fcntl(sh.fd, fcntl.F_GETFL) & os.O_NOATIME for sh in db._shards)
    real_open = os.open

    def refusing(path, flags, mode=0o777, **kw):
        if flags & os.O_NOATIME:
            raise PermissionError(1, "Operation not permitted", path)
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", refusing)
    with mqdb.open(tmp_path, readonly=readonly) as db:
        assert not any(fcntl.fcntl(sh.fd, fcntl.F_GETFL) & os.O_NOATIME for sh in db._shards)
        assert db.get("q", 0, 10) == [b"m"]
