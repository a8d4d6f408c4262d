"""The demo service's logic without I/O: String.hashCode, and the reply to every kind of call."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integrations.demo.hello_service import IMPLEMENTATION, SERVICE, HelloService, java_string_hash
from sidecar.codecs.dubbo import DubboDecoder, encode
from sidecar.codecs.dubbo_messages import Event, Frame, Request, ResultFlag, Serialization, Status, heartbeat
from sidecar.codecs.javatypes import JavaObject, Long, TypedList, describe_exception
from tests.support.dubbo_peer import SAMPLES, hash_call, java_hash

HESSIAN2, FASTJSON = Serialization.HESSIAN2, Serialization.FASTJSON

# -- String.hashCode -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 97),
        ("hello", 99162322),
        ("Aa", 2112),  # the classic collision
        ("BB", 2112),
        ("polygenelubricants", -(2**31)),  # wraps to Integer.MIN_VALUE
        ("\U0001f600", 0xD83D * 31 + 0xDE00),  # outside the BMP: two surrogates
        ("\ud800", 0xD800),  # a lone surrogate is one unit
        ("é", 0xE9),
    ],
)
def test_java_string_hash_known_values(text, expected):
    assert java_string_hash(text) == expected


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_java_string_hash_of_the_samples(name):
    assert java_string_hash(SAMPLES[name]) == java_hash(SAMPLES[name])


@pytest.mark.parametrize("length", [31, 32, 33, 255, 256, 257, 511, 512, 513, 40_000])
def test_java_string_hash_at_the_chunk_edges(length):
    for text in ("x" * length, ("é😀" * length)[:length]):
        assert java_string_hash(text) == java_hash(text)


@given(st.text(alphabet=st.characters(codec=None), max_size=700))
def test_java_string_hash_matches_the_plain_loop(text):
    assert java_string_hash(text) == java_hash(text)


def test_docstring_examples():
    (test,) = doctest.DocTestFinder().find(
        java_string_hash, "java_string_hash", globs={"java_string_hash": java_string_hash}
    )
    assert test.examples and doctest.DocTestRunner().run(test).failed == 0


# -- calls ---------------------------------------------------------------------------------------

SERVICE_AT = HelloService(host="127.0.0.1", port=20880)


def round_trip(message):
    """``message`` as the caller decodes it after it went over the wire."""
    decoder = DubboDecoder()
    decoder.receive_data(encode(message))
    return decoder.next_event()


@pytest.mark.parametrize("serialization", [HESSIAN2, FASTJSON])
def test_hash_answers_with_the_value_in_the_callers_serialization(serialization):
    reply = round_trip(SERVICE_AT.answer(hash_call(7, "hello", serialization=serialization)))
    assert reply.request_id == 7 and reply.status == Status.OK
    assert reply.value == 99162322
    assert reply.serialization == serialization
    assert reply.flag == ResultFlag.RESPONSE_VALUE_WITH_ATTACHMENTS
    assert reply.attachments == {"dubbo": "2.0.2"}


def test_old_callers_get_results_without_attachments():
    reply = round_trip(SERVICE_AT.answer(hash_call(1, "hello", dubbo_version="2.0.1")))
    assert reply.flag == ResultFlag.RESPONSE_VALUE and reply.value == 99162322


@pytest.mark.parametrize("method", ["echo", "$echo"])
@pytest.mark.parametrize("serialization", [HESSIAN2, FASTJSON])
def test_echo_returns_the_argument(method, serialization):
    for text in SAMPLES.values():
        reply = round_trip(SERVICE_AT.answer(hash_call(1, text, method=method, serialization=serialization)))
        assert reply.status == Status.OK and reply.value == text


def test_echo_of_null_is_a_null_value():
    reply = round_trip(SERVICE_AT.answer(hash_call(1, None, method="echo")))
    assert reply.flag == ResultFlag.RESPONSE_NULL_VALUE_WITH_ATTACHMENTS and reply.value is None


def test_dollar_echo_takes_any_value():
    call = Request(1, SERVICE, "$echo", "Ljava/lang/Object;", [[1, "two"]])
    assert round_trip(SERVICE_AT.answer(call)).value == [1, "two"]


@pytest.mark.parametrize("serialization", [HESSIAN2, FASTJSON])
def test_hash_of_null_throws_null_pointer_exception(serialization):
    reply = round_trip(SERVICE_AT.answer(hash_call(3, None, serialization=serialization)))
    assert reply.status == Status.OK
    assert reply.flag == ResultFlag.RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS
    assert describe_exception(reply.exception) == ("java.lang.NullPointerException", None)


@pytest.mark.parametrize(
    ("descriptor", "argument", "java_class"),
    [
        ("I", 42, "java.lang.Integer"),
        ("J", Long(42), "java.lang.Long"),
        ("Z", True, "java.lang.Boolean"),
        ("D", 1.5, "java.lang.Double"),
        ("[B", b"\x01", "[B"),
        ("Ljava/util/List;", [1], "java.util.ArrayList"),
        ("[Ljava/lang/String;", TypedList("[string", ["a"]), "[string"),
        ("Ljava/util/Map;", {"a": 1}, "java.util.HashMap"),
        ("Lcom/example/Bean;", JavaObject("com.example.Bean", {"x": 1}), "com.example.Bean"),
    ],
)
def test_hash_of_another_type_throws_class_cast_exception(descriptor, argument, java_class):
    call = Request(1, SERVICE, "hash", descriptor, [argument])
    reply = round_trip(SERVICE_AT.answer(call))
    assert reply.status == Status.OK
    assert describe_exception(reply.exception) == (
        "java.lang.ClassCastException",
        f"{java_class} cannot be cast to java.lang.String",
    )


def test_fastjson_exception_is_a_map_with_its_type():
    reply = round_trip(SERVICE_AT.answer(Request(1, SERVICE, "hash", "I", [5], serialization=FASTJSON)))
    assert reply.exception["@type"] == "java.lang.ClassCastException"
    assert reply.exception["message"] == "java.lang.Integer cannot be cast to java.lang.String"


@pytest.mark.parametrize(
    "call",
    [
        hash_call(9, "x", method="nope"),
        Request(9, SERVICE, "hash"),  # hash() with no argument
        Request(9, SERVICE, "hash", "Ljava/lang/String;Ljava/lang/String;", ["a", "b"]),
    ],
    ids=["unknown-method", "no-argument", "two-arguments"],
)
def test_a_method_the_service_lacks_is_a_service_error(call):
    reply = round_trip(SERVICE_AT.answer(call))
    assert reply.request_id == 9 and reply.status == Status.SERVICE_ERROR
    assert reply.error_message.startswith("com.alibaba.dubbo.rpc.RpcException: Failed to invoke remote proxy method")
    assert f'Not found method "{call.method}" in class {IMPLEMENTATION}.' in reply.error_message
    assert "dubbo://127.0.0.1:20880/" in reply.error_message


@pytest.mark.parametrize("serialization", [HESSIAN2, FASTJSON])
def test_an_unknown_service_is_not_found(serialization):
    call = hash_call(2, "x", serialization=serialization)
    call.service_path = call.attachments["path"] = "com.example.Other"
    reply = round_trip(SERVICE_AT.answer(call))
    assert reply.status == Status.SERVICE_ERROR and reply.serialization == serialization
    assert "RemotingException: Not found exported service: com.example.Other:20880 in [" in reply.error_message
    assert f"[{SERVICE}:20880]" in reply.error_message


def test_the_path_attachment_overrides_the_body():
    call = hash_call(1, "hello")
    call.service_path = "com.example.Other"  # the attachment still names the service
    assert SERVICE_AT.answer(call).value == 99162322
    call.attachments = {}
    assert SERVICE_AT.answer(call).status == Status.SERVICE_ERROR


@pytest.mark.parametrize("version", ["0.0.0", "", None, "1.0.0", "2.5"])
def test_without_a_configured_version_every_version_is_answered(version):
    call = hash_call(1, "hello", service_version=version)
    assert SERVICE_AT.answer(call).value == 99162322


@pytest.mark.parametrize(
    ("configured", "called", "found"),
    [
        ("1.0.0", "1.0.0", True),
        ("1.0.0", "2.0.0", False),
        ("1.0.0", "0.0.0", False),
        ("1.0.0", None, False),
        ("0.0.0", None, True),  # Dubbo's key leaves out 0.0.0 and the empty version alike
        ("0.0.0", "", True),
    ],
)
def test_a_configured_version_must_match(configured, called, found):
    service = HelloService(version=configured, port=20881)
    call = hash_call(1, "hello", service_version=called)
    if called is None:
        del call.attachments["version"]
    reply = service.answer(call)
    if found:
        assert reply.value == 99162322
    else:
        assert reply.status == Status.SERVICE_ERROR
        assert f"in [{SERVICE}:{configured}:20881]" in reply.error_message


def test_the_version_attachment_overrides_the_body():
    service = HelloService(version="1.0.0")
    call = hash_call(1, "hello", service_version="9.9.9")
    call.attachments["version"] = "1.0.0"
    assert service.answer(call).value == 99162322


# -- refusals, broken requests, events -----------------------------------------------------------


@pytest.mark.parametrize("serialization", [HESSIAN2, FASTJSON])
def test_refuse_is_threadpool_exhausted(serialization):
    reply = round_trip(SERVICE_AT.refuse(hash_call(4, "x", serialization=serialization), 200, 200))
    assert reply.request_id == 4 and reply.serialization == serialization
    assert reply.status == Status.SERVER_THREADPOOL_EXHAUSTED_ERROR == 100
    assert reply.error_message.startswith("Server side(127.0.0.1,20880) threadpool is exhausted")
    assert "Pool Size: 200 (active: 200" in reply.error_message


def test_reject_is_bad_request_in_the_frames_serialization():
    frame = Frame(0xC6, 0, 5, b"garbage\n")
    reply = round_trip(SERVICE_AT.reject(frame, "bad fastjson data"))
    assert reply.status == Status.BAD_REQUEST and reply.serialization == FASTJSON
    assert reply.error_message == "Fail to decode request due to: bad fastjson data"


def test_reject_of_an_unknown_serialization_uses_the_configured_one():
    service = HelloService(serialization=FASTJSON)
    reply = round_trip(service.reject(Frame(0xC3, 0, 5, b""), "serialization id 3 is not supported"))
    assert reply.status == Status.BAD_REQUEST and reply.serialization == FASTJSON


@pytest.mark.parametrize("serialization", [HESSIAN2, FASTJSON])
def test_heartbeat_requests_get_heartbeat_replies(serialization):
    reply = SERVICE_AT.on_event(heartbeat(11, serialization=serialization))
    assert reply == heartbeat(11, reply=True, serialization=serialization)
    assert round_trip(reply).is_heartbeat


@pytest.mark.parametrize(
    "event",
    [
        heartbeat(1, reply=True),  # a reply to our own heartbeat
        Event(2, is_request=True, two_way=False),  # one-way heartbeat
        Event(3, data="R"),  # Dubbo's read-only event
    ],
)
def test_other_events_get_no_reply(event):
    assert SERVICE_AT.on_event(event) is None


def test_the_providers_heartbeat_uses_its_serialization():
    beat = HelloService(serialization=FASTJSON).heartbeat(3)
    assert beat.is_request and beat.two_way and beat.is_heartbeat and beat.serialization == FASTJSON
    assert encode(beat)[2] == 0xE6
