"""The consumer's side of the tunnel: one UDP socket, the balancer, and the table of calls in flight.

:meth:`TunnelCaller.submit` starts one HTTP call: stamp a request id, ask the
:class:`~sidecar.policies.balancer.Balancer` for a provider, send the REQUEST datagram (or leave it in
the balancer's queue until a slot frees); the call's ``done`` callback gets the reply, or the error,
once. :meth:`TunnelCaller.call` does the same and sleeps until then, for a greenlet.

Toward a provider whose registry entry says ``batch``, the calls sent in one turn of the hub's loop
are collected and sent by one callback at the end of that turn, packed into REQUEST_BATCH datagrams
(:func:`~sidecar.codecs.tunnel.batch_requests`; a call alone still goes as its REQUEST): one
datagram, one system call and one wake-up of the provider for many calls. Everything else stays per
call: the request id, the deadline, the balancer's slot and its accounting of the answer.

Callbacks of the hub's loop do the rest, on a non-blocking socket (no greenlet wakes per datagram):

* the reader, when the socket is readable, takes up to ``DRAIN`` REPLY_BATCH datagrams off it and
  hands each reply to its call's ``done``; the queued calls that the replies free slots for are sent
  before any ``done`` runs, so that a provider's slot waits neither for the HTTP replies nor for the
  end of the turn; a reply whose
  call is unknown (late, after its 504; duplicate; or never ours) or that comes from another address
  than the call went to is dropped and counted, never delivered; with tunnel ``keys`` so is a datagram
  whose tag or timestamp does not check out (:class:`~sidecar.codecs.tunnel_auth.TunnelAuth`; a replayed
  reply finds its call gone, so no replay cache is needed here), and every REQUEST or REQUEST_BATCH
  is tagged (a batch as a whole, when it is sent);
* the sweeper, every ``TICK``, ends the calls whose deadline passed: 504 for a call that went out,
  503 with ``Retry-After`` for one that never got a provider slot; and lets the balancer release
  queued calls when an ejection ends. While replies come, the reader carries it
  (:class:`~sidecar.runtime.periodic.Periodic`): its own timer fires only after a ``TICK`` without
  replies, and does not wake a busy loop by itself;
* the writer, only while the socket buffer is full, sends the datagrams that waited for room.

Every call gets the same timeout, so deadlines are in the order calls start and the sweeper only looks
at the front of a deque of request ids; the id of a call that ended leaves it as soon as a sweep finds
it in front, so the deque holds about the calls in flight, not every call of the last timeout. Balancer
time is this module's monotonic clock in seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import socket as _socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence

import gevent
from gevent import socket
from gevent.hub import Waiter, get_hub

from sidecar._accel import import_c_accel, module_name
from sidecar.codecs import tunnel
from sidecar.codecs.dubbo_messages import Status
from sidecar.codecs.tunnel_auth import TRAILER_SIZE, AuthError, TunnelAuth
from sidecar.errors import RemoteProtocolError
from sidecar.policies.balancer import ALL_EJECTED, NO_PROVIDER, QUEUE_FULL, Balancer, Outcome
from sidecar.policies.histogram import Histogram
from sidecar.runtime.datagrams import DatagramSender
from sidecar.runtime.periodic import Periodic
from sidecar.runtime.registry import ProviderEntry, format_address

__all__ = ["CallError", "TunnelCaller"]

log = logging.getLogger(module_name(__name__))

RECV_BUFFER = 4 * 1024 * 1024  # asked of the kernel for the UDP socket; bursts of replies fit
# Enum members and values bound once: an enum class resolves its members through a Python-level __getattr__.
_OK, _ERROR, _TIMEOUT = Outcome.OK, Outcome.ERROR, Outcome.TIMEOUT
_STATUS_OK, _REQUEST_BATCH = int(Status.OK), int(tunnel.Kind.REQUEST_BATCH)
# The tunnel codec's functions used per call, bound once: a module's attribute costs the compiled twin a
# lookup each time, a global of its own almost nothing.
_STAMP_MASK, _encode_request, _decode_replies, _batch_requests = (
    tunnel.STAMP_MASK,
    tunnel.encode_request,
    tunnel.decode_replies,
    tunnel.batch_requests,
)


class CallError(Exception):
    """A call that ends without a reply: ``status`` is the HTTP status, ``reason`` one line saying
    why, ``headers`` any extra reply headers (``Retry-After``); ``request_id`` (the tunnel request id)
    and ``provider`` (the provider it went to, if any) once the call waited (None when rejected at once)."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers
        self.request_id: int | None = None
        self.provider: str | None = None


class _Pending:
    """A call in flight, or queued for a provider slot."""

    __slots__ = ("done", "datagram", "deadline", "provider", "address", "sent")

    def __init__(self, done: Callable[[object], None], datagram: bytes, deadline: float):
        self.done: Callable[[object], None] | None = done  # gets the result once; None after
        # The REQUEST datagram, not tagged yet (tagged when sent, alone or in a batch); None once sent.
        self.datagram: bytes | None = datagram
        self.deadline = deadline
        self.provider: str | None = None  # None while queued
        self.address: tuple[str, int] | None = None  # where it was sent; a reply must come from there
        self.sent = 0.0


class TunnelCaller:
    """Calls over the tunnel for one consumer (one worker process); see the module docstring."""

    TICK = 0.02  # seconds between sweeps: the resolution of deadlines
    DRAIN = 64  # datagrams read per turn of the loop
    BACKLOG = 65536  # datagrams that may wait for room in the socket buffer; past that they are dropped
    RESOLVE_RETRY = 5.0  # seconds before an update with a host name that did not resolve is tried again

    def __init__(
        self,
        *,
        consumer_id: int,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        threshold: int = 200,
        queue_size: int = 1024,
        call_timeout: float = 3.0,
        retry_after: int = 1,
        datagram_limit: int = tunnel.DEFAULT_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        keys: Sequence[bytes] = (),
        replay_window: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.consumer_id = consumer_id
        self.auth = TunnelAuth(keys, window_ms=int(replay_window * 1000)) if keys else None
        self.wall_clock = wall_clock
        self._request_limit = datagram_limit - (TRAILER_SIZE if keys else 0)  # room for the trailer
        tunnel.max_request_frame(self._request_limit)  # ValueError when out of range
        self.bind = bind
        self.threshold = threshold
        self.call_timeout = call_timeout
        self.retry_after = retry_after
        self.datagram_limit = datagram_limit
        self.clock = clock
        self.balancer = Balancer(threshold=threshold, queue_size=queue_size)
        self._ids = tunnel.RequestIds(consumer_id)
        self._pending: dict[int, _Pending] = {}
        self._deadlines: deque[int] = deque()  # request ids in the order of their deadlines (see _sweep_once)
        self._addresses: dict[str, tuple[str, int]] = {}  # provider key -> its tunnel address, known providers only
        self._entries: list[ProviderEntry] = []  # the last registry update
        self._resolving = None  # the timer that tries an update again while a host name does not resolve
        self._sock: _socket.socket | None = None
        self._reader = None  # the read watcher of the socket, from start until stop
        self._sweeper: Periodic | None = None
        self._out: DatagramSender | None = None  # the REQUEST datagrams, sent without blocking
        self._batching: frozenset[str] = frozenset()  # keys of the providers that take REQUEST_BATCH
        self._batches: dict[tuple[str, int], list[bytes]] = {}  # address -> this turn's REQUEST datagrams
        self._flush_scheduled = False
        self._loop = get_hub().loop
        self.counters: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.latency: dict[str, Histogram] = {}  # provider key -> seconds from send to reply

    def __repr__(self) -> str:
        return f"TunnelCaller(consumer_id={self.consumer_id}, pending={len(self._pending)}, {self.balancer!r})"

    @property
    def address(self) -> tuple[str, int]:
        """The bound address of the tunnel socket (after :meth:`start`)."""
        return self._sock.getsockname()[:2]

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        family = _socket.AF_INET6 if ":" in self.bind[0] else _socket.AF_INET
        sock = _socket.socket(family, _socket.SOCK_DGRAM)  # non-blocking; the hub's watchers say when
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, RECV_BUFFER)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, RECV_BUFFER)
        except OSError:  # the kernel caps it; what we get is still the most we may have
            pass
        sock.bind(self.bind)
        sock.setblocking(False)
        self._sock = sock
        loop = self._loop
        self._out = DatagramSender(sock, loop, self.counters, self._send_failed, limit=self.BACKLOG)
        self._reader = loop.io(sock.fileno(), 1)
        self._reader.start(self._read_replies)
        self._sweeper = Periodic(loop, self.TICK, self._sweep_once, clock=self.clock, name="sweep")
        self._sweeper.start()

    def stop(self) -> None:
        """Fail every call still waiting (503, the sidecar is stopping) and close the socket."""
        self._retry_resolving(False)
        if self._reader is not None:
            self._reader.stop()
            self._reader.close()
            self._reader = None
            self._sweeper.stop()
        self._batches.clear()  # their calls fail below; a scheduled flush finds nothing to send
        if self._out is not None:
            self._out.close()
        for request_id in list(self._pending):
            self._fail(request_id, CallError(503, "the consumer sidecar is stopping", self._retry()))
        if self._sock is not None:
            self._sock.close()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def set_providers(self, entries: Iterable[ProviderEntry]) -> None:
        """Make the balancer's providers exactly ``entries`` (a registry's callback). Host names are
        resolved first, by the hub's resolver (only the calling greenlet waits); then the balancer and
        the address table change together. A removed provider's calls in flight still get their replies.

        A host name that does not resolve costs only its own entry: a provider already known keeps its
        last address, a new one is left out, each with a warning, and the update is tried again every
        ``RESOLVE_RETRY`` seconds until every name resolves (or another update comes)."""
        entries = list(entries)
        self._entries = entries
        addresses, unresolved = {}, []
        for entry in entries:
            try:
                info = socket.getaddrinfo(entry.host, entry.port, type=_socket.SOCK_DGRAM)
                addresses[entry.key] = info[0][4][:2]
            except OSError as exc:
                unresolved.append(entry.key)
                known = self._addresses.get(entry.key)
                if known is not None:
                    addresses[entry.key] = known
                log.warning("provider %s: %s does not resolve (%s); %s, trying again in %g s", entry.key,
                            entry.host, exc, f"keeping {format_address(*known)}" if known else "left out",
                            self.RESOLVE_RETRY)  # fmt: skip
        self.counters["unresolved"] += len(unresolved)
        for entry in entries:
            if entry.key not in addresses:
                continue
            threshold = entry.threshold if entry.threshold is not None else self.threshold
            self.balancer.add_provider(entry.key, entry.weight, threshold)
        for key in self.balancer.providers:
            if key not in addresses:
                self.balancer.remove_provider(key)
        self._addresses = addresses
        self._batching = frozenset(entry.key for entry in entries if entry.batch and entry.key in addresses)
        self._retry_resolving(bool(unresolved))
        self._dispatch(self.balancer.release(self.clock()))

    def _retry_resolving(self, wanted: bool) -> None:
        if self._resolving is not None:
            self._resolving.stop()
            self._resolving.close()
            self._resolving = None
        if wanted and self._reader is not None:  # started, not stopped
            self._resolving = self._loop.timer(self.RESOLVE_RETRY)
            self._resolving.start(self._resolve_again)

    def _resolve_again(self) -> None:  # a hub callback: resolving needs a greenlet of its own
        self._resolving.close()
        self._resolving = None
        gevent.spawn(self._apply_again, self._entries)

    def _apply_again(self, entries: list[ProviderEntry]) -> None:
        if entries is self._entries and self._reader is not None:  # no newer update came, and not stopped
            self.set_providers(entries)

    # -- calls ----------------------------------------------------------------------------------

    def submit(self, encode: Callable[[int], bytes], done: Callable[[object], None]) -> None:
        """Start one call: ``encode(request_id)`` gives its Dubbo request frame. ``done`` is called
        once, later, from the hub's greenlets, with ``(response frame, provider key)`` or a
        :class:`CallError` (timeout, queue timeout, stop); it must not block. A call refused at once
        raises :class:`CallError` (no provider, saturated) or the codec's error (status hint 413 for
        a call too large) instead, and ``done`` is never called."""
        now = self.clock()
        request_id = self._ids.next(int(now * 1000) & _STAMP_MASK)
        datagram = _encode_request(request_id, encode(request_id), limit=self._request_limit)
        deadline = now + self.call_timeout
        decision = self.balancer.submit(request_id, deadline, now)
        verdict = decision[0]
        if verdict == "reject":
            raise self._rejection(decision[1])
        pending = _Pending(done, datagram, deadline)
        self._pending[request_id] = pending
        self._deadlines.append(request_id)
        self.counters["calls"] += 1
        if verdict == "send":
            self._send(pending, decision[1], now)
        else:
            self.counters["queued"] += 1

    def call(self, encode: Callable[[int], bytes]) -> tuple[bytes, str]:
        """:meth:`submit` and wait: returns the Dubbo response frame and the key of the provider that
        answered, or raises :class:`CallError` or the codec's error. For a greenlet."""
        waiter = Waiter()
        switch = waiter.switch
        self.submit(encode, lambda result: self._loop.run_callback(switch, result))
        result = waiter.get()
        if isinstance(result, CallError):
            raise result
        return result

    def _rejection(self, reason: str) -> CallError:
        self.counters["rejected"] += 1
        if reason == QUEUE_FULL:
            return CallError(503, "every provider is at its threshold and the wait queue is full", self._retry())
        if reason == NO_PROVIDER:
            return CallError(503, "no provider is known for this service")
        if reason == ALL_EJECTED:
            return CallError(503, "every provider is ejected after repeated timeouts", self._retry())
        return CallError(503, reason)

    def _retry(self) -> tuple[tuple[str, str], ...]:
        return (("Retry-After", str(self.retry_after)),)

    def _send(self, pending: _Pending, key: str, now: float) -> None:
        address = self._addresses[key]
        pending.provider, pending.address, pending.sent = key, address, now
        datagram, pending.datagram = pending.datagram, None  # sent once: the bytes need not wait for the reply
        if key in self._batching:
            batch = self._batches.get(address)
            if batch is None:
                self._batches[address] = [datagram]
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._loop.run_callback(self._flush_requests)  # once the loop ran what was ready this turn
            else:
                batch.append(datagram)
            return
        if self.auth is not None:
            datagram = self.auth.seal(datagram, int(self.wall_clock() * 1000))
        self._out.send(datagram, address)

    def _flush_requests(self) -> None:
        """Send the calls collected this turn for the providers that take batches: per provider, as
        few REQUEST_BATCH datagrams as the size limit allows (a call alone as its REQUEST), each tagged
        as a whole. A callback of the hub's loop: never blocks, never raises into the loop (a call whose
        datagram did not go out ends at its deadline, as for a datagram lost on the way)."""
        self._flush_scheduled = False
        batches, self._batches = self._batches, {}
        if not batches or self._reader is None:  # nothing, or stopped
            return
        auth, send, counters = self.auth, self._out.send, self.counters
        try:
            now_ms = int(self.wall_clock() * 1000) if auth is not None else 0
            for address, datagrams in batches.items():
                if len(datagrams) > 1:
                    datagrams, calls = _batch_requests(datagrams, limit=self._request_limit), len(datagrams)
                    batches_out = sum(1 for datagram in datagrams if datagram[3] == _REQUEST_BATCH)
                    counters["request_batches"] += batches_out
                    counters["batched_calls"] += calls - (len(datagrams) - batches_out)
                for datagram in datagrams:
                    send(datagram if auth is None else auth.seal(datagram, now_ms), address)
        except Exception:  # a bug: logged, not raised into the event loop
            counters["send_errors"] += 1
            log.exception("sending a batch of requests")

    def _send_failed(self, address: tuple[str, int], error: OSError | None) -> None:
        """A REQUEST datagram that did not go out: its call will time out and count against the provider."""
        self.counters["send_errors"] += 1
        if error is not None:
            log.warning("tunnel send to %s failed: %s", format_address(*address), error)

    def _dispatch(self, released: list) -> None:
        now = self.clock()
        for request_id, key in released:
            pending = self._pending.get(request_id)
            if pending is not None:
                self._send(pending, key, now)

    def _wake(self, pending: _Pending, value) -> None:
        done, pending.done = pending.done, None
        if done is not None:
            try:
                done(value)
            except Exception:  # the reader and the sweeper go on whatever a callback does
                log.exception("a call's completion failed")

    def _fail(self, request_id: int, error: CallError) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            error.request_id, error.provider = request_id, pending.provider
            self._wake(pending, error)

    # -- greenlets ------------------------------------------------------------------------------

    def _read_replies(self) -> None:
        """The socket is readable: take up to ``DRAIN`` datagrams, then let the loop go on (it comes
        back at once while more wait)."""
        recvfrom = self._sock.recvfrom
        pending_calls = self._pending
        balancer = self.balancer
        counters, dropped, latency = self.counters, self.dropped, self.latency
        released = []
        answers = []  # (call, its result): woken once the slots they freed are given to queued calls
        now = self.clock()
        for _ in range(self.DRAIN):
            try:
                datagram, source = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # an ICMP error from an earlier send, for one: the next read goes on
                log.debug("tunnel receive failed: %s", e)
                continue
            counters["datagrams_in"] += 1
            if self.auth is not None:
                try:
                    datagram = self.auth.open(datagram, int(self.wall_clock() * 1000))[0]
                except AuthError as e:
                    dropped[e.drop] += 1
                    log.debug("dropped a datagram from %s: %s", source, e.reason)
                    continue
            try:
                replies = _decode_replies(datagram)
            except RemoteProtocolError as e:
                dropped["malformed"] += 1
                log.debug("dropped a datagram from %s: %s", source, e.reason)
                continue
            if replies is None:
                dropped["not a reply"] += 1
                continue
            address = source[:2]
            for request_id, frame in replies:
                pending = pending_calls.get(request_id)
                if pending is None or pending.provider is None:
                    dropped["late or unknown"] += 1
                    continue
                if pending.address != address:
                    dropped["wrong source"] += 1
                    continue
                del pending_calls[request_id]
                provider = pending.provider
                outcome = _OK if frame[3] == _STATUS_OK else _ERROR
                released += balancer.complete(request_id, provider, now, outcome)
                counters["answered"] += 1
                histogram = latency.get(provider)
                if histogram is None:
                    histogram = latency[provider] = Histogram()
                histogram.observe(now - pending.sent)
                answers.append((pending, (frame, provider)))
        if released:  # the queued calls go out before the replies are written: a slot idles for no reply
            self._dispatch(released)
            if self._flush_scheduled:
                self._flush_requests()
        for pending, result in answers:
            self._wake(pending, result)
        self._sweeper.ride(now)  # a sweep due within half a TICK is made here, not by a wake-up of its own

    def _sweep_once(self, now: float) -> None:
        balancer = self.balancer
        for request_id in balancer.expire(now):
            self._fail(request_id, self._queue_timeout())
        released = []
        deadlines = self._deadlines
        while deadlines:
            request_id = deadlines[0]
            pending = self._pending.get(request_id)
            if pending is None:  # answered (or failed): its deadline no longer matters
                deadlines.popleft()
                continue
            if pending.deadline > now:
                break
            deadlines.popleft()
            if pending.provider is None:
                balancer.cancel(request_id)
                self._fail(request_id, self._queue_timeout())
                continue
            released += balancer.complete(request_id, pending.provider, now, _TIMEOUT)
            self.counters["timeouts"] += 1
            waited = now - pending.sent
            self._fail(
                request_id,
                CallError(504, f"no answer from provider {pending.provider} within {waited:.3f} s"),
            )
        released += balancer.release(now)
        self._dispatch(released)

    def _queue_timeout(self) -> CallError:
        self.counters["queue_timeouts"] += 1
        return CallError(
            503,
            f"every provider stayed at its threshold for the whole call timeout ({self.call_timeout:g} s)",
            self._retry(),
        )

    def stats(self) -> dict:
        """Counts of this caller; per provider the balancer's :class:`~sidecar.policies.balancer.ProviderStats`
        and ``latency``, the :class:`~sidecar.policies.histogram.Histogram` of its replies as a dict."""
        providers = {key: dataclasses.asdict(s) for key, s in self.balancer.stats().items()}
        for key, stats in providers.items():
            histogram = self.latency.get(key)
            stats["latency"] = (histogram or Histogram()).to_dict()
        return {
            "consumer_id": self.consumer_id,
            "pending": len(self._pending),
            "queued": self.balancer.queued,
            "counters": dict(self.counters),
            "dropped": dict(self.dropped),
            "providers": providers,
        }


import_c_accel(globals(), "sidecar.runtime._c_caller")
