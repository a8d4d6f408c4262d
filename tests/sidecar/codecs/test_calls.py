"""HTTP calls <-> Dubbo 2: parsing both call forms, the request frame byte for byte, replies for every
outcome, the canned errors, and a round trip through the demo service's logic."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.demo.hello_service import HelloService
from sidecar.codecs import calls, dubbo
from sidecar.codecs.calls import BadCall, Call, Reply, encode_call, error_reply, parse_call, reply_for
from sidecar.codecs.dubbo_messages import (
    FLAG_REQUEST,
    FLAG_TWOWAY,
    Event,
    Frame,
    Request,
    Response,
    Serialization,
    Status,
    heartbeat,
)
from sidecar.codecs.javatypes import JavaObject, Long, TypedList, java_exception
from sidecar.errors import LocalProtocolError, RemoteProtocolError
from tests.support.codec_inputs import FORM_CALL_BODIES
from tests.support.dubbo_peer import SAMPLES, java_hash

SERVICE = "com.alibaba.dubbo.performance.demo.provider.IHelloService"
STRING = "Ljava/lang/String;"
FORM_HEADERS = [("host", "a"), ("content-type", "application/x-www-form-urlencoded")]
JSON_HEADERS = [("host", "a"), ("content-type", "application/json")]
TEXT = [("Content-Type", "text/plain; charset=utf-8")]
JSON = [("Content-Type", "application/json")]


def form(parameter: str | None = "hello", **fields) -> bytes:
    values = {"interface": SERVICE, "method": "hash", "parameterTypesString": STRING}
    values.update(fields)
    if parameter is not None:
        values["parameter"] = parameter
    return urllib.parse.urlencode({k: v for k, v in values.items() if v is not None}).encode()


def form_call(parameter: str | None = "hello", **fields) -> Call:
    return parse_call("POST", "/", FORM_HEADERS, form(parameter, **fields))


def json_call(document, method: str = "hash", headers=JSON_HEADERS) -> Call:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return parse_call("POST", f"/dubbo/{SERVICE}/{method}", headers, body)


def decode_request(data: bytes) -> Request:
    assert dubbo.HEADER.unpack_from(data)[4] == len(data) - dubbo.HEADER_LENGTH
    magic, flags, status, request_id, _ = dubbo.HEADER.unpack_from(data)
    return dubbo.parse(Frame(flags, status, request_id, data[dubbo.HEADER_LENGTH :]))


def response_frame(**fields) -> bytes:
    return dubbo.encode(Response(7, **fields))


# -- the form call ---------------------------------------------------------------------------------


def test_form_call_is_the_benchmark_call_byte_for_byte():
    call = form_call("hello")
    assert call == Call(SERVICE, "hash", STRING, ["hello"], {}, None, None, True)
    attachments = {"path": SERVICE, "interface": SERVICE, "version": "0.0.0"}
    expected = dubbo.encode(Request(42, SERVICE, "hash", STRING, ["hello"], attachments, "0.0.0"))
    data = encode_call(call, 42)
    assert data == expected
    assert data[:4] == b"\xda\xbb" + bytes([FLAG_REQUEST | FLAG_TWOWAY | Serialization.HESSIAN2, 0])
    request = decode_request(data)
    assert (request.request_id, request.service_path, request.service_version) == (42, SERVICE, "0.0.0")
    assert (request.method, request.parameter_types, request.arguments) == ("hash", STRING, ["hello"])
    assert (request.attachments, request.dubbo_version, request.two_way) == (attachments, "2.0.2", True)


def test_form_call_in_fastjson_and_with_version_and_group():
    call = form_call("x", version="1.2", group="blue")
    assert (call.version, call.group) == ("1.2", "blue")
    data = encode_call(call, 9, serialization=Serialization.FASTJSON)
    attachments = {"path": SERVICE, "interface": SERVICE, "version": "1.2", "group": "blue"}
    assert data == dubbo.encode(
        Request(9, SERVICE, "hash", STRING, ["x"], attachments, "1.2", serialization=Serialization.FASTJSON)
    )
    request = decode_request(data)
    assert (request.serialization, request.service_version, request.attachments) == (6, "1.2", attachments)


@pytest.mark.parametrize(
    ("types", "text", "argument"),
    [
        (STRING, "", ""),
        (STRING, "a b&c=d é😀", "a b&c=d é😀"),
        ("Ljava/lang/Object;", "12", "12"),
        ("java.lang.String", "hi", "hi"),  # a type name instead of the descriptor
        ("I", "-2147483648", -(2**31)),
        ("Ljava/lang/Integer;", "+42", 42),
        ("int", "7", 7),
        ("J", "9223372036854775807", Long(2**63 - 1)),
        ("S", "-32768", -32768),
        ("B", "127", 127),
        ("Z", "true", True),
        ("Ljava/lang/Boolean;", "FALSE", False),
        ("D", "1.5e3", 1500.0),
        ("F", "-.25", -0.25),
        ("D", "Infinity", float("inf")),
        ("C", "é", "é"),
    ],
)
def test_form_parameter_converted_per_type(types, text, argument):
    call = form_call(text, parameterTypesString=types)
    assert call.arguments == [argument] and type(call.arguments[0]) is type(argument)
    request = decode_request(encode_call(call, 1))
    assert request.arguments == [argument]


def test_regression_decimal_parameter_regex_was_quadratic_in_a_run_of_digits():
    """A ``double`` parameter of 100 000 digits and then a letter took minutes to refuse: the digits
    could be split between ``[0-9]+`` and ``[0-9]*`` every way. Found by test_fuzz."""
    started = time.perf_counter()
    with pytest.raises(BadCall, match="does not fit type D"):
        form_call("1" * 100_000 + "x", parameterTypesString="D")
    assert time.perf_counter() - started < 0.5
    assert form_call("1" * 100_000 + ".5", parameterTypesString="D").arguments == [float("1" * 100_000 + ".5")]


def test_form_long_is_a_java_long_and_no_parameter_types_means_no_argument():
    assert type(form_call("5", parameterTypesString="J").arguments[0]) is Long
    call = parse_call("POST", "/", FORM_HEADERS, b"interface=a.B&method=ping&parameterTypesString=")
    assert call.arguments == [] and call.parameter_types == ""
    assert decode_request(encode_call(call, 3)).arguments == []


def test_form_call_accepts_no_content_type_a_charset_and_the_absolute_form():
    plain = form_call()
    assert parse_call("POST", "/", [("host", "a")], form()) == plain
    charset = [("Content-Type", "Application/X-WWW-Form-Urlencoded; charset=UTF-8")]
    assert parse_call("POST", "/", charset, form()) == plain
    assert parse_call("POST", "http://127.0.0.1:20000/", FORM_HEADERS, form()) == plain
    assert parse_call("POST", "http://127.0.0.1:20000", FORM_HEADERS, form()) == plain


@given(st.text(max_size=1023))
@settings(max_examples=300)
def test_any_form_parameter_reaches_the_dubbo_request_exactly(text):
    request = decode_request(encode_call(form_call(text), 5))
    assert request.arguments == [text]


@given(body=FORM_CALL_BODIES, serialization=st.sampled_from([Serialization.HESSIAN2, Serialization.FASTJSON]))
@settings(max_examples=300)
def test_a_prepared_call_is_the_call_the_general_path_makes(body, serialization):
    """prepare_call: the same call as parse_checked_call, or the same error, seen first and seen again;
    and the same request frame."""
    try:
        expected = calls.parse_checked_call("/", body)
    except RemoteProtocolError as exc:
        for _ in range(2):
            with pytest.raises(type(exc)) as raised:
                calls.prepare_call("/", body, serialization)
            assert (raised.value.reason, raised.value.status_hint) == (exc.reason, exc.status_hint)
        return
    for _ in range(2):
        call = calls.prepare_call("/", body, serialization)
        assert call == expected
        frame = encode_call(call, 9, serialization=serialization)
        assert frame == encode_call(expected, 9, serialization=serialization)
    other = Serialization.FASTJSON if serialization == Serialization.HESSIAN2 else Serialization.HESSIAN2
    assert encode_call(call, 9, serialization=other) == encode_call(expected, 9, serialization=other)


def test_a_prepared_form_call_takes_its_head_from_the_cache_once_seen():
    calls._FORM_HEADS.clear()
    first = calls.prepare_call("/", form("x"), Serialization.HESSIAN2)
    assert first.template is not None and len(calls._FORM_HEADS) == 1
    second = calls.prepare_call("/", form("y\U0001f600&z"), Serialization.HESSIAN2)  # "&" escaped in the value
    assert second.template is first.template and second.arguments == ["y\U0001f600&z"]
    assert len(calls._FORM_HEADS) == 1
    # a parameter that is not a text: the general way, remembered as such
    body = form("12", parameterTypesString="I")
    assert calls.prepare_call("/", body, Serialization.HESSIAN2) == calls.parse_checked_call("/", body)
    assert calls._FORM_HEADS[Serialization.HESSIAN2, body[: body.rindex(b"parameter=")]] is False


# -- the JSON call ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "descriptor", "arguments"),
    [
        ({"types": ["java.lang.String"], "args": ["hello"]}, STRING, ["hello"]),
        ({"types": [STRING], "args": ["hello"]}, STRING, ["hello"]),
        ({"types": ["int", "long[]", "[Ljava.lang.String;"], "args": [1, [2], ["a"]]}, "I[J[Ljava/lang/String;", None),
        ({"types": ["I", "Z", "java.util.Map"], "args": [1, True, {"k": 1}]}, "IZLjava/util/Map;", None),
        ({}, "", []),
        (b"", "", []),
        (b"  \n", "", []),
    ],
)
def test_json_call_types_as_names_or_descriptors(document, descriptor, arguments):
    call = json_call(document)
    expected = arguments if arguments is not None else document["args"]
    assert (call.interface, call.method, call.parameter_types, call.arguments) == (
        SERVICE,
        "hash",
        descriptor,
        expected,
    )
    assert call.form is False
    assert decode_request(encode_call(call, 1)).parameter_types == descriptor


def test_json_call_version_group_attachments_and_no_content_type():
    document = {
        "types": [],
        "args": [],
        "attachments": {"token": "s3", "timeout": "500"},
        "version": "2.0",
        "group": "g",
    }
    call = json_call(document, method="%24echo", headers=[("host", "a")])
    assert call == Call(SERVICE, "$echo", "", [], {"token": "s3", "timeout": "500"}, "2.0", "g", False)
    request = decode_request(encode_call(call, 11))
    assert request.method == "$echo" and request.service_version == "2.0"
    assert request.attachments == {
        "token": "s3",
        "timeout": "500",
        "path": SERVICE,
        "interface": SERVICE,
        "version": "2.0",
        "group": "g",
    }
    assert json_call({"version": None, "group": ""}).version is None


def test_json_call_long_and_double_arguments_get_their_java_types():
    request = decode_request(encode_call(json_call({"types": ["long", "double"], "args": [5, 2]}), 1))
    assert request.arguments == [5, 2.0]
    assert type(request.arguments[0]) is Long and type(request.arguments[1]) is float


# -- malformed calls -------------------------------------------------------------------------------

J = f"/dubbo/{SERVICE}/hash"


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "status", "words"),
    [
        ("POST", "/nowhere", FORM_HEADERS, form(), 404, "no such path '/nowhere'"),
        ("POST", "/dubbo/only-interface", JSON_HEADERS, b"{}", 404, "/dubbo/{interface}/{method}"),
        ("POST", f"/dubbo/{SERVICE}/hash/", JSON_HEADERS, b"{}", 404, "no such path"),
        ("POST", "/dubbo//hash", JSON_HEADERS, b"{}", 404, "no such path"),
        ("GET", "/", [], b"", 405, "method GET not allowed"),
        ("PUT", J, JSON_HEADERS, b"{}", 405, "calls are POST"),
        ("POST", "/?interface=x", FORM_HEADERS, form(), 400, "query string"),
        ("POST", "/", [("content-type", "application/json")], form(), 415, "send application/x-www-form-urlencoded"),
        ("POST", J, FORM_HEADERS, b"{}", 415, "send application/json"),
        ("POST", "/", FORM_HEADERS, form(interface=""), 400, "'interface' is missing or empty"),
        ("POST", "/", FORM_HEADERS, b"method=hash&parameter=x", 400, "'interface'"),
        ("POST", "/", FORM_HEADERS, form(method=None), 400, "'method'"),
        ("POST", "/", FORM_HEADERS, form(parameterTypesString=None), 400, "'parameterTypesString'"),
        ("POST", "/", FORM_HEADERS, form(None), 400, "'parameter' is missing"),
        ("POST", "/", FORM_HEADERS, form() + b"&parameter=2", 400, "more than once"),
        ("POST", "/", FORM_HEADERS, form() + b"&extra=1", 400, "unknown form field 'extra'"),
        ("POST", "/", FORM_HEADERS, form(parameterTypesString="a;b"), 400, "neither a JVM descriptor"),
        ("POST", "/", FORM_HEADERS, form(parameterTypesString="II"), 400, "one parameter, not 2"),
        ("POST", "/", FORM_HEADERS, form(parameterTypesString="[I"), 400, "cannot carry a parameter of type [I"),
        ("POST", "/", FORM_HEADERS, form("x", parameterTypesString=""), 400, "declares no parameter"),
        ("POST", "/", FORM_HEADERS, form("2147483648", parameterTypesString="I"), 400, "out of range"),
        ("POST", "/", FORM_HEADERS, form("1_000", parameterTypesString="J"), 400, "expected a whole number"),
        ("POST", "/", FORM_HEADERS, form(" 1", parameterTypesString="I"), 400, "does not fit type I"),
        ("POST", "/", FORM_HEADERS, form("yes", parameterTypesString="Z"), 400, "expected true or false"),
        ("POST", "/", FORM_HEADERS, form("1,5", parameterTypesString="D"), 400, "expected a decimal number"),
        ("POST", "/", FORM_HEADERS, form("ab", parameterTypesString="C"), 400, "expected one character"),
        ("POST", "/", FORM_HEADERS, b"parameter=%zz", 400, "bad percent escape"),
        ("POST", J, JSON_HEADERS, b"{not json", 400, "bad JSON in the body"),
        ("POST", J, JSON_HEADERS, b"\xff", 400, "bad JSON"),
        ("POST", J, JSON_HEADERS, b"[1]", 400, "must be a JSON object, not list"),
        ("POST", J, JSON_HEADERS, b'{"types": [], "argz": []}', 400, "unknown key 'argz'"),
        ("POST", J, JSON_HEADERS, b'{"types": ["int"], "args": []}', 400, '1 "types" for 0 "args"'),
        ("POST", J, JSON_HEADERS, b'{"types": "I", "args": [1]}', 400, "must be JSON arrays"),
        ("POST", J, JSON_HEADERS, b'{"types": [1], "args": [1]}', 400, "types[0] 1 is not a Java type"),
        ("POST", J, JSON_HEADERS, b'{"types": ["Ljava/lang/String;LX;"], "args": [1]}', 400, "not one type"),
        ("POST", J, JSON_HEADERS, b'{"types": ["a;b"], "args": [1]}', 400, "types[0]"),
        ("POST", J, JSON_HEADERS, b'{"attachments": {"k": 1}}', 400, "object of strings"),
        ("POST", J, JSON_HEADERS, b'{"attachments": ["k"]}', 400, "object of strings"),
        ("POST", J, JSON_HEADERS, b'{"attachments": {"version": "1"}}', 400, "attachment 'version' is set by"),
        ("POST", J, JSON_HEADERS, b'{"version": 1}', 400, '"version" and "group" must be strings'),
    ],
)
def test_malformed_calls(method, target, headers, body, status, words):
    with pytest.raises(RemoteProtocolError) as caught:
        parse_call(method, target, headers, body)
    assert caught.value.status_hint == status
    assert words in caught.value.reason and "\n" not in caught.value.reason
    expected_headers = (("Allow", "POST"),) if status == 405 else ()
    assert tuple(getattr(caught.value, "headers", ())) == expected_headers


def test_bad_call_becomes_its_error_reply():
    with pytest.raises(BadCall) as caught:
        parse_call("GET", J, [], b"")
    error = caught.value
    reply = error_reply(error.status_hint, error.reason, form=False, headers=error.headers)
    assert reply == Reply(405, [*JSON, ("Allow", "POST")], b'{"error":"method GET not allowed: calls are POST"}\n')


def test_encode_call_refuses_what_dubbo_cannot_carry():
    with pytest.raises(LocalProtocolError) as caught:
        encode_call(Call(SERVICE, "hash", STRING, ["x" * (9 * 1024 * 1024)]), 1)
    assert caught.value.status_hint == 413
    with pytest.raises(LocalProtocolError) as caught:
        encode_call(Call(SERVICE, "hash", "II", [1]), 1)
    assert caught.value.status_hint == 400

    with pytest.raises(LocalProtocolError, match="method") as caught:
        encode_call(Call(SERVICE, "", STRING, ["x"]), 3)
    assert caught.value.request_id == 3  # no template for a call no frame can carry: encode() says why


def test_encode_call_caches_one_template_per_method_and_keeps_calls_apart():
    calls._TEMPLATES.clear()
    first = Call(SERVICE, "m", "Ljava/lang/Object;", ["x"], {"trace": "1"}, "1.0", "g", False)
    for call in (
        first,
        Call(SERVICE, "m", "Ljava/lang/Object;", ["y"], {"trace": "1"}, "1.0", "g", False),
        Call(SERVICE, "m", "Ljava/lang/Object;", ["x"], {"trace": "2"}, "1.0", "g", False),
        Call(SERVICE, "m", "Ljava/lang/Object;", ["x"], {"trace": 1}, "1.0", "g", False),  # not cached
        Call(SERVICE, "m", "Ljava/lang/Object;", ["x"], {"trace": True}, "1.0", "g", False),
        Call(SERVICE, "m", "Ljava/lang/Object;", ["x"], {"trace": "1"}, "1.0", None, False),
    ):
        for serialization in (Serialization.HESSIAN2, Serialization.FASTJSON):
            attachments = {**call.attachments, "path": SERVICE, "interface": SERVICE, "version": "1.0"}
            if call.group:
                attachments["group"] = call.group
            request = Request(5, SERVICE, "m", call.parameter_types, call.arguments, attachments, "1.0")
            request.serialization = serialization
            assert encode_call(call, 5, serialization=serialization) == dubbo.encode(request)
    assert len(calls._TEMPLATES) == 6  # 3 string-only keys x 2 serializations
    calls._TEMPLATES.update(dict.fromkeys(range(calls._MAX_TEMPLATES)))
    encode_call(Call(SERVICE, "other", "", []), 1)
    assert len(calls._TEMPLATES) == 1  # a full cache starts over


# -- replies ---------------------------------------------------------------------------------------

FORM_CALL = Call(SERVICE, "hash", STRING, ["hello"])
JSON_CALL = Call(SERVICE, "hash", STRING, ["hello"], form=False)


@pytest.mark.parametrize(
    ("value", "text", "document"),
    [
        (99162322, b"99162322", b'{"result":99162322}\n'),
        (-7, b"-7", b'{"result":-7}\n'),
        (Long(2**40), b"1099511627776", b'{"result":1099511627776}\n'),
        ("héllo 😀", "héllo 😀".encode(), '{"result":"héllo 😀"}\n'.encode()),
        ("", b"", b'{"result":""}\n'),
        (None, b"", b'{"result":null}\n'),
        (True, b"true", b'{"result":true}\n'),
        (False, b"false", b'{"result":false}\n'),
        (1.5, b"1.5", b'{"result":1.5}\n'),
        ([1, "a"], b'[1,"a"]', b'{"result":[1,"a"]}\n'),
        (TypedList("[int", [1]), b"[1]", b'{"result":[1]}\n'),
        ({"k": None}, b'{"k":null}', b'{"result":{"k":null}}\n'),
        (JavaObject("a.Point", {"x": 1, "y": 2}), b'{"x":1,"y":2}', b'{"result":{"x":1,"y":2}}\n'),
        (b"\x00\xff", b'"AP8="', b'{"result":"AP8="}\n'),
    ],
)
def test_value_replies(value, text, document):
    for serialization in Serialization:
        if serialization == Serialization.FASTJSON and isinstance(value, (bytes, JavaObject, Long, TypedList)):
            continue  # fastjson gives these back as plain JSON values
        check_value_reply(value, text, document, serialization)


def check_value_reply(value, text, document, serialization):
    frame = response_frame(value=value, attachments={"dubbo": "2.0.2"}, serialization=serialization)
    assert reply_for(FORM_CALL, frame) == Reply(200, TEXT, text)
    assert reply_for(JSON_CALL, frame) == Reply(200, JSON, document)


def test_lone_surrogate_in_a_text_result_becomes_a_question_mark():
    assert reply_for(FORM_CALL, response_frame(value="a\ud800b")).body == b"a?b"


@pytest.mark.parametrize(
    ("exception", "line", "kind"),
    [
        (java_exception("java.lang.IllegalStateException", "boom"), "java.lang.IllegalStateException: boom", None),
        (java_exception("java.lang.NullPointerException", None), "java.lang.NullPointerException", None),
        (java_exception("x.Oops", "first\n\tat x.Y.z(Y.java:1)\r\n"), "x.Oops: first at x.Y.z(Y.java:1)", "x.Oops"),
        ({"@type": "x.Fail", "message": "from fastjson"}, "x.Fail: from fastjson", "x.Fail"),
    ],
)
def test_exception_result_is_500_with_type_and_message(exception, line, kind):
    kind = kind or line.partition(":")[0]
    frame = response_frame(exception=exception)
    assert reply_for(FORM_CALL, frame) == Reply(500, TEXT, (line + "\n").encode())
    reply = reply_for(JSON_CALL, frame)
    assert (reply.status, reply.headers, json.loads(reply.body)) == (500, JSON, {"error": line, "type": kind})


@pytest.mark.parametrize("status", [s for s in Status if s != Status.OK])
def test_every_status_other_than_ok_is_502_naming_it(status):
    frame = response_frame(status=status, error_message="it went\nwrong")
    line = f"Dubbo status {status.name}: it went wrong"
    assert reply_for(FORM_CALL, frame) == Reply(502, TEXT, (line + "\n").encode())
    reply = reply_for(JSON_CALL, frame)
    assert (reply.status, json.loads(reply.body)) == (502, {"error": line, "dubbo_status": status.name})


def test_regression_one_line_was_quadratic_in_a_run_of_blanks():
    """A provider's error message with a long run of blanks and a line break after it took seconds to
    put on one line (``\\s*[\\r\\n]\\s*`` retried the run from each blank). Found by test_fuzz."""
    message = "a" + " " * 200_000 + "b \r\n\t c\n"
    frame = response_frame(status=Status.SERVICE_ERROR, error_message=message)
    started = time.perf_counter()
    reply = reply_for(FORM_CALL, frame)
    assert time.perf_counter() - started < 0.5
    assert reply.body == ("Dubbo status SERVICE_ERROR: a" + " " * 200_000 + "b c\n").encode()


def test_unknown_status_and_no_message():
    assert reply_for(FORM_CALL, response_frame(status=77)).body == b"Dubbo status status 77: no message\n"


GOOD = response_frame(value=1)


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (b"", "0 bytes, shorter than a Dubbo header"),
        (GOOD[:15], "15 bytes"),
        (b"\x00\x00" + GOOD[2:], "bad magic 0x0000"),
        (GOOD + b"x", "frame 7 says 2 body bytes, has 3"),
        (dubbo.encode(Request(7, SERVICE, "hash", STRING, ["x"])), "is a request or an event"),
        (dubbo.encode(heartbeat(7, reply=True)), "is a request or an event"),
        (dubbo.encode(Frame(Serialization.HESSIAN2, Status.OK, 7, b"\x91")), "Dubbo response 7"),
        (dubbo.encode(Frame(Serialization.HESSIAN2, Status.OK, 7, b"\x99")), "unknown result flag"),
        (dubbo.encode(Frame(9, Status.OK, 7, b"\x91")), "serialization id 9"),
    ],
)
def test_undecodable_reply_is_502(frame, words):
    for call in (FORM_CALL, JSON_CALL):
        reply = reply_for(call, frame)
        assert reply.status == 502
        text = reply.body.decode() if call.form else json.loads(reply.body)["error"]
        assert text.startswith("bad reply from provider: ") and words in text, text


def test_a_value_json_cannot_show_is_502():
    frame = dubbo.encode(Response(7, value={JavaObject("a.K"): 1}))
    assert reply_for(JSON_CALL, frame).status == 502
    assert b"bad reply from provider: cannot encode as JSON" in reply_for(FORM_CALL, frame).body


@pytest.mark.parametrize(
    ("status", "reason", "form", "headers", "expected"),
    [
        (503, "all busy", True, (("Retry-After", "1"),), Reply(503, [*TEXT, ("Retry-After", "1")], b"all busy\n")),
        (504, "no answer from provider\nin 5 s", True, (), Reply(504, TEXT, b"no answer from provider in 5 s\n")),
        (413, "too big", False, [("X-A", "b")], Reply(413, [*JSON, ("X-A", "b")], b'{"error":"too big"}\n')),
        (400, 'say "é"', False, (), Reply(400, JSON, '{"error":"say \\"é\\""}\n'.encode())),
    ],
)  # fmt: skip
def test_error_reply(status, reason, form, headers, expected):
    assert error_reply(status, reason, form=form, headers=headers) == expected


def test_reply_headers_are_a_fresh_list_each_time():
    first, second = error_reply(500, "x"), error_reply(500, "x")
    first.headers.append(("X-Provider", "p"))
    assert second.headers == TEXT and calls.TEXT == TEXT[0][1]
    one, two = reply_for(FORM_CALL, GOOD), reply_for(FORM_CALL, GOOD)
    one.headers.append(("X-Provider", "p"))
    assert two.headers == TEXT


# -- round trip through the demo service -----------------------------------------------------------


def answer(service: HelloService, data: bytes) -> bytes:
    request = decode_request(data)
    assert isinstance(request, Request) and not isinstance(request, Event)
    return dubbo.encode(service.answer(request))


@pytest.mark.parametrize("serialization", [Serialization.HESSIAN2, Serialization.FASTJSON])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_hash_round_trip_through_the_demo_service(name, serialization):
    text = SAMPLES[name]
    call = form_call(text)
    reply = reply_for(call, answer(HelloService(), encode_call(call, 1, serialization=serialization)))
    assert reply == Reply(200, TEXT, str(java_hash(text)).encode())
    call = json_call({"types": ["java.lang.String"], "args": [text]})
    reply = reply_for(call, answer(HelloService(), encode_call(call, 2, serialization=serialization)))
    assert json.loads(reply.body) == {"result": java_hash(text)}


def test_version_mismatch_and_unknown_method_through_the_demo_service():
    service = HelloService(version="1.0.0")
    reply = reply_for(form_call(), answer(service, encode_call(form_call(version="2.0.0"), 1)))
    assert reply.status == 502 and reply.body.startswith(b"Dubbo status SERVICE_ERROR: ")
    assert b"Not found exported service" in reply.body
    assert reply_for(form_call(), answer(service, encode_call(form_call(version="1.0.0"), 1))).status == 200
    call = form_call(method="nope")
    assert reply_for(call, answer(HelloService(), encode_call(call, 1))).status == 502
    call = json_call({"types": ["java.lang.String"], "args": [None]})
    reply = reply_for(call, answer(HelloService(), encode_call(call, 1)))
    assert (reply.status, json.loads(reply.body)["type"]) == (500, "java.lang.NullPointerException")


def test_a_route_checked_again_gives_the_same_path_or_the_same_refusal():
    form = [("content-type", "application/x-www-form-urlencoded; charset=utf-8")]
    for _ in range(3):  # the second and third time from the routes kept
        assert calls.check_route("POST", "/", form) == "/"
        assert calls.check_route("POST", "/dubbo/Svc/hash", [("content-type", "application/json")]) == "/dubbo/Svc/hash"
        for method, target, headers, status in [
            ("POST", "/", [("content-type", "text/plain")], 415),  # the target of a route kept, another type
            ("GET", "/", form, 405),
            ("POST", "/?x=1", form, 400),
            ("POST", "/other", form, 404),
        ]:
            with pytest.raises(BadCall) as info:
                calls.check_route(method, target, headers)
            assert info.value.status_hint == status
