"""Micro-benchmark of the codecs on the benchmark's call, ``IHelloService.hash(String)``, in both builds.

``run()`` times, in CPU microseconds per call, the codec work of one call along the data path, once
with the compiled twins and once with the Python source, loaded side by side in this process
(:func:`sidecar.tools.builds.load_build`), and gives the ratio of the two:

* ``request``, the consumer: the bytes of an HTTP request (a form call with a parameter of 0 to 1023
  characters, every 16th of them percent-escaped and outside the BMP) parsed by a
  :class:`~sidecar.codecs.http1.ServerConnection`, its route checked, the call parsed, its Dubbo frame
  encoded and wrapped in a tunnel REQUEST datagram;
* ``provider``, the provider sidecar: that datagram decoded, the frame's id rewritten for the service,
  the service's reply frame given back its tunnel id and packed in a REPLY_BATCH datagram;
* ``reply``, the consumer: that datagram decoded, the HTTP reply made from the Dubbo response, and the
  bytes of the response written by the connection;
* ``service``, the demo Dubbo service: the request frame split from its stream by
  :class:`~sidecar.codecs.dubbo.DubboDecoder` and parsed, the response frame encoded.

``parsing()`` times the HTTP request parser alone on the same requests: ours in both builds, and llhttp
(Node's parser, through httptools) under our limits and rules (:mod:`sidecar.tools.llhttp_peer`), the
peer our parser is held to, when httptools is installed.

The micro figures of the Dubbo codec alone (``encode_request_us`` ...) are those of the build that runs.
Figures depend on the machine; they are for comparing builds and changes to the codecs.
"""

from __future__ import annotations

import importlib
import random
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from urllib.parse import quote

from sidecar import _accel
from sidecar.codecs.dubbo import NEED_DATA, DubboDecoder, Request, Response, Serialization, encode
from sidecar.tools.builds import load_build

__all__ = ["run", "paths", "parsing", "build", "SERVICE", "PATHS", "PARSERS"]

SERVICE = "com.alibaba.dubbo.performance.demo.provider.IHelloService"
PATHS = ("request", "provider", "reply", "service")
BATCH = 128  # calls per timed batch of each path
_PREFIX = (f"interface={SERVICE}&method=hash&parameterTypesString=Ljava%2Flang%2FString%3B&parameter=").encode()
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _request(serialization: int, request_id: int = 1) -> Request:
    return Request(
        request_id,
        SERVICE,
        "hash",
        "Ljava/lang/String;",
        ["hello"],
        {"path": SERVICE, "version": "0.0.0"},
        serialization=serialization,
    )


def _microseconds(operation: Callable[[], object], iterations: int) -> float:
    operation()  # warm caches (descriptor parsing, first allocations)
    start = time.perf_counter()
    for _ in range(iterations):
        operation()
    return (time.perf_counter() - start) * 1e6 / iterations


def _measure(serialization: int, iterations: int) -> tuple[float, float]:
    request = _request(serialization)
    attachments = {"dubbo": "2.0.2"}
    response = encode(Response(1, value=99162322, attachments=attachments, serialization=serialization))

    def decode_response() -> object:
        decoder = DubboDecoder()
        decoder.receive_data(response)
        event = decoder.next_event()
        if event is NEED_DATA:
            raise RuntimeError("the response frame did not decode")
        return event

    return _microseconds(lambda: encode(request), iterations), _microseconds(decode_response, iterations)


# -- the data path ---------------------------------------------------------------------------------


def java_hash(text: str) -> int:
    """Java's ``String.hashCode`` of ``text`` (UTF-16 units), what the demo service answers."""
    h = 0
    units = text.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(units), 2):
        h = (31 * h + (units[i] << 8 | units[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def http_requests(count: int, seed: int = 1) -> list[tuple[bytes, str, int]]:
    """``count`` form calls as a client sends them, each with its parameter and the hash its answer
    must carry."""
    rng = random.Random(seed)
    requests = []
    for index in range(count):
        length = rng.randrange(1024)
        if index % 16 == 15:
            parameter = "".join(rng.choice("aé€\U0001f600") for _ in range(length // 4))
        else:
            parameter = "".join(rng.choice(_ALPHABET) for _ in range(length))
        body = _PREFIX + quote(parameter, safe="").encode()
        expected = java_hash(parameter)
        head = (
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:20000\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"X-Request-Id: {expected}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append((head.encode() + body, parameter, expected))
    return requests


class _Path:
    """One build's codec work on each hop of a call, in batches; see the module docstring."""

    def __init__(self, build: SimpleNamespace, hashes: dict[str, int]):
        self.b = build
        self.hashes = hashes
        self.ids = build.tunnel.RequestIds(7)
        self.upstream_id = 1
        self.servers = [build.http1.ServerConnection() for _ in range(BATCH)]  # kept alive, as a client's

    def request(self, raws: list[bytes]) -> list:
        """The consumer: HTTP bytes to tunnel datagrams; returns what the later hops need per call."""
        http1, calls, tunnel = self.b.http1, self.b.calls, self.b.tunnel
        out = []
        for server, raw in zip(self.servers, raws, strict=False):
            server.receive_data(raw)
            request = server.next_event()
            path = calls.check_route(request.method, request.target, request.headers)
            body = []
            while True:
                event = server.next_event()
                if type(event) is http1.Data:
                    body.append(event.data)
                else:
                    break
            call = calls.prepare_call(path, b"".join(body))
            request_id = self.ids.next(123456)
            datagram = tunnel.encode_request(request_id, calls.encode_call(call, request_id))
            out.append((server, request, call, datagram))
        return out

    def provider(self, datagrams: list[bytes], answer: Callable[[bytes], bytes]) -> list[bytes]:
        """The provider sidecar: REQUEST datagrams to the service's frames, its replies to REPLY_BATCH
        datagrams (``answer`` stands for the service, and is timed apart)."""
        tunnel = self.b.tunnel
        upstream = []
        for datagram in datagrams:
            message = tunnel.decode(datagram)
            upstream_id, self.upstream_id = self.upstream_id, self.upstream_id + 1
            upstream.append((message.request_id, tunnel.rewrite_id(message.frame, upstream_id)))
        replies = [(tunnel_id, answer(frame)) for tunnel_id, frame in upstream]
        out = []
        for tunnel_id, frame in replies:
            batcher = tunnel.ReplyBatcher(tunnel_id >> tunnel.CONSUMER_SHIFT)
            batcher.add(tunnel_id, tunnel.rewrite_id(frame, tunnel_id))
            out += batcher.flush()
        return out

    def reply(self, calls_in_flight: list, datagrams: list[bytes]) -> list[bytes]:
        """The consumer: REPLY_BATCH datagrams to the bytes of the HTTP responses."""
        http1, calls, tunnel = self.b.http1, self.b.calls, self.b.tunnel
        out = []
        for (server, request, call, _), datagram in zip(calls_in_flight, datagrams, strict=True):
            frame = tunnel.decode_replies(datagram)[0][1]
            reply = calls.reply_for(call, frame)
            headers = [*reply.headers, ("X-Request-Id", http1.get_header(request.headers, "x-request-id"))]
            out.append(server.send(http1.Response(reply.status, headers, reply.body)))
            server.start_next_cycle()
        return out

    def service(self, frame: bytes) -> bytes:
        """The demo service's codec work on one call: split, parse, answer."""
        dubbo = self.b.dubbo
        decoder = dubbo.DubboDecoder(parse_bodies=False)
        decoder.receive_data(frame)
        request = dubbo.parse(decoder.next_event())
        value = self.hashes[request.arguments[0]]
        response = dubbo.Response(request.request_id, value=value, attachments={"dubbo": dubbo.DUBBO_VERSION})
        return dubbo.encode(response)


def _cpu(operation: Callable[[], object]) -> tuple[float, object]:
    start = time.process_time()
    result = operation()
    return time.process_time() - start, result


def _round(path: _Path, raws: list[bytes], expected: list[int], cpu: dict[str, float]) -> None:
    if len(raws) > BATCH:
        raise ValueError(f"at most {BATCH} calls in one round")
    """One batch through every hop of ``path``, the CPU time of each hop added to ``cpu``; the answers
    are checked against ``expected``."""
    spent, in_flight = _cpu(lambda: path.request(raws))
    cpu["request"] += spent
    service_cpu = 0.0

    def answer(frame: bytes) -> bytes:
        nonlocal service_cpu
        spent, reply = _cpu(lambda: path.service(frame))
        service_cpu += spent
        return reply

    spent, datagrams = _cpu(lambda: path.provider([call[3] for call in in_flight], answer))
    cpu["provider"] += spent - service_cpu
    cpu["service"] += service_cpu
    spent, responses = _cpu(lambda: path.reply(in_flight, datagrams))
    cpu["reply"] += spent
    for response, value in zip(responses, expected, strict=True):
        if not response.endswith(b"\r\n\r\n%d" % value):
            raise RuntimeError(f"wrong answer {response[-40:]!r}, expected {value}")


def paths(calls: int = 4096, rounds: int = 3) -> dict[str, dict[str, float]]:
    """CPU microseconds per call of each hop of :data:`PATHS` in the compiled and the pure build, and
    their ratio (compiled over pure; below 1 means the compiled build is faster). The builds take
    turns, batch by batch, ``rounds`` times over ``calls`` calls; each keeps its best round. Returns
    ``{"compiled": {...}, "pure": {...}, "ratio": {...}}``; without compiled twins, only ``pure``."""
    if calls < 1 or rounds < 1:
        raise ValueError("calls and rounds must be at least 1")
    requests = http_requests(min(calls, 1024))
    hashes = {parameter: value for _, parameter, value in requests}
    builds = {}
    for name, pure in (("compiled", False), ("pure", True)):
        modules, states = load_build(pure)
        if pure or states == {_accel.COMPILED}:
            builds[name] = _Path(SimpleNamespace(**modules), hashes)
    best: dict[str, dict[str, float]] = {name: dict.fromkeys(PATHS, float("inf")) for name in builds}
    batches = [(index, min(BATCH, calls - index)) for index in range(0, calls, BATCH)]
    warm = requests[:BATCH]
    for path in builds.values():  # caches filled, first allocations made
        _round(path, [raw for raw, _, _ in warm], [value for _, _, value in warm], dict.fromkeys(PATHS, 0.0))
    for _ in range(rounds):
        spent = {name: dict.fromkeys(PATHS, 0.0) for name in builds}
        for start, size in batches:
            chosen = [requests[(start + i) % len(requests)] for i in range(size)]
            raws, expected = [raw for raw, _, _ in chosen], [value for _, _, value in chosen]
            for name, path in builds.items():
                _round(path, raws, expected, spent[name])
        for name in builds:
            for hop in PATHS:
                best[name][hop] = min(best[name][hop], spent[name][hop] * 1e6 / calls)
    result = {name: {hop: round(figure, 3) for hop, figure in figures.items()} for name, figures in best.items()}
    if "compiled" in result:
        result["ratio"] = {hop: round(best["compiled"][hop] / best["pure"][hop], 3) for hop in PATHS}
    return result


# -- parsing alone ---------------------------------------------------------------------------------

PARSERS = ("compiled", "pure", "llhttp", "httptools_bare")


class _BareProtocol:
    """The least a caller of httptools does: the target, the fields and the body kept, nothing checked."""

    __slots__ = ("parser", "url", "headers", "body", "done")

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpRequestParser(self)
        self.url, self.headers, self.body, self.done = b"", [], [], False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


def _parse_bare(protocol: _BareProtocol, raw: bytes) -> tuple[bytes, bytes]:
    protocol.parser.feed_data(raw)
    if not protocol.done:
        raise RuntimeError("httptools did not complete the request")
    return protocol.url, b"".join(protocol.body)


def _parser(end: type) -> Callable[[object, bytes], tuple[str, bytes]]:
    """Parse one whole request on a new connection: its target and its body."""

    def parse(conn, raw: bytes) -> tuple[str, bytes]:
        conn.receive_data(raw)
        request = conn.next_event()
        body = []
        for _ in range(4):
            event = conn.next_event()
            if type(event) is end:
                return request.target, b"".join(body)
            body.append(event.data)
        raise RuntimeError(f"the request did not end: {event!r}")

    return parse


def parsing(calls: int = 1024, rounds: int = 5) -> dict[str, float]:
    """Microseconds to parse one request of the bench's mix (:func:`http_requests`: form POSTs with a
    parameter of 0 to 1023 characters), from its bytes to its :class:`~sidecar.codecs.http1.EndOfMessage`,
    on a connection made beforehand (untimed, as a kept-alive connection costs nothing per request):
    ``compiled`` and ``pure``, our :class:`~sidecar.codecs.http1.ServerConnection` in each build;
    ``llhttp``, Node's parser under our limits and rules
    (:class:`sidecar.tools.llhttp_peer.LlhttpServerConnection`, on the build this process runs);
    ``httptools_bare``, httptools with callbacks that only keep what they are given (no limit, no rule,
    no state machine: the floor of any parser built on it). The parsers take turns ``rounds`` times over
    the same ``calls`` requests; each keeps its best round. A parser that is not there (no compiled
    twins, httptools not installed) is left out."""
    if calls < 1 or rounds < 1:
        raise ValueError("calls and rounds must be at least 1")
    raws = [raw for raw, _, _ in http_requests(calls)]
    parsers: dict[str, tuple[Callable[[], object], Callable[[object, bytes], object]]] = {}
    for name, pure in (("compiled", False), ("pure", True)):
        modules, states = load_build(pure)
        if pure or states == {_accel.COMPILED}:
            http1 = modules["http1"]
            parsers[name] = (http1.ServerConnection, _parser(http1.EndOfMessage))
    try:
        from sidecar.codecs.http1 import EndOfMessage
        from sidecar.tools.llhttp_peer import LlhttpServerConnection
    except ImportError:  # httptools is a bench extra
        pass
    else:
        parsers["llhttp"] = (LlhttpServerConnection, _parser(EndOfMessage))
        parsers["httptools_bare"] = (_BareProtocol, _parse_bare)
    make, parse = parsers["pure"]
    expected = [parse(make(), raw)[1] for raw in raws]
    for name, (make, parse) in parsers.items():  # the same bodies from each, and caches warmed
        if [parse(make(), raw)[1] for raw in raws] != expected:
            raise RuntimeError(f"{name} parsed other bodies than ours")
    best = dict.fromkeys(parsers, float("inf"))
    for _ in range(rounds):
        for name, (make, parse) in parsers.items():
            pairs = [(make(), raw) for raw in raws]
            start = time.perf_counter()
            for conn, raw in pairs:
                parse(conn, raw)
            best[name] = min(best[name], (time.perf_counter() - start) * 1e6 / len(raws))
    return {name: round(best[name], 3) for name in PARSERS if name in best}


def build() -> str:
    """Which build of the codecs this process runs (:func:`sidecar._accel.describe`)."""
    for name in _accel.TWINS:
        importlib.import_module(name)
    return _accel.describe()


def run(iterations: int = 20000, *, calls: int = 4096) -> dict:
    """Time ``iterations`` rounds of each Dubbo codec operation (microseconds per operation, the build
    that runs), ``calls`` calls along the data path in both builds (:func:`paths`) and the parsing of
    up to 1024 of them by each HTTP parser (:func:`parsing`)."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    encode_h2, decode_h2 = _measure(Serialization.HESSIAN2, iterations)
    encode_json, decode_json = _measure(Serialization.FASTJSON, iterations)
    return {
        "iterations": iterations,
        "build": build(),
        "encode_request_us": encode_h2,
        "decode_response_us": decode_h2,
        "fastjson_encode_request_us": encode_json,
        "fastjson_decode_response_us": decode_json,
        "paths_cpu_us": paths(calls),
        "parse_us": parsing(min(calls, 1024)),
    }


def main(argv: list[str] | None = None) -> None:
    """`python -m sidecar.tools.bench_codec [ITERATIONS [CALLS]]`: print the figures, one per line."""
    args = sys.argv[1:] if argv is None else argv
    figures = run(int(args[0]) if args else 20000, calls=int(args[1]) if len(args) > 1 else 4096)
    paths_figures = figures.pop("paths_cpu_us")
    for key, value in figures.items():
        print(f"{key:<30} {value:.2f}" if isinstance(value, float) else f"{key:<30} {value}")
    parse = figures.pop("parse_us")
    print(f"{'HTTP request parse µs':<30} " + " ".join(f"{name} {value:.2f}" for name, value in parse.items()))
    builds = [name for name in ("compiled", "pure", "ratio") if name in paths_figures]
    print(f"{'CPU µs per call':<30} " + " ".join(f"{name:>9}" for name in builds))
    for hop in PATHS:
        print(f"{hop:<30} " + " ".join(f"{paths_figures[name][hop]:>9.3f}" for name in builds))


if __name__ == "__main__":
    main()
