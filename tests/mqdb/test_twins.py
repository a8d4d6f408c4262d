"""mqdb's compiled core held to the Python source: ``mqdb.coding``, ``mqdb.columns``, ``mqdb.directory``
and ``mqdb.hashing`` loaded both ways in one process and fed the same random inputs (valid blocks,
corrupted and truncated ones, varints, staging chunks sorted by queue, columns, queue names) must return the same
values or raise the same exception type with the same message and offset. ``mqdb.reads`` (the read
path over a shard's files) is held to its source by the rest of the mqdb suite, which runs on both
builds.

The module of this process is one build; the other is imported afresh under the same name
(``DUBBOMESH_PURE_PYTHON`` set or unset for the time of the import) and then put aside. ``mqdb.errors``
has no twin, so a :class:`FrameError` is the same class on both sides.
"""

from __future__ import annotations

import ast
import importlib
import mmap
import os
from array import array
from pathlib import Path

import mmh3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqdb import _accel
from mqdb.errors import FrameError
from mqdb.format import NAME_SEED
from tests.support.mqdb_twins import both

NAME = "mqdb.coding"
ROOT = Path(__file__).resolve().parents[2]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def builds():
    return both(NAME)


@pytest.fixture(scope="module")
def hashings():
    return both("mqdb.hashing")


@pytest.fixture(scope="module")
def directories():
    return both("mqdb.directory")


def outcome(function, *args):
    """What a call gave: its value (arrays as lists), or its exception by class name, message and offset."""
    try:
        value = function(*args)
    except Exception as exc:
        return ("raised", type(exc).__qualname__, str(exc), getattr(exc, "offset", None))
    if isinstance(value, array):
        return ("returned", value.typecode, value.tolist())
    return ("returned", value)


def same(compiled, pure, name, *args):
    """Call ``name`` of both builds with the same arguments; return the outcome they agree on."""
    got = outcome(getattr(compiled, name), *args)
    want = outcome(getattr(pure, name), *args)
    assert got == want, f"{name}{args!r}"
    return want


messages = st.lists(st.one_of(st.binary(max_size=20), st.binary(min_size=120, max_size=400)), max_size=12)
lengths = st.one_of(st.integers(0, 300), st.integers(0, (1 << 70) - 1))  # up to 10 bytes


@st.composite
def blocks(draw):
    """(raw, start, n): a block's payload after ``start`` header bytes, maybe cut, maybe damaged, and a
    frame count to walk that may be right or wrong."""
    msgs = draw(messages)
    header = draw(st.binary(max_size=16))
    body = b"".join(_varint(len(m)) + m for m in msgs)
    raw = header + body
    damage = draw(st.sampled_from(["none", "cut", "flip", "junk"]))
    if damage == "cut" and raw:
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif damage == "flip" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes((draw(st.integers(0, 255)),)) + raw[at + 1 :]
    elif damage == "junk":
        raw += draw(st.binary(min_size=1, max_size=12))
    n = draw(st.one_of(st.just(len(msgs)), st.integers(0, len(msgs) + 3)))
    return raw, len(header), n


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# -- varints ---------------------------------------------------------------------------------------


@SETTINGS
@given(n=lengths)
def test_varints_encode_the_same(builds, n):
    compiled, pure = builds
    assert same(compiled, pure, "encode_varint", n) == ("returned", _varint(n))


@SETTINGS
@given(data=st.binary(max_size=16), pos=st.integers(0, 17))
def test_varints_decode_the_same_or_fail_the_same(builds, data, pos):
    compiled, pure = builds
    same(compiled, pure, "decode_varint", data, pos)


@SETTINGS
@given(n=lengths, tail=st.binary(max_size=4))
def test_a_varint_decodes_to_what_was_encoded(builds, n, tail):
    compiled, pure = builds
    raw = _varint(n) + tail
    assert same(compiled, pure, "decode_varint", raw, 0) == ("returned", (n, len(_varint(n))))


# -- frames of a block -----------------------------------------------------------------------------------


@SETTINGS
@given(block=blocks())
def test_skip_and_split_agree_on_any_block(builds, block):
    compiled, pure = builds
    raw, start, n = block
    skipped = same(compiled, pure, "skip", raw, start, n)
    out_c: list = []
    out_p: list = []
    got = outcome(compiled.split, raw, start, n, out_c)
    want = outcome(pure.split, raw, start, n, out_p)
    assert (got, out_c) == (want, out_p)
    assert skipped[0] == got[0]  # the two fail on the same blocks
    if got[0] == "returned":
        assert skipped[1] == got[1]
        assert len(out_p) == n


@SETTINGS
@given(msgs=messages, header=st.binary(max_size=16))
def test_split_finds_every_message_of_a_sound_block(builds, msgs, header):
    compiled, pure = builds
    raw = header + b"".join(_varint(len(m)) + m for m in msgs)
    for coding in (compiled, pure):
        out: list = []
        assert coding.split(raw, len(header), len(msgs), out) == len(raw)
        assert out == msgs
        assert coding.skip(raw, len(header), len(msgs)) == len(raw)


@SETTINGS
@given(msgs=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6), keep=st.integers(0, 299))
def test_a_last_message_that_goes_on_is_cut_at_the_end_of_the_block(builds, msgs, keep):
    compiled, pure = builds
    raw = b"".join(_varint(len(m)) + m for m in msgs)
    keep = min(keep, len(msgs[-1]) - 1)
    cut = raw[: len(raw) - len(msgs[-1]) + keep]
    out: list = []
    assert pure.split(cut, 0, len(msgs), out) == len(raw)
    assert out == msgs[:-1] + [msgs[-1][:keep]]
    out_c: list = []
    assert compiled.split(cut, 0, len(msgs), out_c) == len(raw) and out_c == out
    same(compiled, pure, "skip", cut, 0, len(msgs))


@pytest.mark.parametrize(
    ("raw", "n", "offset", "reason"),
    [
        (b"\x01a", 2, 2, "a frame starts past the end of its buffer"),
        (b"\x01a\x80", 2, 2, "a frame length runs past the end of its buffer"),
        (b"\xff" * 9, 1, 0, "a frame length longer than 8 bytes"),
    ],
)
def test_a_malformed_frame_raises_frame_error_with_its_offset(builds, raw, n, offset, reason):
    for coding in builds:
        for name, args in (("skip", ()), ("split", ([],))):
            with pytest.raises(FrameError) as caught:
                getattr(coding, name)(raw, 0, n, *args)
            assert caught.value.offset == offset and caught.value.reason == reason
            assert str(caught.value) == f"frames do not parse at byte {offset} of their buffer: {reason}"


# -- staging chunks --------------------------------------------------------------------------------


def _column(n: int) -> memoryview:
    return memoryview(bytearray(8 * n)).cast("q")


@SETTINGS
@given(
    chunks=st.lists(
        st.lists(st.tuples(st.integers(0, 5), st.binary(max_size=200)), max_size=12), min_size=1, max_size=3
    ),
    damage=st.sampled_from(["none", "cut", "junk", "fewer", "more", "queue", "negative"]),
)
def test_staged_frames_are_sorted_by_queue_the_same_or_fail_the_same(builds, chunks, damage):
    """measure_runs then place_runs over the chunks of a stage: the same sizes, order and runs, or the
    same error; the runs hold each queue's frames in put order, side by side."""
    compiled, pure = builds
    staged = []
    for puts in chunks:
        qids = array("i", [q for q, _ in puts])
        chunk = b"".join(_varint(len(m)) + m for _, m in puts)
        staged.append([qids, chunk])
    qids, chunk = staged[-1]
    if damage == "cut" and chunk:
        staged[-1][1] = chunk[:-1]
    elif damage == "junk":
        staged[-1][1] = chunk + b"\x05"
    elif damage == "fewer" and qids:
        staged[-1][0] = qids[:-1]
    elif damage == "more":
        qids.append(0)
    elif damage == "queue" and qids:
        qids[0] = 6
    elif damage == "negative" and qids:
        qids[-1] = -1
    results = []
    for build in (compiled, pure):
        sizes, order = _column(6), array("i")
        outcomes = [outcome(build.measure_runs, q, c, sizes, order) for q, c in staged]
        results.append((outcomes, sizes.tolist(), order.tolist()))
    assert results[0] == results[1]
    outcomes, sizes, order = results[1]
    if any(o[0] == "raised" for o in outcomes):
        assert damage != "none"
        return
    starts, total = {}, 0
    for qid in order:
        starts[qid] = total
        total += sizes[qid]
    placed = []
    for build in (compiled, pure):
        ends, out = _column(6), bytearray(total)
        for qid, start in starts.items():
            ends[qid] = start
        for q, c in staged:
            build.place_runs(q, c, out, ends)
        placed.append((bytes(out), ends.tolist()))
    assert placed[0] == placed[1]
    out = placed[1][0]
    frames = [(q, _varint(len(m)) + m) for puts in chunks for q, m in puts]
    assert out == b"".join(b"".join(f for q, f in frames if q == qid) for qid in order)


@SETTINGS
@given(
    puts=st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=200)), min_size=1, max_size=12),
    start=st.integers(-3, 40),
    short=st.integers(0, 40),
)
def test_frames_placed_outside_their_runs_fail_the_same(builds, puts, start, short):
    """place_runs given runs that do not match its chunk: the same FrameError, and the same bytes
    copied before it, never a write outside ``out``."""
    compiled, pure = builds
    qids = array("i", [q for q, _ in puts])
    chunk = b"".join(_varint(len(m)) + m for _, m in puts)
    results = []
    for build in (compiled, pure):
        ends, out = _column(4), bytearray(max(0, len(chunk) - short))
        for qid in range(4):
            ends[qid] = start + qid
        results.append((outcome(build.place_runs, qids, chunk, out, ends), bytes(out), ends.tolist()))
    assert results[0] == results[1]


# -- shards ----------------------------------------------------------------------------------------


@SETTINGS
@given(
    name=st.one_of(st.text(min_size=1, max_size=30), st.integers(0, 10**20).map(lambda n: f"Queue-{n}")),
    shards=st.integers(1, 256),
)
def test_queues_go_to_the_same_shard_in_both_builds(hashings, name, shards):
    compiled, pure = hashings
    same(compiled, pure, "shard_of", name, shards)


# -- columns ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def columns():
    return both("mqdb.columns")


@SETTINGS
@given(
    typecode=st.sampled_from("iqbhlfd"),
    items=st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=20),
    i=st.integers(-25, 25) | st.sampled_from([1 << 40, -(1 << 40)]),
)
def test_columns_read_alike_in_both_builds(columns, typecode, items, i):
    """An item of an array("i") or array("q") column, in range or not (negative indexes count from the
    end, as for an array), comes out the same; so do the IndexError past the end and the TypeError for
    an array of another type code or for what is not an array at all."""
    compiled, pure = columns
    column = array(typecode, items if typecode in "iqld" else [x & 0x7F for x in items])
    same(compiled, pure, "item", column, i)
    for other in (items, bytes(8), memoryview(array("q", [1, 2])).cast("B")):
        same(compiled, pure, "item", other, 0)
    # touch: a hint only, in range or not, for any object: returns None and leaves the column as it was
    before = column.tobytes()
    for target in (column, items, bytes(8), None):
        assert same(compiled, pure, "touch", target, i) == ("returned", None)
    assert column.tobytes() == before


def _a_column(kind: str, items: list[int]):
    """A fresh column of ``kind`` holding ``items`` (cut to what the kind holds), or something that is not one."""
    small = [x & 0x7F for x in items]
    if kind in "iq":
        return array(kind, items)
    if kind in "bh":
        return array(kind, small)
    if kind.startswith("view"):  # a memoryview of anonymous memory, as columns.zeroed makes
        code = kind[-1]
        view = memoryview(mmap.mmap(-1, max(1, len(items)) * (8 if code == "q" else 4))).cast(code)[: len(items)]
        view[:] = array(code, items)
        return view
    if kind == "readonly":
        return memoryview(array("q", items).tobytes()).cast("q")
    if kind == "strided":
        return memoryview(array("q", items + items))[::2]
    if kind == "bytes-view":
        return memoryview(bytearray(small))
    if kind == "released":
        view = memoryview(array("q", items))
        view.release()
        return view
    return list(items)


COLUMN_KINDS = ["i", "q", "b", "h", "view-i", "view-q", "readonly", "strided", "bytes-view", "released", "list"]
column_values = (
    st.integers(-(1 << 31), (1 << 31) - 1)
    | st.sampled_from([1 << 31, -(1 << 31) - 1, (1 << 63) - 1, 1 << 63, -(1 << 63), -(1 << 63) - 1, 1 << 70])
    | st.sampled_from([1.5, "7", None, True])
)


def _contents(column):
    try:
        return column.tolist()
    except (AttributeError, ValueError, NotImplementedError):  # a list; a released view
        return list(column) if isinstance(column, list) else None


@SETTINGS
@given(
    kind=st.sampled_from(COLUMN_KINDS),
    items=st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=12),
    op=st.sampled_from(["item", "put_item", "append"]),
    i=st.integers(-14, 14) | st.sampled_from([1 << 40, -(1 << 40)]),
    value=column_values,
)
def test_columns_read_and_write_alike_in_both_builds(columns, kind, items, op, i, value):
    """Reading, writing and growing a column, whatever it is: an array("i") or array("q"), a
    memoryview of either format (writable, read-only, strided, released), or something else; any index
    and any value (one that does not fit the type, or is not an int). Both builds give the same value,
    leave the column with the same contents, or raise the same exception with the same message: the
    compiled build's C path must be no laxer than the Python lines it stands for."""
    compiled, pure = columns
    results = []
    for build in (compiled, pure):
        column = _a_column(kind, items)
        args = {"item": (column, i), "put_item": (column, i, value), "append": (column, value)}[op]
        results.append((outcome(getattr(build, op), *args), _contents(column)))
    assert results[0] == results[1], (kind, op, i, value)


def test_columns_of_zeroed_memory_are_read_and_written_in_place(columns):
    """The path every put takes in the compiled build: a view of columns.zeroed read and written in
    place, an array column grown, each in step with the Python build."""
    for build in columns:
        staged, qids = build.zeroed("q", 5), array("i")
        for qid in (3, 1, 3, 3):
            build.put_item(staged, qid, build.item(staged, qid) + 1)
            build.append(qids, qid)
        assert staged.tolist() == [0, 1, 0, 3, 0] and qids.tolist() == [3, 1, 3, 3]


# -- checksums and header fields read in place ----------------------------------------------------


@SETTINGS
@given(raw=st.binary(max_size=300), start=st.integers(-3, 310), length=st.integers(-3, 310))
def test_checksums_of_a_range_agree_with_the_checksum_of_its_copy(builds, raw, start, length):
    """checksum_at hashes the bytes where they lie in the compiled build (murmurhash's C function): the
    same value as mmh3's checksum of the copied range, and the same ValueError for a range outside."""
    compiled, pure = builds
    want = same(compiled, pure, "checksum_at", raw, start, start + length)
    if 0 <= start <= start + length <= len(raw):
        assert want == ("returned", pure.checksum(raw[start : start + length]))
    else:
        assert want[:2] == ("raised", "ValueError")


RECORD_FIELDS = {"kind": 0xFF, "flags": 0xFF, "qid": 0xFFFFFFFF, "skip": 0xFFFF, "count": 0xFFFF}


@SETTINGS
@given(
    src=st.binary(max_size=300),
    src_type=st.sampled_from([bytes, bytearray, bytearray, memoryview]),
    at=st.integers(-1, 40),
    slack=st.integers(-3, 20),
    data=st.data(),
)
def test_records_are_written_alike(builds, src, src_type, at, slack, data):
    """write_record stores the header's fields, copies the payload and hashes it in C in the compiled
    build: the same bytes as the Python build's struct packing and mmh3 (a record the reader verifies,
    whose header unpacks to the fields given), and the same ValueError or TypeError, with nothing
    written, for a field that does not fit, a range outside the source, a buffer too short (``slack``
    below 0), a source that is not bytes or a bytearray. At most one field is out of its range."""
    compiled, pure = builds
    start = data.draw(st.integers(-1, len(src) + 1), label="start")
    length = data.draw(st.integers(-1, max(0, len(src) - start) + 1), label="length")
    fields = {name: data.draw(st.integers(0, top), label=name) for name, top in RECORD_FIELDS.items()}
    bad = data.draw(st.sampled_from([None, None, *RECORD_FIELDS]), label="bad field")
    if bad is not None:
        fields[bad] = data.draw(st.sampled_from([-1, RECORD_FIELDS[bad] + 1, 1 << 40, -(1 << 40)]), label="bad value")
    room = max(0, at + pure.RECORD.size + length + slack)
    outcomes = []
    for build in (compiled, pure):
        buf = bytearray(b"\xaa" * room)
        args = (buf, at, *fields.values(), src_type(src), start, start + length)
        outcomes.append((outcome(build.write_record, *args), bytes(buf)))
    assert outcomes[0] == outcomes[1]
    got, written = outcomes[1]
    if got[0] == "raised":
        assert got[1] in ("ValueError", "TypeError") and written == b"\xaa" * room
        return
    end = got[1]
    record = written[at:end]
    assert bad is None and src_type is not memoryview and slack >= 0
    assert end == at + pure.RECORD.size + length and written[end:] == b"\xaa" * (room - end)
    want = (pure.checksum(record[4:]), *fields.values())
    unpacked = pure.RECORD.unpack_from(record)
    assert unpacked[:4] == want[:4] and unpacked[4] == length and unpacked[5:] == want[4:]
    assert record[pure.RECORD.size :] == src[start : start + length]


@SETTINGS
@given(raw=st.binary(max_size=20), at=st.integers(-2, 22), n=st.integers(-1, 9))
def test_little_endian_fields_read_alike(builds, raw, at, n):
    compiled, pure = builds
    want = same(compiled, pure, "le_uint", raw, at, n)
    if 0 <= at and 0 <= n <= 8 and at + n <= len(raw):
        assert want == ("returned", int.from_bytes(raw[at : at + n], "little"))


@pytest.fixture(scope="module")
def readers():
    return both("mqdb.reads")


@SETTINGS
@given(size=st.integers(0, 300), offset=st.integers(-2, 300))
def test_blocks_are_read_from_a_file_alike(readers, tmp_path_factory, size, offset):
    """The compiled read path calls pread(2) itself: the same bytes as os.pread, cut at the end of the
    file, and the same OSError for a negative offset or a descriptor that is not open."""
    compiled, pure = readers
    path = tmp_path_factory.getbasetemp() / "pread.bin"
    if not path.exists():
        path.write_bytes(bytes(range(256)) * 1)
    fd = os.open(path, os.O_RDONLY)
    try:
        same(compiled, pure, "_pread", fd, size, offset)
    finally:
        os.close(fd)
    same(compiled, pure, "_pread", fd, size, offset)  # closed


# -- queue directories -----------------------------------------------------------------------------

names = st.text(min_size=1, max_size=6).map(lambda s: s * 30) | st.text(min_size=1, max_size=12)


@SETTINGS
@given(held=st.lists(names, max_size=40, unique=True), asked=st.lists(names, max_size=10), bad=st.integers(0, 200))
def test_names_are_found_alike_in_both_builds(directories, held, asked, bad):
    """Each build's table, filled with the same names (short ones, and ones past 127 bytes with a longer
    length prefix), finds the same queue ids, -1 for a name it does not hold, and reports a table entry
    that names a queue past the end with the same error."""
    compiled, pure = directories
    raws = [name.encode() for name in held]
    tables = []
    for build in (compiled, pure):
        table = build.Directory(bytearray(b"H" * 16), array("q"))
        assert [table.add(raw) for raw in raws] == list(range(len(raws)))
        tables.append(table)
    assert tables[0].slots == tables[1].slots and tables[0].arena == tables[1].arena
    table = tables[1]
    for raw in raws + [name.encode() for name in asked]:
        assert same(compiled, pure, "name_hash", raw) == ("returned", mmh3.hash(raw, NAME_SEED, signed=False))
        i = pure.name_hash(raw) & table.mask
        for at in (-1, 0, 16, len(table.arena) - len(raw), len(table.arena) + 1):
            same(compiled, pure, "_holds", table.arena, at, raw)
        want = same(compiled, pure, "probe", table.slots, table.mask, table.arena, table.offs, raw, i)
        assert want == ("returned", raws.index(raw) if raw in raws else -1)
        then = (array("q", range(len(raws))), array("i"))  # touched for each candidate: a hint, nothing else
        assert same(compiled, pure, "probe", table.slots, table.mask, table.arena, table.offs, raw, i, then) == want
        assert then[0].tolist() == list(range(len(raws))) and not then[1]
        # a block id per queue, some -1 (no block), some past the end of the block columns, and a
        # block-id column shorter than the table: hints too, whatever they hold
        ids = array("i", [q % 7 - 1 for q in range(len(raws) // 2)])
        blocks = (ids, array("q", range(3)), array("i"))
        assert (
            same(compiled, pure, "probe", table.slots, table.mask, table.arena, table.offs, raw, i, then, blocks)
            == want
        )
        assert ids.tolist() == [q % 7 - 1 for q in range(len(raws) // 2)] and blocks[1].tolist() == [0, 1, 2]
        assert tables[0].find(raw) == tables[1].find(raw) == want[1]
        assert tables[0].find(raw, then, blocks) == tables[1].find(raw, then, blocks) == want[1]
    broken = array("i", table.slots)
    broken[bad & table.mask] = len(raws) + 1 + bad  # a queue id past the end of the table
    for raw in raws[:3] + [b"absent"]:
        same(compiled, pure, "probe", broken, table.mask, table.arena, table.offs, raw, bad & table.mask)


# -- the build of this process ---------------------------------------------------------------------


@pytest.mark.parametrize("name", _accel.TWINS)
def test_each_twinned_module_ends_by_calling_for_its_twin(name):
    tree = ast.parse(ROOT.joinpath(*name.split(".")).with_suffix(".py").read_text(encoding="utf-8"))
    assert ast.unparse(tree.body[-1]) == f"import_c_accel(globals(), {_accel.twin_of(name)!r})"


def test_this_process_runs_the_core_it_was_asked_for():
    loaded = {name: importlib.import_module(name) for name in _accel.TWINS}
    states = {_accel.MODULES[name] for name in _accel.TWINS}
    if _accel.pure_python_requested():
        assert states == {f"{_accel.PURE_PYTHON}={os.environ[_accel.PURE_PYTHON]}"}
        assert all(module.__file__.endswith(".py") for module in loaded.values())
        assert _accel.describe() == f"pure Python ({_accel.PURE_PYTHON}={os.environ[_accel.PURE_PYTHON]})"
    elif states == {_accel.NOT_BUILT}:
        pytest.skip("the compiled core is not built here (no compiler, or DUBBOMESH_NO_EXTENSIONS=1)")
    else:
        assert states == {_accel.COMPILED}, _accel.describe()
        for name, module in loaded.items():
            assert f"_c_{name.rpartition('.')[2]}." in module.__file__
        assert _accel.describe() == f"compiled ({len(_accel.TWINS)} core modules)"
