"""The consumer sidecar on real loopback sockets, in this process on gevent, in front of fake provider
sidecars: UDP sockets that answer tunnel requests as told (at once, late, never, with an error)."""

from __future__ import annotations

import json

import gevent
import gevent.event
import pytest
from gevent import socket

from sidecar.codecs import dubbo, http1, tunnel
from sidecar.codecs.dubbo_messages import Response, Status
from sidecar.codecs.javatypes import java_exception
from sidecar.ops.config import ConsumerConfig
from sidecar.runtime.consumer import ConsumerSidecar
from tests.support.dubbo_peer import SERVICE, java_hash
from tests.support.fakes import FakeProvider
from tests.support.http_clients import FORM_HEADERS, Client, form
from tests.support.waiting import wait_until


def test_form_call_answers_the_hash(start, provider):
    sidecar = start([provider.entry()])
    client = Client(sidecar.address)
    for text in ["", "hello", "x" * 1023]:
        reply = client.request(form(text), headers=FORM_HEADERS)
        assert (reply.status, reply.body) == (200, str(java_hash(text)).encode())
    assert len(provider.received) == 3
    assert provider.received[0].service_path == SERVICE and provider.received[0].method == "hash"


def test_json_call(start, provider):
    sidecar = start([provider.entry()])
    body = json.dumps({"types": ["java.lang.String"], "args": ["hello"]}).encode()
    reply = Client(sidecar.address).request(body, target=f"/dubbo/{SERVICE}/hash")
    assert reply.status == 200
    assert json.loads(reply.body) == {"result": java_hash("hello")}


def test_pipelined_requests_are_answered_in_order(start):
    fast, slow = FakeProvider(0.0), FakeProvider(0.05)
    try:
        sidecar = start([fast.entry(), slow.entry()])
        client = Client(sidecar.address)
        texts = [f"call {i}" for i in range(6)]
        data = b"".join(
            client.conn.send(http1.ClientRequest("POST", "/", FORM_HEADERS, form(t))) if i == 0 else _raw_request(t)
            for i, t in enumerate(texts)
        )
        client.sock.sendall(data)
        bodies = []
        reader = http1.ClientConnection()
        for text in texts:
            reader.send(http1.ClientRequest("POST", "/", FORM_HEADERS, form(text)))
            while not isinstance(event := reader.next_event(), http1.Response):
                reader.receive_data(client.sock.recv(65536))
            bodies.append(event.body)
        assert bodies == [str(java_hash(t)).encode() for t in texts]
    finally:
        fast.close()
        slow.close()


def _raw_request(text: str) -> bytes:
    body = form(text)
    return (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def test_chunked_body_and_request_id_echo(start, provider):
    sidecar = start([provider.entry()])
    headers = FORM_HEADERS + [("Transfer-Encoding", "chunked"), ("X-Request-Id", "abc-1")]
    reply = Client(sidecar.address).request(form("chunky"), headers=headers)
    assert reply.status == 200 and reply.body == str(java_hash("chunky")).encode()
    assert http1.get_header(reply.headers, "x-request-id") == "abc-1"


def test_expect_100_continue(start, provider):
    sidecar = start([provider.entry()])
    body = form("wait for it")
    client = Client(sidecar.address)
    client.sock.sendall(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    assert client.sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
    client.sock.sendall(body)
    data = client.sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(str(java_hash("wait for it")).encode())


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", 413),
        (b"POST / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ],
)
def test_malformed_requests_get_their_4xx_and_close(start, provider, data, status):
    sidecar = start([provider.entry()])
    reply = Client(sidecar.address).raw(data)
    assert reply.startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close" in reply
    again = Client(sidecar.address).request(form("still serving"), headers=FORM_HEADERS)
    assert again.status == 200


JSON_HEADERS = [("Content-Type", "application/json")]


@pytest.mark.parametrize(
    ("body", "target", "headers", "status"),
    [
        (form("x", interface=""), "/", FORM_HEADERS, 400),
        (b"method=hash&parameter=x", "/", FORM_HEADERS, 400),
        (b"{not json", f"/dubbo/{SERVICE}/hash", JSON_HEADERS, 400),
        (b"{}", f"/dubbo/{SERVICE}/hash", FORM_HEADERS, 415),
        (b"", "/nowhere", FORM_HEADERS, 404),
    ],
)
def test_bad_calls_get_their_4xx_and_keep_the_connection(start, provider, body, target, headers, status):
    sidecar = start([provider.entry()])
    client = Client(sidecar.address)
    reply = client.request(body, target=target, headers=headers)
    assert reply.status == status and reply.body.strip()
    assert client.request(form("next"), headers=FORM_HEADERS).status == 200


def test_no_answer_is_504_and_the_late_reply_is_dropped(start):
    late = FakeProvider(delay=0.4)
    try:
        sidecar = start([late.entry()], call_timeout=0.2)
        reply = Client(sidecar.address).request(form("slow"), headers=FORM_HEADERS)
        assert reply.status == 504 and b"no answer from provider" in reply.body
        wait_until(lambda: sidecar.caller.dropped["late or unknown"], "the late reply")
        assert sidecar.caller.dropped["late or unknown"] == 1
        assert sidecar.caller.pending == 0
    finally:
        late.close()


def test_dubbo_status_is_502_and_exception_is_500(start):
    busy = FakeProvider(behave=lambda r: Response(r.request_id, status=Status.SERVER_THREADPOOL_EXHAUSTED_ERROR,
                                                  error_message="pool full"))  # fmt: skip
    failing = FakeProvider(
        behave=lambda r: Response(r.request_id, exception=java_exception("java.lang.IllegalStateException", "boom"))
    )
    try:
        reply = Client(start([busy.entry()]).address).request(form("x"), headers=FORM_HEADERS)
        assert reply.status == 502 and b"SERVER_THREADPOOL_EXHAUSTED_ERROR" in reply.body
        reply = Client(start([failing.entry()]).address).request(form("x"), headers=FORM_HEADERS)
        assert reply.status == 500 and b"IllegalStateException" in reply.body and b"boom" in reply.body
    finally:
        busy.close()
        failing.close()


def test_saturated_providers_queue_then_503_with_retry_after(start):
    slow = FakeProvider(delay=0.2)
    try:
        sidecar = start([slow.entry(threshold=1)], queue_size=1)
        replies = {}

        def call(i):
            replies[i] = Client(sidecar.address).request(form(f"q{i}"), headers=FORM_HEADERS)

        first = gevent.spawn(call, 0)
        wait_until(lambda: slow.received, "the first call to hold the only slot")
        second = gevent.spawn(call, 1)
        wait_until(lambda: sidecar.stats()["queued"] == 1, "the second call to wait in the queue")
        call(2)  # the queue is full
        gevent.joinall([first, second])
        assert replies[0].status == 200 and replies[1].status == 200
        assert replies[2].status == 503 and http1.get_header(replies[2].headers, "retry-after") == "1"
        assert slow.most_in_flight == 1
    finally:
        slow.close()


def test_no_provider_is_503(start):
    reply = Client(start([]).address).request(form("x"), headers=FORM_HEADERS)
    assert reply.status == 503 and b"no provider" in reply.body


def test_call_too_large_for_a_datagram_is_413(start, provider):
    sidecar = start([provider.entry()], datagram_limit=600)
    reply = Client(sidecar.address).request(form("z" * 1000), headers=FORM_HEADERS)
    assert reply.status == 413 and b"datagram" in reply.body
    assert provider.received == []


def test_foreign_and_garbage_datagrams_are_dropped_and_counted(start):
    silent = FakeProvider(behave=lambda r: None)
    try:
        sidecar = start([silent.entry()], call_timeout=0.5)
        target = sidecar.caller.address
        result = gevent.spawn(lambda: Client(sidecar.address).request(form("x"), headers=FORM_HEADERS))
        request_id = wait_until(lambda: silent.received, "the call to reach the provider")[0].request_id
        forged = tunnel.encode_replies([(request_id, dubbo.encode(Response(request_id, value=1)))])
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.sendto(forged, target)
        other.sendto(b"garbage", target)
        other.close()
        assert result.get(timeout=5).status == 504
        assert sidecar.caller.dropped["wrong source"] == 1
        assert sidecar.caller.dropped["malformed"] == 1
    finally:
        silent.close()


def test_idle_connection_is_closed_and_slow_head_gets_408(start, provider):
    sidecar = start([provider.entry()], idle_timeout=0.2, header_timeout=0.2)
    idle = Client(sidecar.address)
    assert idle.raw(b"") == b""
    slow = Client(sidecar.address)
    assert slow.raw(b"POST / HTTP/1.1\r\nHost: a\r\n").startswith(b"HTTP/1.1 408 ")


def test_calls_share_by_weight_when_they_pile_up(start):
    # The providers hold every answer until all 40 calls are in flight, so the split depends on the
    # balancer alone, not on how fast this machine runs the clients.
    release = gevent.event.Event()

    def held(request):
        release.wait()
        return Response(request.request_id, value=java_hash(request.arguments[0]))

    small, large = FakeProvider(behave=held), FakeProvider(behave=held)
    try:
        sidecar = start([small.entry(weight=1), large.entry(weight=3)])
        clients = [gevent.spawn(Client(sidecar.address).request, form(str(i)), "/", FORM_HEADERS) for i in range(40)]
        wait_until(lambda: len(small.received) + len(large.received) >= 40, "every call to reach a provider")
        assert (len(small.received), len(large.received)) == (10, 30)
        release.set()
        assert all(g.get(timeout=5).status == 200 for g in clients)
    finally:
        small.close()
        large.close()


def test_stop_closes_idle_connections_at_once_and_lets_a_call_in_flight_finish(provider):
    slow = FakeProvider(delay=0.3)
    try:
        config = ConsumerConfig(listen=("127.0.0.1", 0), providers=(slow.entry(),))
        sidecar = ConsumerSidecar(config, consumer_id=9)
        sidecar.start()
        idle = Client(sidecar.address)
        assert idle.request(form("warm"), headers=FORM_HEADERS).status == 200
        busy = gevent.spawn(Client(sidecar.address).request, form("in flight"), "/", FORM_HEADERS)
        wait_until(lambda: len(slow.received) == 2, "the call to be in flight at the provider")
        stopper = gevent.spawn(sidecar.stop, 10)
        assert idle.sock.recv(100) == b""  # closed before the call in flight ends
        assert not busy.ready()
        reply = busy.get(timeout=10)
        assert reply.status == 200 and reply.body == str(java_hash("in flight")).encode()
        stopper.get(timeout=10)
    finally:
        slow.close()


def test_regression_stop_cut_off_a_request_already_sent_on_an_idle_connection(provider):
    # stop() shut down every connection waiting for a request, also one whose next request had
    # already arrived (unread in the socket's buffer): a call sent before the stop got no reply
    config = ConsumerConfig(listen=("127.0.0.1", 0), providers=(provider.entry(),))
    sidecar = ConsumerSidecar(config, consumer_id=9)
    sidecar.start()
    client = Client(sidecar.address)
    assert client.request(form("first"), headers=FORM_HEADERS).status == 200
    client.sock.sendall(client.conn.send(http1.ClientRequest("POST", "/", FORM_HEADERS, form("second"))))
    sidecar.stop(10)  # at once: the connection's greenlet has not read the request yet
    reply = client.response()
    assert reply.status == 200 and reply.body == str(java_hash("second")).encode()
    assert client.sock.recv(100) == b""  # closed after that reply
