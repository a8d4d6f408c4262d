"""The libraries under the `mqdb` command: mqdb.tools.inspect, mqdb.tools.transfer and mqdb.tools.check."""

import io
import struct
from pathlib import Path

import pytest

import mqdb
from mqdb import checkpoint
from mqdb.format import entry_offset
from mqdb.tools import inspect, transfer
from mqdb.tools.check import Problem, check

RECORD = struct.Struct("<IBBIHHH")
OPTS = {"shards": 2, "block_size": 512}


def make(path: Path, rounds: int = 1, **opts) -> Path:
    """Queues a, b, c; each round is one open, puts and close (one commit per shard)."""
    for r in range(rounds):
        with mqdb.open(path, **{**OPTS, **opts}) as db:
            for i in range(30):
                for q in ("a", "b", "c"):
                    db.put(q, f"{q}-{r}-{i} ".encode() * (i % 9 + 1))
    return path


def records(dat: Path) -> list[tuple[int, int, int, int]]:
    """(offset, kind, qid, length) of every record."""
    data = dat.read_bytes()
    out, pos = [], 16
    while pos + 16 <= len(data):
        _, kind, _, qid, size, _, _ = RECORD.unpack_from(data, pos)
        out.append((pos, kind, qid, 16 + size))
        pos += 16 + size
    return out


def flip(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0xFF
    file.write_bytes(bytes(data))


# --- transfer --------------------------------------------------------------------------------------
def test_text_escapes_what_would_break_a_line_or_is_not_utf8():
    assert transfer.text("héllo ✓".encode()) == "héllo ✓"
    assert transfer.text(b"a\tb\nc\rd\x00e\x1bf\x7f") == "a\\tb\\nc\\rd\\x00e\\x1bf\\x7f"
    assert transfer.text(b"\xff\xc3(ok") == "\\xff\\xc3(ok"
    assert transfer.text(b"back\\slash") == "back\\slash"


def test_render_and_parse():
    assert transfer.render("text", "q", 7, b"hi\n") == "7\thi\\n"
    assert transfer.render("hex", "q", 7, b"\x00\xff") == "7\t00ff"
    assert transfer.render("base64", "q", 7, b"\x00\xff") == "7\tAP8="
    line = transfer.render("json", "q ✓", 7, b"\x00\xff")
    assert line == '{"queue": "q \\u2713", "offset": 7, "b64": "AP8="}'
    assert transfer.parse(line) == ("q ✓", 7, b"\x00\xff")
    assert transfer.parse(line.encode()) == ("q ✓", 7, b"\x00\xff")
    with pytest.raises(ValueError, match="format must be one of"):
        transfer.render("yaml", "q", 0, b"")


def test_import_from_a_pipe_is_checked_before_anything_is_written(tmp_path):
    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self.data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self.data.readinto(b)

    good = b"".join(transfer.record("q", i, b"m%d" % i).encode() + b"\n" for i in range(3))
    with mqdb.open(tmp_path / "s", **OPTS) as db:
        with pytest.raises(transfer.TransferError, match="pipe line 4: "):
            transfer.import_file(db, io.BufferedReader(Pipe(good + b"oops\n")), name="pipe")
        assert len(db) == 0
        assert transfer.import_file(db, io.BufferedReader(Pipe(good)), name="pipe") == (1, 3)
        assert db.get("q", 0, 5) == [b"m0", b"m1", b"m2"]


def test_export_writes_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), transfer.output(str(target)) as f:
        f.write("partial\n")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


# --- inspect ---------------------------------------------------------------------------------------
def test_follow_yields_what_is_put_and_stops_at_the_timeout(tmp_path):
    now = [0.0]
    with mqdb.open(tmp_path / "s", **OPTS) as db:
        db.put("q", b"first")

        def sleep(seconds):
            now[0] += seconds
            db.put("q", b"at %.1f" % now[0])

        got = list(inspect.follow(db, "q", 0, interval=0.5, timeout=1.2, clock=lambda: now[0], sleep=sleep))
    assert got == [(0, b"first"), (1, b"at 0.5"), (2, b"at 1.0"), (3, b"at 1.2")]


def test_unknown_queue_and_bad_sort(tmp_path):
    with mqdb.open(make(tmp_path / "s"), readonly=True) as db:
        with pytest.raises(inspect.QueueNotFoundError, match="no queue 'zz' in"):
            inspect.tail(db, "zz")
        with pytest.raises(ValueError, match="sort must be one of name, messages, bytes"):
            inspect.list_queues(db, sort="size")
        assert [i.name for i in inspect.list_queues(db, sort="messages", limit=2)] == ["a", "b"]


def test_open_store_for_writing_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(mqdb.StoreNotFoundError, match="is not a directory"):
        inspect.open_store(tmp_path / "f", write=True)
    with pytest.raises(mqdb.StoreNotFoundError):
        inspect.open_store(tmp_path / "f")


def test_human_bytes_and_iso_time():
    assert [inspect.human_bytes(n) for n in (0, 1023, 1536, 5 << 20, 3 << 40)] == [
        "0 B", "1023 B", "1.5 KiB", "5.0 MiB", "3.0 TiB",
    ]  # fmt: skip
    assert inspect.iso_time(None) is None
    assert inspect.iso_time(1_700_000_000_999_999_999) == "2023-11-14T22:13:20+00:00"


# --- check -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_check_sound_store(tmp_path, compression):
    path = make(tmp_path / "s", rounds=3, compression=compression)
    phases = set()
    report = check(path, progress=lambda phase, done, total: phases.add(phase))
    assert report == []
    assert (report.files, report.queues, report.messages) == (2, 3, 270)
    assert report.records == sum(len(records(d)) for d in path.glob("*.dat"))
    assert phases == {"scan", "read"}


def test_problem_text():
    assert str(Problem("d/000.dat", 16, "q", "bad")) == "d/000.dat:16: queue 'q': bad"
    assert str(Problem("d/000.idx", None, None, "bad")) == "d/000.idx: bad"


def test_check_goes_on_after_a_damaged_commit_record(tmp_path):
    path = make(tmp_path / "s", rounds=3)
    dat = path / "000.dat"
    recs = records(dat)
    commit = next(r for r in recs if r[1] == 2)  # the first of three commit records
    later = [r for r in recs if r[1] == 1 and r[0] > commit[0]]
    flip(dat, commit[0] + 20)
    flip(dat, later[-1][0] + 20)  # and a block after it
    report = check(path)
    names = checkpoint.decode_names("", (path / "000.names").read_bytes(), 0)
    assert [str(p) for p in report] == [
        f"{dat}:{commit[0]}: checksum mismatch",
        f"{dat}:{later[-1][0]}: queue {names[later[-1][2]]!r}: checksum mismatch",
    ]


@pytest.mark.parametrize("field", ["qid", "count", "length"])
def test_check_index_against_block_headers(tmp_path, field):
    path = make(tmp_path / "s")
    idx = str(path / "001.idx")
    cp = checkpoint.read(idx, 1)
    offset = entry_offset(cp.b_entry[0])
    names = checkpoint.decode_names("", (path / "001.names").read_bytes(), 1)
    if field == "qid":
        assert len(names) > 1
        cp.b_qid[0] = (cp.b_qid[0] + 1) % len(names)
    elif field == "count":
        cp.b_count[0] += 2
    else:
        cp.b_entry[0] += 1
    checkpoint.write(idx, 1, cp, sync=False)
    report = check(path)
    found = [str(p) for p in report if p.offset == offset]
    assert (
        len(report) == 1 + (field == "count")
        and len(found) == 1
        and found[0].startswith(f"{path / '001.dat'}:{offset}: queue ")
    )
    reason = {"qid": "its header says queue '", "count": "messages start in the block", "length": "the record is"}
    assert reason[field] in found[0]


def test_check_damaged_checkpoint_and_torn_tails(tmp_path):
    path = make(tmp_path / "s")
    (path / "000.idx").write_bytes(b"garbage")
    with open(path / "001.dat", "ab") as f:
        f.write(b"\x01" * 100)  # a torn write after the last commit: what a crash leaves, no problem
    report = check(path)
    assert [str(p) for p in report] == [f"{path / '000.idx'}: index header cut short"]


def test_check_garbage_far_beyond_a_bad_record(tmp_path):
    path = make(tmp_path / "s")
    dat = path / "001.dat"
    size = dat.stat().st_size
    with open(dat, "ab") as f:
        f.write(b"\x07" * (1026 * 512))
    report = check(path)
    assert [str(p) for p in report] == [
        f"{dat}:{size}: unknown record kind 7, with {1026 * 512} bytes after it (more than an interrupted write leaves)"
    ]


def test_check_a_store_that_does_not_open(tmp_path):
    path = make(tmp_path / "s")
    (path / "MANIFEST").write_text("{}")
    assert [str(p) for p in check(path)] == [f"{path / 'MANIFEST'}: not an mqdb manifest"]
    with pytest.raises(mqdb.StoreNotFoundError):
        check(tmp_path / "missing")


def test_check_on_a_live_store_sees_only_what_was_flushed(tmp_path):
    path = make(tmp_path / "s")
    with mqdb.open(path, **OPTS, write_batch_bytes=4096) as db:
        for _ in range(500):
            db.put("a", b"x" * 300)
        report = check(path)
        assert report == [] and report.messages == 90
        db.flush()
        assert check(path).messages == 590
