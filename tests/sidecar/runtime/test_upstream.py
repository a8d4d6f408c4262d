"""The Dubbo connection pool on real loopback sockets, in this process on gevent (no monkey patching):
against the demo service as a real process (killed and restarted by PID), and against tiny in-test
Dubbo servers for heartbeats."""

from __future__ import annotations

import signal
import socket

import gevent
import gevent.event
import gevent.queue
import pytest
from gevent.server import StreamServer

from sidecar.codecs.dubbo import NEED_DATA, DubboDecoder, Event, Response, Status, encode, heartbeat
from sidecar.errors import ProtocolError, UpstreamUnavailable
from sidecar.runtime.upstream import DubboPool
from tests.support.dubbo_peer import WAIT, hash_call, java_hash, start_provider
from tests.support.ports import free_port
from tests.support.waiting import wait_until


class Collector:
    """The pool's callbacks: replies by id, lost ids, and an event set once ``expect`` replies or
    losses arrived."""

    def __init__(self):
        self.replies: dict[int, bytes] = {}
        self.lost: dict[int, str] = {}
        self.expect = 0
        self.done = gevent.event.Event()

    def on_reply(self, request_id: int, frame: bytes) -> None:
        assert request_id not in self.replies, "two replies for one call"
        self.replies[request_id] = frame
        self._check()

    def on_lost(self, request_ids: list[int], reason: str) -> None:
        for request_id in request_ids:
            self.lost[request_id] = reason
        self._check()

    def _check(self) -> None:
        if len(self.replies) + len(self.lost) >= self.expect:
            self.done.set()

    def wait(self, count: int) -> None:
        self.expect = count
        self._check()
        assert self.done.wait(WAIT), f"{len(self.replies)} replies and {len(self.lost)} lost of {count}"
        self.done.clear()


def parse_frame(frame: bytes):
    decoder = DubboDecoder()
    decoder.receive_data(frame)
    message = decoder.next_event()
    assert decoder.next_event() is NEED_DATA  # exactly one frame
    return message


@pytest.fixture
def pool_for():
    pools = []

    def make(port: int, **options) -> tuple[DubboPool, Collector]:
        collector = Collector()
        options.setdefault("backoff", 0.05)
        options.setdefault("max_backoff", 0.2)
        pool = DubboPool(("127.0.0.1", port), on_reply=collector.on_reply, on_lost=collector.on_lost, **options)
        pools.append(pool)
        pool.start()
        return pool, collector

    yield make
    for pool in pools:
        pool.close()


def test_many_calls_multiplexed_over_two_connections(service, pool_for):
    pool, collector = pool_for(service, size=2)
    assert pool.wait_connected(WAIT)
    wait_until(lambda: pool.connections == 2, "both connections")
    texts = {i: f"call {i} ü😀" for i in range(1, 601)}
    for request_id, text in texts.items():
        pool.send(encode(hash_call(request_id, text)))
    assert pool.stats()["in_flight"] == len(texts)
    collector.wait(len(texts))
    assert collector.lost == {}
    for request_id, text in texts.items():
        reply = parse_frame(collector.replies[request_id])
        assert isinstance(reply, Response) and reply.request_id == request_id
        assert reply.status == Status.OK and reply.value == java_hash(text)
    stats = pool.stats()
    assert stats["connections"] == 2 and stats["in_flight"] == 0
    assert stats["sent"] == stats["received"] == len(texts)
    assert stats["writes"] < len(texts)  # frames queued together went out in one write


def test_the_calls_of_one_turn_share_a_connection_and_the_next_turn_takes_the_least_loaded(service, pool_for):
    pool, collector = pool_for(service, size=2)
    wait_until(lambda: pool.connections == 2, "both connections")
    first, second = range(1, 6), range(6, 9)
    for request_id in first:  # one turn of the loop: no switch between the sends
        pool.send(encode(hash_call(request_id, "one turn")))
    gevent.sleep(0)  # the turn ends: its calls are written, their replies not read yet
    assert pool.stats()["writes"] == 1
    for request_id in second:
        pool.send(encode(hash_call(request_id, "the next turn")))
    carriers = {request_id: pool._where[request_id] for request_id in [*first, *second]}
    assert len({id(carriers[r]) for r in first}) == len({id(carriers[r]) for r in second}) == 1
    assert carriers[6] is not carriers[1]  # the first connection carries 5 calls, the other none
    collector.wait(8)
    assert collector.lost == {} and pool.stats()["writes"] == 2


def test_a_turn_whose_connection_has_a_full_outbox_moves_to_another(service, pool_for):
    pool, collector = pool_for(service, size=2)
    wait_until(lambda: pool.connections == 2, "both connections")
    pool.MAX_OUTBOX = 0  # any queued frame fills an outbox
    pool.send(encode(hash_call(1, "first")))
    pool.send(encode(hash_call(2, "second")))  # the turn's connection is full: the other takes it
    assert pool._where[1] is not pool._where[2]
    with pytest.raises(UpstreamUnavailable, match="every connection has a full write backlog"):
        pool.send(encode(hash_call(3, "third")))
    collector.wait(2)
    assert collector.lost == {}


def test_send_takes_the_request_id_from_the_frame_or_the_argument(service, pool_for):
    pool, collector = pool_for(service, size=1)
    assert pool.wait_connected(WAIT)
    pool.send(encode(hash_call(7, "seven")))
    pool.send(encode(hash_call(8, "eight")), 8)
    collector.wait(2)
    assert parse_frame(collector.replies[7]).value == java_hash("seven")
    assert parse_frame(collector.replies[8]).value == java_hash("eight")


def test_one_way_calls_are_not_tracked(service, pool_for):
    pool, collector = pool_for(service, size=1)
    assert pool.wait_connected(WAIT)
    pool.send(encode(hash_call(9, "x", two_way=False)))
    assert pool.in_flight == 0


def test_forget_stops_tracking_a_call(service, pool_for):
    pool, collector = pool_for(service, size=1)
    assert pool.wait_connected(WAIT)
    pool.send(encode(hash_call(11, "x")))
    pool.forget([11, 12345])
    assert pool.in_flight == 0
    collector.wait(1)  # a reply that still comes is handed on all the same
    assert 11 in collector.replies


def test_service_killed_then_restarted_on_the_same_port(pool_for):
    process, port = start_provider("--latency-ms", "60000")  # no call is answered before the kill
    try:
        pool, collector = pool_for(port, size=2)
        assert pool.wait_connected(WAIT)
        wait_until(lambda: pool.connections == 2, "both connections")
        for request_id in range(1, 51):
            pool.send(encode(hash_call(request_id, str(request_id))))
            if request_id == 25:
                gevent.sleep(0)  # a second turn of the loop: its calls go to the other connection
        wait_until(lambda: pool.stats()["writes"] == 2, "each connection to write its calls")
    finally:
        process.stop(signal.SIGKILL)
    collector.wait(50)
    assert sorted(collector.lost) == list(range(1, 51)) and collector.replies == {}
    wait_until(lambda: pool.connections == 0, "the connections to close")
    with pytest.raises(UpstreamUnavailable) as caught:
        pool.send(encode(hash_call(99, "x")))
    error = caught.value
    assert isinstance(error, ProtocolError) and error.status_hint == 503
    assert f"127.0.0.1:{port} unavailable" in error.reason and "no connection is up" in error.reason
    stats = pool.stats()
    assert stats["lost"] == 50 and stats["in_flight"] == 0

    process, again = start_provider("--port", str(port), "--latency-ms", "0")
    try:
        assert again == port
        wait_until(lambda: pool.connections == 2, "the pool to reconnect")
        assert pool.stats()["reconnects"] == 2
        pool.send(encode(hash_call(100, "back")))
        collector.wait(51)
        assert parse_frame(collector.replies[100]).value == java_hash("back")
    finally:
        assert process.stop() == 0


def test_no_service_at_all(pool_for):
    pool, _ = pool_for(free_port(), size=1)  # nothing listens there
    wait_until(lambda: pool.stats()["connect_failures"] >= 2, "connection attempts")
    with pytest.raises(UpstreamUnavailable, match="refused"):
        pool.send(encode(hash_call(1, "x")))


class TinyServer:
    """A Dubbo server in this process: ``behave(sock, decoder)`` runs for each connection."""

    def __init__(self, behave):
        self.connections = 0
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.address[1]
        self.behave = behave

    def _handle(self, sock, address):
        self.connections += 1
        self.behave(sock, DubboDecoder())

    def close(self):
        self.server.stop(timeout=1)


def receive_one(sock, decoder):
    while True:
        event = decoder.next_event()
        if event is not NEED_DATA:
            return event
        data = sock.recv(65536)
        if not data:
            return None
        decoder.receive_data(data)


def test_heartbeat_from_the_service_is_answered(pool_for):
    answers = gevent.queue.Queue()

    def behave(sock, decoder):
        sock.sendall(encode(heartbeat(77)))
        answers.put(receive_one(sock, decoder))
        sock.recv(1)  # hold the connection until the pool closes it

    server = TinyServer(behave)
    try:
        pool, _ = pool_for(server.port, size=1, heartbeat=60.0)
        answer = answers.get(timeout=WAIT)
        assert isinstance(answer, Event) and answer.request_id == 77
        assert not answer.is_request and answer.is_heartbeat
        assert pool.stats()["heartbeats_answered"] == 1
    finally:
        server.close()


def test_idle_connection_sends_heartbeats_and_closes_after_three_times_silence(pool_for):
    beats = gevent.queue.Queue()

    def behave(sock, decoder):  # reads what comes, never answers anything
        while (event := receive_one(sock, decoder)) is not None:
            beats.put(event)

    server = TinyServer(behave)
    try:
        pool, _ = pool_for(server.port, size=1, heartbeat=0.1)
        beat = beats.get(timeout=WAIT)
        assert isinstance(beat, Event) and beat.is_request and beat.two_way and beat.is_heartbeat
        wait_until(lambda: server.connections >= 2, "the silent connection to be replaced")
        assert pool.stats()["disconnects"] >= 1 and "nothing read" in pool.stats()["last_error"]
    finally:
        server.close()


def test_heartbeat_replies_keep_a_connection_open(pool_for):
    def behave(sock, decoder):  # answers heartbeats only
        while (event := receive_one(sock, decoder)) is not None:
            if isinstance(event, Event) and event.is_request:
                sock.sendall(encode(heartbeat(event.request_id, reply=True)))

    server = TinyServer(behave)
    try:
        pool, _ = pool_for(server.port, size=1, heartbeat=0.1)
        wait_until(lambda: pool.stats()["heartbeat_replies"] >= 5, "five heartbeat replies")
        assert server.connections == 1 and pool.stats()["disconnects"] == 0
    finally:
        server.close()


def test_garbage_from_the_service_breaks_only_that_connection(pool_for):
    def behave(sock, decoder):
        receive_one(sock, decoder)
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        sock.recv(1)

    server = TinyServer(behave)
    try:
        pool, collector = pool_for(server.port, size=1)
        assert pool.wait_connected(WAIT)
        pool.send(encode(hash_call(5, "x")))
        collector.wait(1)
        assert "bad magic" in collector.lost[5]
    finally:
        server.close()


def test_the_service_closing_a_connection_is_seen_and_the_pool_reconnects(pool_for):
    def behave(sock, decoder):  # answers one call, then closes the connection
        event = receive_one(sock, decoder)
        if event is not None:
            sock.sendall(encode(Response(event.request_id, value=event.request_id)))
        sock.close()

    server = TinyServer(behave)
    try:
        pool, collector = pool_for(server.port, size=1)
        assert pool.wait_connected(WAIT)
        pool.send(encode(hash_call(1, "x")))
        collector.wait(1)
        wait_until(lambda: server.connections == 2 and pool.connections == 1, "the pool to reconnect")
        stats = pool.stats()
        assert stats["disconnects"] == 1 and stats["reconnects"] == 1
        assert stats["last_error"] == "the service closed the connection"
        pool.send(encode(hash_call(2, "y")))
        collector.wait(2)
        assert parse_frame(collector.replies[2]).value == 2 and collector.lost == {}
        pool.close()  # the handler waiting on the next connection returns at once
    finally:
        server.close()


def test_frames_split_over_reads_or_sharing_one_are_each_handed_on_whole(pool_for):
    """The reader keeps what it has of a frame from one read to the next: a reply that comes a few
    bytes at a time, and two replies in one write, each arrive whole; the end of the stream inside a
    frame breaks the connection, and the call whose reply was cut off is reported lost."""

    def behave(sock, decoder):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        calls = [receive_one(sock, decoder) for _ in range(4)]
        if None in calls:  # the pool closed this connection
            return
        calls = [call.request_id for call in calls]
        first = encode(Response(calls[0], value=1))
        for start in range(0, len(first), 5):  # a header in pieces, then the body in pieces
            sock.sendall(first[start : start + 5])
            gevent.sleep(0.005)
        sock.sendall(encode(Response(calls[1], value=2)) + encode(Response(calls[2], value=3)))
        sock.sendall(encode(Response(calls[3], value="cut off" * 20))[:20])
        gevent.sleep(0.05)
        sock.close()

    server = TinyServer(behave)
    try:
        pool, collector = pool_for(server.port, size=1)
        assert pool.wait_connected(WAIT)
        for request_id in range(1, 5):
            pool.send(encode(hash_call(request_id, str(request_id))))
        collector.wait(4)
        assert {request_id: parse_frame(frame).value for request_id, frame in collector.replies.items()} == {
            1: 1,
            2: 2,
            3: 3,
        }
        assert collector.lost == {4: "the service closed the connection inside a frame (20 bytes buffered)"}
        pool.close()  # the handler waiting on the next connection returns at once
    finally:
        server.close()


def test_close_reports_calls_in_flight_and_is_idempotent(pool_for):
    server = TinyServer(lambda sock, decoder: sock.recv(1 << 20) and sock.recv(1))
    try:
        pool, collector = pool_for(server.port, size=1)
        assert pool.wait_connected(WAIT)
        pool.send(encode(hash_call(3, "x")))
        pool.close()
        pool.close()
        collector.wait(1)
        assert collector.lost == {3: "the pool is closing"}
        with pytest.raises(UpstreamUnavailable):
            pool.send(encode(hash_call(4, "x")))
        assert "closed" in repr(pool)
    finally:
        server.close()


def test_bad_arguments():
    with pytest.raises(ValueError):
        DubboPool(("127.0.0.1", 1), size=0)
    with pytest.raises(ValueError):
        DubboPool(("127.0.0.1", 1), backoff=1.0, max_backoff=0.5)


def test_a_full_socket_buffer_hands_the_rest_to_the_writer_in_order(pool_for):
    """Frames queued in one turn go out in one non-blocking send; what the kernel does not take
    waits for the writer greenlet, and frames queued meanwhile go after it, in order."""
    release, seen = gevent.event.Event(), []

    def behave(sock, decoder):
        release.wait()
        while (event := receive_one(sock, decoder)) is not None:
            seen.append(event.request_id)
            sock.sendall(encode(Response(event.request_id, value=event.request_id)))

    server = TinyServer(behave)
    try:
        pool, collector = pool_for(server.port, size=1)
        assert pool.wait_connected(WAIT)
        big = "x" * 60_000
        for request_id in range(1, 101):  # 6 MB: more than the socket buffers on both sides
            pool.send(encode(hash_call(request_id, big)))
        wait_until(lambda: pool.stats()["writes"] == 1, "the first write")
        connection = pool._live[0]
        assert connection.writing and connection.writer is not None  # the writer owns what is left
        for request_id in range(101, 111):  # queued behind it, not written ahead of it
            pool.send(encode(hash_call(request_id, "small")))
        release.set()
        collector.wait(110)
        assert seen == list(range(1, 111)) and collector.lost == {}
        wait_until(lambda: not connection.writing, "the writer to give the outbox back")
        pool.send(encode(hash_call(111, "after")))
        collector.wait(111)
        assert seen[-1] == 111
    finally:
        server.close()
