"""The compiled twins of the codecs held to the Python source: both loaded in one process and fed the same
random inputs (valid ones, mutated ones, random bytes), they must give the same bytes or values, or
raise the same exception type with the same message and fields.

Both builds are loaded whichever way this pass runs: the modules of this process are one build; the
other is imported afresh under the same names (``DUBBOMESH_PURE_PYTHON`` set or unset for the time of the
import) and then put aside, so neither disturbs the other. The modules without a twin (``javatypes``,
``fastjson``, ``sidecar.errors``) are shared, so Java values and protocol errors are the same classes on
both sides; the classes of the twinned modules are compared by name and fields.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import os
import struct
import sys
from types import SimpleNamespace
from urllib.parse import quote_plus, unquote_to_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import _accel
from sidecar.codecs.dubbo import Request, Response, Serialization, Status
from sidecar.codecs.javatypes import Date, JavaObject, Long, TypedList, TypedMap
from sidecar.tools.builds import load_build
from tests.support.codec_inputs import (
    CALL_BODIES,
    CALL_REQUESTS,
    CUTS,
    DUBBO_STREAMS,
    FORM_CALL_BODIES,
    HESSIAN_CORPUS,
    HESSIAN_VALUES,
    LIMITS,
    MODES,
    PAYLOADS,
    SCALARS,
    dubbo_messages,
    encoded,
    http_requests,
    mutated,
    splits,
    tunnel_datagrams,
)

CODECS = list(_accel.TWINS)


def load(pure: bool) -> tuple[SimpleNamespace, set[str]]:
    """The twinned codec modules imported afresh as one build, and the states they recorded."""
    modules, loaded = load_build(pure)
    return SimpleNamespace(**modules), loaded


def current() -> SimpleNamespace:
    return SimpleNamespace(**{name.rpartition(".")[2]: importlib.import_module(name) for name in _accel.TWINS})


@pytest.fixture(scope="module")
def builds() -> tuple[SimpleNamespace, SimpleNamespace]:
    """(compiled, pure): the twinned codec modules of each build."""
    here = current()
    if _accel.pure_python_requested():
        compiled, states = load(pure=False)
        pure = here
    else:
        compiled, states = here, {_accel.MODULES[name] for name in CODECS}
        pure, _ = load(pure=True)
    if states != {_accel.COMPILED}:
        pytest.skip(f"the compiled twins are not built ({', '.join(sorted(states))}): nothing to compare")
    assert all(module.__file__.endswith(".py") for module in vars(pure).values())
    assert not any(module.__file__.endswith(".py") for module in vars(compiled).values())
    return compiled, pure


# -- comparing outcomes ----------------------------------------------------------------------------


def canonical(value, seen: dict[int, int] | None = None):
    """``value`` as plain tuples that compare equal across the builds: classes by name, floats by their
    bits (NaN equals NaN), containers by type and items in order, a value met again as a reference."""
    seen = {} if seen is None else seen
    kind = type(value)
    name = kind.__qualname__
    if value is None or kind in (bool, str, bytes):
        return value
    if kind is int:
        return ("int", value)
    if isinstance(value, float):
        return (name, struct.pack(">d", value))
    if isinstance(value, enum.Enum):
        return ("enum", name, value.value)
    if isinstance(value, int):  # Long, Date
        return (name, int(value))
    if isinstance(value, bytearray | memoryview):
        return (name, bytes(value))
    if name in ("Sentinel", "_Sentinel"):
        return ("sentinel", repr(value))
    if isinstance(value, BaseException):
        return ("raised", *failure(value))
    if id(value) in seen:
        return ("ref", seen[id(value)])
    seen[id(value)] = len(seen)
    if dataclasses.is_dataclass(value):
        fields = [f for f in dataclasses.fields(value) if f.compare]  # what the class's == compares
        return (name, tuple(canonical(getattr(value, f.name), seen) for f in fields))
    if isinstance(value, dict):
        items = tuple((canonical(k, seen), canonical(v, seen)) for k, v in value.items())
        return (name, getattr(value, "type", None), items)
    if isinstance(value, list | tuple):
        return (name, getattr(value, "type", None), tuple(canonical(item, seen) for item in value))
    raise AssertionError(f"no canonical form for {name}: {value!r}")


def failure(exc: BaseException) -> tuple:
    fields = tuple((key, getattr(exc, key, None)) for key in ("reason", "status_hint", "request_id", "headers"))
    return type(exc).__qualname__, str(exc), fields


def outcome(function, *args, **kwargs):
    try:
        return ("returned", canonical(function(*args, **kwargs)))
    except Exception as exc:
        return ("raised", *failure(exc))


def same(compiled_function, pure_function, *args, **kwargs):
    """The outcome of ``pure_function(*args, **kwargs)``, which ``compiled_function`` must match."""
    expected = outcome(pure_function, *args, **kwargs)
    assert outcome(compiled_function, *args, **kwargs) == expected
    return expected


def twin_of(value, build: SimpleNamespace, module: str):
    """``value``, an instance of a class of the twinned ``module``, rebuilt from the same class of ``build``."""
    cls = getattr(getattr(build, module), type(value).__name__)
    return cls(**{f.name: getattr(value, f.name) for f in dataclasses.fields(value)})


PROPERTY = settings(
    max_examples=int(os.environ.get("TWIN_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


# -- HTTP/1.1 --------------------------------------------------------------------------------------


def serve(build: SimpleNamespace, pieces: list[bytes], limits: dict, with_calls: bool, take_bodies: bool) -> list:
    """What a server of ``build`` makes of ``pieces``: every event, the bytes of each reply (200 as
    soon as a request ends), with ``with_calls`` the call of each request (or its error) and the bytes
    of its Dubbo frame; then the peer's error and the bytes of the error reply. With ``take_bodies``
    each request's body is asked for whole (``take_body``) as soon as its head comes."""
    http1, calls = build.http1, build.calls
    server = http1.ServerConnection(**limits)
    events: list = []
    request, body = None, []

    def ended() -> bool:
        if with_calls:
            whole = (request.method, request.target, request.headers, b"".join(body))
            events.append(outcome(calls.parse_call, *whole))
            if events[-1][0] == "returned":
                call = calls.parse_call(*whole)
                events.append(outcome(calls.encode_call, call, 7))
        events.append(server.send(http1.Response(200, [("X-Seen", str(len(events)))], b"ok")))
        events.append(server.our_state)
        if server.our_state is http1.MUST_CLOSE:
            return False
        server.start_next_cycle()
        return True

    def drain() -> bool:
        nonlocal request, body
        while True:
            event = server.next_event()
            events.append(event)
            if event is http1.NEED_DATA or event is http1.PAUSED:
                return True
            if isinstance(event, http1.ConnectionClosed):
                return False
            if isinstance(event, http1.Request):
                request, body = event, []
                if take_bodies:
                    whole = server.take_body()
                    events.append(("taken", whole, server.their_state))
                    if whole is not None:
                        body.append(whole)
                        if not ended():
                            return False
            elif isinstance(event, http1.Data):
                body.append(event.data)
            elif isinstance(event, http1.EndOfMessage):
                if not ended():
                    return False

    try:
        for piece in pieces:
            server.receive_data(piece)
            if not drain():
                return events
        server.receive_data(b"")
        drain()
    except Exception as exc:
        events.append(exc)
        events.append(outcome(server.send, http1.Response(getattr(exc, "status_hint", 500), [], b"")))
    return events


HTTP_INPUTS = st.binary(max_size=256) | mutated(http_requests()) | http_requests()


@PROPERTY
@given(data=HTTP_INPUTS, cuts=CUTS, limits=LIMITS, with_calls=st.booleans(), take_bodies=st.booleans())
def test_http_server_parses_alike(builds, data, cuts, limits, with_calls, take_bodies):
    compiled, pure = builds
    pieces = splits(data, cuts)
    same(
        lambda: serve(compiled, pieces, limits, with_calls, take_bodies),
        lambda: serve(pure, pieces, limits, with_calls, take_bodies),
    )


# Header lines whose values hold every kind of byte a value may or may not carry: HTAB and spaces
# (allowed, stripped at the ends), the other controls and DEL (refused), Latin-1 beyond ASCII.
FIELD_VALUES = st.binary(max_size=24) | st.text(alphabet="a \t\x00\x08\n\r\x1f\x7f\x80\xff", max_size=24).map(
    lambda text: text.encode("latin-1")
)
HEADER_LINES = st.builds(lambda name, value: name + b":" + value, st.sampled_from([b"X-A", b"Host", b"Bad Name", b""]),
                         FIELD_VALUES)  # fmt: skip


@PROPERTY
@given(lines=st.lists(HEADER_LINES, max_size=4))
def test_header_fields_alike(builds, lines):
    compiled, pure = builds
    same(compiled.http1_wire.parse_fields, pure.http1_wire.parse_fields, lines, 100, "request head")


ESCAPES = st.text(alphabet="ab=&%+0fFzé\U0001f600", max_size=30).map(str.encode)


@PROPERTY
@given(body=mutated(CALL_BODIES) | st.binary(max_size=64) | ESCAPES)
def test_form_decoding_alike(builds, body):
    compiled, pure = builds
    same(lambda: compiled.http1_wire.parse_form(body), lambda: pure.http1_wire.parse_form(body))
    same(lambda: compiled.http1.parse_form(body), lambda: pure.http1.parse_form(body))


FIELD_NAMES = st.sampled_from(["host", "Host", "X-Request-Id", "x-request-id", "EXPECT", "", "\u0130d", "ß"]) | st.text(
    max_size=80
)


@PROPERTY
@given(
    headers=st.lists(st.tuples(FIELD_NAMES | st.binary(max_size=8), st.text(max_size=8)), max_size=6),
    name=FIELD_NAMES,
)
def test_header_lookup_alike(builds, headers, name):
    compiled, pure = builds
    for _ in range(2):  # the second time from the cache of lowered names
        same(compiled.http1_wire.get_header, pure.http1_wire.get_header, headers, name)
        same(compiled.http1_wire.get_header, pure.http1_wire.get_header, headers, name, "none")


PIECES = st.binary(max_size=64).map(lambda raw: quote_plus(raw, safe="%+").encode()) | ESCAPES | st.binary(max_size=32)


@PROPERTY
@given(raw=PIECES, cut=st.integers(0, 8))
def test_percent_decoding_alike(builds, raw, cut):
    compiled, pure = builds
    piece = raw[: len(raw) - cut] if cut else raw
    expected = unquote_to_bytes(piece.replace(b"+", b" "))
    assert compiled.http1_wire._unquote_plus(piece) == expected == pure.http1_wire._unquote_plus(piece)
    same(lambda: compiled.http1_wire._decode_piece(piece), lambda: pure.http1_wire._decode_piece(piece))


@PROPERTY
@given(
    **CALL_REQUESTS,
    request_id=st.integers(-1, 2**64),
    serialization=st.sampled_from([Serialization.HESSIAN2, Serialization.FASTJSON, 3]),
)
def test_call_mapping_alike(builds, method, target, headers, body, request_id, serialization):
    compiled, pure = builds
    result = same(
        lambda: compiled.calls.parse_call(method, target, headers, body),
        lambda: pure.calls.parse_call(method, target, headers, body),
    )
    if result[0] == "returned":
        calls = [build.calls.parse_call(method, target, headers, body) for build in builds]
        same(
            lambda: compiled.calls.encode_call(calls[0], request_id, serialization=serialization),
            lambda: pure.calls.encode_call(calls[1], request_id, serialization=serialization),
        )


@PROPERTY
@given(**CALL_REQUESTS)
def test_a_call_from_its_checked_path_alike_and_as_parse_call_makes_it(builds, method, target, headers, body):
    compiled, pure = builds
    route = same(
        lambda: compiled.calls.check_route(method, target, headers),
        lambda: pure.calls.check_route(method, target, headers),
    )
    if route[0] != "returned":
        return
    path = route[1]
    checked = same(
        lambda: compiled.calls.parse_checked_call(path, body), lambda: pure.calls.parse_checked_call(path, body)
    )
    assert outcome(pure.calls.parse_call, method, target, headers, body) == checked


@PROPERTY
@given(
    body=FORM_CALL_BODIES | mutated(FORM_CALL_BODIES),
    serialization=st.sampled_from([Serialization.HESSIAN2, Serialization.FASTJSON]),
    request_id=st.integers(0, 2**64 - 1),
)
def test_prepared_calls_alike_and_as_the_general_path_makes_them(builds, body, serialization, request_id):
    """prepare_call gives what parse_checked_call gives (the same call or the same error) in both builds,
    the first time a body's head is seen and again once it is known, and the call encodes the same."""
    compiled, pure = builds
    general = outcome(pure.calls.parse_checked_call, "/", body)
    for _ in range(2):
        assert same(compiled.calls.prepare_call, pure.calls.prepare_call, "/", body, serialization) == general
    if general[0] == "returned":
        calls = [build.calls.prepare_call("/", body, serialization) for build in builds]
        frame = same(
            lambda: compiled.calls.encode_call(calls[0], request_id, serialization=serialization),
            lambda: pure.calls.encode_call(calls[1], request_id, serialization=serialization),
        )
        plain = pure.calls.parse_checked_call("/", body)
        assert outcome(pure.calls.encode_call, plain, request_id, serialization=serialization) == frame


@st.composite
def response_frames(draw) -> bytes:
    message = draw(dubbo_messages())
    if isinstance(message, Request) or draw(st.integers(0, 3)) == 0:
        message = Response(message.request_id, value=draw(SCALARS), serialization=message.serialization)
    return encoded(message)


@PROPERTY
@given(frame=mutated(response_frames()) | response_frames() | st.binary(max_size=64), form=st.booleans())
def test_replies_alike(builds, frame, form):
    compiled, pure = builds
    calls = [build.calls.Call("Svc", "hash", "Ljava/lang/String;", ["x"], form=form) for build in builds]
    same(lambda: compiled.calls.reply_for(calls[0], frame), lambda: pure.calls.reply_for(calls[1], frame))
    same(
        lambda: compiled.calls.error_reply(504, f"no answer\r\n {frame[:8]!r}", form=form),
        lambda: pure.calls.error_reply(504, f"no answer\r\n {frame[:8]!r}", form=form),
    )


@PROPERTY
@given(frame=mutated(response_frames()) | response_frames())
def test_responses_read_in_place_alike(builds, frame):
    """parse_response reads a frame in place: the value or the error that parse() gives of its header
    fields and a copy of its body, in both builds."""
    compiled, pure = builds
    if len(frame) < pure.dubbo.HEADER_LENGTH:
        return
    in_place = same(compiled.dubbo.parse_response, pure.dubbo.parse_response, frame)
    _, flags, status, request_id, _ = pure.dubbo.HEADER.unpack_from(frame)
    copied = pure.dubbo.Frame(flags, status, request_id, frame[pure.dubbo.HEADER_LENGTH :])
    assert in_place == outcome(pure.dubbo.parse, copied)
    # read_reply: the fields of that response that a reply needs, without making the response
    fields = same(compiled.dubbo.read_reply, pure.dubbo.read_reply, frame)
    if in_place[0] == "raised":
        assert fields == in_place
    else:
        response = pure.dubbo.parse_response(frame)
        assert fields == outcome(lambda: (response.status, response.error_message, response.exception, response.value))


# -- Hessian 2 -------------------------------------------------------------------------------------

EDGE_VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and the infinities too
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.text(max_size=40),
    st.builds(lambda n, tail: "a" * n + tail, st.integers(0x7FF0, 0x8000), st.text("a\U0001f600\ud800\udc00")),
    st.builds(lambda n, tail: bytes(n) + tail, st.integers(0x7FF0, 0x8000), st.binary(max_size=20)),
    st.sampled_from([Serialization.FASTJSON, Status.OK, True, 1.5, -0.0, 0.001, 2**31, object(), {1j: 2}]),
)
VALUES = HESSIAN_VALUES | EDGE_VALUES | st.lists(HESSIAN_VALUES | EDGE_VALUES, max_size=3)


@PROPERTY
@given(values=st.lists(VALUES, min_size=1, max_size=3), repeat=st.booleans())
def test_hessian_encoding_alike(builds, values, repeat):
    compiled, pure = builds

    def stream(build):
        encoder = build.hessian2.Hessian2Encoder()
        for value in values + (values if repeat else []):  # written again: back-references
            encoder.write(value)
        return encoder.getvalue()

    same(lambda: stream(compiled), lambda: stream(pure))
    same(lambda: compiled.hessian2.dumps(values[0]), lambda: pure.hessian2.dumps(values[0]))


STRING_TEXTS = st.text(
    alphabet=st.sampled_from(
        "a\x7f\x80\u07ff\u0800\ud7ff\ud800\udbff\udc00\udfff\ue000\uffff\U00010000\U0001f600\U0010ffff"
    ),
    max_size=300,
) | st.builds(
    lambda head, tail: head + tail,  # about one chunk (0x8000 UTF-16 units): the chunked way and the short one meet
    st.sampled_from(["a" * 0x7FFE, "a" * 0x7FFF, "\u20ac" * 0x7FFF, "a" * 0x7FFE + "\ud800"]),
    st.sampled_from(["", "b", "\U0001f600", "\ud800", "\udc00", "bb"]),
)


@PROPERTY
@given(text=STRING_TEXTS)
def test_hessian_strings_alike(builds, text):
    """The characters of a string as Hessian writes them (non-BMP ones as two surrogates, lone surrogates
    as they are), counted in UTF-16 units, and the string's whole encoding, chunks included."""
    compiled, pure = builds
    expected = same(compiled.hessian2._java_utf8, pure.hessian2._java_utf8, text)
    split = "".join(c if ord(c) < 0x10000 else chr(0xD800 + ((ord(c) - 0x10000) >> 10)) + chr(0xDC00 + (ord(c) & 0x3FF))
                    for c in text)  # fmt: skip
    assert expected == ("returned", ("tuple", None, (split.encode("utf-8", "surrogatepass"), ("int", len(split)))))
    same(lambda: compiled.hessian2.dumps(text), lambda: pure.hessian2.dumps(text))
    assert pure.hessian2.loads(pure.hessian2.dumps(text)) == split.encode("utf-16-be", "surrogatepass").decode(
        "utf-16-be", "surrogatepass"
    )


def read_all(build: SimpleNamespace, data: bytes, modes: list[str], max_depth: int) -> list:
    decoder = build.hessian2_decoder.Hessian2Decoder(data, max_depth=max_depth)
    values = []
    for index in range(64):
        if decoder.at_end():
            break
        mode = modes[index % len(modes)] if modes else "read"
        read = {"string": decoder.read_string, "int": decoder.read_int}.get(mode, decoder.read)
        values.append(read())
        values.append(decoder.position)
    decoder.expect_end()
    return values


@PROPERTY
@given(
    data=st.binary(max_size=256) | mutated(HESSIAN_CORPUS) | HESSIAN_CORPUS,
    modes=MODES,
    max_depth=st.sampled_from([128, 3]),
)
def test_hessian_decoding_alike(builds, data, modes, max_depth):
    compiled, pure = builds
    same(lambda: read_all(compiled, data, modes, max_depth), lambda: read_all(pure, data, modes, max_depth))
    same(lambda: compiled.hessian2.loads(data), lambda: pure.hessian2.loads(data))


# -- Dubbo -----------------------------------------------------------------------------------------


@PROPERTY
@given(
    message=dubbo_messages(),
    max_payload=PAYLOADS,
    request_id=st.none() | st.integers(-1, 2**64),
    flag=st.none() | st.integers(-1, 7),
)
def test_dubbo_encoding_alike(builds, message, max_payload, request_id, flag):
    compiled, pure = builds
    if request_id is not None:
        message.request_id = request_id
    if flag is not None and isinstance(message, Response):
        message.flag = flag
    messages = [twin_of(message, build, "dubbo_messages") for build in builds]
    same(
        lambda: compiled.dubbo.encode(messages[0], max_payload=max_payload),
        lambda: pure.dubbo.encode(messages[1], max_payload=max_payload),
    )
    if isinstance(message, Request):
        args = (message.service_path, message.method, message.parameter_types, message.attachments)
        options = {"service_version": message.service_version, "serialization": message.serialization}

        def template(build):
            return build.dubbo.RequestTemplate(*args, **options).encode(message.request_id, message.arguments)

        same(lambda: template(compiled), lambda: template(pure))


def decode_stream(build: SimpleNamespace, pieces: list[bytes], max_payload, parse_bodies: bool) -> list:
    dubbo = build.dubbo
    decoder = dubbo.DubboDecoder(max_payload=max_payload, parse_bodies=parse_bodies)
    events: list = []
    for piece in [*pieces, b""]:
        decoder.receive_data(piece)
        for _ in range(16):
            try:
                event = decoder.next_event()
            except Exception as exc:
                events.append(exc)
                if exc is decoder._error:
                    return events
                continue
            events.append(event)
            if event is dubbo.NEED_DATA or event is dubbo.CLOSED:
                break
            if not parse_bodies:
                events.append(outcome(dubbo.parse, event))
        events.append(decoder.buffered)
    return events


@PROPERTY
@given(
    data=st.binary(max_size=256) | mutated(DUBBO_STREAMS) | DUBBO_STREAMS,
    cuts=CUTS,
    max_payload=PAYLOADS,
    parse_bodies=st.booleans(),
)
def test_dubbo_decoding_alike(builds, data, cuts, max_payload, parse_bodies):
    compiled, pure = builds
    pieces = splits(data, cuts)
    same(
        lambda: decode_stream(compiled, pieces, max_payload, parse_bodies),
        lambda: decode_stream(pure, pieces, max_payload, parse_bodies),
    )


# -- tunnel ----------------------------------------------------------------------------------------

DATAGRAMS = st.binary(max_size=128) | mutated(tunnel_datagrams()) | tunnel_datagrams()
LIMITS_UDP = st.sampled_from([65507, 1472, 35, 34, 70000])


@PROPERTY
@given(data=DATAGRAMS, kind=st.sampled_from([bytes, bytearray, memoryview, str]))
def test_tunnel_decoding_alike(builds, data, kind):
    compiled, pure = builds
    datagram = kind(data) if kind is not str else data.hex()
    same(lambda: compiled.tunnel.decode(datagram), lambda: pure.tunnel.decode(datagram))
    replies = same(lambda: compiled.tunnel.decode_replies(datagram), lambda: pure.tunnel.decode_replies(datagram))
    # decode_replies is decode for a reply batch, as pairs: None for any other kind, the same errors
    decoded = outcome(pure.tunnel.decode, datagram)
    if decoded[0] == "raised":
        assert replies == decoded
    else:
        batch = pure.tunnel.decode(datagram)
        pairs = [(r.request_id, r.frame) for r in batch.replies] if isinstance(batch, pure.tunnel.ReplyBatch) else None
        assert replies == outcome(lambda: pairs)


@PROPERTY
@given(
    request_id=st.integers(-1, 2**64) | st.just(1.5),
    frame=mutated(DUBBO_STREAMS) | DUBBO_STREAMS,
    replies=st.lists(st.tuples(st.integers(0, 2**18), mutated(DUBBO_STREAMS) | DUBBO_STREAMS), max_size=4),
    limit=LIMITS_UDP,
    consumer=st.integers(-1, 0x10000),
    stamp=st.integers(-(2**33), 2**33),
    seq=st.integers(-1, 0x10000),
)
def test_tunnel_encoding_alike(builds, request_id, frame, replies, limit, consumer, stamp, seq):
    compiled, pure = builds
    for name, args, kwargs in [
        ("encode_request", (request_id, frame), {"limit": limit}),
        ("encode_replies", (replies,), {"limit": limit}),
        ("make_request_id", (consumer, stamp, seq), {}),
        ("split_request_id", (request_id,), {}),
        ("ms_between", (stamp, seq), {}),
        ("max_request_frame", (limit,), {}),
        ("hex_id", (abs(stamp),), {}),
    ]:
        same(getattr(compiled.tunnel, name), getattr(pure.tunnel, name), *args, **kwargs)

    def batch(build):
        batcher = build.tunnel.ReplyBatcher(consumer, limit=limit)
        added = [outcome(batcher.add, rid, data) for rid, data in replies]
        return added, len(batcher), repr(batcher), batcher.flush()

    same(lambda: batch(compiled), lambda: batch(pure))


@st.composite
def request_runs(draw) -> list[bytes]:
    """REQUEST datagrams of one consumer (as the consumer batches them), now and then one of another
    consumer, a mutated one or other bytes."""
    consumer = draw(st.integers(0, 0xFFFF))
    run = []
    for seq in range(draw(st.integers(0, 6))):
        request_id = (consumer << 48) | (draw(st.integers(0, 2**32 - 1)) << 16) | seq
        body = draw(st.binary(max_size=draw(st.sampled_from([8, 64, 1500]))))
        frame = struct.pack(">HBBQI", 0xDABB, draw(st.sampled_from([0xC2, 0x82, 0xE2, 0x02])), 0, request_id, len(body))
        datagram = struct.pack(">HBBBQ", 0x4454, 1, 1, 0, request_id) + frame + body
        run.append(
            draw(st.just(datagram) | mutated(st.just(datagram), 2) | tunnel_datagrams() | st.binary(max_size=20))
        )
    return run


@PROPERTY
@given(run=request_runs(), limit=LIMITS_UDP | st.sampled_from([100, 200, 3000]))
def test_request_batching_alike(builds, run, limit):
    compiled, pure = builds
    same(compiled.tunnel.join_requests, pure.tunnel.join_requests, run, limit=limit)
    same(compiled.tunnel.batch_requests, pure.tunnel.batch_requests, run, limit=limit)
    joined = outcome(pure.tunnel.join_requests, run, limit=65507)
    if joined[0] == "returned":  # what was joined decodes alike, into the calls joined
        datagram = pure.tunnel.join_requests(run)
        same(lambda: compiled.tunnel.decode(datagram), lambda: pure.tunnel.decode(datagram))
        assert [pure.tunnel.encode_request(r.request_id, r.frame) for r in pure.tunnel.decode(datagram).requests] == run


# Java's String.hashCode: every kind of character (ASCII, the rest of the BMP, lone surrogates, beyond
# the BMP), at every length around the pure build's switch from its loop to its chunks of 256.
HASH_TEXTS = (
    st.text(alphabet=st.characters(codec="ascii"), max_size=1100)
    | st.text(max_size=600)
    | st.text(alphabet=st.sampled_from("a\x7f\xe9\u20ac\ud800\udfff\uffff\U00010000\U0001f600\U0010ffff"), max_size=600)
)


@PROPERTY
@given(text=HASH_TEXTS)
def test_java_string_hash_alike(builds, text):
    compiled, pure = builds
    expected = same(compiled.javahash.java_string_hash, pure.javahash.java_string_hash, text)
    units = text.encode("utf-16-be", "surrogatepass")
    value = 0
    for i in range(0, len(units), 2):
        value = (31 * value + int.from_bytes(units[i : i + 2], "big")) & 0xFFFFFFFF
    assert expected == ("returned", ("int", value - (1 << 32) if value >= 1 << 31 else value))


@pytest.mark.parametrize("value", [None, b"abc", 12, ["a"]])
def test_java_string_hash_refuses_what_is_not_a_str_alike(builds, value):
    compiled, pure = builds
    assert same(compiled.javahash.java_string_hash, pure.javahash.java_string_hash, value)[1] == "TypeError"


# -- the harness itself ----------------------------------------------------------------------------


def test_both_builds_are_loaded_and_the_process_is_left_as_it_was(builds):
    compiled, pure = builds
    for name in (dotted.rpartition(".")[2] for dotted in _accel.TWINS):
        assert getattr(compiled, name) is not getattr(pure, name)
        assert getattr(pure, name).__file__.endswith(f"{name}.py")
        assert f"_c_{name}." in getattr(compiled, name).__file__
    assert current().http1 in (compiled.http1, pure.http1)
    for name in _accel.TWINS:
        package, _, short = name.rpartition(".")
        assert getattr(importlib.import_module(package), short) is sys.modules[name]
    assert compiled.http1.Request is not pure.http1.Request


def test_the_canonical_form_tells_values_apart():
    assert canonical([1, True, 1.0, Long(1), Date(1)]) != canonical([True, 1, 1.0, 1, 1])
    assert canonical(float("nan")) == canonical(float("nan"))
    assert canonical(TypedList("a", [1])) != canonical([1])
    assert canonical(TypedMap("a", {1: 2})) != canonical({1: 2})
    loop: list = []
    loop.append(loop)
    assert canonical(loop) == ("list", None, (("ref", 0),))
    assert canonical(JavaObject("C", {"a": 1})) == ("JavaObject", ("C", ("dict", None, (("a", ("int", 1)),))))


# -- the policies a call passes --------------------------------------------------------------------


def _operations(calls: dict, keys: int, seconds: float):
    """Random sequences of ``(name of calls, n in 0..keys, 0..seconds the clock moves on first)``."""
    step = st.floats(0, seconds, allow_nan=False)
    return st.lists(st.tuples(st.sampled_from(sorted(calls)), st.integers(0, keys), step), max_size=80)


def _replay(target, calls: dict, ops) -> tuple[list, float]:
    """What ``target`` answers to ``ops`` (see :func:`_operations`), each made by ``calls[name](target,
    n, now)``; a ValueError is an answer too. Returns the answers and the clock at the end."""
    out: list = []
    now = 0.0
    for name, n, step in ops:
        now += step
        try:
            out.append(calls[name](target, n, now))
        except ValueError as exc:
            out.append(("ValueError", str(exc)))
    return out, now


def _provider(n: int) -> str:
    return f"p{n % 3}"


BALANCER_CALLS = {
    "add": lambda b, n, now: b.add_provider(_provider(n), 1 + n % 4),
    "remove": lambda b, n, now: b.remove_provider(_provider(n)),
    "submit": lambda b, n, now: b.submit(n, now + 5.0, now),
    **{
        outcome: (lambda b, n, now, outcome=outcome: b.complete(n, _provider(n), now, outcome))
        for outcome in ("ok", "error", "timeout")
    },
    "release": lambda b, n, now: b.release(now),
    "expire": lambda b, n, now: b.expire(now),
    "cancel": lambda b, n, now: b.cancel(n),
}


def _drive_balancer(module, ops) -> list:
    """What ``module``'s Balancer answers to ``ops``, then its counts and its next wake-up."""
    balancer = module.Balancer(threshold=3, queue_size=4, eject_after=2, backoff=0.5, max_backoff=4.0)
    out, now = _replay(balancer, BALANCER_CALLS, ops)
    out.append(sorted((key, dataclasses.astuple(stats)) for key, stats in balancer.stats().items()))
    out.append((balancer.in_flight, balancer.queued, balancer.wakeup_time(now)))
    return out


@PROPERTY
@given(ops=_operations(BALANCER_CALLS, 12, 3.0))
def test_balancer_decides_alike(builds, ops):
    compiled, pure = builds
    assert _drive_balancer(compiled.balancer, ops) == _drive_balancer(pure.balancer, ops)


LIMIT_CALLS = {
    "opened": lambda limits, key, now: limits.opened(key, now + 1.0),
    "idle": lambda limits, key, now: limits.idle(key, now + 0.5),
    "waiting": lambda limits, key, now: limits.waiting(key, now + 0.5),
    "busy": lambda limits, key, now: limits.busy(key),
    "closed": lambda limits, key, now: limits.closed(key),
    "overdue": lambda limits, key, now: limits.overdue(now),
}


def _drive_limits(module, ops) -> list:
    """What ``module``'s ConnectionLimits answers to ``ops``, then each connection's phase."""
    limits = module.ConnectionLimits(max_connections=4)
    out, _ = _replay(limits, LIMIT_CALLS, ops)
    out.append([(key, limits.phase(key), key in limits) for key in range(8)] + [len(limits)])
    return out


@PROPERTY
@given(ops=_operations(LIMIT_CALLS, 7, 2.0))
def test_connection_limits_decide_alike(builds, ops):
    compiled, pure = builds
    assert _drive_limits(compiled.connections, ops) == _drive_limits(pure.connections, ops)


def _drive_memo(module, ops) -> list:
    """What ``module``'s Memo answers to ``ops`` (get, remember, clear of a few keys), step by step."""
    cache = module.memo.Memo(3)
    out = []
    for op, key, value in ops:
        if op == "get":
            out.append(outcome(cache.get, key))
        elif op == "remember":
            out.append(outcome(cache.remember, key, value))
        else:
            cache.clear()
        out.append((len(cache), cache.marked, sorted(cache.kept.items(), key=repr)))
    return out


MEMO_KEYS = st.sampled_from([b"a", b"b", b"c", b"d", "a", 7, (1, 2)])


@PROPERTY
@given(ops=st.lists(st.tuples(st.sampled_from(["get", "remember", "clear"]), MEMO_KEYS, st.none() | st.integers(0, 3)),
                    max_size=40))  # fmt: skip
def test_memo_keeps_alike(builds, ops):
    compiled, pure = builds
    assert _drive_memo(compiled, ops) == _drive_memo(pure, ops)
