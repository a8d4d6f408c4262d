"""The `mqdb` command: exit codes and exact output of every command and every error.

Expected figures are computed here from the files themselves (their documented layout: a 16-byte file
header, then records with a 16-byte ``<IBBIHHH`` header), not taken from the code under test.
"""

import base64
import json
import os
import re
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

import mqdb
from mqdb import checkpoint
from mqdb.cli import main
from mqdb.format import entry_offset

ROOT = Path(__file__).resolve().parents[2]
RECORD = struct.Struct("<IBBIHHH")
KIND_BLOCK = 1
OPTS = {"shards": 4, "block_size": 512}

MESSAGES = {
    "alpha": [b"hello", b"tab\there\nnewline", b"\xff\xfe\x00binary", b""],
    "alpaca": [b"x"],
    "beta": [f"beta-{i} ".encode() * (i % 5 + 1) for i in range(60)],
    "gamma": [bytes(range(256)) * 3],
}


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def ok(result, stdout: str) -> None:
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    assert result.stdout == stdout


def fails(result, message: str) -> None:
    """Exit code 1, nothing on stdout, exactly `Error: message` on stderr."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == f"Error: {message}\n"


def make(path: Path, messages: dict = MESSAGES, **opts) -> Path:
    with mqdb.open(path, **{**OPTS, **opts}) as db:
        for q, msgs in messages.items():
            for m in msgs:
                db.put(q, m)
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    return make(tmp_path / "store")


# --- the files, read on their own ------------------------------------------------------------------
def names_of(path: Path, shard: int) -> list[str]:
    data = (path / f"{shard:03d}.names").read_bytes()
    pos, names = 16, []
    while pos < len(data):
        n = data[pos]  # names here are shorter than 128 bytes
        names.append(data[pos + 1 : pos + 1 + n].decode())
        pos += 1 + n
    return names


def blocks(path: Path) -> list[tuple[str, int, str, int, int]]:
    """(data file, record offset, queue, record length, count) of every block record."""
    out = []
    for dat in sorted(path.glob("*.dat")):
        names = names_of(path, int(dat.name[:3]))
        data = dat.read_bytes()
        pos = 16
        while pos + RECORD.size <= len(data):
            _, kind, _, qid, size, _, count = RECORD.unpack_from(data, pos)
            if kind == KIND_BLOCK:
                out.append((str(dat), pos, names[qid], RECORD.size + size, count))
            pos += RECORD.size + size
    return out


def flip(file: str, offset: int) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ 0xFF]))


# --- info ------------------------------------------------------------------------------------------
def test_info(store):
    recs = blocks(store)
    disk = sum(p.stat().st_size for p in store.iterdir() if p.is_file())
    payload = json.loads(run("info", store, "--json").stdout)["payload_bytes"]  # see test_info_payload_bytes
    stored = sum(r[3] for r in recs)
    raw = stored - 16 * len(recs)
    per_shard = [len(names_of(store, s)) for s in range(4)]
    balance = "n/a" if min(per_shard) == 0 else f"{max(per_shard) / min(per_shard):.2f}"
    flushed = max(checkpoint.read(str(store / f"{s:03d}.idx"), s).flushed_ns for s in range(4) if per_shard[s])
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(flushed // 10**9, tz=UTC).isoformat()
    ok(
        run("info", store),
        f"path            {store}\n"
        "format version  2\n"
        "queues          4\n"
        "messages        66\n"
        f"blocks          {len(recs)}\n"
        f"bytes on disk   {disk:,} ({disk / 1024:.1f} KiB)\n"
        f"payload bytes   {payload:,} ({payload / 1024:.1f} KiB)\n"
        f"compression     none, ratio {raw / stored:.2f} (raw/stored block bytes)\n"
        f"shard balance   max/min {balance} (queues per shard: min {min(per_shard)}, max {max(per_shard)}; 4 shards)\n"
        f"last flush      {when}\n",
    )


def test_info_json(store):
    result = run("info", store, "--json")
    ok(result, result.stdout)
    info = json.loads(result.stdout)
    recs = blocks(store)
    assert {k: info[k] for k in ("path", "format_version", "queues", "messages", "blocks", "compression")} == {
        "path": str(store),
        "format_version": 2,
        "queues": 4,
        "messages": 66,
        "blocks": len(recs),
        "compression": "none",
    }
    assert info["stored_block_bytes"] == sum(r[3] for r in recs)
    assert info["shards"] == 4 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", info["last_flush"])


def test_regression_info_payload_bytes_after_reopen(store):
    info = json.loads(run("info", store, "--json").stdout)
    assert info["payload_bytes"] == sum(len(m) for msgs in MESSAGES.values() for m in msgs)


def test_info_of_an_empty_store(tmp_path):
    mqdb.open(tmp_path / "s", **OPTS).close()
    result = run("info", tmp_path / "s")
    assert result.exit_code == 0
    assert "queues          0\n" in result.stdout and "last flush      never\n" in result.stdout


# --- ls --------------------------------------------------------------------------------------------
def ls_line(store, name):
    mine = [r for r in blocks(store) if r[2] == name]
    return f"{name}\t{len(MESSAGES[name])}\t{len(mine)}\t{sum(r[3] for r in mine)}\n"


def test_ls(store):
    ok(run("ls", store), "".join(ls_line(store, q) for q in ("alpaca", "alpha", "beta", "gamma")))
    ok(run("ls", store, "--prefix", "alp"), "".join(ls_line(store, q) for q in ("alpaca", "alpha")))
    ok(run("ls", store, "--sort", "messages"), "".join(ls_line(store, q) for q in ("beta", "alpha", "alpaca", "gamma")))
    ok(run("ls", store, "--sort", "bytes", "--limit", "2"), "".join(ls_line(store, q) for q in ("beta", "gamma")))
    ok(run("ls", store, "--prefix", "nothing"), "")


def test_ls_json(store):
    result = run("ls", store, "--json", "--prefix", "al")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == [
        {"name": q, "messages": len(MESSAGES[q]), "blocks": int(ls_line(store, q).split("\t")[2]),
         "stored_bytes": int(ls_line(store, q).split("\t")[3])}
        for q in ("alpaca", "alpha")
    ]  # fmt: skip


# --- get and tail ----------------------------------------------------------------------------------
def test_get_text(store):
    ok(run("get", store, "alpha"), "0\thello\n1\ttab\\there\\nnewline\n2\t\\xff\\xfe\\x00binary\n3\t\n")
    ok(
        run("get", store, "beta", "--offset", "58", "--num", "5"),
        "58\t" + "beta-58 " * 4 + "\n59\t" + "beta-59 " * 5 + "\n",
    )
    ok(run("get", store, "beta", "--offset", "60"), "")
    ok(run("get", store, "beta", "--num", "0"), "")


def test_get_default_is_ten_messages(store):
    result = run("get", store, "beta")
    assert result.stdout.splitlines() == [f"{i}\t" + f"beta-{i} " * (i % 5 + 1) for i in range(10)]


def test_get_formats(store):
    ok(run("get", store, "alpha", "--offset", "2", "--num", "1", "--format", "hex"), "2\tfffe0062696e617279\n")
    ok(run("get", store, "alpha", "--offset", "2", "--format", "base64"), "2\t//4AYmluYXJ5\n3\t\n")
    expected = '{"queue": "alpha", "offset": 2, "b64": "//4AYmluYXJ5"}\n{"queue": "alpha", "offset": 3, "b64": ""}\n'
    ok(run("get", store, "alpha", "--offset", "2", "--format", "json"), expected)
    ok(run("get", store, "alpha", "--offset", "2", "--json"), expected)
    ok(run("get", store, "alpha", "--offset", "2", "--json", "--format", "json"), expected)
    result = run("get", store, "gamma", "--format", "base64")
    assert base64.b64decode(result.stdout.split("\t")[1]) == MESSAGES["gamma"][0]


def test_get_json_and_another_format_contradict(store):
    fails(
        run("get", store, "alpha", "--json", "--format", "hex"),
        "--json and --format hex contradict each other; give one of them",
    )


def test_tail(store):
    ok(run("tail", store, "beta", "-n", "2"), "58\t" + "beta-58 " * 4 + "\n59\t" + "beta-59 " * 5 + "\n")
    hexed = "0\t68656c6c6f\n1\t74616209686572650a6e65776c696e65\n2\tfffe0062696e617279\n3\t\n"
    ok(run("tail", store, "alpha", "--format", "hex"), hexed)
    ok(run("tail", store, "alpha", "-n", "0"), "")
    result = run("tail", store, "beta")
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(i) for i in range(50, 60)]


def test_tail_follow_stops_after_timeout(store):
    result = run("tail", store, "alpaca", "--follow", "--timeout", "0.3")
    ok(result, "0\tx\n")


# --- put -------------------------------------------------------------------------------------------
def test_put_one_message(store):
    ok(run("put", store, "alpaca", "héllo"), "1\n")
    ok(run("put", store, "new", "first"), "0\n")
    with mqdb.open(store, readonly=True) as db:
        assert db.get("alpaca", 0, 5) == [b"x", "héllo".encode()]
        assert db.get("new", 0, 5) == [b"first"]


def test_put_lines_from_stdin(store):
    ok(run("put", store, "lines", input=b"one\ntwo\n\n\xff\xfe bin\nlast"), "5 messages put to lines, offsets 0 to 4\n")
    ok(run("put", store, "lines", input=b""), "0 messages put to lines\n")
    with mqdb.open(store, readonly=True) as db:
        assert db.get("lines", 0, 10) == [b"one", b"two", b"", b"\xff\xfe bin", b"last"]


def test_put_creates_a_store_in_a_new_or_empty_directory(tmp_path):
    ok(run("put", tmp_path / "new", "q", "m"), "0\n")
    (tmp_path / "empty").mkdir()
    ok(run("put", tmp_path / "empty", "q", "m"), "0\n")
    with mqdb.open(tmp_path / "empty", readonly=True) as db:
        assert db.get("q", 0, 2) == [b"m"]


def test_put_refuses_a_directory_that_is_not_a_store(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    fails(
        run("put", tmp_path / "other", "q", "m"),
        f"no mqdb store at {tmp_path / 'other'} (no MANIFEST file, and the directory is not empty); "
        "give a new or empty directory to create one",
    )
    assert os.listdir(tmp_path / "other") == ["notes.txt"]


def test_writing_commands_on_a_locked_store(store, tmp_path):
    export = tmp_path / "e.jsonl"
    export.write_text('{"queue": "alpaca", "offset": 1, "b64": ""}\n')
    with mqdb.open(store) as db:
        message = (
            f"{store} is open for writing by another process (pid {os.getpid()}); "
            "close it there, or open with readonly=True"
        )
        fails(run("put", store, "q", "m"), message)
        fails(run("put", store, "q", input="a\nb\n"), message)
        fails(run("import", store, export), message)
        # reading commands open beside the writer
        ok(run("get", store, "alpaca"), "0\tx\n")
        assert db.count("q") == 0


def test_put_an_empty_queue_name(store):
    fails(run("put", store, "", "m"), "a queue name must not be empty")


# --- check -----------------------------------------------------------------------------------------
def test_check_clean_store(store):
    commits = sum(1 for s in range(4) if names_of(store, s))  # the store was written and closed once
    records = len(blocks(store)) + commits
    ok(run("check", store), f"{store}: ok, 4 data files, {records} records, 4 queues, 66 messages checked\n")


def test_check_live_store_ignores_unflushed_data(store):
    with mqdb.open(store, write_batch_bytes=4096) as db:
        for i in range(200):
            db.put("beta", b"unflushed %d" % i * 20)  # written in batches, no commit yet
        result = run("check", store)
        assert result.exit_code == 0, result.output
        assert result.stdout.endswith("4 queues, 66 messages checked\n")


def test_check_flipped_bytes_name_file_offset_and_queue(store):
    recs = blocks(store)
    beta = [r for r in recs if r[2] == "beta"]
    gamma = [r for r in recs if r[2] == "gamma"]
    flip(beta[1][0], beta[1][1] + 40)  # a payload byte
    flip(gamma[0][0], gamma[0][1] + 14)  # a header byte (the count)
    result = run("check", store)
    assert result.exit_code == 1
    expected = sorted(
        [
            f"{beta[1][0]}:{beta[1][1]}: queue 'beta': checksum mismatch",
            f"{gamma[0][0]}:{gamma[0][1]}: queue 'gamma': checksum mismatch",
        ]
    )
    assert result.stdout == "".join(line + "\n" for line in expected)
    assert result.stderr == f"Error: 2 problems found in {store}\n"


def test_check_index_that_disagrees_with_the_blocks(store):
    recs = blocks(store)
    dat, offset, _, _, count = next(r for r in recs if r[2] == "beta")
    shard = int(Path(dat).name[:3])
    idx = str(store / f"{shard:03d}.idx")
    cp = checkpoint.read(idx, shard)
    b = [entry_offset(e) for e in cp.b_entry].index(offset)
    cp.b_count[b] += 1  # a well-formed checkpoint that lies about one block
    checkpoint.write(idx, shard, cp, sync=False)
    result = run("check", store)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        f"{dat}:{offset}: queue 'beta': the index says {count + 1} messages start in the block, its header says {count}"
    )
    assert result.stderr.startswith("Error: ") and result.stderr.endswith(f"found in {store}\n")


def test_check_truncated_data_file(store):
    dat, offset, *_ = blocks(store)[-1]
    os.truncate(dat, offset + 10)
    result = run("check", store)
    assert result.exit_code == 1
    assert f"{dat}:{offset + 10}: the file ends here, but its index checkpoint covers" in result.stdout


def test_check_progress_bar_on_stderr(store):
    result = run("check", store, "--progress")
    assert result.exit_code == 0
    assert "scan" in result.stderr and "read" in result.stderr


# --- export and import -----------------------------------------------------------------------------
def test_export_lines(store):
    lines = run("export", store, "--queue", "alpha").stdout.splitlines()
    assert lines == [
        '{"queue": "alpha", "offset": 0, "b64": "aGVsbG8="}',
        '{"queue": "alpha", "offset": 1, "b64": "dGFiCWhlcmUKbmV3bGluZQ=="}',
        '{"queue": "alpha", "offset": 2, "b64": "//4AYmluYXJ5"}',
        '{"queue": "alpha", "offset": 3, "b64": ""}',
    ]
    out = run("export", store)
    assert [json.loads(line)["queue"] for line in out.stdout.splitlines()] == [
        q for q in sorted(MESSAGES) for _ in MESSAGES[q]
    ]


def test_export_import_round_trip_keeps_every_byte_and_offset(tmp_path):
    rng = __import__("random").Random(7)
    messages = {
        f"q-{i}": [rng.randbytes(rng.choice((0, 1, 50, 700, 1500))) for _ in range(i * 7 + 1)] for i in range(6)
    }
    messages["ünïcode ✓"] = [b"\x00\n\r\xff" * 3, "ü".encode()]
    src = make(tmp_path / "src", messages, compression="lz4")
    out = tmp_path / "dump.jsonl"
    ok(run("export", src, "-o", out), "")
    ok(run("import", tmp_path / "dst", out), f"imported {sum(map(len, messages.values()))} messages into 7 queues\n")
    with mqdb.open(tmp_path / "dst", readonly=True) as db:
        assert sorted(db) == sorted(messages)
        for q, msgs in messages.items():
            assert db.count(q) == len(msgs)
            assert db.get(q, 0, len(msgs)) == msgs
    for line in out.read_text().splitlines():  # every offset as it was
        rec = json.loads(line)
        assert messages[rec["queue"]][rec["offset"]] == base64.b64decode(rec["b64"])
    ok(run("export", tmp_path / "dst", "-o", tmp_path / "again.jsonl"), "")
    assert (tmp_path / "again.jsonl").read_bytes() == out.read_bytes()
    ok(run("check", tmp_path / "dst"), run("check", tmp_path / "dst").stdout)


def test_import_continues_a_queue_and_reads_stdin(store, tmp_path):
    more = run("get", store, "beta", "--offset", "55", "--json").stdout  # get's json lines import
    ok(
        run("import", tmp_path / "dst", "-", input=run("export", store, "--queue", "beta").stdout),
        "imported 60 messages into 1 queues\n",
    )
    fails(
        run("import", tmp_path / "dst", "-", input=more),
        f"stdin line 1: the message at offset 55 of queue 'beta' would get offset 60 ({tmp_path / 'dst'} holds "
        "60 messages of it); each queue must continue where the store ends",
    )
    appended = "".join(json.dumps({"queue": "beta", "offset": 60 + i, "b64": "eA=="}) + "\n" for i in range(3))
    ok(run("import", tmp_path / "dst", "-", input=appended), "imported 3 messages into 1 queues\n")
    ok(run("tail", tmp_path / "dst", "beta", "-n", "1"), "62\tx\n")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"queue": "q", "offset": 0}', "no 'b64' field"),
        ('{"queue": "", "offset": 0, "b64": ""}', "'queue' is not a non-empty string"),
        ('{"queue": "q", "offset": -1, "b64": ""}', "'offset' is not a non-negative integer"),
        ('{"queue": "q", "offset": true, "b64": ""}', "'offset' is not a non-negative integer"),
        ('{"queue": "q", "offset": 0, "b64": "***"}', "'b64' is not valid base64"),
    ],
)
def test_import_refuses_a_bad_line_and_writes_nothing(tmp_path, line, reason):
    file = tmp_path / "in.jsonl"
    file.write_text('{"queue": "q", "offset": 0, "b64": "AA=="}\n\n' + line + "\n")
    fails(run("import", tmp_path / "dst", file), f"{file} line 3: {reason}; expected an export record")
    with mqdb.open(tmp_path / "dst", readonly=True) as db:
        assert len(db) == 0


def test_import_refuses_a_gap_in_offsets(tmp_path):
    file = tmp_path / "in.jsonl"
    file.write_text('{"queue": "q", "offset": 0, "b64": ""}\n{"queue": "q", "offset": 2, "b64": ""}\n')
    fails(
        run("import", tmp_path / "dst", file),
        f"{file} line 2: offset 2 of queue 'q' does not follow offset 0 "
        "(a queue's lines must have consecutive offsets)",
    )


def test_export_progress_bar_on_stderr(store, tmp_path):
    result = run("export", store, "-o", tmp_path / "e.jsonl", "--progress")
    assert result.exit_code == 0 and "export" in result.stderr


# --- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [("info",), ("ls",), ("get", "q"), ("tail", "q"), ("check",), ("export",)],
)
def test_missing_store(tmp_path, args):
    missing = tmp_path / "nothing"
    fails(run(args[0], missing, *args[1:]), f"no mqdb store at {missing} (no MANIFEST file)")


@pytest.mark.parametrize(
    "args", [("get", "nope"), ("tail", "nope"), ("tail", "nope", "--follow"), ("export", "--queue", "nope")]
)
def test_unknown_queue(store, args):
    fails(run(args[0], store, *args[1:]), f"no queue 'nope' in {store}")


def test_corrupt_block_on_read(store):
    dat, offset, *_ = [r for r in blocks(store) if r[2] == "beta"][0]
    flip(dat, offset + 100)
    fails(
        run("get", store, "beta"), f"corrupt data in {dat} at offset {offset} (queue 'beta'): block checksum mismatch"
    )
    fails(
        run("export", store, "--queue", "beta", "-o", store.parent / "out.jsonl"),
        f"corrupt data in {dat} at offset {offset} (queue 'beta'): block checksum mismatch",
    )
    assert not (store.parent / "out.jsonl").exists()  # no half-written export


def test_corrupt_file_header(store):
    dat = store / "002.dat"
    flip(str(dat), 0)
    fails(run("info", store), f"{dat}: not an mqdb data file (magic b'\\xb2QDBDAT\\x00')")
    result = run("check", store)
    assert result.exit_code == 1
    assert result.stdout == f"{dat}: not an mqdb data file (magic b'\\xb2QDBDAT\\x00')\n"
    assert result.stderr == f"Error: 1 problem found in {store}\n"


def test_bad_option_value_is_a_usage_error(store):
    result = run("get", store, "alpha", "--offset", "-1")
    assert result.exit_code == 2 and "Invalid value for '--offset'" in result.stderr


# --- help and docs ---------------------------------------------------------------------------------
def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The `mqdb` command") :]
    assert set(main.commands) >= {"info", "ls", "get", "tail", "put", "check", "export", "import", "bench", "demo"}
    for name, cmd in main.commands.items():
        assert cmd.help and cmd.get_short_help_str(), name
        assert f"mqdb {name} " in section, f"`mqdb {name}` is not documented in README.md"
        for flag in ("-h", "--help"):
            result = run(name, flag)
            assert result.exit_code == 0 and result.stdout.startswith(f"Usage: main {name} "), (name, flag)
        for param in cmd.params:
            if isinstance(param, __import__("click").Option) and not param.hidden:
                assert param.help, f"mqdb {name} {param.opts[0]} has no help text"


def test_python_dash_m_mqdb():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mqdb", "-h"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("Usage: mqdb [OPTIONS] COMMAND")
    for name in ("info", "ls", "get", "tail", "put", "check", "export", "import"):
        assert f"\n  {name} " in out.stdout


def test_import_of_a_missing_file_creates_no_store(tmp_path):
    result = run("import", tmp_path / "dst", tmp_path / "nope.jsonl")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "dst").exists()


def test_export_into_a_missing_directory(store, tmp_path):
    target = tmp_path / "no" / "e.jsonl"
    fails(run("export", store, "-o", target), f"cannot write {target}: no directory {tmp_path / 'no'}")
