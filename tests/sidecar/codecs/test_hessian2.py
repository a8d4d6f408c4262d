"""Hessian 2: the conformance vectors both ways, byte forms from the spec, references and class
definitions, round trips, and hostile input."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.codecs import hessian2
from sidecar.codecs.hessian2 import Hessian2Decoder, Hessian2Encoder, dumps, loads
from sidecar.codecs.javatypes import Date, JavaObject, Long, TypedList, TypedMap
from sidecar.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from tests.support.conformance import golden_vectors

GOLDEN = golden_vectors()


def golden_value(entry: dict):
    """The Python value an entry stands for (README: longs beyond 2^53 come from the name)."""
    kind, value = entry["type"], entry["value"]
    if kind == "long":
        if abs(value) > 2**53:
            value = int(entry["name"].split()[-1])
        return Long(value)
    if kind == "double":
        return float(value)
    if kind == "binary":
        return bytes.fromhex(value)
    return value


def same(a, b) -> bool:
    """Equal values of equal Java types (int vs long, float bit patterns, nested containers)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def test_golden_file_has_79_vectors():
    assert len(GOLDEN) == 79
    assert len({e["name"] for e in GOLDEN}) == 79


@pytest.mark.parametrize("entry", GOLDEN, ids=[e["name"] for e in GOLDEN])
def test_golden_encode(entry):
    assert dumps(golden_value(entry)).hex() == entry["hex"]


@pytest.mark.parametrize("entry", GOLDEN, ids=[e["name"] for e in GOLDEN])
def test_golden_decode(entry):
    decoded = loads(bytes.fromhex(entry["hex"]))
    assert same(decoded, golden_value(entry))


@pytest.mark.parametrize("entry", GOLDEN, ids=[e["name"] for e in GOLDEN])
def test_golden_every_prefix_is_truncated(entry):
    data = bytes.fromhex(entry["hex"])
    cuts = range(len(data)) if len(data) <= 64 else [*range(40), *range(len(data) - 24, len(data))]
    for cut in cuts:
        with pytest.raises(RemoteProtocolError, match="truncated"):
            loads(data[:cut])


# -- byte forms that the vectors do not pin ------------------------------------------------------

SPEC_CASES = [
    # value, hex (forms from the Hessian 2.0 grammar, as Hessian2Output writes them)
    (Date(894621091000), "4a000000d04b9284b8"),  # 09:51:31 May 8, 1998 UTC
    (Date(894621060000), "4b00e3838f"),  # 09:51:00 May 8, 1998 UTC: minutes form
    (Date(0), "4b00000000"),
    (Date(-1), "4affffffffffffffff"),
    (bytes(16), "3410" + "00" * 16),
    (b"", "20"),
    (float("inf"), "447ff0000000000000"),
    (-0.0, "5b"),
    (1e10, "444202a05f20000000"),  # integral but beyond int: neither the short nor the mills form
    (Long(-2049), "3bf7ff"),
    (TypedList("[int", [1, 2]), "72045b696e749192"),
    (TypedList("[string", ["a"] * 8), "56075b737472696e6798" + "0161" * 8),
    (TypedMap("java.util.TreeMap", {"a": 1}), "4d116a6176612e7574696c2e547265654d61700161915a"),
    (JavaObject("A", {"x": 1}), "4301419101786091"),
    (["\U0001f600"], "7902eda0bdedb880"),
    ("\ud800", "01eda080"),  # a lone surrogate goes out as it is, as Java would
]


@pytest.mark.parametrize(("value", "hex_"), SPEC_CASES, ids=[repr(c[0])[:40] for c in SPEC_CASES])
def test_spec_forms(value, hex_):
    assert dumps(value).hex() == hex_
    assert loads(bytes.fromhex(hex_)) == value


def test_datetime_is_written_as_a_date():
    import datetime as dt

    moment = dt.datetime(1998, 5, 8, 9, 51, 31, tzinfo=dt.UTC)
    assert dumps(moment) == dumps(Date(894621091000))
    assert loads(dumps(moment)).to_datetime() == moment
    assert Date.from_datetime(moment.replace(tzinfo=None)) == 894621091000


def test_decoder_accepts_every_compact_form():
    # forms a Java writer would not pick for these values, which a reader must still accept
    cases = {
        "c7ef": -17,
        "d3f7ff": -2049,
        "49fffffff0": -16,
        "f7f7": Long(-9),
        "59fffffff0": Long(-16),
        "4c0000000000000001": Long(1),
        "380000": Long(-262144),
        "5dff": -1.0,
        "5e8000": -32768.0,
        "5fffffffff": -0.001,
        "44bff0000000000000": -1.0,
        "5d01": 1.0,
        "4a0000000000000000": Date(0),
    }
    for hex_, value in cases.items():
        decoded = loads(bytes.fromhex(hex_))
        assert decoded == value and type(decoded) is type(value), hex_


def test_string_chunks_and_non_final_forms_decode():
    # 'R' chunk, then a compact final part; then 'R' chunk ending in a high surrogate.
    assert loads(b"\x52\x00\x02ab\x01c") == "abc"
    assert loads(b"\x52\x00\x01\xed\xa0\xbd\x01\xed\xb8\x80") == "\U0001f600"
    assert loads(b"\x52\x00\x01a\x52\x00\x01b\x30\x01c") == "abc"
    assert loads(b"\x02\xf0\x9f\x98\x80") == "\U0001f600"  # 4-byte UTF-8 counts as two units
    assert loads(b"\x41\x00\x02ab\x21c") == b"abc"
    assert loads(b"\x41\x00\x01a\x42\x00\x01b") == b"ab"


@pytest.mark.parametrize("size", [32767, 32768, 32769, 65536, 65537, 100000])
@pytest.mark.parametrize("emoji_at", [0, 32766, 32767, 32768, -1])
def test_long_strings_split_pairs_never(size, emoji_at):
    chars = ["q"] * size
    chars[emoji_at % size] = "\U0001f600"
    text = "".join(chars)
    data = dumps(text)
    assert loads(data) == text
    # each chunk header counts units, and no chunk ends with the high half of a pair
    pos = 0
    while data[pos] == 0x52:
        assert int.from_bytes(data[pos + 1 : pos + 3], "big") in (0x8000, 0x7FFF)
        chunk = Hessian2Decoder(b"\x53" + data[pos + 1 :])  # the chunk read as if it were final
        part = chunk.read()
        assert not 0xD800 <= ord(part[-1]) <= 0xDBFF
        pos += chunk.position


def test_binary_longer_than_a_chunk():
    blob = bytes(range(256)) * 200  # one full chunk and 0x4800 bytes
    data = dumps(blob)
    assert data[:3] == b"\x41\x80\x00" and data[0x8003:0x8006] == b"\x42\x48\x00"
    assert loads(data) == blob


# -- references, types and class definitions ----------------------------------------------------


def test_shared_and_cyclic_values_use_references():
    inner = [1]
    assert dumps([inner, inner]).hex() == "7a79915191"
    decoded = loads(dumps([inner, inner]))
    assert decoded == [[1], [1]] and decoded[0] is decoded[1]
    loop: list = []
    loop.append(loop)
    assert dumps(loop).hex() == "795190"
    again = loads(dumps(loop))
    assert again[0] is again
    mapping: dict = {}
    mapping["self"] = mapping
    assert loads(dumps(mapping))["self"] is not None


def test_tuples_take_a_reference_number_without_being_shared():
    shared = {"k": 1}
    value = [(1,), shared, (), shared]
    decoded = loads(dumps(value))
    assert decoded[1] is decoded[3] and decoded[2] == []


def test_class_definitions_and_type_names_are_written_once():
    two = [JavaObject("A", {"x": 1}), JavaObject("A", {"x": 2})]
    assert dumps(two).hex() == "7a43014191017860916092"
    assert loads(dumps(two)) == two
    types = [TypedList("[int", [1]), TypedList("[int", [2])]
    assert dumps(types).hex() == "7a71045b696e7491719092"
    assert [t.type for t in loads(dumps(types))] == ["[int", "[int"]
    many = [JavaObject(f"C{i}", {"v": i}) for i in range(20)]
    data = dumps(many)
    assert b"\x6f\x9f" in data and b"\x4f\xa0" in data  # class #15 is 0x6f; #16 is O + int 16
    assert loads(data) == many


def test_same_class_name_with_other_fields_gets_its_own_definition():
    value = [JavaObject("A", {"x": 1}), JavaObject("A", {"y": 2, "x": 3})]
    assert loads(dumps(value)) == value


def test_stream_state_is_shared_across_values():
    encoder = Hessian2Encoder()
    shared = JavaObject("pkg.Thing", {"name": "a"})
    encoder.write(shared)
    encoder.write(JavaObject("pkg.Thing", {"name": "b"}))
    encoder.write(shared)
    decoder = Hessian2Decoder(encoder.getvalue())
    first, second, third = decoder.read(), decoder.read(), decoder.read()
    assert decoder.at_end()
    assert first.fields == {"name": "a"} and second.fields == {"name": "b"} and third is first


def test_class_definition_chain_is_a_loop_not_recursion():
    data = b"\x43\x01a\x90" * 5000 + b"\x4e"
    assert loads(data) is None


def test_unencodable_values_are_local_errors():
    for value in [object(), {1, 2}, 2**64, Long(2**63), TypedList("", [1]), JavaObject("", {})]:
        with pytest.raises(LocalProtocolError):
            dumps(value)
    deep: list = []
    node = deep
    for _ in range(hessian2.MAX_DEPTH + 5):
        node.append([])
        node = node[0]
    with pytest.raises(LocalProtocolError, match="nested"):
        dumps(deep)


def test_subclasses_of_plain_types_encode():
    import enum

    class Colour(enum.IntEnum):
        RED = 3

    class Name(str):
        pass

    assert dumps(Colour.RED) == dumps(3)
    assert dumps(Name("x")) == dumps("x")
    assert dumps(True) == b"T"


# -- hostile input -------------------------------------------------------------------------------

BAD_INPUTS = {
    "empty": b"",
    "reserved 0x40": b"\x40",
    "reserved 0x45": b"\x45",
    "reserved 0x47": b"\x47",
    "reserved 0x50": b"\x50",
    "stray end marker": b"\x5a",
    "trailing bytes": b"\x90\x90",
    "huge list length": b"\x58\x49\x7f\xff\xff\xff",
    "negative list length": b"\x58\x8f",
    "huge string": b"\x53\xff\xff" + b"a" * 10,
    "huge binary": b"\x42\xff\xff",
    "huge field count": b"\x43\x01a\x49\x7f\xff\xff\xff",
    "undefined class": b"\x60",
    "undefined class via O": b"\x4f\x95",
    "dangling reference": b"\x51\x90",
    "undefined type reference": b"\x71\x95\x90",
    "type tag not string or int": b"\x71\x4e\x90",
    "bad utf-8 lead": b"\x01\xff",
    "lone continuation": b"\x01\x80",
    "bad continuation": b"\x02\xc3\x28",
    "overlong utf-8": b"\x01\xc0\x80",
    "4-byte char straddles length": b"\x01\xf0\x9f\x98\x80",
    "string chunk then int": b"\x52\x00\x01a\x90",
    "binary chunk then string": b"\x41\x00\x01a\x01b",
    "list key in map": b"\x48\x78\x90\x5a",
    "unterminated map": b"\x48\x90\x90",
    "unterminated list": b"\x57\x90",
    "nesting bomb": b"\x57" * 100000,
    "map nesting bomb": b"\x48\x90" * 100000,
    "class def without name": b"\x43\x4e\x90\x60",
    "null field name": b"\x43\x01a\x91\x4e\x60",
    "class def then nothing": b"\x43\x01a\x90",
}


@pytest.mark.parametrize("data", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_remote_protocol_error(data):
    with pytest.raises(RemoteProtocolError) as info:
        loads(data)
    assert "offset" in info.value.reason and info.value.status_hint == 400


# -- properties ----------------------------------------------------------------------------------

KEYS = st.one_of(st.text(max_size=8), st.integers(-100, 100))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Long),
    st.floats(),
    st.text(),
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.binary(max_size=64),
    st.integers(-(2**63), 2**63 - 1).map(Date),
    st.integers(-(2**31), 2**31 - 1).map(lambda m: Date(m * 60000)),
)
TYPE_NAMES = st.sampled_from(["[int", "[string", "java.util.LinkedList", "[object"])
CLASS_NAMES = st.sampled_from(["com.example.A", "com.example.B", "a.B"])


def _containers(children):
    return st.one_of(
        st.lists(children, max_size=10),
        st.lists(children, max_size=3).map(tuple),
        st.builds(TypedList, TYPE_NAMES, st.lists(children, max_size=9)),
        st.dictionaries(KEYS, children, max_size=5),
        st.builds(TypedMap, st.just("java.util.TreeMap"), st.dictionaries(KEYS, children, max_size=4)),
        st.builds(JavaObject, CLASS_NAMES, st.dictionaries(st.sampled_from("abcd"), children, max_size=4)),
    )


VALUES = st.recursive(SCALARS, _containers, max_leaves=30)


def canonical(value):
    """A comparable form: Java type tags, -0.0 as 0.0, NaN as a marker, strings as UTF-16 units."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Date):
        return ("date", int(value))
    if isinstance(value, int):
        is_int = type(value) is not Long and -(2**31) <= value < 2**31
        return ("int" if is_int else "long", int(value))
    if isinstance(value, float):
        return ("double", "nan" if value != value else value + 0.0)
    if isinstance(value, str):
        return ("str", value.encode("utf-16-be", "surrogatepass"))
    if isinstance(value, bytes):
        return ("bytes", value)
    if isinstance(value, (list, tuple)):
        return ("list", getattr(value, "type", None), [canonical(v) for v in value])
    if isinstance(value, dict):
        return ("map", getattr(value, "type", None), [(canonical(k), canonical(v)) for k, v in value.items()])
    if isinstance(value, JavaObject):
        return ("object", value.class_name, [(k, canonical(v)) for k, v in value.fields.items()])
    raise AssertionError(type(value))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_round_trip(value):
    data = dumps(value)
    decoded = loads(data)
    assert canonical(decoded) == canonical(value)
    assert dumps(decoded) == data


@settings(max_examples=100)
@given(st.lists(VALUES, min_size=1, max_size=5))
def test_round_trip_many_values_in_one_stream(values):
    encoder = Hessian2Encoder()
    for value in values:
        encoder.write(value)
    decoder = Hessian2Decoder(encoder.getvalue())
    decoded = []
    while not decoder.at_end():
        decoded.append(decoder.read())
    assert [canonical(v) for v in decoded] == [canonical(v) for v in values]


@given(st.floats())
def test_doubles_keep_their_bits(value):
    decoded = loads(dumps(value))
    if math.isnan(value):
        assert math.isnan(decoded)
    else:
        assert decoded == value


def _only_protocol_errors(data: bytes) -> None:
    try:
        decoder = Hessian2Decoder(data)
        while not decoder.at_end():
            decoder.read()
    except RemoteProtocolError as exc:
        assert exc.reason


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_garbage_raises_only_protocol_errors(data):
    _only_protocol_errors(data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    VALUES,
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 10**6),
)
def test_mutated_encodings_raise_only_protocol_errors(value, edits, cut):
    data = bytearray(dumps(value))
    for index, byte in edits:
        data[index % len(data)] = byte
    _only_protocol_errors(bytes(data))
    _only_protocol_errors(bytes(data[: cut % (len(data) + 1)]))


def test_protocol_errors_share_one_base():
    assert issubclass(RemoteProtocolError, ProtocolError) and issubclass(LocalProtocolError, ProtocolError)
