"""The UDP tunnel codec: the documented examples, round trips, request ids, batching at the size
limit, and hostile datagrams (only our own errors come out)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.codecs import dubbo, tunnel
from sidecar.codecs.dubbo import Frame, Request, Response, Status
from sidecar.codecs.tunnel import (
    DEFAULT_LIMIT,
    MAX_UDP_PAYLOAD,
    MIN_LIMIT,
    Reply,
    ReplyBatch,
    ReplyBatcher,
    RequestBatch,
    RequestId,
    RequestIds,
    age_ms,
    batch_requests,
    decode,
    encode_replies,
    encode_request,
    join_requests,
    make_request_id,
    max_reply_frame,
    max_request_frame,
    ms_between,
    split_request_id,
)
from sidecar.errors import LocalProtocolError, RemoteProtocolError

SERVICE = "com.alibaba.dubbo.performance.demo.provider.IHelloService"
PROTOCOLS = Path(__file__).resolve().parents[3] / "sidecar" / "PROTOCOLS.md"
FIRST = make_request_id(7, 123456, 1)
SECOND = make_request_id(7, 123457, 2)


def hash_frame(request_id: int) -> bytes:
    attachments = {"path": SERVICE, "version": "0.0.0"}
    return dubbo.encode(Request(request_id, SERVICE, "hash", "Ljava/lang/String;", ["hello"], attachments))


def hash_reply(request_id: int) -> bytes:
    return dubbo.encode(Response(request_id, value=99162322, attachments={"dubbo": "2.0.2"}))


def refusal(request_id: int) -> bytes:
    status = Status.SERVER_THREADPOOL_EXHAUSTED_ERROR
    return dubbo.encode(Response(request_id, status=status, error_message="thread pool is exhausted"))


def small_call(request_id: int, argument: str) -> bytes:
    """The ``hash(argument)`` frame of the request batch example: service demo.Hello, no attachments."""
    return dubbo.encode(Request(request_id, "demo.Hello", "hash", "Ljava/lang/String;", [argument], {}))


def request_frame(request_id: int, body: bytes = b"") -> bytes:
    return Frame(0xC2, 0, request_id, body).to_bytes()


def response_frame(request_id: int, body: bytes = b"") -> bytes:
    return Frame(0x02, 20, request_id, body).to_bytes()


def documented_datagrams() -> list[bytes]:
    """The hex blocks of the Tunnel section of PROTOCOLS.md, in order."""
    text = PROTOCOLS.read_text(encoding="utf-8")
    section = text.split("\n## Tunnel\n", 1)[1].split("\n## ", 1)[0]
    return [bytes.fromhex(block) for block in re.findall(r"```hex\n(.*?)```", section, re.S)]


# -- the documented examples --------------------------------------------------------------------


def documented_requests() -> list[bytes]:
    """The two REQUEST datagrams the request batch example of PROTOCOLS.md joins."""
    return [encode_request(FIRST, small_call(FIRST, "hi")), encode_request(SECOND, small_call(SECOND, "yo"))]


def test_protocols_md_examples_are_what_the_encoder_writes():
    request, batch, requests = documented_datagrams()
    assert encode_request(FIRST, hash_frame(FIRST)) == request
    assert encode_replies([(FIRST, hash_reply(FIRST)), (SECOND, refusal(SECOND))]) == batch
    assert join_requests(documented_requests()) == requests
    assert batch_requests(documented_requests()) == [requests]
    assert (len(request), len(batch), len(requests)) == (210, 108, 167)
    assert [len(datagram) for datagram in documented_requests()] == [81, 81]


def test_protocols_md_request_batch_example_decodes():
    requests = decode(documented_datagrams()[2])
    assert requests == RequestBatch(
        (tunnel.Request(FIRST, small_call(FIRST, "hi")), tunnel.Request(SECOND, small_call(SECOND, "yo")))
    )
    assert requests.consumer_id == 7
    assert [decode(datagram) for datagram in documented_requests()] == list(requests.requests)
    assert len(requests.requests[0].frame) == 0x44 and requests.requests[0].frame[12:16] == bytes.fromhex("00000034")


def test_protocols_md_examples_decode():
    request, batch = (decode(datagram) for datagram in documented_datagrams()[:2])
    assert request == tunnel.Request(FIRST, hash_frame(FIRST))
    assert batch == ReplyBatch((Reply(FIRST, hash_reply(FIRST)), Reply(SECOND, refusal(SECOND))))
    assert batch.consumer_id == 7
    assert dubbo.parse(Frame(0xC2, 0, FIRST, request.frame[16:])).arguments == ["hello"]
    second = dubbo.DubboDecoder()
    second.receive_data(batch.replies[1].frame)
    assert second.next_event().status is Status.SERVER_THREADPOOL_EXHAUSTED_ERROR


def test_documented_request_id_fields():
    assert FIRST == 0x0007_0001E240_0001
    assert split_request_id(FIRST) == RequestId(7, 123456, 1)
    assert split_request_id(SECOND) == RequestId(7, 123457, 2)


def test_documented_limits():
    assert (DEFAULT_LIMIT, MIN_LIMIT) == (MAX_UDP_PAYLOAD, 35) == (65507, 35)
    assert max_request_frame() == 65494 and max_request_frame(1472) == 1459
    assert max_reply_frame() == 65488 and max_reply_frame(1472) == 1453


def test_docstring_examples():
    import doctest

    assert doctest.testmod(tunnel).failed == 0


# -- round trips --------------------------------------------------------------------------------


def test_request_round_trip_keeps_the_frame_byte_for_byte():
    frame = hash_frame(FIRST)
    datagram = encode_request(FIRST, frame)
    assert datagram[:13] == bytes.fromhex("4454010100") + FIRST.to_bytes(8, "big")
    assert decode(datagram) == tunnel.Request(FIRST, frame)
    assert decode(bytearray(datagram)) == decode(memoryview(datagram)) == decode(datagram)


def test_a_one_way_request_and_a_heartbeat_reply_are_frames_too():
    one_way = dubbo.encode(Request(5, SERVICE, "fire", two_way=False))
    assert decode(encode_request(5, one_way)).frame == one_way
    pong = dubbo.encode(dubbo.heartbeat(6, reply=True))
    assert decode(encode_replies([(6, pong)])).replies == (Reply(6, pong),)


request_ids = st.integers(0, 2**64 - 1)
bodies = st.binary(max_size=300)


@settings(max_examples=300)
@given(request_ids, st.integers(0, 2**64 - 1), st.sampled_from([0x80, 0xC2, 0xC6, 0xE2]), bodies)
def test_request_round_trip_property(request_id, dubbo_id, flags, body):
    frame = Frame(flags, 0, dubbo_id, body).to_bytes()
    assert decode(encode_request(request_id, frame)) == tunnel.Request(request_id, frame)


@settings(max_examples=300)
@given(
    st.integers(0, 0xFFFF),
    st.lists(st.tuples(st.integers(0, 2**48 - 1), st.integers(0, 255), bodies), min_size=1, max_size=12),
)
def test_reply_batch_round_trip_property(consumer, entries):
    replies = [((consumer << 48) | low, Frame(0x02, status, low, body).to_bytes()) for low, status, body in entries]
    batch = decode(encode_replies(replies))
    assert [(reply.request_id, reply.frame) for reply in batch.replies] == replies
    assert batch.consumer_id == consumer


@settings(max_examples=300)
@given(
    st.integers(0, 0xFFFF),
    st.lists(
        st.tuples(st.integers(0, 2**48 - 1), st.sampled_from([0x80, 0xC2, 0xE2]), bodies), min_size=1, max_size=12
    ),
)
def test_request_batch_round_trip_property(consumer, entries):
    calls = [((consumer << 48) | low, Frame(flags, 0, low, body).to_bytes()) for low, flags, body in entries]
    datagrams = [encode_request(rid, frame) for rid, frame in calls]
    batch = decode(join_requests(datagrams))
    assert [(request.request_id, request.frame) for request in batch.requests] == calls
    assert batch.consumer_id == consumer
    assert len(join_requests(datagrams)) == 7 + sum(len(datagram) - 1 for datagram in datagrams)


# -- request ids --------------------------------------------------------------------------------


@given(st.integers(0, 0xFFFF), st.integers(-(2**40), 2**40), st.integers(0, 0xFFFF))
def test_request_id_round_trip(consumer, now_ms, seq):
    rid = make_request_id(consumer, now_ms, seq)
    assert 0 <= rid < 2**64
    assert split_request_id(rid) == (consumer, now_ms % 2**32, seq)
    assert age_ms(rid, now_ms) == 0


@given(st.integers(0, 2**40), st.integers(-(2**31), 2**31 - 1))
def test_age_across_wrap_around(made_at, age):
    rid = make_request_id(1, made_at, 0)
    assert age_ms(rid, made_at + age) == age


def test_age_examples():
    wrap = 2**32
    assert ms_between(0xFFFFFFF6, wrap + 5) == 15  # the example in PROTOCOLS.md
    assert age_ms(make_request_id(3, wrap - 10, 9), wrap + 5) == 15
    assert age_ms(make_request_id(3, 1000, 9), 990) == -10  # the stamp is ahead of this clock
    assert ms_between(0, 2**31 - 1) == 2**31 - 1 and ms_between(0, 2**31) == -(2**31)


def test_request_ids_count_and_wrap():
    ids = RequestIds(9, seq=0xFFFE)
    first, second, third = ids.next(100), ids.next(100), ids.next(101)
    assert [split_request_id(rid) for rid in (first, second, third)] == [
        (9, 100, 0xFFFE),
        (9, 100, 0xFFFF),
        (9, 101, 0),
    ]
    assert "consumer_id=9" in repr(ids)
    assert len({RequestIds(1).next(5) for _ in range(3)}) == 1  # a fresh source per id: same start


@pytest.mark.parametrize("consumer", [0, 1, 0x1234, 0xFFFF])
def test_request_ids_are_the_ids_make_request_id_makes(consumer):
    ids = RequestIds(consumer, seq=0xFFF0)
    for step, now_ms in enumerate([0, 1, 2**31, 2**32 - 1, 2**32, 2**40 + 7, *range(100, 120)]):
        assert ids.next(now_ms) == make_request_id(consumer, now_ms, (0xFFF0 + step) & 0xFFFF)
    with pytest.raises(TypeError):
        ids.next(1.5)  # milliseconds are an int, as make_request_id takes them


@pytest.mark.parametrize(("consumer", "seq"), [(-1, 0), (0x10000, 0), (0, -1), (0, 0x10000)])
def test_request_ids_refuse_fields_out_of_range(consumer, seq):
    with pytest.raises(LocalProtocolError, match="out of range"):
        RequestIds(consumer, seq=seq)


@pytest.mark.parametrize(("consumer", "now_ms", "seq"), [(-1, 0, 0), (0x10000, 0, 0), (0, 0, -1), (0, 0, 0x10000)])
def test_request_id_fields_out_of_range(consumer, now_ms, seq):
    with pytest.raises(LocalProtocolError, match="out of range"):
        make_request_id(consumer, now_ms, seq)


def test_request_id_checks():
    with pytest.raises(TypeError):
        make_request_id(1, 1.5, 0)  # milliseconds are an int
    for bad in (-1, 2**64):
        with pytest.raises(LocalProtocolError, match="64-bit"):
            split_request_id(bad)
        with pytest.raises(LocalProtocolError, match="64-bit"):
            encode_request(bad, request_frame(1))


# -- encoding checks and size limits ------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "shorter than the 16-byte Dubbo header"),
        (b"\xda\xbb" + bytes(13), "shorter than"),
        (b"\xca\xfe" + request_frame(1)[2:], "bad Dubbo magic 0xcafe"),
        (request_frame(1, b"xy") + b"!", "declares a body of 2 bytes, 3 present"),
        (request_frame(1, b"xy")[:-1], "declares a body of 2 bytes, 1 present"),
        # the body length is read byte by byte: its top bit is not a sign
        (request_frame(1)[:12] + b"\x80\x00\x00\x01", "declares a body of 2147483649 bytes, 0 present"),
        (request_frame(1)[:12] + b"\xff\xff\xff\xff", "declares a body of 4294967295 bytes, 0 present"),
        (response_frame(1), "not those of a request"),
    ],
)
def test_encode_request_wants_one_whole_request_frame(frame, reason):
    with pytest.raises(LocalProtocolError, match=reason) as info:
        encode_request(4, frame)
    assert info.value.request_id == 4


def test_encode_replies_checks():
    with pytest.raises(LocalProtocolError, match="at least one"):
        encode_replies([])
    with pytest.raises(LocalProtocolError, match="not those of a response"):
        encode_replies([(1, request_frame(1))])
    with pytest.raises(LocalProtocolError, match="consumer 2, not 1") as info:
        encode_replies([(1 << 48, response_frame(1)), (2 << 48, response_frame(2))])
    assert info.value.request_id == 2 << 48
    with pytest.raises(LocalProtocolError, match="over the datagram limit") as info:
        encode_replies([(1, response_frame(1, bytes(20))), (2, response_frame(2))], limit=MIN_LIMIT + 20)
    assert info.value.status_hint == 413


@pytest.mark.parametrize("limit", [MIN_LIMIT, 1472, DEFAULT_LIMIT])
def test_largest_request_frame_fits_exactly(limit):
    largest = max_request_frame(limit)
    frame = request_frame(1, bytes(largest - 16))
    datagram = encode_request(1, frame, limit=limit)
    assert len(datagram) == limit and decode(datagram).frame == frame
    with pytest.raises(LocalProtocolError, match="does not fit") as info:
        encode_request(1, request_frame(1, bytes(largest - 15)), limit=limit)
    assert (info.value.status_hint, info.value.request_id) == (413, 1)


@pytest.mark.parametrize("limit", [MIN_LIMIT - 1, MAX_UDP_PAYLOAD + 1, 0])
def test_limit_out_of_range(limit):
    with pytest.raises(ValueError, match="out of range"):
        max_request_frame(limit)
    with pytest.raises(ValueError, match="out of range"):
        ReplyBatcher(1, limit=limit)


# -- batching -----------------------------------------------------------------------------------


def replies_of(datagrams: list[bytes]) -> list[list[int]]:
    return [[reply.request_id for reply in decode(datagram).replies] for datagram in datagrams]


def test_batcher_packs_consecutive_replies_up_to_the_limit():
    # each entry is 12 + 16 + 72 = 100 bytes; a datagram of limit 7 + 300 holds exactly three
    batcher = ReplyBatcher(0, limit=307)
    for rid in range(7):
        batcher.add(rid, response_frame(rid, bytes(72)))
    assert len(batcher) == 7
    datagrams = batcher.flush()
    assert [len(d) for d in datagrams] == [307, 307, 107]
    assert replies_of(datagrams) == [[0, 1, 2], [3, 4, 5], [6]]
    assert len(batcher) == 0 and batcher.flush() == []


def test_one_byte_over_the_limit_starts_a_new_datagram():
    batcher = ReplyBatcher(0, limit=306)
    for rid in range(3):
        batcher.add(rid, response_frame(rid, bytes(72)))
    assert replies_of(batcher.flush()) == [[0, 1], [2]]


def test_batches_keep_the_order_of_mixed_sizes_at_a_path_mtu():
    batcher = ReplyBatcher(3, limit=1472)
    sizes = [1000, 10, 400, 1453 - 16, 0, 700, 700, 50]
    rids = [make_request_id(3, 1000 + i, i) for i in range(len(sizes))]
    for rid, size in zip(rids, sizes, strict=True):
        batcher.add(rid, response_frame(rid, bytes(size)))
    datagrams = batcher.flush()
    assert all(len(d) <= 1472 for d in datagrams)
    assert [rid for batch in replies_of(datagrams) for rid in batch] == rids
    # entries of 1028, 38, 428, 1465 (fills a datagram exactly: 7 + 1465), 28, 728, 728 and 78 bytes
    assert replies_of(datagrams) == [rids[0:2], rids[2:3], rids[3:4], rids[4:6], rids[6:8]]
    assert len(datagrams[2]) == 1472


@settings(max_examples=200)
@given(st.integers(MIN_LIMIT, 2000), st.lists(st.integers(0, 2000), max_size=30))
def test_batching_property(limit, sizes):
    batcher = ReplyBatcher(0, limit=limit)
    kept = []
    for rid, size in enumerate(sizes):
        frame = response_frame(rid, bytes(size))
        if len(frame) > max_reply_frame(limit):
            with pytest.raises(LocalProtocolError):
                batcher.add(rid, frame)
        else:
            batcher.add(rid, frame)
            kept.append((rid, frame))
    datagrams = batcher.flush()
    assert all(len(d) <= limit for d in datagrams)
    got = [(reply.request_id, reply.frame) for d in datagrams for reply in decode(d).replies]
    assert got == kept
    for earlier, later in zip(datagrams, datagrams[1:], strict=False):  # greedy: the next one did not fit
        first_of_later = decode(later).replies[0]
        assert len(earlier) + 12 + len(first_of_later.frame) > limit


def test_a_reply_too_large_for_any_datagram_is_a_clear_error_and_is_not_kept():
    batcher = ReplyBatcher(0, limit=1472)
    batcher.add(1, response_frame(1, bytes(1453 - 16)))  # the largest that fits
    with pytest.raises(LocalProtocolError, match="does not fit in one tunnel datagram") as info:
        batcher.add(2, response_frame(2, bytes(1453 - 15)))
    assert (info.value.status_hint, info.value.request_id) == (413, 2)
    batcher.add(3, response_frame(3))
    assert replies_of(batcher.flush()) == [[1], [3]]


def test_batcher_is_for_one_consumer_and_wants_responses():
    batcher = ReplyBatcher(5)
    with pytest.raises(LocalProtocolError, match="consumer 6, not 5"):
        batcher.add(make_request_id(6, 0, 0), response_frame(1))
    with pytest.raises(LocalProtocolError, match="not those of a response"):
        batcher.add(make_request_id(5, 0, 0), request_frame(1))
    with pytest.raises(LocalProtocolError, match="out of range"):
        ReplyBatcher(0x10000)
    assert len(batcher) == 0 and "consumer_id=5" in repr(batcher)


def test_many_small_replies_fill_datagrams_of_the_default_limit():
    batcher = ReplyBatcher(0)
    for rid in range(5000):
        batcher.add(rid, response_frame(rid))  # 12 + 16 = 28 bytes each: 2339 fit in 65,507
    datagrams = batcher.flush()
    assert [len(decode(d).replies) for d in datagrams] == [2339, 2339, 322]
    assert len(datagrams[0]) == 7 + 2339 * 28


def calls_of(datagrams: list[bytes]) -> list[list[int]]:
    """The request ids of each datagram: a REQUEST's one, or a REQUEST_BATCH's, in order."""
    out = []
    for datagram in datagrams:
        message = decode(datagram)
        out.append(
            [message.request_id] if isinstance(message, tunnel.Request) else [r.request_id for r in message.requests]
        )
    return out


def test_request_batching_packs_consecutive_calls_up_to_the_limit_and_leaves_a_call_alone_as_it_was():
    # each REQUEST is 13 + 16 + 71 = 100 bytes, 99 in a batch: a datagram of limit 7 + 297 holds three
    singles = [encode_request(rid, request_frame(rid, bytes(71))) for rid in range(7)]
    datagrams = batch_requests(singles, limit=304)
    assert [len(d) for d in datagrams] == [304, 304, 100]
    assert calls_of(datagrams) == [[0, 1, 2], [3, 4, 5], [6]]
    assert datagrams[2] is singles[6]  # alone: the REQUEST datagram itself
    assert calls_of(batch_requests(singles[:3], limit=303)) == [[0, 1], [2]]  # one byte short
    assert batch_requests([], limit=304) == []


def test_a_request_of_the_full_limit_goes_alone_between_batches():
    limit = 1472
    small = [encode_request(rid, request_frame(rid)) for rid in range(4)]
    full = encode_request(9, request_frame(9, bytes(max_request_frame(limit) - 16)), limit=limit)
    datagrams = batch_requests([small[0], small[1], full, small[2], small[3]], limit=limit)
    assert calls_of(datagrams) == [[0, 1], [9], [2, 3]]
    assert datagrams[1] == full and len(full) == limit


@settings(max_examples=200)
@given(st.integers(MIN_LIMIT, 2000), st.lists(st.integers(0, 2000), max_size=30))
def test_request_batching_property(limit, sizes):
    singles = []
    for rid, size in enumerate(sizes):
        frame = request_frame(rid, bytes(size))
        if len(frame) <= max_request_frame(limit):
            singles.append(encode_request(rid, frame, limit=limit))
    datagrams = batch_requests(singles, limit=limit)
    assert all(len(d) <= limit for d in datagrams)
    assert [rid for ids in calls_of(datagrams) for rid in ids] == [decode(d).request_id for d in singles]
    for datagram in datagrams:  # every call with its frame, byte for byte; a call alone is its REQUEST
        message = decode(datagram)
        if isinstance(message, tunnel.Request):
            assert datagram in singles
        else:
            assert len(message.requests) > 1
            assert [encode_request(r.request_id, r.frame, limit=limit) for r in message.requests] == singles[
                singles.index(encode_request(message.requests[0].request_id, message.requests[0].frame, limit=limit)) :
            ][: len(message.requests)]
    for earlier, later in zip(datagrams, datagrams[1:], strict=False):  # greedy: the next call did not fit
        first = decode(later)
        first = first if isinstance(first, tunnel.Request) else first.requests[0]
        room = len(earlier) if earlier[3] == tunnel.Kind.REQUEST_BATCH else len(earlier) + 6
        assert room + 12 + len(first.frame) > limit


def test_join_requests_checks():
    good = [encode_request(rid, request_frame(rid)) for rid in (1, 2)]
    with pytest.raises(LocalProtocolError, match="at least one"):
        join_requests([])
    with pytest.raises(LocalProtocolError, match="not a plain REQUEST"):
        join_requests([good[0], encode_replies([(2, response_frame(2))])])
    with pytest.raises(LocalProtocolError, match="not a plain REQUEST"):
        join_requests([good[0], b"DT\x01\x01\x01" + good[1][5:]])  # tagged: a batch is tagged whole, after
    with pytest.raises(LocalProtocolError, match="not a plain REQUEST"):
        join_requests([good[0], good[1][:12]])
    with pytest.raises(LocalProtocolError, match="declares a body of 0 bytes, 1 present"):
        join_requests([good[0], good[1] + b"!"])
    with pytest.raises(LocalProtocolError, match="consumer 2, not 0") as info:
        join_requests([good[0], encode_request(2 << 48, request_frame(1))])
    assert info.value.request_id == 2 << 48
    with pytest.raises(LocalProtocolError, match="over the datagram limit") as info:
        join_requests(good, limit=MIN_LIMIT + 20)
    assert info.value.status_hint == 413
    with pytest.raises(LocalProtocolError, match="over the datagram limit of 35") as info:
        batch_requests([encode_request(1, request_frame(1, bytes(10)))], limit=MIN_LIMIT)
    assert info.value.status_hint == 413
    with pytest.raises(TypeError, match="bytes, not bytearray"):
        join_requests([bytearray(good[0])])


# -- malformed datagrams ------------------------------------------------------------------------


GOOD_REQUEST = encode_request(FIRST, hash_frame(FIRST))
GOOD_BATCH = encode_replies([(FIRST, hash_reply(FIRST)), (SECOND, refusal(SECOND))])


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "0 bytes, shorter than the 5-byte header"),
        (b"DT\x01\x01", "4 bytes"),
        (b"XX\x01\x01\x00" + GOOD_REQUEST[5:], "bad magic 0x5858, expected 0x4454"),
        (hash_frame(1), "bare Dubbo frame"),
        (b"DT\x02\x01\x00" + GOOD_REQUEST[5:], "version 2 is not supported"),
        (b"DT\x01\x00\x00" + GOOD_REQUEST[5:], "unknown kind 0"),
        (b"DT\x01\x04\x00" + GOOD_REQUEST[5:], "unknown kind 4"),
        (b"DT\x01\x01\x80" + GOOD_REQUEST[5:], "unknown flag bits 0x80"),
        (b"DT\x01\x01\x00\x00\x07", "ends inside its 13-byte header"),
        (GOOD_REQUEST[:13], "0 bytes, shorter than the 16-byte Dubbo header"),
        (GOOD_REQUEST[:-1], "declares a body of 181 bytes, 180 present"),
        (GOOD_REQUEST + b"\x00", "declares a body of 181 bytes, 182 present"),
        (GOOD_REQUEST[:13] + b"\xda\xbc" + GOOD_REQUEST[15:], "bad Dubbo magic"),
        (encode_request(1, request_frame(1))[:15] + b"\x02" + bytes(13), "not those of a request"),
    ],
)
def test_malformed_requests(datagram, reason):
    with pytest.raises(RemoteProtocolError, match=re.escape(reason)) as info:
        decode(datagram)
    assert info.value.reason.startswith("tunnel datagram: ")
    assert info.value.status_hint == 400


def test_a_broken_frame_in_a_readable_request_names_the_call():
    with pytest.raises(RemoteProtocolError) as info:
        decode(GOOD_REQUEST[:-1])
    assert info.value.request_id == FIRST
    with pytest.raises(RemoteProtocolError) as info:
        decode(GOOD_REQUEST[:12])
    assert info.value.request_id is None


def entry(request_id: int, frame: bytes, length: int | None = None) -> bytes:
    return request_id.to_bytes(8, "big") + (len(frame) if length is None else length).to_bytes(4, "big") + frame


def batch(count: int, *entries: bytes) -> bytes:
    return b"DT\x01\x02\x00" + count.to_bytes(2, "big") + b"".join(entries)


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"DT\x01\x02\x00\x00", "ends inside its 7-byte header"),
        (b"DT\x01\x02\x01" + GOOD_BATCH[5:], "tagged (flag 0x01), but this side has no tunnel key"),
        (b"DT\x01\x02\x03" + GOOD_BATCH[5:], "unknown flag bits 0x03"),
        (batch(0), "no replies"),
        (batch(0, entry(1, response_frame(1))), "no replies"),
        (batch(1), "ends inside the header of entry 0 of 1"),
        (batch(2, entry(1, response_frame(1))), "ends inside the header of entry 1 of 2"),
        (batch(1, entry(1, response_frame(1))[:11]), "ends inside the header of entry 0"),
        (batch(1, entry(1, response_frame(1), 17)), "entry 0 declares 17 bytes but only 16 remain"),
        (batch(1, entry(1, response_frame(1), 0xFFFFFFFF)), "declares 4294967295 bytes"),
        (batch(1, entry(1, response_frame(1), 15) + b"!"), "15 bytes, shorter than the 16-byte Dubbo header"),
        (batch(1, entry(1, response_frame(1, b"ab"), 17)), "declares a body of 2 bytes, 1 present"),
        (batch(1, entry(1, response_frame(1)) + b"\x00"), "1 bytes of trailing garbage after 1 replies"),
        (GOOD_BATCH + b"junk", "4 bytes of trailing garbage after 2 replies (offset 108)"),
        (batch(1, entry(1, request_frame(1))), "not those of a response"),
        (batch(2, entry(1, response_frame(1)), entry(2 << 48, response_frame(2))), "entry 1 is for consumer 2"),
    ],
)
def test_malformed_reply_batches(datagram, reason):
    with pytest.raises(RemoteProtocolError, match=re.escape(reason)) as info:
        decode(datagram)
    assert info.value.status_hint == 502


def request_batch(count: int, *entries: bytes) -> bytes:
    return b"DT\x01\x03\x00" + count.to_bytes(2, "big") + b"".join(entries)


GOOD_REQUESTS = join_requests(documented_requests())


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"DT\x01\x03\x00\x00", "request batch of 6 bytes ends inside its 7-byte header"),
        (b"DT\x01\x03\x01" + GOOD_REQUESTS[5:], "tagged (flag 0x01), but this side has no tunnel key"),
        (b"DT\x01\x03\x40" + GOOD_REQUESTS[5:], "unknown flag bits 0x40"),
        (request_batch(0), "request batch with no requests"),
        (request_batch(0, entry(1, request_frame(1))), "request batch with no requests"),
        (request_batch(1), "request batch ends inside the header of entry 0 of 1"),
        (
            request_batch(3, entry(1, request_frame(1)), entry(2, request_frame(2))),
            "ends inside the header of entry 2 of 3",
        ),
        (request_batch(1, entry(1, request_frame(1))[:11]), "ends inside the header of entry 0"),
        (request_batch(1, entry(1, request_frame(1), 17)), "entry 0 declares 17 bytes but only 16 remain"),
        (request_batch(1, entry(1, request_frame(1), 0xFFFFFFFF)), "declares 4294967295 bytes"),
        (request_batch(1, entry(1, request_frame(1), 15) + b"!"), "15 bytes, shorter than the 16-byte Dubbo header"),
        (request_batch(1, entry(1, request_frame(1, b"ab"), 17)), "declares a body of 2 bytes, 1 present"),
        (request_batch(1, entry(1, request_frame(1)) + b"\x00"), "1 bytes of trailing garbage after 1 requests"),
        (GOOD_REQUESTS + b"junk", "4 bytes of trailing garbage after 2 requests (offset 167)"),
        (GOOD_REQUESTS[:-1], "entry 1 declares 68 bytes but only 67 remain (offset 87)"),
        (request_batch(1, entry(1, response_frame(1))), "not those of a request"),
        (request_batch(2, entry(1, request_frame(1)), entry(2 << 48, request_frame(2))), "entry 1 is for consumer 2"),
    ],
)
def test_malformed_request_batches(datagram, reason):
    with pytest.raises(RemoteProtocolError, match=re.escape(reason)) as info:
        decode(datagram)
    assert info.value.reason.startswith("tunnel datagram: ")
    assert info.value.status_hint == 400


def test_a_malformed_request_batch_names_the_call_it_could_read():
    broken = request_batch(2, entry(FIRST, request_frame(FIRST)), entry(SECOND, request_frame(SECOND, b"ab"), 17))
    with pytest.raises(RemoteProtocolError) as info:
        decode(broken)
    assert info.value.request_id == SECOND
    with pytest.raises(RemoteProtocolError) as info:
        decode(request_batch(2, entry(FIRST, request_frame(FIRST))))
    assert info.value.request_id is None


def test_decode_wants_bytes():
    with pytest.raises(TypeError, match="bytes, not int"):
        decode(5)


def only_our_errors(datagram: bytes) -> None:
    try:
        result = decode(datagram)
    except RemoteProtocolError as exc:
        assert exc.reason.startswith("tunnel datagram: ")
        return
    if isinstance(result, tunnel.Request):  # whatever decodes also encodes back to the same bytes
        assert encode_request(result.request_id, result.frame) == datagram
    elif isinstance(result, RequestBatch):
        assert join_requests([encode_request(r.request_id, r.frame) for r in result.requests]) == datagram
    else:
        assert encode_replies([(r.request_id, r.frame) for r in result.replies]) == datagram


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_garbage(data):
    only_our_errors(data)


@settings(max_examples=500)
@given(
    st.sampled_from(
        [b"DT\x01\x01\x00", b"DT\x01\x02\x00", b"DT\x01\x02\x00\x00\x01", b"DT\x01\x03\x00", b"DT\x01\x03\x00\x00\x01"]
    ),
    st.binary(max_size=200),
)
def test_garbage_behind_a_valid_header(header, data):
    only_our_errors(header + data)


@settings(max_examples=1000)
@given(
    st.sampled_from([GOOD_REQUEST, GOOD_BATCH, GOOD_REQUESTS]),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 10**6),
)
def test_mutated_datagrams(datagram, edits, cut):
    data = bytearray(datagram)
    for index, byte in edits:
        data[index % len(data)] = byte
    only_our_errors(bytes(data))
    only_our_errors(bytes(data[: cut % len(data)]))
    only_our_errors(bytes(data) + bytes(cut % 3))
