"""The UDP tunnel between a consumer sidecar and a provider sidecar: datagrams in, values out.

Pure like the other codecs: no sockets, no clock (timestamps are passed in), no state but what a
:class:`ReplyBatcher` holds until it is flushed.

* :func:`encode_request` wraps one complete Dubbo request frame in a REQUEST datagram;
  :func:`join_requests` packs the REQUEST datagrams of several calls into one REQUEST_BATCH, and
  :func:`batch_requests` into as few datagrams as a size limit allows (for a provider that announced it
  takes them).
* :class:`ReplyBatcher` packs the ready replies for one consumer into as few REPLY_BATCH datagrams as
  a size limit allows; :func:`encode_replies` writes one such datagram directly.
* :func:`decode` turns a datagram into a :class:`Request`, a :class:`RequestBatch` or a :class:`ReplyBatch`, or raises
  :class:`RemoteProtocolError` saying what was wrong; :func:`decode_replies` gives a reply batch's
  replies as plain ``(request id, frame)`` pairs.
* :func:`make_request_id`, :func:`split_request_id`, :func:`age_ms` and :class:`RequestIds`: 64-bit
  request ids that carry the consumer id and the time of the call, so either side can tell whose a
  reply is and how old it is without a lookup.

The byte layout, with worked examples, is in ``sidecar/PROTOCOLS.md`` (section Tunnel).

>>> from sidecar.codecs import dubbo
>>> rid = make_request_id(7, 123456, 1)
>>> frame = dubbo.encode(dubbo.Request(rid, "Svc", "ping"))
>>> decode(encode_request(rid, frame)) == Request(rid, frame)
True
>>> split_request_id(rid)
RequestId(consumer_id=7, stamp=123456, seq=1)
>>> age_ms(rid, now_ms=123506)
50
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from sidecar._accel import import_c_accel

try:
    import cython
except ImportError:  # Cython is needed only to build the compiled twins
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)
from sidecar.codecs.dubbo_messages import FLAG_REQUEST, HEADER_LENGTH
from sidecar.codecs.dubbo_messages import MAGIC as DUBBO_MAGIC
from sidecar.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAGIC",
    "VERSION",
    "FLAG_TAGGED",
    "Kind",
    "MAX_UDP_PAYLOAD",
    "DEFAULT_LIMIT",
    "MIN_LIMIT",
    "HEADER_SIZE",
    "REQUEST_OVERHEAD",
    "BATCH_OVERHEAD",
    "ENTRY_OVERHEAD",
    "Request",
    "Reply",
    "ReplyBatch",
    "RequestBatch",
    "RequestId",
    "RequestIds",
    "encode_request",
    "join_requests",
    "batch_requests",
    "hex_id",
    "rewrite_id",
    "encode_replies",
    "decode",
    "decode_replies",
    "ReplyBatcher",
    "max_request_frame",
    "max_reply_frame",
    "make_request_id",
    "split_request_id",
    "age_ms",
    "ms_between",
]

MAGIC = 0x4454  # "DT", dubbomesh tunnel
VERSION = 1
FLAG_TAGGED = (
    0x01  # an authentication trailer ends the datagram (sidecar.codecs.tunnel_auth); decode() wants it removed
)


class Kind(IntEnum):
    """The kind byte: what follows the common header. 0 and 4-255 are not assigned."""

    REQUEST = 1
    REPLY_BATCH = 2
    REQUEST_BATCH = 3  # sent only to a provider whose registry entry says it takes them


# The kinds as ints, bound once: an enum class resolves its members through a Python-level __getattr__.
_REQUEST, _REPLY_BATCH, _REQUEST_BATCH = int(Kind.REQUEST), int(Kind.REPLY_BATCH), int(Kind.REQUEST_BATCH)


MAX_UDP_PAYLOAD = 65507  # 65535 - 8 (UDP header) - 20 (IPv4 header)
DEFAULT_LIMIT = MAX_UDP_PAYLOAD

HEADER = struct.Struct(">HBBB")  # magic, version, kind, flags
REQUEST_HEADER = struct.Struct(">HBBBQ")  # common header, request id; the Dubbo frame follows
BATCH_HEADER = struct.Struct(">HBBBH")  # common header, entry count; the entries follow (both batch kinds)
ENTRY = struct.Struct(">QI")  # request id, frame length; the Dubbo frame follows
_ID = struct.Struct(">Q")  # a Dubbo request id, header bytes 4 to 12

HEADER_SIZE = HEADER.size  # 5
REQUEST_OVERHEAD = REQUEST_HEADER.size  # 13
BATCH_OVERHEAD = BATCH_HEADER.size  # 7
ENTRY_OVERHEAD = ENTRY.size  # 12
MIN_LIMIT = BATCH_OVERHEAD + ENTRY_OVERHEAD + HEADER_LENGTH  # the smallest reply must fit: 35 bytes

# Request id: consumer id (16 bits) | milliseconds, wrapping (32 bits) | sequence (16 bits).
CONSUMER_BITS, STAMP_BITS, SEQ_BITS = 16, 32, 16
CONSUMER_MASK, STAMP_MASK, SEQ_MASK = (1 << CONSUMER_BITS) - 1, (1 << STAMP_BITS) - 1, (1 << SEQ_BITS) - 1
CONSUMER_SHIFT = STAMP_BITS + SEQ_BITS
_HALF_STAMP = 1 << (STAMP_BITS - 1)
_MAX_ID = (1 << 64) - 1
_index = operator.index  # bound once: a module's attribute costs the compiled twin a lookup each time
_REQUEST_PREFIX = HEADER.pack(MAGIC, VERSION, Kind.REQUEST, 0)  # a plain REQUEST datagram starts so


# -- values -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A REQUEST datagram: one call, ``frame`` is the complete Dubbo request frame."""

    request_id: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """One entry of a REPLY_BATCH: the Dubbo response ``frame`` of the call ``request_id``."""

    request_id: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class RequestBatch:
    """A REQUEST_BATCH datagram: one or more calls, all of the same consumer, each handled as if it had
    come in its own REQUEST datagram."""

    requests: tuple[Request, ...]

    @property
    def consumer_id(self) -> int:
        return self.requests[0].request_id >> CONSUMER_SHIFT


@dataclass(frozen=True, slots=True)
class ReplyBatch:
    """A REPLY_BATCH datagram: one or more replies, all for calls of the same consumer."""

    replies: tuple[Reply, ...]

    @property
    def consumer_id(self) -> int:
        return self.replies[0].request_id >> CONSUMER_SHIFT


# -- request ids --------------------------------------------------------------------------------


class RequestId(NamedTuple):
    """The three fields of a request id."""

    consumer_id: int
    stamp: int  # milliseconds modulo 2**32, on the consumer's clock
    seq: int


def make_request_id(consumer_id: int, now_ms: int, seq: int) -> int:
    """The 64-bit id of a call made by ``consumer_id`` at ``now_ms`` (an int of milliseconds since an
    epoch of the caller's choosing, kept modulo 2**32) with sequence number ``seq`` (0..65535)."""
    consumer_id, now_ms, seq = _index(consumer_id), _index(now_ms), _index(seq)
    if not 0 <= consumer_id <= CONSUMER_MASK:
        raise LocalProtocolError(f"consumer id {consumer_id} out of range 0..{CONSUMER_MASK}")
    if not 0 <= seq <= SEQ_MASK:
        raise LocalProtocolError(f"sequence number {seq} out of range 0..{SEQ_MASK}")
    return (consumer_id << CONSUMER_SHIFT) | ((now_ms & STAMP_MASK) << SEQ_BITS) | seq


def split_request_id(request_id: int) -> RequestId:
    """The consumer id, the millisecond stamp and the sequence number of ``request_id``."""
    _check_id(request_id)
    return RequestId(request_id >> CONSUMER_SHIFT, (request_id >> SEQ_BITS) & STAMP_MASK, request_id & SEQ_MASK)


def ms_between(stamp: int, now_ms: int) -> int:
    """Milliseconds from ``stamp`` (a 32-bit wrapped time) to ``now_ms``, across wrap-around: the
    difference modulo 2**32 read as a signed number, so -2**31..2**31-1 (about +-24.8 days).
    Negative means the stamp lies ahead of ``now_ms`` (another host's clock runs ahead)."""
    delta = (_index(now_ms) - _index(stamp)) & STAMP_MASK
    return delta - (1 << STAMP_BITS) if delta >= _HALF_STAMP else delta


def age_ms(request_id: int, now_ms: int) -> int:
    """How long ago, in milliseconds, the call ``request_id`` was made, seen at ``now_ms`` on the
    same clock and epoch the consumer used (see :func:`ms_between` for the range and the sign)."""
    return ms_between(split_request_id(request_id).stamp, now_ms)


class RequestIds:
    """The request ids of one consumer: ``next(now_ms)`` stamps the time and counts the sequence
    number up, wrapping after 65535 (ids repeat only after 65536 calls within one millisecond or
    after 2**32 ms, about 49.7 days)."""

    __slots__ = ("consumer_id", "_seq", "_high")

    def __init__(self, consumer_id: int, *, seq: int = 0):
        self._high = make_request_id(consumer_id, 0, 0)  # its bits of every id (and the range checks)
        make_request_id(consumer_id, 0, seq)
        self.consumer_id = consumer_id
        self._seq = _index(seq)

    def next(self, now_ms: int) -> int:
        """:func:`make_request_id` of this consumer at ``now_ms`` with the next sequence number (the
        consumer id and the sequence number were checked already)."""
        request_id = self._high | ((_index(now_ms) & STAMP_MASK) << SEQ_BITS) | self._seq
        self._seq = (self._seq + 1) & SEQ_MASK
        return request_id

    def __repr__(self) -> str:
        return f"RequestIds(consumer_id={self.consumer_id}, seq={self._seq})"


def _check_id(request_id: int) -> None:
    if not 0 <= _index(request_id) <= _MAX_ID:
        raise LocalProtocolError(f"request id {request_id} is not an unsigned 64-bit number")


# -- encoding -----------------------------------------------------------------------------------


def max_request_frame(limit: int = DEFAULT_LIMIT) -> int:
    """The largest Dubbo request frame (header included) that fits in one REQUEST datagram of at
    most ``limit`` bytes; a larger call cannot go by datagram (HTTP 413 or the TCP fallback)."""
    return _check_limit(limit) - REQUEST_OVERHEAD


def max_reply_frame(limit: int = DEFAULT_LIMIT) -> int:
    """The largest Dubbo response frame that fits, alone, in one REPLY_BATCH datagram."""
    return _check_limit(limit) - BATCH_OVERHEAD - ENTRY_OVERHEAD


def _check_limit(limit: int) -> int:
    limit = _index(limit)
    if not MIN_LIMIT <= limit <= MAX_UDP_PAYLOAD:
        raise ValueError(f"datagram limit {limit} out of range {MIN_LIMIT}..{MAX_UDP_PAYLOAD}")
    return limit


def encode_request(request_id: int, frame: bytes, *, limit: int = DEFAULT_LIMIT) -> bytes:
    """The REQUEST datagram carrying ``frame``, a complete Dubbo request frame. Raises
    :class:`LocalProtocolError` if the frame is not one, or (status hint 413) if the datagram would
    exceed ``limit`` bytes."""
    _check_id(request_id)
    frame = bytes(frame)
    _check_frame(frame, 0, len(frame), True, request_id, LocalProtocolError, 500)
    largest = max_request_frame(limit)
    if len(frame) > largest:
        raise LocalProtocolError(
            f"Dubbo request frame of {len(frame)} bytes does not fit in one tunnel datagram "
            f"(at most {largest} bytes under a limit of {limit})",
            status_hint=413,
            request_id=request_id,
        )
    return REQUEST_HEADER.pack(MAGIC, VERSION, _REQUEST, 0, request_id) + frame


def join_requests(datagrams: Iterable[bytes], *, limit: int = DEFAULT_LIMIT) -> bytes:
    """One REQUEST_BATCH datagram carrying the calls of ``datagrams``, plain (untagged) REQUEST
    datagrams of one consumer as :func:`encode_request` wrote them, in order: each call keeps its
    request id and its Dubbo frame byte for byte. A batch is tagged as a whole, after joining. Raises
    :class:`LocalProtocolError` for no datagram, a datagram that is not a plain REQUEST, calls of two
    consumers, or (status hint 413) a batch over ``limit`` bytes."""
    datagrams = list(datagrams)
    if not datagrams:
        raise LocalProtocolError("a request batch needs at least one request")
    consumer = -1  # the first call's, once its datagram is checked
    parts = [BATCH_HEADER.pack(MAGIC, VERSION, _REQUEST_BATCH, 0, len(datagrams))]
    size = BATCH_OVERHEAD
    for datagram in datagrams:
        request_id = _checked_request(datagram, consumer)
        consumer = request_id >> CONSUMER_SHIFT
        length = len(datagram) - REQUEST_OVERHEAD
        parts.append(ENTRY.pack(request_id, length))
        parts.append(datagram[REQUEST_OVERHEAD:])
        size += ENTRY_OVERHEAD + length
    if size > _check_limit(limit):  # so the count is at most (65507 - 7) // 28 = 2339
        raise LocalProtocolError(
            f"{len(datagrams)} requests take {size} bytes, over the datagram limit of {limit}", status_hint=413
        )
    return b"".join(parts)


def batch_requests(datagrams: Iterable[bytes], *, limit: int = DEFAULT_LIMIT) -> list[bytes]:
    """The REQUEST datagrams of ``datagrams`` (as for :func:`join_requests`) packed in order into as
    few datagrams of at most ``limit`` bytes as consecutive runs allow: a run of several calls becomes
    a REQUEST_BATCH, a call alone stays the REQUEST datagram it was (a batch of one would only add 6
    bytes). Each call takes its datagram's length less 1 in a batch, plus 7 bytes per batch."""
    limit = _check_limit(limit)
    out: list[bytes] = []
    run: list[bytes] = []
    size = BATCH_OVERHEAD
    for datagram in datagrams:
        entry_size = len(datagram) - 1  # ENTRY_OVERHEAD - REQUEST_OVERHEAD
        if run and size + entry_size > limit:
            out.append(run[0] if len(run) == 1 else join_requests(run, limit=limit))
            run, size = [], BATCH_OVERHEAD
        if len(datagram) > limit:
            _checked_request(datagram, -1)
            raise LocalProtocolError(
                f"a request datagram of {len(datagram)} bytes is over the datagram limit of {limit}", status_hint=413
            )
        run.append(datagram)
        size += entry_size
    if run:
        if len(run) == 1:
            _checked_request(run[0], -1)
            out.append(run[0])
        else:
            out.append(join_requests(run, limit=limit))
    return out


def _checked_request(datagram: bytes, consumer_id: int) -> int:
    """The request id of ``datagram``, a plain REQUEST datagram of a well-formed Dubbo request frame
    (of ``consumer_id`` unless that is -1); else :class:`LocalProtocolError`."""
    if not isinstance(datagram, bytes):
        raise TypeError(f"a datagram is bytes, not {type(datagram).__qualname__}")
    size = len(datagram)
    if size < REQUEST_OVERHEAD or not datagram.startswith(_REQUEST_PREFIX):
        raise LocalProtocolError(f"{datagram[:HEADER_SIZE].hex()} of {size} bytes is not a plain REQUEST datagram")
    if cython.compiled:  # the id's eight bytes, read in C: unpacking the header made a tuple of five ints
        data = datagram
        request_id = 0
        for at in range(HEADER_SIZE, REQUEST_OVERHEAD):
            request_id = request_id << 8 | data[at]
    else:
        request_id = REQUEST_HEADER.unpack_from(datagram)[4]
    if consumer_id != -1 and request_id >> CONSUMER_SHIFT != consumer_id:
        raise LocalProtocolError(
            f"request {request_id:#018x} belongs to consumer {request_id >> CONSUMER_SHIFT}, not {consumer_id}",
            request_id=request_id,
        )
    _check_frame(datagram, REQUEST_OVERHEAD, size, True, request_id, LocalProtocolError, 500)
    return request_id


def encode_replies(replies: Iterable[tuple[int, bytes]], *, limit: int = DEFAULT_LIMIT) -> bytes:
    """One REPLY_BATCH datagram with every ``(request id, Dubbo response frame)`` of ``replies``,
    which must belong to one consumer and fit under ``limit`` (else :class:`LocalProtocolError`,
    status hint 413 for the size). :class:`ReplyBatcher` splits replies over several datagrams."""
    replies = list(replies)
    if not replies:
        raise LocalProtocolError("a reply batch needs at least one reply")
    consumer = split_request_id(replies[0][0]).consumer_id
    entries = [_checked_reply(request_id, frame, consumer) for request_id, frame in replies]
    size = BATCH_OVERHEAD + sum(ENTRY_OVERHEAD + len(frame) for _, frame in entries)
    if size > _check_limit(limit):  # so the count is at most (65507 - 7) // 28 = 2339
        raise LocalProtocolError(
            f"{len(entries)} replies take {size} bytes, over the datagram limit of {limit}", status_hint=413
        )
    return _pack(entries)


def _checked_reply(request_id: int, frame: bytes, consumer_id: int) -> tuple[int, bytes]:
    _check_id(request_id)
    if request_id >> CONSUMER_SHIFT != consumer_id:
        raise LocalProtocolError(
            f"reply {request_id:#018x} belongs to consumer {request_id >> CONSUMER_SHIFT}, not {consumer_id}",
            request_id=request_id,
        )
    frame = bytes(frame)
    _check_frame(frame, 0, len(frame), False, request_id, LocalProtocolError, 500)
    return request_id, frame


def _pack(entries: list[tuple[int, bytes]]) -> bytes:
    parts = [BATCH_HEADER.pack(MAGIC, VERSION, _REPLY_BATCH, 0, len(entries))]
    for request_id, frame in entries:
        parts.append(ENTRY.pack(request_id, len(frame)))
        parts.append(frame)
    return b"".join(parts)


class ReplyBatcher:
    """Collects the ready replies for one consumer and packs them into datagrams.

    ``add`` checks each reply at once: a frame that is not a Dubbo response, a request id of another
    consumer, or a reply too large for any datagram under ``limit`` raises :class:`LocalProtocolError`
    (status hint 413 for the size, ``request_id`` set) and is not kept, so the caller can answer
    that one call with an error instead. ``flush`` returns the datagrams, in order, each holding as
    many consecutive replies as fit, and empties the batcher.
    """

    __slots__ = ("consumer_id", "limit", "_entries")

    def __init__(self, consumer_id: int, *, limit: int = DEFAULT_LIMIT):
        make_request_id(consumer_id, 0, 0)  # range check
        self.consumer_id = consumer_id
        self.limit = _check_limit(limit)
        self._entries: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ReplyBatcher(consumer_id={self.consumer_id}, limit={self.limit}, pending={len(self)})"

    def add(self, request_id: int, frame: bytes) -> None:
        request_id, frame = _checked_reply(request_id, frame, self.consumer_id)
        largest = max_reply_frame(self.limit)
        if len(frame) > largest:
            raise LocalProtocolError(
                f"Dubbo response frame of {len(frame)} bytes does not fit in one tunnel datagram "
                f"(at most {largest} bytes under a limit of {self.limit})",
                status_hint=413,
                request_id=request_id,
            )
        self._entries.append((request_id, frame))

    def flush(self) -> list[bytes]:
        datagrams: list[bytes] = []
        batch: list[tuple[int, bytes]] = []
        size = BATCH_OVERHEAD
        for entry in self._entries:
            entry_size = ENTRY_OVERHEAD + len(entry[1])
            if batch and size + entry_size > self.limit:
                datagrams.append(_pack(batch))
                batch, size = [], BATCH_OVERHEAD
            batch.append(entry)
            size += entry_size
        if batch:
            datagrams.append(_pack(batch))
        self._entries = []
        return datagrams


# -- decoding -----------------------------------------------------------------------------------


def decode(datagram: bytes | bytearray | memoryview) -> Request | RequestBatch | ReplyBatch:
    """The request, request batch or reply batch in ``datagram``. Anything malformed raises
    :class:`RemoteProtocolError` (status hint 400 for a request or a request batch, 502 for a reply
    batch) naming the
    reason and, once it was readable, the ``request_id`` of the call concerned. Only a value that is
    not bytes-like at all (a bug in the caller, not a bad datagram) raises ``TypeError``."""
    datagram = _as_bytes(datagram)
    kind, flags = _header(datagram)
    if kind == _REQUEST:
        return _decode_request(datagram, flags)
    if kind == _REPLY_BATCH:
        return ReplyBatch(tuple([Reply(*entry) for entry in _decode_entries(datagram, flags, False)]))
    if kind == _REQUEST_BATCH:
        return RequestBatch(tuple([Request(*entry) for entry in _decode_entries(datagram, flags, True)]))
    raise _error(f"unknown kind {kind}")


def decode_replies(datagram: bytes | bytearray | memoryview) -> list[tuple[int, bytes]] | None:
    """The replies of a REPLY_BATCH datagram as ``(request id, frame)`` pairs, in order: what
    :func:`decode` gives as a :class:`ReplyBatch`, without a value per reply (the consumer's reader
    takes every reply this way). None for a well-formed datagram of another kind; a malformed one
    raises exactly what :func:`decode` raises."""
    datagram = _as_bytes(datagram)
    kind, flags = _header(datagram)
    if kind == _REPLY_BATCH:
        return _decode_entries(datagram, flags, False)
    decode(datagram)  # its error, if it has one
    return None


def _as_bytes(datagram: bytes | bytearray | memoryview) -> bytes:
    if not isinstance(datagram, bytes):
        if not isinstance(datagram, bytearray | memoryview):
            raise TypeError(f"a datagram is bytes, not {type(datagram).__qualname__}")
        datagram = bytes(datagram)
    return datagram


def _header(datagram: bytes) -> tuple[int, int]:
    """The kind and the flags of ``datagram``, once its common header checks out."""
    size = len(datagram)
    if size < HEADER_SIZE:
        raise _error(f"{size} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, kind, flags = HEADER.unpack_from(datagram)
    if magic != MAGIC:
        hint = " (a bare Dubbo frame, not a tunnel datagram)" if magic == DUBBO_MAGIC else ""
        raise _error(f"bad magic 0x{magic:04x}, expected 0x{MAGIC:04x}{hint}")
    if version != VERSION:
        raise _error(f"version {version} is not supported (this side speaks {VERSION})")
    return kind, flags


def _error(reason: str, *, status_hint: int = 400, request_id: int | None = None) -> RemoteProtocolError:
    return RemoteProtocolError(f"tunnel datagram: {reason}", status_hint=status_hint, request_id=request_id)


def _check_flags(flags: int, status_hint: int) -> None:
    if flags == FLAG_TAGGED:
        raise _error("tagged (flag 0x01), but this side has no tunnel key to check it", status_hint=status_hint)
    if flags:
        raise _error(f"unknown flag bits 0x{flags:02x} (version {VERSION} defines only 0x01)", status_hint=status_hint)


def _decode_request(datagram: bytes, flags: int) -> Request:
    _check_flags(flags, 400)
    if len(datagram) < REQUEST_OVERHEAD:
        raise _error(f"request of {len(datagram)} bytes ends inside its {REQUEST_OVERHEAD}-byte header")
    request_id = REQUEST_HEADER.unpack_from(datagram)[4]
    _check_frame(datagram, REQUEST_OVERHEAD, len(datagram), True, request_id, RemoteProtocolError, 400)
    return Request(request_id, datagram[REQUEST_OVERHEAD:])


def _decode_entries(datagram: bytes, flags: int, request: bool) -> list[tuple[int, bytes]]:
    """The entries of a batch as ``(request id, frame)`` pairs: of requests (errors with status hint
    400) or of replies (502)."""
    status_hint = 400 if request else 502
    what, noun = ("request batch", "requests") if request else ("reply batch", "replies")
    _check_flags(flags, status_hint)
    size = len(datagram)
    if size < BATCH_OVERHEAD:
        raise _error(f"{what} of {size} bytes ends inside its {BATCH_OVERHEAD}-byte header", status_hint=status_hint)
    count = BATCH_HEADER.unpack_from(datagram)[4]
    if count == 0:
        raise _error(f"{what} with no {noun}", status_hint=status_hint)
    entries = []
    pos = BATCH_OVERHEAD
    consumer = -1
    for index in range(count):
        if pos + ENTRY_OVERHEAD > size:
            raise _error(
                f"{what} ends inside the header of entry {index} of {count} (offset {pos})", status_hint=status_hint
            )
        request_id, length = ENTRY.unpack_from(datagram, pos)
        if consumer == -1:
            consumer = request_id >> CONSUMER_SHIFT
        elif request_id >> CONSUMER_SHIFT != consumer:
            raise _error(
                f"entry {index} is for consumer {request_id >> CONSUMER_SHIFT}, entry 0 for consumer {consumer}",
                status_hint=status_hint,
                request_id=request_id,
            )
        start = pos + ENTRY_OVERHEAD
        if length > size - start:
            raise _error(
                f"entry {index} declares {length} bytes but only {size - start} remain (offset {pos})",
                status_hint=status_hint,
                request_id=request_id,
            )
        end = start + length
        _check_frame(datagram, start, end, request, request_id, RemoteProtocolError, status_hint)
        entries.append((request_id, datagram[start:end]))
        pos = end
    if pos != size:
        raise _error(
            f"{size - pos} bytes of trailing garbage after {count} {noun} (offset {pos})", status_hint=status_hint
        )
    return entries


def _check_frame(
    data: bytes, start: int, end: int, request: bool, request_id: int, error: type, status_hint: int
) -> None:
    """Check that ``data[start:end]`` is exactly one Dubbo frame, a request or a response (the
    error's text is formatted only when there is one: this runs for every call)."""
    what = "request" if request else "response"
    length = end - start
    if length < HEADER_LENGTH:
        problem = f"{length} bytes, shorter than the {HEADER_LENGTH}-byte Dubbo header"
    else:
        # The three header fields this needs, read byte by byte: unpacking the whole header made
        # five ints, the 64-bit request id among them, for every call.
        magic = data[start] << 8 | data[start + 1]
        dubbo_flags = data[start + 2]
        at = start + 12  # the body length, big-endian, in two halves (each fits a C int, the whole may not)
        high, low = data[at] << 8 | data[at + 1], data[at + 2] << 8 | data[at + 3]
        body_length = high << 16 | low
        if magic != DUBBO_MAGIC:
            problem = f"bad Dubbo magic 0x{magic:04x}"
        elif body_length != length - HEADER_LENGTH:
            problem = f"Dubbo header declares a body of {body_length} bytes, {length - HEADER_LENGTH} present"
        elif bool(dubbo_flags & FLAG_REQUEST) != request:
            problem = f"Dubbo flags 0x{dubbo_flags:02x} are not those of a {what}"
        else:
            return
    problem = f"Dubbo {what} frame of call {request_id:#018x}: {problem}"
    if error is RemoteProtocolError:
        raise _error(problem, status_hint=status_hint, request_id=request_id)
    raise error(problem, status_hint=status_hint, request_id=request_id)


def rewrite_id(frame: bytes, request_id: int) -> bytes:
    """``frame`` (a Dubbo frame) with ``request_id`` in its header, bytes 4 to 12; the rest unchanged:
    how the provider sidecar gives a call its upstream id, and its reply the tunnel id back.

    >>> rewrite_id(bytes.fromhex("dabbc200" "0000000000000007" "00000000"), 0x0102).hex()
    'dabbc200000000000000010200000000'
    """
    return frame[:4] + _ID.pack(request_id) + frame[12:]


def hex_id(request_id: int) -> str:
    """A tunnel request id as it appears in the logs: 16 hex digits.

    >>> hex_id(0x0007_0000_0001_0002)
    '0007000000010002'
    """
    return f"{request_id:016x}"


import_c_accel(globals(), "sidecar.codecs._c_tunnel")
