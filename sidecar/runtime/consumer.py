"""The consumer sidecar: an HTTP/1.1 server that turns each call into a tunnel call.

The HTTP side is :class:`~sidecar.runtime.http_server.HttpServer`: callbacks on the hub's loop, no
greenlet per connection, and the limits that keep one client from starving the others (work per
turn, deadlines, a cap on connections, a budget for buffered bodies). This module is its handler: a
request head is checked before its body is read (:func:`sidecar.codecs.calls.check_route`), a whole
request becomes a call from the path that check returned and the body
(:func:`sidecar.codecs.calls.prepare_call`) that
:meth:`~sidecar.runtime.caller.TunnelCaller.submit` sends, and the reply, when the tunnel reader
hands it over, becomes the response (:func:`sidecar.codecs.calls.reply_for`), written at once.

Errors are sorted here, at the I/O boundary: a malformed request gets its 4xx (the codec's status
hint) with a one-line reason, in JSON on the JSON route; a call that fails gets the status of its
:class:`~sidecar.runtime.caller.CallError`; anything unexpected is logged and gets a 500.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from gevent.hub import get_hub

from sidecar._accel import import_c_accel, module_name
from sidecar.codecs import calls, http1
from sidecar.codecs.dubbo_messages import Serialization
from sidecar.codecs.tunnel import hex_id
from sidecar.errors import ProtocolError
from sidecar.runtime.caller import CallError, TunnelCaller
from sidecar.runtime.collect import Collector
from sidecar.runtime.http_server import HttpServer, Limits
from sidecar.runtime.registry import StaticRegistry, format_address
from sidecar.runtime.settings import ACCESS_LOGGER, ConsumerConfig

__all__ = ["ConsumerSidecar", "listening_socket"]

log = logging.getLogger(module_name(__name__))
access_log = logging.getLogger(ACCESS_LOGGER)

_SERIALIZATIONS = {"hessian2": Serialization.HESSIAN2, "fastjson": Serialization.FASTJSON}
# What each call passes through, bound once: a module's attribute costs the compiled twin a lookup each
# time, a global of its own almost nothing.
_check_route, _prepare_call, _encode_call, _reply_for = (
    calls.check_route,
    calls.prepare_call,
    calls.encode_call,
    calls.reply_for,
)
_get_header, _Response = http1.get_header, http1.Response


def listening_socket(address: tuple[str, int], *, reuse_port: bool = False, backlog: int = 1024) -> socket.socket:
    """A non-blocking TCP socket listening on ``address``; with ``reuse_port`` several processes may
    share it (``SO_REUSEPORT``: the kernel spreads the connections over them)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def limits_of(config: ConsumerConfig) -> Limits:
    """The HTTP server's limits from the consumer's settings."""
    return Limits(
        idle_timeout=config.idle_timeout,
        header_timeout=config.header_timeout,
        request_timeout=config.request_timeout,
        send_timeout=config.send_timeout,
        max_head=config.max_head,
        max_body=config.max_body,
        max_connections=config.max_connections,
        max_buffered=config.max_buffered,
        body_budget=config.body_budget,
        retry_after=config.retry_after,
    )


class ConsumerSidecar:
    """One consumer process (one worker of ``--workers N``), and the handler of its HTTP server: it
    answers every method of :class:`~sidecar.runtime.http_server.Handler` itself (not a subclass, so
    that the compiled build makes it an extension type with typed fields).

    ``listener`` is an already-listening socket (the workers' shared port) or None to bind
    ``config.listen``. ``registry`` defaults to the static list in ``config.providers``. ``keys``
    are the tunnel keys (:func:`sidecar.ops.tunnel_keys.load_keys`); none: datagrams are not tagged.
    """

    def __init__(
        self, config: ConsumerConfig, *, listener=None, registry=None, consumer_id: int | None = None, keys=()
    ):
        self.config = config
        self.registry = registry if registry is not None else StaticRegistry(config.providers)
        if consumer_id is None:
            consumer_id = int.from_bytes(os.urandom(2), "big")
        threshold = max(1, config.threshold // config.workers)
        self.caller = TunnelCaller(
            consumer_id=consumer_id,
            bind=config.tunnel_bind,
            threshold=threshold,
            queue_size=config.queue_size,
            call_timeout=config.call_timeout,
            retry_after=config.retry_after,
            datagram_limit=config.datagram_limit,
            keys=keys,
            replay_window=config.replay_window,
        )
        self._workers = config.workers
        self._listener = listener
        self._server: HttpServer | None = None
        self._serialization = _SERIALIZATIONS[config.serialization]
        self._stopping = False
        self._access_log = config.access_log  # the settings read per call, kept at hand
        self._provider_header = config.provider_header
        self._collector: Collector | None = None  # sets the hub's collect interval while busy (collect.py)
        self.io_collect = 0.0  # the I/O collect interval the hub's loop runs with when busy, once started

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    def start(self) -> None:
        if self.config.io_collect:
            collector = Collector(get_hub().loop, self.config.io_collect, self._busy)
            if collector.start():
                self._collector, self.io_collect = collector, self.config.io_collect
        if self.config.io_collect and not self.io_collect:
            log.warning(
                "io_collect %s s not applied: the hub's loop is not gevent's libev loop", self.config.io_collect
            )
        self.caller.start()
        self.registry.start(self._providers_changed)
        listener = self._listener
        if listener is None:
            listener = listening_socket(self.config.listen, reuse_port=self.config.workers > 1)
        self._server = HttpServer(listener, self, limits_of(self.config))
        self._server.start()

    def _providers_changed(self, entries) -> None:
        workers = self._workers
        entries = [e._replace(threshold=max(1, e.threshold // workers)) if e.threshold else e for e in entries]
        self.caller.set_providers(entries)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, give the calls in flight up to ``timeout`` seconds, then close. Connections
        waiting for a request are closed at once; the others after the reply they are busy with."""
        if self._server is None or self._stopping:
            return
        self._stopping = True
        self._server.stop(timeout)
        self.registry.stop()
        self.caller.stop()
        if self._collector is not None:  # the hub outlives this consumer (tests run many): as it was
            self._collector.stop()
            self._collector = None
            self.io_collect = 0.0

    def _busy(self) -> bool:
        """Whether enough calls are in flight that another socket event is due soon: the loop then
        collects events before it polls again (:class:`~sidecar.runtime.collect.Collector`)."""
        return self.caller.pending >= self.config.io_collect_calls

    def health(self) -> tuple[bool, str]:
        """``(True, "ok")`` while serving: listening, with at least one provider known; else False and why."""
        if self._stopping:
            return False, "draining"
        if self._server is None:
            return False, "not listening"
        if not self.caller.balancer.providers:
            return False, "no provider known"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """``(True, "ok")`` while a call made now would be served (sent, or queued for a slot); else
        False and why: not healthy, no provider known, every provider ejected, or the wait queue full."""
        ok, reason = self.health()
        if not ok:
            return ok, reason
        refusal = self.caller.balancer.refusal(self.caller.clock())
        return (True, "ok") if refusal is None else (False, refusal)

    @property
    def counters(self) -> dict[str, int]:
        """The HTTP side's counts: connections accepted, requests, timeouts, shed, refused, over budget."""
        return dict(self._server.counters) if self._server is not None else {}

    def stats(self) -> dict:
        http = self.counters
        return {
            "connections": http.get("connections", 0),
            "requests": http.get("requests", 0),
            "timeouts": http.get("timeouts", 0),
            "send_timeouts": http.get("send_timeouts", 0),
            "http": {**http, "open": len(self._server.open) if self._server else 0},
            "io_collect": self._collect_stats(),
            **self.caller.stats(),
        }

    def _collect_stats(self) -> dict:
        """The collect interval, whether the next poll waits for it, and the loop's polls since start:
        all, and those after which it collected."""
        collector = self._collector
        if collector is None:
            return {"interval": self.io_collect, "collecting": False, "turns": 0, "busy_turns": 0}
        return {"interval": self.io_collect, "collecting": collector.collecting, "turns": collector.turns,
                "busy_turns": collector.busy_turns}  # fmt: skip

    # -- the HTTP server's handler --------------------------------------------------------------

    def check(self, request: http1.Request) -> str:
        return _check_route(request.method, request.target, request.headers)  # the path, for handle

    def error(self, status: int, reason: str, headers: tuple = (), request: http1.Request | None = None):
        form = request is None or _form(request)
        reply = calls.error_reply(status, reason, form=form, headers=headers)
        return http1.Response(reply.status, reply.headers, reply.body)

    def refused(self, request: http1.Request, error: ProtocolError, connection) -> None:
        self._bad_call(request, error, connection.respond, time.monotonic(), self._client(connection))

    def _client(self, connection) -> str | None:
        """The client's address for the access log; None when the log is off (no cost then)."""
        return format_address(*connection.address[:2]) if self._access_log else None

    def _bad_call(self, request, error: ProtocolError, respond, started, client) -> None:
        form = _form(request)
        reply = calls.error_reply(error.status_hint, error.reason, form=form, headers=getattr(error, "headers", ()))
        self._send(request, reply, respond, started, client)

    def handle(self, request: http1.Request, path: str, body: bytes, connection) -> None:
        respond = connection.respond
        client = self._client(connection)
        started = time.monotonic() if client is not None else 0.0  # for the access log only
        try:
            call = _prepare_call(path, body, self._serialization)
            exchange = _Exchange(self, request, call, respond, started, client)
            self.caller.submit(exchange.encode, exchange.done)
        except CallError as e:
            self._answer(request, None, e, respond, started, client, form=_form(request))
        except ProtocolError as e:
            self._bad_call(request, e, respond, started, client)
        except Exception:
            log.exception("call failed: %s %s", request.method, request.target)
            form = _form(request)
            self._send(request, calls.error_reply(500, "internal error in the consumer sidecar", form=form), respond,
                       started, client)  # fmt: skip

    def _answer(self, request, call, result, respond, started, client, form=True) -> None:
        """The reply to one call: ``result`` is ``(frame, provider)`` or a :class:`CallError`."""
        frame = provider = tunnel_id = None
        if call is not None:
            form = call.form
        try:
            if isinstance(result, CallError):
                tunnel_id, provider = result.request_id, result.provider
                if result.status == 504:
                    log.warning("%s", result.reason, extra={"request_id": hex_id(tunnel_id), "provider": provider})
                reply = calls.error_reply(result.status, result.reason, form=form, headers=result.headers)
            else:
                frame, provider = result
                reply = _reply_for(call, frame)
                if self._provider_header:
                    reply.headers.append(("X-Provider", provider))
        except ProtocolError as e:
            reply = calls.error_reply(e.status_hint, e.reason, form=form, headers=getattr(e, "headers", ()))
        except Exception:
            log.exception("reply failed: %s %s", request.method, request.target)
            reply = calls.error_reply(500, "internal error in the consumer sidecar", form=form)
        self._send(request, reply, respond, started, client, frame, tunnel_id, provider)

    def _send(self, request, reply, respond, started, client, frame=None, tunnel_id=None, provider=None) -> None:
        headers = reply.headers  # a fresh list (Reply)
        request_id = _get_header(request.headers, "x-request-id")
        if request_id is not None:
            headers.append(("X-Request-Id", request_id))
        if client is not None:
            _log_access(request, reply.status, client, started, frame, tunnel_id, provider, request_id)
        respond(_Response(reply.status, headers, reply.body))


class _Exchange:
    """One call from its request to its reply, as the tunnel caller sees it: :meth:`encode` gives
    the call's Dubbo frame once the caller chose its request id, :meth:`done` takes the result. One
    small object per call, where two closures over the same names cost two function objects and the
    cell they share."""

    __slots__ = ("sidecar", "request", "call", "respond", "started", "client")

    def __init__(self, sidecar: ConsumerSidecar, request, call: calls.Call, respond, started: float, client):
        self.sidecar, self.request, self.call = sidecar, request, call
        self.respond, self.started, self.client = respond, started, client

    def encode(self, request_id: int) -> bytes:
        return _encode_call(self.call, request_id, serialization=self.sidecar._serialization)

    def done(self, result) -> None:
        self.sidecar._answer(self.request, self.call, result, self.respond, self.started, self.client)


def _form(request: http1.Request) -> bool:
    """Whether errors about ``request`` are answered in text (the form route), not in JSON."""
    return calls.json_route(request.target) is None


def _log_access(request, status, client, started, frame, tunnel_id, provider, client_request_id) -> None:
    """One line on the access log for a call answered ``status``. The tunnel request id comes from
    the Dubbo response ``frame`` (header bytes 4 to 12) or, for a call that ended without one, from
    its :class:`CallError` (``tunnel_id``)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = {}
    if frame is not None and len(frame) >= 12:
        tunnel_id = int.from_bytes(frame[4:12], "big")
    if tunnel_id is not None:
        fields["request_id"] = hex_id(tunnel_id)
    if client_request_id is not None:
        fields["client_request_id"] = client_request_id
    fields.update(
        client=client,
        method=request.method,
        path=request.target,
        status=status,
        ms=round((time.monotonic() - started) * 1000, 3),
    )
    if provider is not None:
        fields["provider"] = provider
    access_log.info("%s %s %d", request.method, request.target, status, extra=fields)


import_c_accel(globals(), "sidecar.runtime._c_consumer")
