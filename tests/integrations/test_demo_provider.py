"""The demo Dubbo service as a real process (``python -m integrations.demo.demo_provider``), called with our
own codec over plain sockets on 127.0.0.1, and stopped by PID."""

from __future__ import annotations

import signal
import struct
import sys

import pytest

from sidecar.codecs.dubbo import Event, Response, Status, heartbeat
from sidecar.codecs.dubbo_messages import ResultFlag, Serialization
from sidecar.codecs.javatypes import describe_exception
from tests.support.dubbo_peer import (
    SAMPLES,
    SERVICE,
    WAIT,
    DubboPeer,
    Process,
    hash_call,
    java_hash,
    start_provider,
)

HESSIAN2, FASTJSON = Serialization.HESSIAN2, Serialization.FASTJSON


@pytest.fixture(scope="module")
def provider():
    """One provider for the plain calls: 20 ms per call, room for 200 at once."""
    process, port = start_provider("--latency-ms", "20", "--capacity", "200")
    yield port
    assert process.stop() == 0, process.stderr


@pytest.fixture
def peer(provider):
    with DubboPeer(provider) as connection:
        yield connection


@pytest.mark.parametrize("serialization", [HESSIAN2, FASTJSON])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_hash_is_string_hash_code(peer, name, serialization):
    reply = peer.call(hash_call(1, SAMPLES[name], serialization=serialization))
    assert isinstance(reply, Response) and reply.request_id == 1
    assert reply.status == Status.OK and reply.serialization == serialization
    assert reply.value == java_hash(SAMPLES[name])
    assert reply.attachments == {"dubbo": "2.0.2"}


@pytest.mark.parametrize("serialization", [HESSIAN2, FASTJSON])
def test_echo_returns_each_sample(peer, serialization):
    calls = [hash_call(i, text, method="echo", serialization=serialization) for i, text in enumerate(SAMPLES.values())]
    peer.send(*calls)
    replies = peer.receive_by_id(len(calls))
    for call in calls:
        assert replies[call.request_id].value == call.arguments[0]


@pytest.mark.parametrize("serialization", [HESSIAN2, FASTJSON])
def test_unknown_method_is_a_service_error(peer, serialization):
    reply = peer.call(hash_call(5, "x", method="nope", serialization=serialization))
    assert reply.status == Status.SERVICE_ERROR and reply.serialization == serialization
    assert 'Not found method "nope"' in reply.error_message
    assert "RpcException" in reply.error_message


def test_hash_of_null_is_an_exception_result(peer):
    reply = peer.call(hash_call(6, None))
    assert reply.flag == ResultFlag.RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS
    assert describe_exception(reply.exception)[0] == "java.lang.NullPointerException"


@pytest.mark.parametrize("serialization", [HESSIAN2, FASTJSON])
def test_heartbeat_gets_a_heartbeat_reply(peer, serialization):
    reply = peer.call(heartbeat(77, serialization=serialization))
    assert isinstance(reply, Event) and not reply.is_request
    assert reply.request_id == 77 and reply.is_heartbeat and reply.serialization == serialization


def test_100_calls_in_flight_on_one_connection(peer):
    calls = [hash_call(1000 + i, f"call {i} é😀 " + "x" * i) for i in range(100)]
    calls += [heartbeat(5000)]
    peer.send(*calls)  # all of them before reading any answer
    replies = peer.receive_by_id(len(calls))
    assert replies.pop(5000).is_heartbeat
    for call in calls[:100]:
        assert replies[call.request_id].value == java_hash(call.arguments[0])


def test_mixed_serializations_on_one_connection(peer):
    calls = [hash_call(i, SAMPLES["emoji"], serialization=(HESSIAN2, FASTJSON)[i % 2]) for i in range(10)]
    peer.send(*calls)
    replies = peer.receive_by_id(10)
    for call in calls:
        assert replies[call.request_id].serialization == call.serialization
        assert replies[call.request_id].value == java_hash(SAMPLES["emoji"])


def test_one_way_calls_get_no_answer(peer):
    peer.send(hash_call(1, "one way", two_way=False), heartbeat(2))
    assert peer.receive(1)[0].request_id == 2


def test_undecodable_body_is_a_bad_request_and_the_connection_goes_on(peer):
    body = b'"2.0.2"\n"' + SERVICE.encode() + b'"\n"0.0.0"\n"hash"\n"Ljava/lang/String;"\n{broken\n'
    peer.send_bytes(struct.pack(">HBBQI", 0xDABB, 0xC6, 0, 8, len(body)) + body)
    reply = peer.receive(1)[0]
    assert reply.request_id == 8 and reply.status == Status.BAD_REQUEST and reply.serialization == FASTJSON
    assert reply.error_message.startswith("Fail to decode request due to:")
    assert peer.call(hash_call(9, "still here")).value == java_hash("still here")


def test_broken_stream_is_closed(provider):
    with DubboPeer(provider) as peer:
        peer.send_bytes(b"GET / HTTP/1.1\r\n\r\n")
        assert peer.at_eof()


# -- options -------------------------------------------------------------------------------------


def test_capacity_exhausted_is_status_100():
    process, port = start_provider("--latency-ms", "1000", "--capacity", "2")
    try:
        with DubboPeer(port) as peer:
            peer.send(*[hash_call(i, f"busy {i}") for i in range(6)])
            replies = peer.receive_by_id(6)
            statuses = sorted(reply.status for reply in replies.values())
            assert statuses == [Status.OK] * 2 + [Status.SERVER_THREADPOOL_EXHAUSTED_ERROR] * 4
            for i, reply in replies.items():
                if reply.status == Status.OK:
                    assert reply.value == java_hash(f"busy {i}")
                else:
                    assert "threadpool is exhausted" in reply.error_message
            # the slots are free again once the first two are answered
            assert peer.call(hash_call(7, "later")).value == java_hash("later")
    finally:
        assert process.stop() == 0


def test_version_option_answers_only_that_version():
    process, port = start_provider("--latency-ms", "0", "--version", "1.0.0", "--serialization", "fastjson")
    try:
        with DubboPeer(port) as peer:
            assert peer.call(hash_call(1, "hello", service_version="1.0.0")).value == 99162322
            other = peer.call(hash_call(2, "hello", service_version="2.0.0"))
            assert other.status == Status.SERVICE_ERROR and "Not found exported service" in other.error_message
    finally:
        assert process.stop() == 0


def test_provider_sends_heartbeats_and_closes_a_silent_connection():
    process, port = start_provider("--heartbeat-s", "0.2", "--serialization", "fastjson")
    try:
        with DubboPeer(port) as peer:
            beat = peer.receive(1)[0]  # sent by the provider after 0.2 s of silence
            assert isinstance(beat, Event) and beat.is_request and beat.two_way and beat.is_heartbeat
            assert beat.serialization == FASTJSON
            peer.send(heartbeat(beat.request_id, reply=True, serialization=FASTJSON))
            while not peer.at_eof():  # more heartbeats may come; then, unanswered, the close
                pass
    finally:
        assert process.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_lets_calls_in_progress_finish_then_exits_0(sig):
    process, port = start_provider("--latency-ms", "300")
    with DubboPeer(port) as peer:
        peer.send(hash_call(1, "in progress"), heartbeat(2))
        assert peer.receive(1)[0].request_id == 2  # the heartbeat answer: the call has been read
        assert process.stop(sig) == 0
        reply = peer.receive(1)[0]
        assert reply.request_id == 1 and reply.value == java_hash("in progress")
        assert peer.at_eof()


def test_bad_options_exit_2():
    process = Process([sys.executable, "-m", "integrations.demo.demo_provider", "--capacity", "-1"])
    assert process.popen.wait(timeout=WAIT) == 2
    assert process.lines.get(timeout=WAIT) is None  # no "listening" line
