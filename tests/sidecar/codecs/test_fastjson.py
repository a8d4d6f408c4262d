"""fastjson (Dubbo serialization 6): one compact JSON text and a newline per value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.codecs.fastjson import FastjsonDecoder, FastjsonEncoder, dumps, loads
from sidecar.codecs.javatypes import Date, JavaObject, Long, TypedList
from sidecar.errors import LocalProtocolError, RemoteProtocolError


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (None, b"null\n"),
        (True, b"true\n"),
        (99162322, b"99162322\n"),
        (Long(2**63 - 1), b"9223372036854775807\n"),
        (1.5, b"1.5\n"),
        ("hash", b'"hash"\n'),
        ("é中\U0001f600", '"é中\U0001f600"\n'.encode()),
        ('a\nb\t"c"\\', b'"a\\nb\\t\\"c\\"\\\\"\n'),
        ({"path": "S", "version": "0.0.0"}, b'{"path":"S","version":"0.0.0"}\n'),
        ([1, "a", None], b'[1,"a",null]\n'),
        (TypedList("[int", [1, 2]), b"[1,2]\n"),
        (JavaObject("com.x.Point", {"x": 1, "y": 2}), b'{"x":1,"y":2}\n'),
        (b"\x00\x01\xff", b'"AAH/"\n'),
        (Date(894621091000), b"894621091000\n"),
        ([float("nan"), float("inf")], b"[null,null]\n"),
    ],
)
def test_lines_as_fastjson_writes_them(value, line):
    assert dumps(value) == line


def test_encoder_and_decoder_take_values_in_order():
    encoder = FastjsonEncoder()
    for value in ["2.0.2", None, 4, {"a": [1]}]:
        encoder.write(value)
    data = encoder.getvalue()
    assert data == b'"2.0.2"\nnull\n4\n{"a":[1]}\n'
    decoder = FastjsonDecoder(data)
    assert [decoder.read_string(), decoder.read(), decoder.read_int(), decoder.read()] == [
        "2.0.2",
        None,
        4,
        {"a": [1]},
    ]
    assert decoder.at_end()


def test_reader_is_lenient_like_readline():
    assert loads(b"[1]") == [1]  # no final newline
    assert loads(b"[1]\r\n") == [1]
    assert loads(b"\n") is None  # an empty text parses as null
    assert loads(b'"\\ud83d\\ude00"\n') == "\U0001f600"


def test_lone_surrogates_travel_as_escapes():
    data = dumps("a\ud800b")
    assert data == b'"a\\ud800b"\n' and loads(data) == "a\ud800b"


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"[1,]", b"\xff\n", b"1\n2\n", b"nul\n", b"[" * 100000, b"1" * 5000 + b"\n"],
    ids=["empty", "open", "comma", "utf8", "two", "word", "deep", "bigint"],
)
def test_bad_input(data):
    with pytest.raises(RemoteProtocolError):
        loads(data)


def test_type_checks():
    with pytest.raises(RemoteProtocolError, match="string"):
        FastjsonDecoder(b"1\n").read_string()
    with pytest.raises(RemoteProtocolError, match="int"):
        FastjsonDecoder(b"true\n").read_int()


def test_unencodable_values():
    loop: list = []
    loop.append(loop)
    for value in [object(), {1, 2}, loop, [loop, float("nan")]]:
        with pytest.raises(LocalProtocolError):
            dumps(value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=20,
)


@given(st.lists(JSON, max_size=5))
def test_round_trip(values):
    encoder = FastjsonEncoder()
    for value in values:
        encoder.write(value)
    decoder = FastjsonDecoder(encoder.getvalue())
    assert [decoder.read() for _ in values] == values
    assert decoder.at_end()


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_garbage_raises_only_protocol_errors(data):
    decoder = FastjsonDecoder(data)
    try:
        while not decoder.at_end():
            decoder.read()
    except RemoteProtocolError:
        pass
