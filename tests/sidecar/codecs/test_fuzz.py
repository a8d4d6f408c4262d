"""Fuzzing the decoders: the HTTP/1.1 server parser, the tunnel datagram decoder, the Dubbo stream
decoder and ``parse``, the Hessian 2 and fastjson decoders, and ``calls.parse_call`` (and the consumer's
``prepare_call``, held to it) / ``reply_for``.

Inputs come two ways: random bytes, and valid inputs built with our own encoders (or taken from the
Hessian 2 conformance vectors) and then mutated (bytes flipped or set, truncation, insertion, deletion,
a region duplicated, a 1- to 8-byte field set to an extreme such as a 2 GiB length).

The property is the same for every decoder: a call returns a value or an event, or raises one of our
:class:`ProtocolError` subclasses (never ``IndexError``, ``struct.error``, ``UnicodeDecodeError``,
``RecursionError``, a bare ``ValueError`` ...), with a peak allocation (``tracemalloc``) below
``64 * len(input) + 1 MiB``, so a length field claiming 2 GiB is never allocated; and inputs with long
runs cost work linear in their length.
"""

from __future__ import annotations

import math
import os
import struct
import time
import tracemalloc
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.codecs import calls, dubbo, fastjson, tunnel
from sidecar.codecs.dubbo import (
    NEED_DATA,
    DubboDecoder,
    Event,
    Frame,
    Request,
    Response,
    Serialization,
    Status,
)
from sidecar.codecs.fastjson import FastjsonDecoder
from sidecar.codecs.hessian2 import Hessian2Decoder
from sidecar.codecs.http1 import (
    MUST_CLOSE,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    ServerConnection,
)
from sidecar.codecs.http1 import NEED_DATA as HTTP_NEED_DATA
from sidecar.codecs.http1 import Request as HttpRequest
from sidecar.codecs.http1 import Response as HttpResponse
from sidecar.codecs.javatypes import JavaObject
from sidecar.errors import ProtocolError, RemoteProtocolError
from tests.support.codec_inputs import (
    CALL_REQUESTS,
    CUTS,
    DUBBO_STREAMS,
    HESSIAN_CORPUS,
    JSON_VALUES,
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

MIB = 1024 * 1024
# FUZZ_EXAMPLES=5000 for a long hunt; the default keeps the file at a few seconds in `make test`.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(deadline=None, max_examples=EXAMPLES)
# Building Dubbo frames and HTTP requests from nested values makes some examples large on purpose.
FUZZ_LARGE = settings(FUZZ, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- the harness -----------------------------------------------------------------------------------


def bounded(size: int, function, *args, **kwargs):
    """``function(*args, **kwargs)``, its value or the ProtocolError it raised; anything else
    propagates, and the peak allocation during the call must stay below 64 bytes per input byte plus
    1 MiB."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            result = function(*args, **kwargs)
        except ProtocolError as exc:
            result = exc
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if started:
            tracemalloc.stop()
    limit = 64 * size + MIB
    assert peak <= limit, f"{function.__qualname__} allocated {peak} bytes for {size} input bytes (limit {limit})"
    return result


# -- value strategies ------------------------------------------------------------------------------


# -- Hessian 2 -------------------------------------------------------------------------------------


def decode_hessian(data: bytes, modes: list[str]) -> list:
    """Read values until the end, each with the reader ``modes`` names in turn (one decoder: class
    definitions, types and references are shared as in a Dubbo body)."""
    decoder = Hessian2Decoder(data)
    values = []
    index = 0
    while not decoder.at_end():
        mode = modes[index % len(modes)] if modes else "read"
        index += 1
        if mode == "string":
            values.append(decoder.read_string())
        elif mode == "int":
            values.append(decoder.read_int())
        else:
            values.append(decoder.read())
    decoder.expect_end()
    return values


@FUZZ
@given(data=st.binary(max_size=256), modes=MODES)
def test_hessian_random_bytes(data, modes):
    bounded(len(data), decode_hessian, data, modes)


@FUZZ_LARGE
@given(data=mutated(HESSIAN_CORPUS), modes=MODES)
def test_hessian_mutated_values(data, modes):
    bounded(len(data), decode_hessian, data, modes)


@pytest.mark.parametrize(
    "data",
    [
        b"\x58\x49\x7f\xff\xff\xff" + b"\x90" * 10,  # list of 2**31 - 1 ints, 10 present
        b"\x56\x04[int\x49\x7f\xff\xff\xff\x90",  # typed list, same
        b"\x43\x01A\x49\x7f\xff\xff\xff\x01a",  # class with 2**31 - 1 fields
        b"\x52\xff\xff" + b"a" * 10,  # string chunk of 65535 units, 10 present
        b"\x41\xff\xff" + b"a" * 10,  # binary chunk of 65535 bytes, 10 present
        b"\x57" * 200,  # lists nested past MAX_DEPTH
        b"\x48" * 200,  # maps nested past MAX_DEPTH
        b"\x43\x01A\x90\x60" + b"\x51\x90" * 1000,  # many references to one object
    ],
)
def test_hessian_length_fields_claiming_too_much(data):
    result = bounded(len(data), decode_hessian, data, ["read"])
    assert isinstance(result, ProtocolError | list)


# -- fastjson --------------------------------------------------------------------------------------


def decode_fastjson(data: bytes, modes: list[str]) -> list:
    decoder = FastjsonDecoder(data)
    values = []
    index = 0
    while not decoder.at_end():
        mode = modes[index % len(modes)] if modes else "read"
        index += 1
        if mode == "string":
            values.append(decoder.read_string())
        elif mode == "int":
            values.append(decoder.read_int())
        else:
            values.append(decoder.read())
    return values


FASTJSON_CORPUS = st.lists(JSON_VALUES.map(fastjson.dumps), min_size=1, max_size=4).map(b"".join)
JSON_NOISE = st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b":", b",", b"\n", b"1", b"\\u", b"\xff"]))


@FUZZ
@given(data=st.binary(max_size=256) | JSON_NOISE.map(b"".join), modes=MODES)
def test_fastjson_random_bytes(data, modes):
    bounded(len(data), decode_fastjson, data, modes)
    bounded(len(data), fastjson.loads, data)


@FUZZ
@given(data=mutated(FASTJSON_CORPUS), modes=MODES)
def test_fastjson_mutated_values(data, modes):
    bounded(len(data), decode_fastjson, data, modes)


@pytest.mark.parametrize("data", [b"[" * 100_000, b'{"a":' * 50_000, b"1" * 10_000, b"\xed\xa0\x80\n"])
def test_fastjson_hostile_lines(data):
    assert isinstance(bounded(len(data), fastjson.loads, data), ProtocolError)


# -- Dubbo -----------------------------------------------------------------------------------------


def decode_dubbo_stream(pieces: list[bytes], max_payload: int | None, parse_bodies: bool) -> list:
    """Feed ``pieces`` one by one, drain the decoder after each and after the end of the stream.
    A body error is skipped (the decoder goes on); a stream error is sticky and ends the run."""
    decoder = DubboDecoder(max_payload=max_payload, parse_bodies=parse_bodies)
    events: list = []
    last_error = None

    def drain() -> bool:
        nonlocal last_error
        while True:
            try:
                event = decoder.next_event()
            except ProtocolError as exc:
                if exc is last_error:
                    return False  # sticky: the stream is broken
                last_error = exc
                continue
            if event is NEED_DATA or event is dubbo.CLOSED:
                return True
            if not parse_bodies:
                try:
                    event = dubbo.parse(event)
                except ProtocolError as exc:
                    event = type(exc)  # not the exception: its traceback would count as the decoder's memory
            events.append(event)

    for piece in pieces:
        decoder.receive_data(piece)
        if not drain():
            return events
    decoder.receive_data(b"")
    drain()
    return events


@FUZZ
@given(data=st.binary(max_size=256), cuts=CUTS, max_payload=PAYLOADS, parse_bodies=st.booleans())
def test_dubbo_random_bytes(data, cuts, max_payload, parse_bodies):
    bounded(len(data), decode_dubbo_stream, splits(data, cuts), max_payload, parse_bodies)


@FUZZ_LARGE
@given(data=mutated(DUBBO_STREAMS), cuts=CUTS, max_payload=PAYLOADS, parse_bodies=st.booleans())
def test_dubbo_mutated_frames(data, cuts, max_payload, parse_bodies):
    bounded(len(data), decode_dubbo_stream, splits(data, cuts), max_payload, parse_bodies)


@FUZZ_LARGE
@given(message=dubbo_messages(), body=st.data())
def test_dubbo_parse_mutated_bodies_under_any_header(message, body):
    """``parse`` of a valid body, mutated, under random flags and status (the header itself is sound)."""
    frame = encoded(message)
    flags = body.draw(st.integers(0, 255) | st.just(frame[2]))
    status = body.draw(st.integers(0, 255) | st.just(frame[3]))
    data = body.draw(mutated(st.just(frame[16:])))
    bounded(len(data), dubbo.parse, Frame(flags, status, message.request_id, data))


@FUZZ_LARGE
@given(message=dubbo_messages())
def test_dubbo_valid_frames_decode(message):
    """The unmutated corpus itself decodes, split anywhere, to one event."""
    data = encoded(message)
    events = decode_dubbo_stream(splits(data, [len(data) // 2, 7]), None, True)
    assert len(events) == 1 and isinstance(events[0], Request | Response | Event)


@pytest.mark.parametrize("max_payload", [None, dubbo.DEFAULT_PAYLOAD])
def test_dubbo_length_field_claiming_2_gib_is_not_allocated(max_payload):
    header = dubbo.HEADER.pack(dubbo.MAGIC, 0x02, 20, 1, 0x7FFFFFFF)
    data = header + b"\x91" * 100
    events = bounded(len(data), decode_dubbo_stream, [data], max_payload, True)
    assert events == []


# -- tunnel ----------------------------------------------------------------------------------------


def decode_datagram(data: bytes, kind: type) -> object:
    return tunnel.decode(kind(data))


DATAGRAM_TYPES = st.sampled_from([bytes, bytearray, memoryview])


@FUZZ
@given(data=st.binary(max_size=128), kind=DATAGRAM_TYPES)
def test_tunnel_random_bytes(data, kind):
    bounded(len(data), decode_datagram, data, kind)


@FUZZ
@given(
    data=st.binary(max_size=64),
    kind=DATAGRAM_TYPES,
    head=st.sampled_from([b"DT\x01\x01\x00", b"DT\x01\x02\x00", b"DT\x01\x03\x00"]),
)
def test_tunnel_random_bytes_after_a_valid_header(data, kind, head):
    bounded(len(data), decode_datagram, head + data, kind)


@FUZZ_LARGE
@given(data=mutated(tunnel_datagrams()), kind=DATAGRAM_TYPES)
def test_tunnel_mutated_datagrams(data, kind):
    bounded(len(data), decode_datagram, data, kind)


def test_tunnel_entry_length_claiming_4_gib_is_not_allocated():
    data = tunnel.BATCH_HEADER.pack(tunnel.MAGIC, tunnel.VERSION, tunnel.Kind.REPLY_BATCH, 0, 1)
    data += tunnel.ENTRY.pack(1, 0xFFFFFFFF) + b"\xda\xbb" + b"\x00" * 30
    assert isinstance(bounded(len(data), tunnel.decode, data), ProtocolError)
    data = tunnel.BATCH_HEADER.pack(tunnel.MAGIC, tunnel.VERSION, tunnel.Kind.REQUEST_BATCH, 0, 1)
    data += tunnel.ENTRY.pack(1, 0xFFFFFFFF) + b"\xda\xbb\xc2" + b"\x00" * 30
    assert isinstance(bounded(len(data), tunnel.decode, data), ProtocolError)


# -- HTTP/1.1 server -------------------------------------------------------------------------------


def serve(pieces: list[bytes], limits: dict, with_calls: bool = False) -> list:
    """Feed ``pieces`` to a server, answering each request (200) as soon as its end is read, as the
    I/O layer does; then the end of the stream. Returns the events, the peer's error last if there
    was one. ``with_calls``: each whole request also goes through ``calls.parse_call`` (and a call
    that parsed through ``calls.encode_call``), and the call or its error joins the events."""
    server = ServerConnection(**limits)
    events: list = []
    request, body = None, []

    def drain() -> bool:
        nonlocal request, body
        while True:
            event = server.next_event()
            if event is HTTP_NEED_DATA:
                return True
            if isinstance(event, ConnectionClosed):
                return False
            assert event is not PAUSED  # each cycle ends before the next event is asked for
            events.append(event)
            if isinstance(event, HttpRequest):
                request, body = event, []
            elif isinstance(event, Data):
                body.append(event.data)
            elif isinstance(event, EndOfMessage):
                if with_calls:
                    events.append(through_calls(request, b"".join(body)))
                server.send(HttpResponse(200, [], b"ok"))
                if server.our_state is MUST_CLOSE:
                    return False
                server.start_next_cycle()

    try:
        for piece in pieces:
            server.receive_data(piece)
            if not drain():
                return events
        server.receive_data(b"")
        drain()
    except RemoteProtocolError as exc:
        assert exc is server.error
        events.append(exc)
        server.send(HttpResponse(exc.status_hint, [], b""))  # the error reply can still be written
    return events


def through_calls(request: HttpRequest, body: bytes) -> object:
    """The call (or the error) of a whole request, by ``parse_call`` and by the consumer's own way
    (``check_route``, then ``prepare_call``), which must agree; and its frame."""
    try:
        call = calls.parse_call(request.method, request.target, request.headers, body)
    except ProtocolError as exc:
        with pytest.raises(type(exc)):
            calls.prepare_call(calls.check_route(request.method, request.target, request.headers), body)
        return exc
    prepared = calls.prepare_call(calls.check_route(request.method, request.target, request.headers), body)
    assert prepared == call
    try:
        frame = calls.encode_call(call, 1)
    except ProtocolError as exc:
        return exc
    assert calls.encode_call(prepared, 1) == frame
    return call


@FUZZ
@given(data=st.binary(max_size=256), cuts=CUTS, limits=LIMITS)
def test_http_random_bytes(data, cuts, limits):
    bounded(len(data), serve, splits(data, cuts), limits)


@FUZZ
@given(data=st.binary(max_size=128), cuts=CUTS, limits=LIMITS)
def test_http_random_bytes_after_a_request_line(data, cuts, limits):
    data = b"POST / HTTP/1.1\r\n" + data
    bounded(len(data), serve, splits(data, cuts), limits)


@FUZZ_LARGE
@given(data=mutated(http_requests()), cuts=CUTS, limits=LIMITS)
def test_http_mutated_requests(data, cuts, limits):
    bounded(len(data), serve, splits(data, cuts), limits)


@FUZZ_LARGE
@given(data=mutated(http_requests()), cuts=CUTS)
def test_http_mutated_requests_then_parse_call(data, cuts):
    bounded(len(data), serve, splits(data, cuts), {}, with_calls=True)


@FUZZ_LARGE
@given(data=http_requests(), cuts=CUTS)
def test_http_valid_requests_split_anywhere_parse_the_same(data, cuts):
    whole = merged(serve([data], {}))
    assert not any(isinstance(event, ProtocolError) for event in whole)
    assert merged(serve(splits(data, cuts), {})) == whole


def merged(events: list) -> list:
    """``events`` with consecutive :class:`Data` pieces joined (how a body is cut depends on the splits)."""
    result: list = []
    for event in events:
        if isinstance(event, Data) and result and isinstance(result[-1], Data):
            result[-1] = Data(result[-1].data + event.data)
        else:
            result.append(event)
    return result


@pytest.mark.parametrize(
    "data",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 999999999999999999\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2147483648\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n7fffffff\r\nabc",
    ],
)
@pytest.mark.parametrize("max_body", [1024, 2**64])
def test_http_length_claiming_too_much_is_not_allocated(data, max_body):
    events = bounded(len(data), serve, [data], {"max_body": max_body})
    assert isinstance(events[-1], ProtocolError)
    assert events[-1].status_hint == (413 if max_body < 2**31 else 400)


# -- calls -----------------------------------------------------------------------------------------


def call_of(method: str, target: str, headers: list, body: bytes) -> object:
    return calls.parse_call(method, target, headers, body)


@FUZZ
@given(**CALL_REQUESTS)
def test_parse_call_mutated_bodies(method, target, headers, body):
    result = bounded(len(body) + len(target), call_of, method, target, headers, body)
    if isinstance(result, calls.Call):  # a call that parsed can be encoded, or refused as ours
        bounded(len(body), calls.encode_call, result, 1)


CALLS = st.sampled_from([calls.Call("Svc", "hash", "Ljava/lang/String;", ["x"]), calls.Call("Svc", "hash", form=False)])


@st.composite
def response_frames(draw) -> bytes:
    message = draw(dubbo_messages())
    if isinstance(message, Request | Event) and draw(st.integers(0, 3)):
        message = Response(message.request_id, value=draw(SCALARS), serialization=message.serialization)
    return encoded(message)


@FUZZ_LARGE
@given(call=CALLS, frame=mutated(response_frames()) | st.binary(max_size=64))
def test_reply_for_mutated_frames(call, frame):
    reply = bounded(len(frame), calls.reply_for, call, frame)
    assert isinstance(reply, calls.Reply)  # reply_for answers every frame, never raises
    assert 200 <= reply.status < 600 and isinstance(reply.body, bytes)


@pytest.mark.parametrize("form", [True, False])
@pytest.mark.parametrize(
    "frame",
    [
        encoded(Response(1, value=[[[[[[]]]]]])),
        Frame(Serialization.FASTJSON, 20, 1, b"1\n" + b"[" * 5000 + b"]" * 5000 + b"\n").to_bytes(),
        Frame(Serialization.HESSIAN2, 20, 1, b"\x91\x57\x51\x90\x51\x90\x5a").to_bytes(),
        Frame(Serialization.HESSIAN2, 20, 1, b"\x90\x48\x01a\x51\x90\x5a").to_bytes(),
        Frame(Serialization.FASTJSON, 20, 1, b"0\n" + b"[" * 900 + b"]" * 900 + b"\n").to_bytes(),
    ],
    ids=["nested", "json-5000-deep", "list-holding-itself", "exception-map-holding-itself", "json-900-deep-exception"],
)
def test_reply_for_deep_and_self_referencing_values(frame, form):
    reply = bounded(len(frame), calls.reply_for, calls.Call("S", "m", form=form), frame)
    assert isinstance(reply, calls.Reply)


# -- long runs: time linear in the input -----------------------------------------------------------

RUN = 100_000  # a run this long costs seconds to minutes in anything quadratic in it


def http_head(line: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: h\r\n" + line + b"\r\n\r\n"


def form_body(parameter: str, types: str = "D") -> bytes:
    fields = {"interface": "a.B", "method": "m", "parameterTypesString": types, "parameter": parameter}
    return urllib.parse.urlencode(fields).encode()


def hessian_response(body: bytes) -> bytes:
    return Frame(Serialization.HESSIAN2, Status.OK, 1, b"\x91" + body).to_bytes()


def input_size(args: list) -> int:
    """The bytes of input among ``args`` (bytes, strings, lists of them)."""
    sizes = (input_size(arg) for arg in args if isinstance(arg, list))
    return sum(sizes) + sum(len(arg) for arg in args if isinstance(arg, bytes | str))


LONG_RUNS = {
    "http header value of blanks": lambda n: (serve, [[http_head(b"X: a" + b" " * n + b"b")], {"max_head": 1 << 20}]),
    "http header value of blanks, then a control byte": lambda n: (
        serve,
        [[http_head(b"X: a" + b" \t" * n + b"\x01")], {"max_head": 1 << 20}],
    ),
    "http chunk extensions": lambda n: (
        serve,
        [[http_head(b"Transfer-Encoding: chunked") + b"1" + b";a=b " * n + b"\x01\r\n"], {"max_head": 1 << 20}],
    ),
    "http chunk extension of blanks": lambda n: (
        serve,
        [[http_head(b"Transfer-Encoding: chunked") + b"1;a" + b" " * n + b"x\r\n"], {"max_head": 1 << 20}],
    ),
    "form decimal parameter of digits": lambda n: (call_of, ["POST", "/", [], form_body("1" * n + "x")]),
    "form decimal parameter, exponent of digits": lambda n: (
        call_of,
        ["POST", "/", [], form_body("1e" + "1" * n + "x")],
    ),
    "form integer parameter of digits": lambda n: (call_of, ["POST", "/", [], form_body("1" * n, "J")]),
    "form types of commas": lambda n: (call_of, ["POST", "/", [], form_body("1", "int," * n)]),
    "form descriptor of codes": lambda n: (call_of, ["POST", "/", [], form_body("1", "I" * n + "x")]),
    "JSON call of nested arrays": lambda n: (call_of, ["POST", "/dubbo/a/b", [], b"[" * n]),
    "reply error message of blanks": lambda n: (
        calls.reply_for,
        [calls.Call("a", "b"), encoded(Response(1, Status.SERVICE_ERROR, error_message="a" + " " * n + "b\n"))],
    ),
    "reply exception message of blanks": lambda n: (
        calls.reply_for,
        [calls.Call("a", "b"), encoded(Response(1, exception=JavaObject("E", {"detailMessage": " " * n + "\r"})))],
    ),
    "hessian string of 3-byte characters": lambda n: (
        calls.reply_for,
        [calls.Call("a", "b"), hessian_response(b"\x52\xff\xff" + "\u4e2d".encode() * n)],
    ),
    "hessian list of empty lists": lambda n: (decode_hessian, [b"\x57" + b"\x78" * (n // 4) + b"\x5a", ["read"]]),
    "hessian many class definitions": lambda n: (decode_hessian, [b"\x43\x01A\x90" * (n // 4) + b"\x60", ["read"]]),
    "dubbo request with a descriptor of codes": lambda n: (
        dubbo.parse,
        [Frame(0xC2, 0, 1, b"\x052.0.2\x01a\x050.0.0\x01m\x53" + struct.pack(">H", n // 2) + b"I" * (n // 2))],
    ),
    "dubbo stream of empty frames": lambda n: (
        decode_dubbo_stream,
        [[Frame(0x02, 20, 1, b"").to_bytes() * (n // 10)], None, False],
    ),
    "fastjson line of blanks": lambda n: (decode_fastjson, [b" " * n + b"x\n", ["read"]]),
}


def cpu_seconds(name: str, n: int) -> float:
    """This process's CPU time for the case ``name`` built with runs of ``n`` (best of three)."""
    function, args = LONG_RUNS[name](n)
    size = input_size(args) + sum(len(arg.body) for arg in args if isinstance(arg, Frame))
    best = math.inf
    for _ in range(3):
        started = time.process_time()
        bounded(size, function, *args)
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize("name", LONG_RUNS)
def test_long_runs_take_time_linear_in_their_length(name):
    """Four times the run, about four times the work: a quadratic step would take sixteen. Compared
    in this process's own CPU time, so other processes on the machine do not count."""
    small, large = cpu_seconds(name, RUN // 4), cpu_seconds(name, RUN)
    assert large <= 8 * small + 0.05, f"{name}: {small:.4f} s for a quarter of the run, {large:.4f} s for all of it"
