"""Inputs for the codec tests, made with hypothesis: valid values and messages of every codec, the
encoders' bytes of them, and mutations of those bytes. Shared by the fuzz tests and by the test that
holds the compiled twins to the Python source."""

from __future__ import annotations

import json
import urllib.parse

from hypothesis import strategies as st

from sidecar.codecs import dubbo, tunnel
from sidecar.codecs.dubbo import (
    Event,
    Request,
    Response,
    Serialization,
    Status,
)
from sidecar.codecs.hessian2 import Hessian2Encoder
from sidecar.codecs.http1 import (
    ClientConnection,
    ClientRequest,
)
from sidecar.codecs.javatypes import Date, JavaObject, Long, TypedList, TypedMap
from tests.support.conformance import golden_vectors

EXTREMES = [
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x00\x00",
    b"\xff\xff",
    b"\x7f\xff",
    b"\x80\x00",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"\x49\x7f\xff\xff\xff",  # Hessian int 2**31 - 1, as a length
    b"\x00" * 8,
    b"\xff" * 8,
    b"\x7f" + b"\xff" * 7,
]

# Pieces whose long runs are what a backtracking regular expression or a per-item cost trips on.
RUN_PIECES = [b" ", b"\t", b"1", b"I", b"[", b",", b";a", b"\r\n", b"\x57", b"\xe4\xb8\xad", b"%41", b"&"]


@st.composite
def mutated(draw, corpus: st.SearchStrategy[bytes], max_mutations: int = 4) -> bytes:
    """A value of ``corpus`` with up to ``max_mutations`` random edits."""
    data = bytearray(draw(corpus))
    for _ in range(draw(st.integers(0, max_mutations))):
        size = len(data)
        at = draw(st.integers(0, size))
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "duplicate", "extreme", "repeat"]))
        if op == "flip" and at < size:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "set" and at < size:
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "duplicate":
            region = data[at : at + draw(st.integers(1, 64))]
            where = draw(st.integers(0, size))
            data[where:where] = region * draw(st.integers(1, 3))
        elif op == "extreme":
            field = draw(st.sampled_from(EXTREMES))
            data[at : at + len(field)] = field
        elif op == "repeat":  # a long run of one short piece: finds what is quadratic in a run's length
            piece = draw(st.sampled_from(RUN_PIECES) | st.just(bytes(data[at : at + draw(st.integers(1, 3))])))
            data[at:at] = piece * draw(st.integers(2, 20_000))
    return bytes(data)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the offsets ``cuts`` (any order, any value)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


CUTS = st.lists(st.integers(0, 1 << 16), max_size=8)

TEXT = st.text(max_size=20)

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz.", min_size=1, max_size=12)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Long),
    st.floats(allow_nan=False),
    TEXT,
    st.binary(max_size=20),
    st.integers(-(2**62), 2**62).map(Date),
)

HESSIAN_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(TEXT, inner, max_size=4),
        st.builds(TypedList, NAMES, st.lists(inner, max_size=3)),
        st.builds(TypedMap, NAMES, st.dictionaries(st.integers(-5, 5), inner, max_size=3)),
        st.builds(JavaObject, NAMES, st.dictionaries(NAMES, inner, max_size=3)),
    ),
    max_leaves=12,
)

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)

SERIALIZATIONS = st.sampled_from([Serialization.HESSIAN2, Serialization.FASTJSON])

REQUEST_IDS = st.integers(0, 2**64 - 1)

DESCRIPTORS = st.sampled_from(["I", "J", "D", "Z", "Ljava/lang/String;", "Ljava/lang/Object;", "[B", "Ljava/util/Map;"])

ATTACHMENTS = st.dictionaries(TEXT, TEXT, max_size=3)


@st.composite
def dubbo_messages(draw) -> Request | Response | Event:
    serialization = draw(SERIALIZATIONS)
    values = HESSIAN_VALUES if serialization == Serialization.HESSIAN2 else JSON_VALUES
    kind = draw(st.sampled_from(["request", "response", "error", "event"]))
    request_id = draw(REQUEST_IDS)
    if kind == "request":
        types = draw(st.lists(DESCRIPTORS, max_size=4))
        return Request(
            request_id,
            draw(st.none() | NAMES),
            draw(NAMES),
            "".join(types),
            [draw(values) for _ in types],
            draw(ATTACHMENTS),
            two_way=draw(st.booleans()),
            serialization=serialization,
        )
    if kind == "response":
        value = draw(values)
        exception = draw(st.none() | values)
        attachments = draw(st.none() | ATTACHMENTS)
        return Response(
            request_id, value=value, exception=exception, attachments=attachments, serialization=serialization
        )
    if kind == "error":
        status = draw(st.sampled_from([s for s in Status if s != Status.OK]))
        return Response(request_id, status, error_message=draw(st.none() | TEXT), serialization=serialization)
    return Event(request_id, draw(st.booleans()), draw(st.booleans()), draw(values), serialization=serialization)


def encoded(message) -> bytes:
    return dubbo.encode(message, max_payload=None)


DUBBO_FRAMES = dubbo_messages().map(encoded)

DUBBO_STREAMS = st.lists(DUBBO_FRAMES, min_size=1, max_size=3).map(b"".join)

GOLDEN = [bytes.fromhex(entry["hex"]) for entry in golden_vectors()]


def hessian_stream(values: list) -> bytes:
    encoder = Hessian2Encoder()
    for value in values:
        encoder.write(value)
    return encoder.getvalue()


HESSIAN_CORPUS = st.one_of(
    st.sampled_from(GOLDEN),
    st.lists(st.sampled_from(GOLDEN), min_size=2, max_size=4).map(b"".join),
    st.lists(HESSIAN_VALUES, min_size=1, max_size=3).map(hessian_stream),
)

MODES = st.lists(st.sampled_from(["read", "read", "string", "int"]), max_size=4)

PAYLOADS = st.sampled_from([None, 0, 16, 64, 1024, dubbo.DEFAULT_PAYLOAD])


@st.composite
def tunnel_datagrams(draw) -> bytes:
    consumer = draw(st.integers(0, 0xFFFF))
    shape = draw(st.sampled_from(["request", "request batch", "reply batch"]))
    if shape != "reply batch":
        requests = []
        for _ in range(1 if shape == "request" else draw(st.integers(1, 4))):
            request_id = tunnel.make_request_id(consumer, draw(st.integers(0, 2**32)), draw(st.integers(0, 0xFFFF)))
            message = draw(dubbo_messages().filter(lambda m: isinstance(m, Request)))
            message.request_id = request_id
            requests.append(tunnel.encode_request(request_id, encoded(message)))
        return requests[0] if shape == "request" else tunnel.join_requests(requests)
    replies = []
    for seq in range(draw(st.integers(1, 4))):
        request_id = tunnel.make_request_id(consumer, draw(st.integers(0, 2**32)), seq)
        status = draw(st.sampled_from([Status.OK, Status.SERVICE_ERROR]))
        reply = Response(request_id, status, value=draw(SCALARS), error_message="boom")
        replies.append((request_id, encoded(reply)))
    return tunnel.encode_replies(replies)


# What HTTP carries: the bodies of form and JSON calls (and bytes that are neither).
FORM_FIELDS = st.dictionaries(
    st.sampled_from(["interface", "method", "parameterTypesString", "parameter", "version", "group", "x"]),
    st.text(max_size=12) | st.sampled_from(["I", "J", "int,long", "java.lang.String", "C", "Z", "D", "[I", "12"]),
)

JSON_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "types": st.lists(st.sampled_from(["int", "long[]", "java.lang.String", "I", "", "[", 1]), max_size=3),
        "args": st.lists(JSON_VALUES, max_size=3),
        "attachments": st.dictionaries(TEXT, TEXT | st.integers(), max_size=2),
        "version": st.none() | TEXT,
        "group": st.none() | TEXT | st.integers(),
    },
)

CALL_BODIES = st.one_of(
    FORM_FIELDS.map(lambda fields: urllib.parse.urlencode(fields).encode()),
    JSON_DOCUMENTS.map(lambda document: json.dumps(document).encode()),
    st.binary(max_size=64),
)


@st.composite
def form_call_bodies(draw) -> bytes:
    """Form call bodies as a client writes them, mostly ending with their ``parameter`` field (the
    short way of :func:`sidecar.codecs.calls.prepare_call`), with the slips that must send a body the
    general way: fields out of order, repeated or unknown, empty pieces, parameters of other types, a
    parameter holding ``&``, ``=``, ``+``, escapes good and bad, or bytes that are not UTF-8."""
    fields = []
    for name in draw(st.permutations(["interface", "method", "parameterTypesString", "version", "group", "x"])):
        if name in ("version", "group", "x") and draw(st.integers(0, 3)):
            continue
        if name in ("interface", "method") and not draw(st.integers(0, 15)):
            continue
        value = {
            "interface": st.sampled_from(["com.example.Svc", "Svc", "", "a b"]),
            "method": st.sampled_from(["hash", "", "m"]),
            "parameterTypesString": st.sampled_from(
                [
                    "Ljava/lang/String;",
                    "java.lang.String",
                    "Ljava/lang/Object;",
                    "java.lang.CharSequence",
                    "I",
                    "Ljava/lang/String;I",
                    "",
                    "[",
                ]  # fmt: skip
            ),
        }.get(name, st.sampled_from(["1.0", "", "g"]))
        fields.append((name, draw(value)))
    if draw(st.integers(0, 7)) == 0:  # a field twice
        fields.append(draw(st.sampled_from(fields or [("method", "hash")])))
    parameter = draw(st.text(max_size=40) | st.sampled_from(["", "a&b", "a=b", "+", "%", "%zz", "100%"]))
    fields.append(("parameter", parameter))
    if draw(st.integers(0, 7)) == 0:  # the parameter not last
        fields.insert(draw(st.integers(0, len(fields) - 1)), fields.pop())
    body = urllib.parse.urlencode(fields).encode()
    if draw(st.integers(0, 7)) == 0:
        body = draw(st.sampled_from([b"&", b"&&"])).join(body.split(b"&"))
    if draw(st.integers(0, 7)) == 0:
        body += draw(st.sampled_from([b"%ff", b"%e2%82", b"%", b"&", b"%2", b"&parameter=x", b"+%41"]))
    return body


FORM_CALL_BODIES = form_call_bodies()


CALL_HEADERS = st.lists(
    st.tuples(
        st.sampled_from(["content-type", "host", "x"]),
        st.sampled_from(["application/json", "application/x-www-form-urlencoded; charset=utf-8", "text/plain", ""]),
    ),
    max_size=2,
)

CALL_TARGETS = st.sampled_from(["/", "/?q", "/dubbo/Svc/hash", "/dubbo/a%2Fb/%ff", "/dubbo//x", "http://h", "/x"])

# The arguments of calls.parse_call as the property tests draw them: @given(**CALL_REQUESTS)
CALL_REQUESTS = {
    "method": st.sampled_from(["POST", "GET"]),
    "target": CALL_TARGETS | st.text(max_size=20),
    "headers": CALL_HEADERS,
    "body": mutated(CALL_BODIES),
}

LIMITS = st.fixed_dictionaries(
    {},
    optional={
        "max_head": st.integers(0, 256),
        "max_body": st.integers(0, 64),
        "max_headers": st.integers(0, 8),
    },
)

TOKENS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-ABCXYZ0189", min_size=1, max_size=10)

HEADER_VALUES = st.text(alphabet=st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=12)


@st.composite
def http_requests(draw) -> bytes:
    """One to three valid requests (pipelined), as :class:`ClientConnection` writes them or by hand."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        method = draw(st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS"]))
        targets = ["/", "/dubbo/Svc/hash", "/a?b=c", "http://h/x"] + (["*"] if method == "OPTIONS" else [])
        target = draw(st.sampled_from(targets))  # "*" is for OPTIONS only (RFC 9112 §3.2.4)
        headers = draw(st.lists(st.tuples(TOKENS, HEADER_VALUES), max_size=3))
        headers = [(n, v.strip()) for n, v in headers if n.lower() not in ("content-length", "transfer-encoding")]
        if draw(st.booleans()):
            headers.append(("Transfer-Encoding", "chunked"))
        if draw(st.booleans()):
            headers.append(("Connection", draw(st.sampled_from(["close", "keep-alive", "upgrade"]))))
        body = draw(CALL_BODIES)
        if draw(st.booleans()):
            parts.append(ClientConnection().send(ClientRequest(method, target, headers, body)))
        else:
            version = draw(st.sampled_from(["1.0", "1.1"]))
            chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in (body[:5], body[5:]) if c)
            head = [f"{method} {target} HTTP/{version}", "Host: h", f"Content-Length: {len(body)}"]
            if draw(st.booleans()) and version == "1.1":
                head[-1] = "Transfer-Encoding: chunked"
                body = chunks + b"0\r\nTrailer: x\r\n\r\n"
            parts.append(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return b"".join(parts)
