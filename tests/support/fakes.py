"""Fake tunnel peers on real loopback UDP sockets, on gevent.

:class:`FakeProvider` stands where a provider sidecar would: it answers tunnel REQUEST datagrams as
told (at once, late, never, with an error). :class:`FakeConsumer` stands where a consumer sidecar's
tunnel socket would: it sends numbered calls or any bytes, and reads the replies, parsed or raw."""

from __future__ import annotations

import time

import gevent
from gevent import socket

from sidecar.codecs import dubbo, tunnel
from sidecar.codecs.dubbo_messages import Response
from sidecar.codecs.tunnel_auth import TunnelAuth
from sidecar.runtime.registry import ProviderEntry
from tests.support.dubbo_peer import WAIT, hash_call, java_hash

__all__ = ["FakeConsumer", "FakeProvider", "now_ms", "parse"]


def now_ms() -> int:
    """Milliseconds since the Unix epoch: the tunnel tag's timestamp."""
    return int(time.time() * 1000)


def parse(frame: bytes):
    """The one Dubbo message in ``frame``."""
    decoder = dubbo.DubboDecoder()
    decoder.receive_data(frame)
    return decoder.next_event()


class FakeProvider:
    """Answers each REQUEST datagram with ``hash`` of its argument after ``delay`` seconds, or as
    ``behave(request)`` says: a Response, or None for no answer. With ``auth`` it opens each request
    and seals each reply. ``received`` lists the requests in the order they came."""

    def __init__(self, delay: float = 0.0, behave=None, auth: TunnelAuth | None = None):
        self.delay, self.behave, self.auth = delay, behave, auth
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.received = []
        self.in_flight = self.most_in_flight = 0
        self.greenlet = gevent.spawn(self._serve)

    def entry(self, weight=1.0, threshold=None) -> ProviderEntry:
        return ProviderEntry(*self.address, weight, threshold)

    def _serve(self):
        while True:
            data, source = self.sock.recvfrom(65535)
            if self.auth is not None:
                data = self.auth.open(data, now_ms())[0]
            datagram = tunnel.decode(data)
            request = parse(datagram.frame)
            self.received.append(request)
            gevent.spawn(self._answer, datagram.request_id, request, source)

    def _answer(self, request_id, request, source):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            gevent.sleep(self.delay)
            if self.behave is not None:
                response = self.behave(request)
            else:
                response = Response(request_id, value=java_hash(request.arguments[0]))
            if response is not None:
                reply = tunnel.encode_replies([(request_id, dubbo.encode(response))])
                if self.auth is not None:
                    reply = self.auth.seal(reply, now_ms())
                self.sock.sendto(reply, source)
        finally:
            self.in_flight -= 1

    def close(self):
        self.greenlet.kill()
        self.sock.close()


class FakeConsumer:
    """A consumer sidecar's tunnel socket, sending to ``target``: numbered calls or any bytes out,
    replies in (parsed and checked, or raw), the size of each reply batch recorded."""

    def __init__(self, target, consumer_id: int = 7):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.target = target
        self.ids = tunnel.RequestIds(consumer_id)
        self.batch_sizes: list[int] = []

    def new_id(self) -> int:
        return self.ids.next(int(time.monotonic() * 1000) & tunnel.STAMP_MASK)

    def request(self, request_id: int, text: str = "hello", **fields) -> bytes:
        """The REQUEST datagram of ``hash(text)`` under ``request_id``."""
        return tunnel.encode_request(request_id, dubbo.encode(hash_call(request_id, text, **fields)))

    def new_request(self, text: str = "hello") -> tuple[int, bytes]:
        """A fresh request id and its REQUEST datagram, not sent."""
        request_id = self.new_id()
        return request_id, self.request(request_id, text)

    def send_call(self, request_id: int, text: str, **fields) -> None:
        self.send_raw(self.request(request_id, text, **fields))

    def send_raw(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.target)

    def receive(self, count: int) -> dict[int, Response]:
        """The next ``count`` replies by tunnel request id (each checked to carry that id)."""
        replies: dict[int, Response] = {}
        with gevent.Timeout(WAIT, AssertionError(f"only {len(replies)} of {count} replies")):
            while len(replies) < count:
                data, source = self.sock.recvfrom(65535)
                assert source[:2] == tuple(self.target)
                batch = tunnel.decode(data)
                assert isinstance(batch, tunnel.ReplyBatch)
                self.batch_sizes.append(len(batch.replies))
                for reply in batch.replies:
                    response = parse(reply.frame)
                    assert response.request_id == reply.request_id
                    assert reply.request_id not in replies, "two replies for one call"
                    replies[reply.request_id] = response
        return replies

    def receive_datagram(self, timeout: float = WAIT) -> bytes | None:
        """The next datagram as it came, or None if none comes within ``timeout`` seconds."""
        try:
            with gevent.Timeout(timeout):
                return self.sock.recvfrom(65535)[0]
        except gevent.Timeout:
            return None

    def close(self) -> None:
        self.sock.close()
