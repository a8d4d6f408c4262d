"""The plain HTTP backend as a real process: hashes, keep-alive, pipelining, capacity, errors, SIGTERM."""

from __future__ import annotations

import signal
import threading

import pytest

from sidecar.codecs import http1
from tests.support.dubbo_peer import SAMPLES, WAIT, java_hash, start_backend
from tests.support.http_clients import ProcessClient, form, form_request
from tests.support.ports import unread_bytes
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def backend():
    process, port = start_backend("--latency-ms", "1")
    yield port
    assert process.stop() == 0


def test_hashes_of_every_sample_on_one_keep_alive_connection(backend):
    client = ProcessClient(backend)
    try:
        for text in SAMPLES.values():
            response = client.call(form_request(text))
            assert (response.status, response.body) == (200, str(java_hash(text)).encode())
        assert client.conn.keep_alive
    finally:
        client.close()


def test_pipelined_requests_are_answered_in_order_and_echo_the_request_id(backend):
    texts = ["", "a", "hello", "x" * 1023, "你好"]
    client = ProcessClient(backend)
    try:
        responses = client.pipeline(*(form_request(t, request_id=f"id-{i}") for i, t in enumerate(texts)))
    finally:
        client.close()
    assert [r.body for r in responses] == [str(java_hash(t)).encode() for t in texts]
    assert [http1.get_header(r.headers, "x-request-id") for r in responses] == [f"id-{i}" for i in range(len(texts))]


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (form_request("a", method="echo"), 400),
        (form_request("a", interface="com.example.Other"), 400),
        (form_request("a", parameterTypesString="I"), 400),
        (http1.ClientRequest("POST", "/", [], b"interface=%zz"), 400),
        (http1.ClientRequest("POST", "/elsewhere", [], form("a")), 404),
        (http1.ClientRequest("GET", "/"), 405),
    ],
)
def test_other_requests_get_a_client_error_and_the_connection_stays(backend, request_, status):
    client = ProcessClient(backend)
    try:
        assert client.call(request_).status == status
        assert client.call(form_request("hello")).body == b"99162322"
    finally:
        client.close()


def test_calls_beyond_the_capacity_get_503_at_once():
    process, port = start_backend("--latency-ms", "3000", "--capacity", "1")
    try:
        statuses = []

        def call(text: str) -> None:
            client = ProcessClient(port)
            try:
                statuses.append(client.call(form_request(text)).status)
            finally:
                client.close()

        threads = [threading.Thread(target=call, args=(text,)) for text in ("one", "two")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert sorted(statuses) == [200, 503]
    finally:
        assert process.stop() == 0


def test_sigterm_lets_the_call_in_progress_finish_and_exits_0():
    process, port = start_backend("--latency-ms", "2000")
    client = ProcessClient(port)
    try:
        client.sock.sendall(http1.ClientConnection().send(form_request("hello")))
        client.conn.send(form_request("hello"))
        peer = client.sock.getsockname()[1]
        wait_until(lambda: unread_bytes(port, peer) == 0, "the backend to read the call")
        process.popen.send_signal(signal.SIGTERM)  # while the call waits out its latency: it is still answered
        assert client.receive().body == b"99162322"
        assert process.popen.wait(WAIT) == 0
    finally:
        client.close()
        process.stop()
