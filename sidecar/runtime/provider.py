"""The provider sidecar: tunnel datagrams in, Dubbo over pooled TCP to the service, replies back.

One UDP socket receives REQUEST datagrams from any number of consumer sidecars, and REQUEST_BATCH
datagrams from those that know (by its registry entry) that this sidecar takes them: each call of a
batch is handled exactly as if it had come alone. Each call gets a
fresh upstream request id (consumers cannot know each other's ids), its Dubbo frame is sent to the
service through a :class:`~sidecar.runtime.upstream.DubboPool` with those 8 header bytes rewritten, and the
:class:`CallTable` remembers ``upstream id -> (consumer address, tunnel request id, start)``. A reply
gets the tunnel id written back into its header and goes, by datagram, to the address its call came
from; the replies that become ready in one turn of the event loop are packed per consumer with
:class:`~sidecar.codecs.tunnel.ReplyBatcher` and sent by one callback of the event loop at the end of that
turn (a datagram the socket does not take at once waits in the
:class:`~sidecar.runtime.datagrams.DatagramSender`'s backlog for a write watcher).

No greenlet runs per call: the tunnel socket is read by a callback of the hub's loop (a read watcher;
at most ``BURST`` datagrams per turn, then the loop goes on), and the service's replies come in by the
pool's own read watchers; greenlets are left to the pool's connecting (and waiting for a connection's
end), its heartbeats and its writes that must wait for the kernel, and to the sweep for calls past
their timeout.

Nothing waits for a deadline that need not: a call the service cannot get (no connection up) or
whose connection dies is answered at once with a Dubbo error response (status ``SERVICE_ERROR``)
that says why, so the consumer answers 502 instead of 504. A call the service never answers is
forgotten after ``call_timeout`` (the consumer has given up by then), so the table stays bounded.
Datagrams that are not requests, or not well formed, are dropped and counted by reason; a request
whose frame is broken but whose id is readable is answered with ``BAD_REQUEST``. A request batch is
decoded whole before any of its calls is forwarded: a malformed one is dropped as a whole and counted
(``malformed request batch``), never half served.

Who may send (:class:`~sidecar.codecs.tunnel_auth.SourcePolicy`): the sources in ``allow_sources`` when
given; else anyone when the tunnel is keyed, and loopback only when it is not. With ``keys``, every
datagram must carry a valid tag and a timestamp within ``replay_window`` seconds of this host's
clock, a call (alone or in a batch) whose id was already seen in that time is a replay, and every
reply is tagged
(:class:`~sidecar.codecs.tunnel_auth.TunnelAuth`); what fails is dropped and counted, never forwarded.
"""

from __future__ import annotations

import ipaddress
import logging
import socket as _socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import gevent
import gevent.event

from sidecar._accel import import_c_accel, module_name
from sidecar.codecs import tunnel
from sidecar.codecs.dubbo import encode
from sidecar.codecs.dubbo_messages import FLAG_EVENT, FLAG_TWOWAY, SERIALIZATION_MASK, Response, Serialization, Status
from sidecar.codecs.tunnel import hex_id, rewrite_id
from sidecar.codecs.tunnel_auth import TRAILER_SIZE, AuthError, ReplayCache, SourcePolicy, TunnelAuth
from sidecar.errors import LocalProtocolError, RemoteProtocolError, UpstreamUnavailable
from sidecar.runtime.datagrams import DatagramSender
from sidecar.runtime.upstream import DubboPool

__all__ = ["ProviderSidecar", "CallTable", "Call", "rewrite_id"]

log = logging.getLogger(module_name(__name__))

_ID = struct.Struct(">Q")
_SERIALIZATIONS = frozenset(s.value for s in Serialization)
_READ = 1  # libev's EV_READ


class Call(NamedTuple):
    """One call in flight upstream: who asked (``address``), under which tunnel id, when, and the
    Dubbo flags byte of its request (for the serialization of an error reply)."""

    address: tuple[str, int]
    tunnel_id: int
    started: float
    flags: int


class CallTable:
    """``upstream id -> Call`` for the calls in flight, with ids from a counter.

    Every call gets the same timeout and ids count up, so the dict's insertion order is also the
    order of deadlines: :meth:`expire` stops at the first call that is still young.

    >>> table = CallTable(timeout=10.0)
    >>> uid = table.add(("127.0.0.1", 5000), 0x77, 100.0, 0xC2)
    >>> table.pop(uid).tunnel_id, table.pop(uid)
    (119, None)
    >>> uid = table.add(("127.0.0.1", 5000), 0x78, 100.0, 0xC2)
    >>> [call.tunnel_id for _, call in table.expire(110.0)], len(table)
    ([120], 0)
    """

    __slots__ = ("timeout", "_calls", "_next")

    def __init__(self, *, timeout: float, first_id: int = 1):
        self.timeout = timeout
        self._calls: dict[int, Call] = {}
        self._next = first_id

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, address: tuple[str, int], tunnel_id: int, now: float, flags: int) -> int:
        """Remember a call; returns its fresh upstream id."""
        upstream_id = self._next
        self._next = (upstream_id + 1) & 0x7FFF_FFFF_FFFF_FFFF or 1  # the top half is the pool's heartbeats
        self._calls[upstream_id] = Call(address, tunnel_id, now, flags)
        return upstream_id

    def pop(self, upstream_id: int) -> Call | None:
        return self._calls.pop(upstream_id, None)

    def expire(self, now: float) -> list[tuple[int, Call]]:
        """Remove and return the calls started ``timeout`` or more seconds before ``now``."""
        oldest = now - self.timeout
        expired = []
        for upstream_id, call in self._calls.items():
            if call.started > oldest:
                break
            expired.append((upstream_id, call))
        for upstream_id, _ in expired:
            del self._calls[upstream_id]
        return expired

    def drain(self) -> list[tuple[int, Call]]:
        """Remove and return every call."""
        calls = list(self._calls.items())
        self._calls.clear()
        return calls


def error_reply(tunnel_id: int, flags: int, status: int, message: str) -> bytes:
    """The Dubbo response frame with ``status`` and ``message`` for the call ``tunnel_id`` whose
    request had the flags byte ``flags`` (the reply uses its serialization when we speak it)."""
    serialization = flags & SERIALIZATION_MASK
    if serialization not in _SERIALIZATIONS:
        serialization = Serialization.HESSIAN2
    return encode(Response(tunnel_id, status, error_message=message, serialization=serialization))


class ProviderSidecar:
    """The provider sidecar in this process; see the module docstring.

    Arguments:
        listen: the UDP address to bind (port 0 picks a free one; :attr:`address` is the bound one).
        dubbo: the Dubbo service's TCP address.
        weight: this provider's share, for whoever registers it (the sidecar itself does not use it).
        pool_size, heartbeat: the :class:`DubboPool`'s connections and heartbeat interval.
        call_timeout: seconds after which a call the service has not answered is forgotten.
        datagram_limit: the largest reply datagram sent (a tag included).
        keys: tunnel keys (at most 2, the first signs replies); none: datagrams are not tagged.
        replay_window: seconds a tagged datagram's timestamp may differ from ``wall_clock``.
        allow_sources: CIDRs that may send; empty: anyone when keyed, loopback only when not.
    """

    SWEEP = 0.1  # seconds between looks for calls past call_timeout
    BURST = 64  # datagrams read per turn of the loop
    STOP_READ = 16384  # datagrams already received that stop() still reads, at most
    SOCKET_BUFFER = 4 * 1024 * 1024  # asked of the kernel for the UDP socket, both ways

    def __init__(
        self,
        listen: tuple[str, int] = ("127.0.0.1", 30000),
        dubbo: tuple[str, int] = ("127.0.0.1", 20880),
        *,
        weight: float = 100.0,
        pool_size: int = 4,
        call_timeout: float = 10.0,
        heartbeat: float = 60.0,
        datagram_limit: int = tunnel.DEFAULT_LIMIT,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        keys: Sequence[bytes] = (),
        replay_window: float = 30.0,
        allow_sources: Iterable[str] = (),
        wall_clock: Callable[[], float] = time.time,
    ):
        if call_timeout <= 0:
            raise ValueError(f"call_timeout must be positive, not {call_timeout}")
        self.listen = listen
        self.dubbo = dubbo
        self.weight = weight
        self.call_timeout = call_timeout
        window_ms = int(replay_window * 1000)
        self.auth = TunnelAuth(keys, window_ms=window_ms) if keys else None
        self.replays = ReplayCache(window_ms=window_ms) if keys else None
        self.sources = SourcePolicy(allow_sources, keyed=bool(keys))
        self._check_source = not self.sources.open_to_all
        self.wall_clock = wall_clock
        self._batch_limit = datagram_limit - (TRAILER_SIZE if keys else 0)  # room for the trailer
        tunnel.max_reply_frame(self._batch_limit)  # ValueError when out of range
        self.datagram_limit = datagram_limit
        self.clock = clock
        self.table = CallTable(timeout=call_timeout)
        self.pool = DubboPool(
            dubbo,
            size=pool_size,
            heartbeat=heartbeat,
            backoff=backoff,
            max_backoff=max_backoff,
            on_reply=self._on_reply,
            on_lost=self._on_lost,
        )
        self.counters: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._sock: _socket.socket | None = None  # non-blocking; the read watcher says when it has datagrams
        self._reader = None  # the read watcher on the hub's loop, from start() to stop()
        self._stopped_event = gevent.event.Event()  # set once stop() is done: serve_forever returns
        self._sweeper: gevent.Greenlet | None = None
        self._loop = gevent.get_hub().loop
        self._outgoing: dict[tuple[tuple[str, int], int], tunnel.ReplyBatcher] = {}
        self._flush_scheduled = False
        self._out: DatagramSender | None = None  # the REPLY_BATCH datagrams, sent without blocking
        self._stopped = False

    def __repr__(self) -> str:
        where = "not started" if self._sock is None else f"{self.address[0]}:{self.address[1]}"
        return f"ProviderSidecar({where} -> {self.dubbo[0]}:{self.dubbo[1]}, in_flight={len(self.table)})"

    @property
    def address(self) -> tuple[str, int]:
        """The bound UDP address (after :meth:`start`)."""
        if self._sock is None:
            raise RuntimeError("the provider sidecar is not started")
        return self._sock.getsockname()[:2]

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the UDP socket, start connecting to the service, start serving; returns at once."""
        family = _socket.AF_INET6 if ":" in self.listen[0] else _socket.AF_INET
        sock = _socket.socket(family, _socket.SOCK_DGRAM)
        sock.setblocking(False)
        for option in (_socket.SO_RCVBUF, _socket.SO_SNDBUF):
            try:
                sock.setsockopt(_socket.SOL_SOCKET, option, self.SOCKET_BUFFER)
            except OSError:  # the kernel caps it; what we get is the most we may have
                pass
        try:
            sock.bind(self.listen)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._out = DatagramSender(sock, self._loop, self.counters, self._send_failed)
        remote = not ipaddress.ip_address(sock.getsockname()[0].split("%")[0]).is_loopback
        level = logging.WARNING if remote and not self.sources.keyed and not self.sources.networks else logging.INFO
        log.log(level, "tunnel on %s: %s", self.listen[0], self.sources.describe())
        self.pool.start()
        self._reader = self._loop.io(sock.fileno(), _READ)
        self._reader.start(self._readable)
        self._sweeper = gevent.spawn(self._sweep_loop)

    def serve_forever(self) -> None:
        """Start if needed and serve until :meth:`stop` is done."""
        if self._stopped:
            return
        if self._sock is None:
            self.start()
        self._stopped_event.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving, give the calls in flight up to ``timeout`` seconds, answer the rest with an
        error, send every reply and close. Stopping twice is harmless."""
        if self._stopped or self._sock is None:
            self._stopped = True
            self._stopped_event.set()
            return
        self._stopped = True
        try:
            self._stop(timeout)
        finally:
            self._stopped_event.set()

    def _stop(self, timeout: float) -> None:
        self._reader.stop()
        self._reader.close()
        self._read_buffered()  # requests that arrived before the stop are served like the others
        end = time.monotonic() + timeout
        while len(self.table) and time.monotonic() < end and self.pool.connections:
            gevent.sleep(0.01)
        self._sweeper.kill()
        for upstream_id, call in self.table.drain():
            self.pool.forget([upstream_id])
            self._answer_error(call, Status.SERVICE_ERROR, "the provider sidecar stopped before the service answered")
        self.pool.close()
        self._flush()
        while self._out.waiting and time.monotonic() < end:  # datagrams the socket did not take at once
            gevent.sleep(0.01)
        self._out.close()
        self._sock.close()

    # -- requests -------------------------------------------------------------------------------

    def _readable(self) -> None:
        """The socket is readable (a callback of the hub's loop, no greenlet switch): handle up to
        ``BURST`` datagrams, then let the loop go on (it calls again while more wait). Never raises
        into the loop: a datagram whose handling fails is logged and counted, and reading goes on."""
        recvfrom = self._sock.recvfrom
        for _ in range(self.BURST):
            try:
                datagram, source = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error from an earlier send, for one: the next call reads on
                log.warning("tunnel receive failed: %s", exc)
                return
            try:
                self._on_datagram(datagram, source)
            except Exception:  # a bug: logged, and the sidecar keeps serving
                self.dropped["internal error"] += 1
                log.exception("handling a datagram from %s", source)

    def _read_buffered(self) -> None:
        """Handle the datagrams already in the socket's buffer (at most ``STOP_READ``), waiting for none."""
        for _ in range(self.STOP_READ):
            try:
                datagram, source = self._sock.recvfrom(65535)
            except OSError:  # BlockingIOError: the buffer is empty
                return
            try:
                self._on_datagram(datagram, source)
            except Exception:
                self.dropped["internal error"] += 1
                log.exception("handling a datagram from %s", source)

    def _on_datagram(self, datagram: bytes, source: tuple) -> None:
        self.counters["datagrams_in"] += 1
        if self._check_source and not self.sources.allows(source[0]):
            self.dropped["source not allowed"] += 1
            return
        if self.auth is not None:
            datagram = self._open(datagram, source)
            if datagram is None:
                return
        try:
            message = tunnel.decode(datagram)
        except RemoteProtocolError as exc:
            self._on_malformed(exc, datagram, source)
            return
        kind = type(message)
        if kind is tunnel.Request:
            self._on_request(message.request_id, message.frame, source[:2])
        elif kind is tunnel.RequestBatch:
            self._on_batch(message, source[:2])
        else:
            self.dropped["reply batch"] += 1

    def _on_batch(self, batch: tunnel.RequestBatch, address: tuple[str, int]) -> None:
        """Each call of a REQUEST_BATCH as if it had come alone; with keys, each id is checked for a
        replay as a REQUEST's is (so a call cannot come again alone or in another batch)."""
        counters = self.counters
        counters["request_batches"] += 1
        counters["batched_calls"] += len(batch.requests)
        replays = self.replays
        now_ms = int(self.wall_clock() * 1000) if replays is not None else 0
        for request in batch.requests:
            if replays is not None and replays.check(request.request_id, tunnel.Kind.REQUEST, now_ms):
                self.dropped["replayed"] += 1
                continue
            self._on_request(request.request_id, request.frame, address)

    def _on_request(self, request_id: int, frame: bytes, address: tuple[str, int]) -> None:
        flags = frame[2]
        if flags & FLAG_EVENT:
            self.dropped["event"] += 1
            return
        if not flags & FLAG_TWOWAY:  # one-way: no reply will come, nothing to remember
            try:
                self.pool.send(frame)
                self.counters["one_way"] += 1
            except UpstreamUnavailable:
                self.dropped["one-way while the service is unavailable"] += 1
            return
        upstream_id = self.table.add(address, request_id, self.clock(), flags)
        try:
            self.pool.send(rewrite_id(frame, upstream_id), upstream_id)
        except UpstreamUnavailable as exc:
            self._answer_error(self.table.pop(upstream_id), Status.SERVICE_ERROR, exc.reason)
            return
        self.counters["forwarded"] += 1

    def _open(self, datagram: bytes, source: tuple) -> bytes | None:
        """The plain datagram once its tag, its timestamp and (for a REQUEST) its freshness check out;
        else None, counted."""
        now_ms = int(self.wall_clock() * 1000)
        try:
            plain, _ = self.auth.open(datagram, now_ms)
        except AuthError as exc:
            self.dropped[exc.drop] += 1
            log.debug("dropped a datagram from %s: %s", source, exc.reason)
            return None
        if plain[3] == tunnel.Kind.REQUEST and len(plain) >= tunnel.REQUEST_OVERHEAD:
            if self.replays.check(_ID.unpack_from(plain, tunnel.HEADER_SIZE)[0], tunnel.Kind.REQUEST, now_ms):
                self.dropped["replayed"] += 1
                return None
        return plain

    def _on_malformed(self, error: RemoteProtocolError, datagram: bytes, source: tuple) -> None:
        kind = datagram[3] if len(datagram) > 3 and error.status_hint == 400 else None
        is_request = kind == tunnel.Kind.REQUEST
        if kind == tunnel.Kind.REQUEST_BATCH:  # none of its calls is served: they end at their deadline
            self.dropped["malformed request batch"] += 1
            log.debug("dropped a request batch from %s: %s", source, error.reason)
            return
        self.dropped["malformed request" if is_request else "malformed"] += 1
        log.debug("dropped a datagram from %s: %s", source, error.reason)
        if is_request and error.request_id is not None:  # the id is readable: tell the caller at once
            call = Call(source[:2], error.request_id, self.clock(), Serialization.HESSIAN2)
            self._answer_error(call, Status.BAD_REQUEST, error.reason)

    # -- replies --------------------------------------------------------------------------------

    def _on_reply(self, upstream_id: int, frame: bytes) -> None:
        call = self.table.pop(upstream_id)
        if call is None:
            self.dropped["late or unknown reply"] += 1
            return
        self.counters["answered"] += 1
        self._queue_reply(call, rewrite_id(frame, call.tunnel_id))

    def _on_lost(self, upstream_ids: list[int], reason: str) -> None:
        host, port = self.dubbo
        message = (
            f"the connection to the Dubbo service {host}:{port} was lost with the call in flight "
            f"(it may or may not have run): {reason}"
        )
        for upstream_id in upstream_ids:
            call = self.table.pop(upstream_id)
            if call is not None:
                self._answer_error(call, Status.SERVICE_ERROR, message)

    def _answer_error(self, call: Call | None, status: int, message: str) -> None:
        if call is None:
            return
        self.counters["upstream_errors" if status == Status.SERVICE_ERROR else "rejected"] += 1
        log.info("answered %s: %s", Status(status).name, message, extra={"request_id": hex_id(call.tunnel_id)})
        self._queue_reply(call, error_reply(call.tunnel_id, call.flags, status, message))

    def _queue_reply(self, call: Call, frame: bytes) -> None:
        tunnel_id = call.tunnel_id
        key = (call.address, tunnel_id >> tunnel.CONSUMER_SHIFT)
        batcher = self._outgoing.get(key)
        if batcher is None:
            batcher = self._outgoing[key] = tunnel.ReplyBatcher(key[1], limit=self._batch_limit)
        try:
            batcher.add(tunnel_id, frame)
        except LocalProtocolError as exc:  # too large for a datagram: a small error reply instead
            self.dropped["reply too large"] += 1
            batcher.add(tunnel_id, error_reply(tunnel_id, call.flags, Status.BAD_RESPONSE, exc.reason))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.run_callback(self._flush)  # runs once this turn of the loop has run what was ready

    def _flush(self) -> None:
        """Send every queued reply: one datagram per consumer unless they do not fit in one. Runs in
        the event loop's own greenlet (or in :meth:`stop`): never blocks."""
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, {}
        auth = self.auth
        try:
            now_ms = int(self.wall_clock() * 1000) if auth is not None else 0
            for (address, _), batcher in outgoing.items():
                for datagram in batcher.flush():
                    self._out.send(datagram if auth is None else auth.seal(datagram, now_ms), address)
        except Exception:  # a bug: logged, not raised into the event loop
            self.dropped["internal error"] += 1
            log.exception("sending replies")

    def _send_failed(self, address: tuple[str, int], error: OSError | None) -> None:
        self.dropped["send failed"] += 1
        log.warning("sending replies to %s failed: %s", address, error or "too many datagrams waiting")

    def _sweep_loop(self) -> None:
        while True:
            gevent.sleep(self.SWEEP)
            expired = self.table.expire(self.clock())
            if expired:
                self.pool.forget([upstream_id for upstream_id, _ in expired])
                self.counters["timeouts"] += len(expired)

    # -- observing ------------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """``(True, "ok")`` while serving: the tunnel socket bound and at least one connection to the
        service up; else False and why (``draining`` once :meth:`stop` began)."""
        if self._stopped:
            return False, "draining"
        if self._sock is None:
            return False, "the tunnel socket is not bound"
        if not self.pool.connections:
            why = f": {self.pool.last_error}" if self.pool.last_error else ""
            return False, f"no connection to the Dubbo service {self.dubbo[0]}:{self.dubbo[1]} is up{why}"
        return True, "ok"

    def stats(self) -> dict:
        """Counts: datagrams in and out, calls forwarded and answered, errors, timeouts, the calls in
        flight, datagrams dropped by reason, and the pool's own counts."""
        counters = self.counters
        return {
            "address": "{}:{}".format(*self.address) if self._sock is not None else None,
            "dubbo": "{}:{}".format(*self.dubbo),
            "weight": self.weight,
            "datagrams_in": counters["datagrams_in"],
            "datagrams_out": counters["datagrams_out"],
            "forwarded": counters["forwarded"],
            "answered": counters["answered"],
            "upstream_errors": counters["upstream_errors"],
            "rejected": counters["rejected"],
            "timeouts": counters["timeouts"],
            "one_way": counters["one_way"],
            "request_batches": counters["request_batches"],
            "batched_calls": counters["batched_calls"],
            "in_flight": len(self.table),
            "dropped": dict(self.dropped),
            "pool": self.pool.stats(),
        }


import_c_accel(globals(), "sidecar.runtime._c_provider")
