"""integrations.demo.watchers: the demo services' connections on loop watchers, with real sockets in one
process (the clients are gevent sockets, so the hub runs the server's callbacks while they wait)."""

from __future__ import annotations

import time

import gevent
import pytest
from gevent import socket

from integrations.demo.watchers import Connection, DelayLine, Server


class Echo(Connection):
    """Writes back what it reads, in pieces as large as asked; ``b"close"`` closes after the writes."""

    repeat = 1

    def received(self, data: bytes) -> None:
        if not data or data.endswith(b"close"):
            self.write(data)
            self.close_after_writes()
            return
        for _ in range(self.repeat):
            self.write(data)


@pytest.fixture
def server():
    server = Server(("127.0.0.1", 0), Echo)
    server.start()
    yield server
    server.close()
    for connection in list(server.connections):
        connection.close()


def connect(server: Server) -> socket.socket:
    return socket.create_connection(server.address, timeout=10)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        data = sock.recv(min(65536, size - got))
        assert data, f"closed after {got} of {size} bytes"
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def test_what_is_written_in_one_turn_goes_out_together_and_in_order(server):
    with connect(server) as client:
        client.sendall(b"ping")
        assert read_exactly(client, 4) == b"ping"
        Echo.repeat = 3
        try:
            client.sendall(b"abc")
            assert read_exactly(client, 9) == b"abcabcabc"
        finally:
            Echo.repeat = 1
        assert len(server.connections) == 1


def test_a_reader_that_lags_gets_every_byte_through_the_write_watcher(server):
    Echo.repeat = 64
    try:
        with connect(server) as client:
            block = bytes(range(256)) * 256  # 64 KiB, echoed 64 times: far more than the socket buffers hold
            client.sendall(block)
            gevent.sleep(0.2)  # the server fills the socket and waits for room
            (connection,) = server.connections
            assert connection.backlog == 1 and connection.writer.active
            assert read_exactly(client, len(block) * 64) == block * 64
            gevent.sleep(0.05)
            assert connection.backlog == 0 and not connection.writer.active
    finally:
        Echo.repeat = 1


def test_close_after_writes_sends_what_is_queued_then_closes(server):
    with connect(server) as client:
        client.sendall(b"then close")
        assert read_exactly(client, 10) == b"then close"
        assert client.recv(10) == b""
    gevent.sleep(0.05)
    assert server.connections == set()


def test_the_peer_closing_closes_the_connection(server):
    client = connect(server)
    client.sendall(b"x")
    assert read_exactly(client, 1) == b"x"
    client.close()
    gevent.sleep(0.1)
    assert server.connections == set()


def test_a_bound_socket_is_served_and_close_is_harmless_twice():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    server = Server(listener, Echo)
    server.start()
    assert server.address == listener.getsockname()[:2]
    with connect(server) as client:
        client.sendall(b"hi")
        assert read_exactly(client, 2) == b"hi"
    server.close()
    server.close()
    with pytest.raises(OSError):
        connect(server)


def test_accepting_pauses_at_max_connections_until_one_closes():
    server = Server(("127.0.0.1", 0), Echo, max_connections=2)
    server.start()
    try:
        first, second, third = connect(server), connect(server), connect(server)
        for client in (first, second):
            client.sendall(b"x")
            assert read_exactly(client, 1) == b"x"
        third.sendall(b"y")
        with pytest.raises(TimeoutError):
            third.settimeout(0.3)
            third.recv(1)  # in the listen backlog: not accepted yet
        assert len(server.connections) == 2
        first.close()
        third.settimeout(10)
        assert read_exactly(third, 1) == b"y"
        assert len(server.connections) == 2
        for client in (second, third):
            client.close()
    finally:
        server.close()
        for connection in list(server.connections):
            connection.close()


def test_the_delay_line_calls_each_item_after_the_delay_in_order():
    called: list[tuple[str, float]] = []
    line = DelayLine(0.05, lambda item: called.append((item, time.monotonic())))
    start = time.monotonic()
    line.add("a")
    gevent.sleep(0.02)
    line.add("b")
    line.add("c")
    assert len(line) == 3
    gevent.sleep(0.15)
    assert [item for item, _ in called] == ["a", "b", "c"] and len(line) == 0
    assert called[0][1] - start >= 0.05 and called[1][1] - start >= 0.07
    line.add("d")  # the line starts again once empty
    gevent.sleep(0.1)
    assert called[-1][0] == "d"
    line.close()


def test_a_failing_item_does_not_stop_the_line():
    called = []

    def call(item):
        if item == "bad":
            raise RuntimeError("bad item")
        called.append(item)

    line = DelayLine(0.01, call)
    for item in ("bad", "good"):
        line.add(item)
    gevent.sleep(0.1)
    assert called == ["good"]
    line.close()
