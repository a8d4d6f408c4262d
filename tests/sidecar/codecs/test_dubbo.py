"""Dubbo 2 frames: header layout, bodies both ways, the documented examples, the stream decoder,
limits, and hostile input."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.codecs import dubbo
from sidecar.codecs.dubbo import (
    CLOSED,
    DEFAULT_PAYLOAD,
    NEED_DATA,
    DubboDecoder,
    Event,
    Frame,
    Request,
    Response,
    ResultFlag,
    Serialization,
    Status,
    encode,
    heartbeat,
    parse,
    parse_descriptor,
    to_descriptor,
)
from sidecar.codecs.fastjson import FastjsonEncoder
from sidecar.codecs.hessian2 import Hessian2Encoder
from sidecar.codecs.javatypes import Date, JavaObject, Long, TypedList, TypedMap, describe_exception, java_exception
from sidecar.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

SERVICE = "com.alibaba.dubbo.performance.demo.provider.IHelloService"
PROTOCOLS = Path(__file__).resolve().parents[3] / "sidecar" / "PROTOCOLS.md"


def hash_request(request_id: int = 1, serialization: int = Serialization.HESSIAN2) -> Request:
    return Request(
        request_id,
        SERVICE,
        "hash",
        "Ljava/lang/String;",
        ["hello"],
        {"path": SERVICE, "version": "0.0.0"},
        serialization=serialization,
    )


def hash_response(request_id: int = 1, serialization: int = Serialization.HESSIAN2) -> Response:
    flag = ResultFlag.RESPONSE_VALUE_WITH_ATTACHMENTS  # what encoding derives; decoding reports it
    return Response(
        request_id,
        value=99162322,
        attachments={"dubbo": "2.0.2"},
        flag=flag,
        serialization=serialization,
    )


def decode_all(data: bytes, **options) -> list:
    decoder = DubboDecoder(**options)
    decoder.receive_data(data)
    events = []
    while (event := decoder.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def documented_frames() -> list[bytes]:
    """The hex blocks of the Dubbo section of PROTOCOLS.md, in order."""
    text = PROTOCOLS.read_text(encoding="utf-8")
    section = text.split("\n## Dubbo 2\n", 1)[1].split("\n## ", 1)[0]
    return [bytes.fromhex(block) for block in re.findall(r"```hex\n(.*?)```", section, re.S)]


# -- the documented examples ---------------------------------------------------------------------


def test_protocols_md_examples_are_what_the_encoder_writes():
    request, response, ping, pong, refused = documented_frames()
    assert encode(hash_request()) == request
    assert encode(hash_response()) == response
    assert encode(heartbeat(2)) == ping
    assert encode(heartbeat(2, reply=True)) == pong
    status, message = Status.SERVER_THREADPOOL_EXHAUSTED_ERROR, "thread pool is exhausted"
    error = Response(3, status=status, error_message=message)
    assert encode(error) == refused


def test_protocols_md_examples_decode():
    request, response, ping, pong, refused = (decode_all(frame)[0] for frame in documented_frames())
    assert request == hash_request()
    assert response == Response(
        1, Status.OK, 99162322, None, {"dubbo": "2.0.2"}, None, ResultFlag.RESPONSE_VALUE_WITH_ATTACHMENTS
    )
    assert ping.is_request and ping.two_way and ping.is_heartbeat and ping.request_id == 2
    assert not pong.is_request and pong.is_heartbeat and pong.request_id == 2
    assert refused.status is Status.SERVER_THREADPOOL_EXHAUSTED_ERROR
    assert refused.error_message == "thread pool is exhausted"


def test_protocols_md_keeps_the_tunnel_heading():
    assert "\n## Tunnel\n" in PROTOCOLS.read_text(encoding="utf-8")


def test_fastjson_request_body_is_one_json_line_per_value():
    frame = encode(hash_request(serialization=Serialization.FASTJSON))
    assert frame[:4] == b"\xda\xbb\xc6\x00" and int.from_bytes(frame[12:16], "big") == 199
    lines = frame[16:].split(b"\n")
    service = SERVICE.encode()
    assert lines == [
        b'"2.0.2"',
        b'"' + service + b'"',
        b'"0.0.0"',
        b'"hash"',
        b'"Ljava/lang/String;"',
        b'"hello"',
        b'{"path":"' + service + b'","version":"0.0.0"}',
        b"",
    ]
    reply = encode(hash_response(serialization=Serialization.FASTJSON))
    assert reply[2:4] == b"\x06\x14" and reply[16:] == b'4\n99162322\n{"dubbo":"2.0.2"}\n'
    assert decode_all(reply)[0].value == 99162322


# -- header --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "flags", "status"),
    [
        (hash_request(), 0xC2, 0),
        (Request(7, SERVICE, "hash", two_way=False), 0x82, 0),
        (hash_request(serialization=Serialization.FASTJSON), 0xC6, 0),
        (heartbeat(7), 0xE2, 0),
        (Event(7, is_request=True, two_way=False), 0xA2, 0),
        (heartbeat(7, reply=True), 0x22, 20),
        (heartbeat(7, reply=True, serialization=Serialization.FASTJSON), 0x26, 20),
        (Response(7, value=1), 0x02, 20),
        (Response(7, status=Status.SERVICE_NOT_FOUND, error_message="no"), 0x02, 60),
    ],
)
def test_header_bytes(message, flags, status):
    data = encode(message)
    assert data[:2] == b"\xda\xbb" and data[2] == flags and data[3] == status
    assert int.from_bytes(data[12:16], "big") == len(data) - 16


def test_request_id_uses_all_64_bits():
    for request_id in (0, 1, 2**31, 2**63, 2**64 - 1):
        data = encode(Response(request_id, value=None))
        assert int.from_bytes(data[4:12], "big") == request_id
        assert decode_all(data)[0].request_id == request_id
    for bad in (-1, 2**64):
        with pytest.raises(LocalProtocolError):
            encode(Response(bad))


def test_status_codes_by_name():
    expected = {
        "OK": 20,
        "CLIENT_TIMEOUT": 30,
        "SERVER_TIMEOUT": 31,
        "CHANNEL_INACTIVE": 35,
        "BAD_REQUEST": 40,
        "BAD_RESPONSE": 50,
        "SERVICE_NOT_FOUND": 60,
        "SERVICE_ERROR": 70,
        "SERVER_ERROR": 80,
        "CLIENT_ERROR": 90,
        "SERVER_THREADPOOL_EXHAUSTED_ERROR": 100,
    }
    assert {s.name: s.value for s in Status} == expected
    for status in Status:
        if status is Status.OK:
            continue
        (reply,) = decode_all(encode(Response(9, status=status, error_message=f"{status.name} happened")))
        assert reply.status is status and reply.error_message == f"{status.name} happened"
    (odd,) = decode_all(encode(Frame(0x02, 77, 9, b"\x01x")))
    assert odd.status == 77 and odd.error_message == "x"


def test_result_flags_and_constants():
    assert [f.value for f in ResultFlag] == [0, 1, 2, 3, 4, 5]
    assert (dubbo.MAGIC, dubbo.HEADER_LENGTH, DEFAULT_PAYLOAD) == (0xDABB, 16, 8 * 1024 * 1024)
    assert (dubbo.FLAG_REQUEST, dubbo.FLAG_TWOWAY, dubbo.FLAG_EVENT, dubbo.SERIALIZATION_MASK) == (
        0x80,
        0x40,
        0x20,
        0x1F,
    )


# -- bodies --------------------------------------------------------------------------------------

SERIALIZATIONS = [Serialization.HESSIAN2, Serialization.FASTJSON]


@pytest.mark.parametrize("serialization", SERIALIZATIONS)
@pytest.mark.parametrize(
    ("response", "flag"),
    [
        (Response(5, value=None), ResultFlag.RESPONSE_NULL_VALUE),
        (Response(5, value=[1, "a"]), ResultFlag.RESPONSE_VALUE),
        (Response(5, exception={"message": "boom"}), ResultFlag.RESPONSE_WITH_EXCEPTION),
        (Response(5, value=None, attachments={}), ResultFlag.RESPONSE_NULL_VALUE_WITH_ATTACHMENTS),
        (Response(5, value=3, attachments={"dubbo": "2.0.2"}), ResultFlag.RESPONSE_VALUE_WITH_ATTACHMENTS),
        (
            Response(5, exception={"message": "x"}, attachments={"a": "b"}),
            ResultFlag.RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS,
        ),
    ],
)
def test_every_result_flag_round_trips(serialization, response, flag):
    response.serialization = serialization
    (decoded,) = decode_all(encode(response))
    assert decoded.flag is flag
    assert (decoded.value, decoded.exception) == (response.value, response.exception)
    assert decoded.attachments == response.attachments


def test_explicit_flag_is_kept_and_checked():
    data = encode(Response(1, value=None, flag=ResultFlag.RESPONSE_NULL_VALUE_WITH_ATTACHMENTS))
    assert data[16:] == b"\x95\x48\x5a"
    with pytest.raises(LocalProtocolError, match="result flag"):
        encode(Response(1, flag=9))


def test_exception_results_carry_type_and_message():
    thrown = java_exception("java.lang.IllegalStateException", "bad state")
    (reply,) = decode_all(encode(Response(4, exception=thrown, attachments={"dubbo": "2.0.2"})))
    assert isinstance(reply.exception, JavaObject)
    assert describe_exception(reply.exception) == ("java.lang.IllegalStateException", "bad state")
    assert describe_exception({"@type": "java.lang.Error", "message": "m"}) == ("java.lang.Error", "m")


@pytest.mark.parametrize("serialization", SERIALIZATIONS)
def test_requests_round_trip(serialization):
    request = Request(
        2**40,
        "com.example.Svc",
        "sum",
        to_descriptor(["int", "long", "java.lang.String[]"]),
        [1, 2, ["a", "b"]],
        {"k": "v"},
        service_version=None,
        dubbo_version="2.0.2",
        two_way=False,
        serialization=serialization,
    )
    (decoded,) = decode_all(encode(request))
    assert decoded == request
    empty = Request(3, "com.example.Svc", "ping", serialization=serialization)
    assert decode_all(encode(empty)) == [empty]


def test_long_and_double_parameters_get_their_java_type():
    data = encode(Request(1, "S", "m", "JDLjava/lang/Object;", [5, 5, 5]))
    decoded = decode_all(data)[0].arguments
    assert type(decoded[0]) is Long and type(decoded[1]) is float and type(decoded[2]) is int


def test_descriptors():
    assert parse_descriptor("") == ()
    assert parse_descriptor("Ljava/lang/String;I[J[[Lcom/x/Y;Z") == (
        "Ljava/lang/String;",
        "I",
        "[J",
        "[[Lcom/x/Y;",
        "Z",
    )
    for bad in ("L", "Ljava/lang/String", "Q", "[", "V", "I;"):
        with pytest.raises(ValueError):
            parse_descriptor(bad)
    assert to_descriptor(["java.lang.String", "int[]", "[Ljava.lang.String;", "J"]) == (
        "Ljava/lang/String;[I[Ljava/lang/String;J"
    )


def test_request_encoding_checks_the_call():
    with pytest.raises(LocalProtocolError, match="arguments"):
        encode(Request(1, SERVICE, "hash", "Ljava/lang/String;", []))
    with pytest.raises(LocalProtocolError, match="descriptor"):
        encode(Request(1, SERVICE, "hash", "Lbroken", ["x"]))
    with pytest.raises(LocalProtocolError, match="method"):
        encode(Request(1, SERVICE, "", ""))
    with pytest.raises(LocalProtocolError, match="serialization"):
        encode(Request(1, SERVICE, "m", serialization=3))
    with pytest.raises(LocalProtocolError, match="service_path"):
        encode(Request(1, 42, "m"))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        encode("not a message")  # type: ignore[arg-type]


_SHARED = {"k": [1, 2]}  # one object twice in a call: the second is a back-reference
_POINT = JavaObject("com.example.Point", {"x": 1, "y": 2})
TEMPLATE_CALLS = [
    ("", []),
    ("Ljava/lang/String;", ["hello"]),
    ("Ljava/lang/String;", ["héllo 😀" * 40]),
    ("Ljava/lang/String;", [None]),
    ("IJDZ", [7, 7, 7, True]),
    ("JD", [-(2**40), 2.5]),
    ("Ljava/lang/Object;", [b"\x00\xff" * 30]),
    ("Ljava/util/Date;", [Date(1_500_000_000_000)]),
    ("Ljava/util/List;", [["a", 1, None, [2.0]]]),
    ("Ljava/util/Map;Ljava/util/Map;", [_SHARED, _SHARED]),
    (
        "Ljava/util/List;Ljava/util/List;",
        [TypedList("java.util.ArrayList", [1]), TypedList("java.util.ArrayList", [2])],
    ),
    ("Ljava/util/Map;", [TypedMap("java.util.HashMap", {"a": 1})]),
    ("Lcom/example/Point;Lcom/example/Point;", [_POINT, JavaObject("com.example.Point", {"x": 3, "y": 4})]),
    ("Ljava/lang/Object;Ljava/lang/Object;", [(1, 2), [_POINT, _POINT]]),
]
TEMPLATE_ATTACHMENTS = [
    None,
    {},
    {"path": SERVICE, "interface": SERVICE, "version": "0.0.0"},
    {"k": None, "ü": "😀"},
    {"nested": {"a": 1}, "list": [1]},  # not strings: written per call, after the arguments
    {"object": _POINT},  # may refer to an argument's class definition
    TypedMap("java.util.HashMap", {"a": "b"}),  # its type name may refer to an argument's
]


@pytest.mark.parametrize("attachments", TEMPLATE_ATTACHMENTS)
@pytest.mark.parametrize("descriptor, arguments", TEMPLATE_CALLS)
@pytest.mark.parametrize("serialization", SERIALIZATIONS)
def test_request_template_writes_what_encode_writes(serialization, descriptor, arguments, attachments):
    options = {"service_version": "1.0", "dubbo_version": "2.0.2", "serialization": serialization}
    for two_way in (True, False):
        template = dubbo.RequestTemplate(SERVICE, "m", descriptor, attachments, two_way=two_way, **options)
        for request_id in (0, 1, 2**64 - 1):
            request = Request(request_id, SERVICE, "m", descriptor, arguments, attachments, two_way=two_way, **options)
            assert template.encode(request_id, arguments) == encode(request)


def test_request_template_reuses_nothing_between_calls():
    template = dubbo.RequestTemplate(SERVICE, "m", "Ljava/lang/Object;", {"a": "b"})
    first = template.encode(1, [_POINT])
    assert template.encode(1, [_POINT]) == first  # a second call defines the class again
    assert first == encode(Request(1, SERVICE, "m", "Ljava/lang/Object;", [_POINT], {"a": "b"}))


def test_request_template_refuses_what_encode_refuses():
    for bad in (
        dict(method=""),
        dict(parameter_types="Lbroken"),
        dict(serialization=3),
        dict(service_path=42),
        dict(service_version=1),
    ):
        fields = {"service_path": SERVICE, "method": "m", "parameter_types": "I", **bad}
        path, method, types = fields.pop("service_path"), fields.pop("method"), fields.pop("parameter_types")
        with pytest.raises(LocalProtocolError) as caught:
            dubbo.RequestTemplate(path, method, types, **fields)
        assert caught.value.request_id is None
    template = dubbo.RequestTemplate(SERVICE, "m", "I")
    for arguments in ([], [1, 2]):
        with pytest.raises(LocalProtocolError, match="arguments for 1 parameter types 'I'") as caught:
            template.encode(7, arguments)
        assert caught.value.request_id == 7
    with pytest.raises(LocalProtocolError, match="out of range"):
        template.encode(2**64, [1])
    with pytest.raises(LocalProtocolError, match="payload") as caught:
        dubbo.RequestTemplate(SERVICE, "m", "Ljava/lang/String;").encode(5, ["x" * 100], max_payload=50)
    assert caught.value.status_hint == 413 and caught.value.request_id == 5


def _written(serialization: int, *values) -> bytes:
    writer = (Hessian2Encoder if serialization == Serialization.HESSIAN2 else FastjsonEncoder)()
    for value in values:
        writer.write(value)
    return writer.getvalue()


_ATTACHED = {"dubbo": "2.0.2"}
_LIST = [1, 2]


@pytest.mark.parametrize(
    "fields, written",
    [
        ({"value": 99162322}, (4, 99162322)),
        ({"value": None}, (5,)),
        ({"value": "x"}, (4, "x")),
        ({"value": Long(5)}, (4, Long(5))),
        ({"value": 2.5}, (4, 2.5)),
        ({"value": [1, "a"]}, (4, [1, "a"])),
        ({"value": _POINT}, (4, _POINT)),
        ({"value": _ATTACHED}, (4, _ATTACHED)),  # the map again: a back-reference in Hessian 2
        ({"exception": java_exception("java.lang.Error", "m")}, (3, java_exception("java.lang.Error", "m"))),
        ({"value": 1, "flag": 5}, (5,)),
    ],
)
@pytest.mark.parametrize("serialization", SERIALIZATIONS)
def test_replies_with_the_usual_attachments_are_written_and_read_as_any_other(serialization, fields, written):
    # encode() and parse() take shortcuts for the attachments {"dubbo": "2.0.2"}; the bytes and the
    # values must be those of the general path.
    response = Response(7, attachments=_ATTACHED, serialization=serialization, **fields)
    body = encode(response)[16:]
    assert body == _written(serialization, *written, _ATTACHED)
    (decoded,) = decode_all(encode(response))
    general = parse(Frame(serialization, Status.OK, 7, body + b"N"))  # trailing bytes: no shortcut
    assert decoded == general and decoded.attachments == _ATTACHED
    assert decoded.attachments is not general.attachments


def test_reply_attachments_that_only_look_usual_are_decoded():
    tail = _written(Serialization.HESSIAN2, _ATTACHED)
    body = _written(Serialization.HESSIAN2, 4, "x") + tail
    assert parse(Frame(2, 20, 1, body)).attachments == _ATTACHED
    other = _written(Serialization.HESSIAN2, 4, "x", {"dubbo": "2.0.3"})
    assert parse(Frame(2, 20, 1, other)).attachments == {"dubbo": "2.0.3"}
    two = _written(Serialization.HESSIAN2, 4, _LIST, {"a": _LIST, "dubbo": "2.0.2"})
    assert parse(Frame(2, 20, 1, two)).attachments == {"a": [1, 2], "dubbo": "2.0.2"}


def test_body_without_attachments_and_null_attachments():
    body = b"\x052.0.2\x01S\x4e\x01m\x00"
    (request,) = decode_all(encode(Frame(0xC2, 0, 1, body)))
    assert request.attachments == {} and request.service_version is None
    (request,) = decode_all(encode(Frame(0xC2, 0, 1, body + b"\x4e")))
    assert request.attachments == {}


def test_heartbeat_with_empty_body_and_other_events():
    (ping,) = decode_all(encode(Frame(0xE2, 0, 4, b"")))
    assert ping.is_heartbeat
    (readonly,) = decode_all(encode(Event(4, data="R")))
    assert readonly.data == "R" and not readonly.is_heartbeat
    (failed,) = decode_all(encode(Event(4, is_request=False, status=Status.BAD_REQUEST, error_message="no")))
    assert failed.status is Status.BAD_REQUEST and failed.error_message == "no" and not failed.is_heartbeat


# -- the stream decoder --------------------------------------------------------------------------


def stream() -> tuple[bytes, list]:
    messages = [
        hash_request(1),
        hash_response(1),
        heartbeat(2),
        heartbeat(2, reply=True),
        hash_request(3, Serialization.FASTJSON),
        Response(3, status=Status.SERVER_ERROR, error_message="x"),
        Request(4, "S", "m", "Ljava/lang/Object;", [JavaObject("a.B", {"x": [1, 2]})]),
    ]
    return b"".join(encode(m) for m in messages), messages


def test_byte_at_a_time():
    data, messages = stream()
    decoder = DubboDecoder()
    events = []
    for i in range(len(data)):
        decoder.receive_data(data[i : i + 1])
        while (event := decoder.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == messages
    decoder.receive_data(b"")
    assert decoder.next_event() is CLOSED and decoder.next_event() is CLOSED


@settings(max_examples=200)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=40))
def test_any_split_gives_the_same_frames(sizes):
    data, messages = stream()
    decoder = DubboDecoder()
    events, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        decoder.receive_data(data[pos : pos + size])
        pos, i = pos + size, i + 1
        while (event := decoder.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == messages and decoder.buffered == 0


def test_many_frames_in_one_read_and_raw_frames():
    data, messages = stream()
    assert decode_all(data * 50) == messages * 50
    frames = decode_all(data, parse_bodies=False)
    assert [type(f) for f in frames] == [Frame] * len(messages)
    assert b"".join(f.to_bytes() for f in frames) == data
    assert [parse(f) for f in frames] == messages


def test_decoder_compacts_its_buffer():
    one = encode(hash_request())
    decoder = DubboDecoder()
    decoder.receive_data(one * 2000 + one[:10])
    for _ in range(2000):
        assert decoder.next_event() is not NEED_DATA
    assert decoder.next_event() is NEED_DATA and decoder.buffered == 10
    assert len(decoder._buffer) < DubboDecoder.COMPACT_AFTER + len(one) * 2


@pytest.mark.parametrize("cut", [1, 15, 16, 20, 196])
def test_stream_ending_inside_a_frame(cut):
    decoder = DubboDecoder()
    decoder.receive_data(encode(hash_request())[:cut])
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="stream ended inside"):
        decoder.next_event()
    with pytest.raises(RemoteProtocolError):  # and it stays failed
        decoder.next_event()
    with pytest.raises(LocalProtocolError):
        decoder.receive_data(b"more")


def test_bad_magic_is_fatal():
    decoder = DubboDecoder()
    decoder.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="magic") as info:
        decoder.next_event()
    assert info.value.status_hint == 400
    decoder.receive_data(encode(hash_request()))
    with pytest.raises(RemoteProtocolError, match="magic"):
        decoder.next_event()


@pytest.mark.parametrize("length", [DEFAULT_PAYLOAD + 1, 2**31 - 1, 2**31, 2**32 - 1])
def test_declared_length_over_the_limit_fails_before_the_body(length):
    decoder = DubboDecoder()
    decoder.receive_data(b"\xda\xbb\xc2\x00" + (7).to_bytes(8, "big") + length.to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError, match="payload limit") as info:
        decoder.next_event()
    assert info.value.status_hint == 413 and info.value.request_id == 7
    assert decoder.buffered == 16


def test_payload_limit_is_on_the_body_and_configurable():
    body = b"\x53\x7f\xf0" + b"a" * 0x7FF0  # a 32 KiB string
    exact = Frame(0x02, 20, 1, b"\x91" + body)
    assert len(encode(exact, max_payload=len(exact.body))) == 16 + len(exact.body)
    with pytest.raises(LocalProtocolError, match="payload limit") as info:
        encode(exact, max_payload=len(exact.body) - 1)
    assert info.value.status_hint == 413
    data = encode(exact)
    assert decode_all(data, max_payload=len(exact.body))[0].value == "a" * 0x7FF0
    with pytest.raises(RemoteProtocolError):
        decode_all(data, max_payload=1000)
    assert decode_all(data, max_payload=None)[0].value == "a" * 0x7FF0
    big = Response(1, value=b"x" * (DEFAULT_PAYLOAD + 1))
    with pytest.raises(LocalProtocolError, match="payload limit"):
        encode(big)


def test_bad_body_costs_only_its_frame():
    good = encode(hash_request(2))
    bad_request = encode(Frame(0xC2, 0, 1, b"\x40garbage"))
    bad_response = encode(Frame(0x02, 20, 3, b"\x9f"))  # result flag 15
    unknown_serialization = encode(Frame(0xC3, 0, 4, b"\x4e"))
    decoder = DubboDecoder()
    decoder.receive_data(bad_request + bad_response + unknown_serialization + good)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert (info.value.request_id, info.value.status_hint) == (1, 400)
    with pytest.raises(RemoteProtocolError, match="result flag") as info:
        decoder.next_event()
    assert (info.value.request_id, info.value.status_hint) == (3, 502)
    with pytest.raises(RemoteProtocolError, match="serialization id 3") as info:
        decoder.next_event()
    assert info.value.request_id == 4
    assert decoder.next_event() == hash_request(2)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x052.0.2",
        b"\x052.0.2\x01S\x4e\x00\x00",
        b"\x052.0.2\x01S\x4e\x01m\x01Q",
        b"\x052.0.2\x01S\x4e\x01m\x01I",
        b"\x052.0.2\x01S\x4e\x01m\x00\x91",
        b"\x90",
    ],
)
def test_malformed_request_bodies(body):
    with pytest.raises(RemoteProtocolError) as info:
        decode_all(encode(Frame(0xC2, 0, 11, body)))
    assert info.value.request_id == 11 and "request 11" in info.value.reason


# -- hostile input -------------------------------------------------------------------------------


def drain(data: bytes, sizes: list[int]) -> None:
    """Feed ``data`` in chunks, then end the stream; only protocol errors may come out, and
    the decoder must finish (CLOSED or a fatal error) without hanging."""
    decoder = DubboDecoder()
    pos, i = 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        decoder.receive_data(data[pos : pos + size])
        pos, i = pos + size, i + 1
        for _ in range(len(data) + 2):
            try:
                if decoder.next_event() is NEED_DATA:
                    break
            except RemoteProtocolError as exc:
                if exc.request_id is None or "payload" in exc.reason:
                    return
    decoder.receive_data(b"")
    for _ in range(len(data) + 2):
        try:
            if decoder.next_event() is CLOSED:
                return
        except RemoteProtocolError as exc:
            if exc.request_id is None or "payload" in exc.reason:
                return
    raise AssertionError("decoder did not finish")


@settings(max_examples=500)
@given(st.binary(max_size=400), st.lists(st.integers(1, 64), min_size=1, max_size=8))
def test_garbage_streams(data, sizes):
    drain(data, sizes)


@settings(max_examples=500)
@given(st.binary(max_size=200), st.lists(st.integers(1, 64), min_size=1, max_size=8))
def test_garbage_bodies_behind_valid_headers(body, sizes):
    for flags in (0xC2, 0x02, 0xE2, 0x22, 0xC6, 0x06):
        drain(b"\xda\xbb" + bytes([flags, 20]) + bytes(8) + len(body).to_bytes(4, "big") + body, sizes)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 10**6),
    st.lists(st.integers(1, 64), min_size=1, max_size=8),
)
def test_mutated_streams(edits, cut, sizes):
    data = bytearray(stream()[0])
    for index, byte in edits:
        data[index % len(data)] = byte
    drain(bytes(data), sizes)
    drain(bytes(data[: cut % len(data)]), sizes)


def test_errors_are_protocol_errors_with_hints():
    with pytest.raises(TypeError):
        ProtocolError("abstract")
    err = RemoteProtocolError("why", status_hint=502, request_id=3)
    assert (err.reason, err.status_hint, err.request_id, str(err)) == ("why", 502, 3, "why")
    assert "request_id=3" in repr(err) and LocalProtocolError("x").status_hint == 400


def test_docstring_examples():
    import doctest

    from sidecar.codecs import dubbo_messages

    assert doctest.testmod(dubbo_messages).failed == 0


def test_regression_descriptor_regex_kept_backtracking_state_per_parameter():
    """A request whose descriptor is 50 000 ``I`` (the peer's to choose, up to the payload limit) made
    the descriptor regex stack about 200 bytes of backtracking state per parameter: 10 MB here, 1.6 GiB
    for an 8 MiB body. Found by test_fuzz."""
    descriptor = b"I" * 50_000
    body = b"\x052.0.2\x01a\x050.0.0\x01m\x53" + len(descriptor).to_bytes(2, "big") + descriptor
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError, match="truncated"):  # the 50 000 arguments are missing
            parse(Frame(0xC2, 0, 1, body))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000
    assert parse_descriptor("[[ILjava/lang/String;" * 3) == ("[[I", "Ljava/lang/String;") * 3
