"""The etcd v3 registry: provider sidecars register themselves, consumer sidecars watch the list.

Layout in etcd (one key per provider sidecar, DESIGN.md §1)::

    /dubbomesh/{interface}/{host}:{port}  ->  {"weight": 200.0, "threshold": null, "batch": true}

``host:port`` is the provider sidecar's tunnel address as consumers reach it (``[v6]:port`` for IPv6);
``threshold`` is null when the consumer's default applies; ``"batch": true`` says the provider takes
several calls in one REQUEST_BATCH datagram (every provider sidecar of this version registers it; a
value without it, as older providers write, gets one datagram per call). The key is attached to a lease with a TTL
that the provider keeps alive (every TTL/3): a provider that dies without deregistering disappears
when the lease expires; one that stops gracefully deletes its key and revokes its lease.

- :class:`EtcdRegistration` (provider): grants a lease, puts the key, refreshes the lease. Etcd
  unreachable at start or later: a warning on the log, the tunnel keeps serving, registration is
  retried with backoff (a new lease when the old one expired meanwhile).
- :class:`EtcdRegistry` (consumer; the interface of :class:`sidecar.runtime.registry.StaticRegistry`): loads
  the prefix (a range read, which also gives the store's revision), hands the whole list to
  ``on_change``, then watches the prefix from the revision after that read and hands over the list
  again after every change (puts, deletes, lease expiries). Etcd unreachable: a warning, the last
  known providers stay (none at start: calls get 503 "no provider"), and it reconnects with backoff
  and resyncs (full read, then watch from the revision after it). A watch silent for ``idle_resync``
  seconds is also resynced, so a peer that vanished without closing the connection is noticed.

The client library is ``etcd3gw`` (OpenStack, Apache-2.0, on PyPI; used by Neutron and Tooz): it talks
to etcd's JSON gateway (``/v3/...`` from etcd 3.4 on, which is what Debian 12's ``etcd-server`` 3.4
serves; etcd3gw discovers the path from ``/version``) over ``requests``. It is plain blocking
Python, so it works under gevent without monkey-patching: every call into it runs in gevent's native
threadpool (``hub.threadpool.spawn(fn, ...).get()``), which blocks only the calling greenlet, never the
hub. The gRPC client ``python-etcd3`` is not used: gRPC's own threads and event loop do not cooperate
with gevent and it is unmaintained. The watch stream is read here line by line (one threadpool call per
line) rather than with etcd3gw's ``Watcher``, which cannot start from a revision it learns on
reconnect, hides the end of the stream and swallows errors; etcd3gw still builds the URL and
encodes keys.

The encoding and diffing helpers at the top are pure and tested without etcd.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Callable, Iterable, Mapping

import gevent
import gevent.event

from sidecar.runtime.registry import ProviderEntry, format_address, parse_address, parse_etcd_url

__all__ = [
    "DEFAULT_INTERFACE",
    "PREFIX",
    "EtcdRegistration",
    "EtcdRegistry",
    "apply_events",
    "decode_entry",
    "encode_value",
    "parse_endpoint",
    "provider_key",
    "service_prefix",
]

log = logging.getLogger(__name__)

PREFIX = "/dubbomesh/"
DEFAULT_INTERFACE = "com.alibaba.dubbo.performance.demo.provider.IHelloService"
REQUEST_TIMEOUT = 3.0  # seconds for one request to etcd (connect, and each read of a reply)
BACKOFF_MIN, BACKOFF_MAX = 0.25, 5.0  # seconds between retries while etcd is unreachable; doubles


# -- pure helpers ------------------------------------------------------------------------------------


def parse_endpoint(text: str) -> tuple[str, int]:
    """``etcd://HOST:PORT`` (or ``http://HOST:PORT``) as ``(host, port)``.

    >>> parse_endpoint("etcd://127.0.0.1:2379")
    ('127.0.0.1', 2379)
    """
    return parse_etcd_url(text)


def service_prefix(interface: str) -> str:
    """``/dubbomesh/{interface}/``: every provider key of the interface starts with it."""
    return f"{PREFIX}{interface}/"


def provider_key(interface: str, host: str, port: int) -> str:
    """The etcd key of one provider sidecar.

    >>> provider_key("demo.Hello", "10.0.0.2", 30000)
    '/dubbomesh/demo.Hello/10.0.0.2:30000'
    """
    return service_prefix(interface) + format_address(host, port)


def encode_value(weight: float, threshold: int | None = None, batch: bool = False) -> str:
    """The etcd value of one provider sidecar: its share, its threshold and, when it takes
    REQUEST_BATCH datagrams, ``"batch": true`` (absent means false: what older providers write), as JSON.

    >>> encode_value(200, None)
    '{"weight": 200.0, "threshold": null}'
    >>> encode_value(200, 64, batch=True)
    '{"weight": 200.0, "threshold": 64, "batch": true}'
    """
    fields = {"weight": float(weight), "threshold": threshold}
    if batch:
        fields["batch"] = True
    return json.dumps(fields)


def decode_entry(key: str, value: str | bytes, prefix: str) -> ProviderEntry:
    """The provider a key and its value describe; ValueError saying what is wrong.

    >>> decode_entry("/dubbomesh/i/127.0.0.1:30001", '{"weight": 64, "threshold": 32}', "/dubbomesh/i/")
    ProviderEntry(host='127.0.0.1', port=30001, weight=64.0, threshold=32, batch=False)
    """
    if not key.startswith(prefix):
        raise ValueError(f"key {key!r} is not under {prefix!r}")
    host, port = parse_address(key[len(prefix) :])
    try:
        fields = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"key {key!r}: the value is not JSON: {value!r}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"key {key!r}: the value must be a JSON object, not {value!r}")
    weight, threshold = fields.get("weight"), fields.get("threshold")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < float("inf"):
        raise ValueError(f"key {key!r}: the weight must be a positive number, not {weight!r}")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1):
        raise ValueError(f"key {key!r}: the threshold must be null or a whole number of at least 1, not {threshold!r}")
    batch = fields.get("batch", False)
    if not isinstance(batch, bool):
        raise ValueError(f"key {key!r}: batch must be true or false, not {batch!r}")
    return ProviderEntry(host, port, float(weight), threshold, batch)


def apply_events(
    current: Mapping[str, ProviderEntry], events: Iterable[dict], prefix: str
) -> tuple[dict[str, ProviderEntry], list[str]]:
    """The providers after a batch of watch ``events`` (as the JSON gateway sends them: ``type`` absent
    for PUT, ``"DELETE"``; ``kv.key`` and ``kv.value`` base64), keyed by etcd key, and a message for
    each event that could not be read (that key is left out)."""
    providers, problems = dict(current), []
    for event in events:
        kv = event.get("kv", {})
        key = _b64(kv.get("key", "")).decode("utf-8", "replace")
        if event.get("type") == "DELETE":
            providers.pop(key, None)
            continue
        try:
            providers[key] = decode_entry(key, _b64(kv.get("value", "")), prefix)
        except ValueError as e:
            providers.pop(key, None)
            problems.append(str(e))
    return providers, problems


def decode_range(reply: dict, prefix: str) -> tuple[int, dict[str, ProviderEntry], list[str]]:
    """A range reply of the JSON gateway as ``(revision, providers by key, problems)``."""
    revision = int(reply.get("header", {}).get("revision", 0))
    providers, problems = apply_events({}, ({"kv": kv} for kv in reply.get("kvs", ())), prefix)
    return revision, providers, problems


def _b64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def _e64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _range_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


# -- I/O -----------------------------------------------------------------------------------------------


def _blocking(fn, *args):
    """``fn(*args)`` in gevent's native threadpool: the calling greenlet waits, the hub runs on. Its
    exception is raised here (caught in the thread, where gevent would print it as a crash)."""
    ok, value = gevent.get_hub().threadpool.spawn(_outcome, fn, args).get()
    if not ok:
        raise value
    return value


def _outcome(fn, args) -> tuple[bool, object]:
    try:
        return True, fn(*args)
    except Exception as e:
        return False, e


def _client(host: str, port: int, timeout: float):
    import etcd3gw

    return etcd3gw.client(host=host, port=port, timeout=timeout)


def _failures() -> tuple[type[BaseException], ...]:
    """What a call to an etcd that is down, restarting or misbehaving raises."""
    import etcd3gw.exceptions
    import requests

    return etcd3gw.exceptions.Etcd3Exception, requests.RequestException, OSError, ValueError, KeyError


class EtcdRegistration:
    """A provider sidecar's key, kept in etcd while it runs: :meth:`start` returns at once (the
    registration goes on in a greenlet, retried while etcd is unreachable); :meth:`stop` deletes the
    key and revokes the lease."""

    def __init__(
        self,
        endpoint: str,
        address: tuple[str, int],
        weight: float,
        threshold: int | None = None,
        *,
        batch: bool = False,
        interface: str = DEFAULT_INTERFACE,
        lease_ttl: int = 10,
        timeout: float = REQUEST_TIMEOUT,
    ):
        self.endpoint = endpoint
        self.host, self.port = parse_endpoint(endpoint)
        self.key = provider_key(interface, *address)
        self.value = encode_value(weight, threshold, batch)
        self.lease_ttl = max(1, int(lease_ttl))
        self.timeout = timeout
        self.registered = gevent.event.Event()
        self._client = None
        self._lease = None
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        if self._greenlet is None:
            self._client = _client(self.host, self.port, self.timeout)
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop refreshing; delete the key and revoke the lease (each bounded by the request timeout)."""
        if self._greenlet is None:
            return
        self._greenlet.kill()
        self._greenlet = None
        lease, self._lease = self._lease, None
        if lease is None:
            return
        try:
            _blocking(self._client.delete, self.key)
            _blocking(lease.revoke)
            log.info("deregistered %s from etcd at %s", self.key, self.endpoint)
        except _failures() as e:
            log.warning("could not deregister %s from etcd at %s (the lease expires instead): %s", self.key,
                        self.endpoint, _reason(e))  # fmt: skip

    def _run(self) -> None:
        failures = _failures()
        backoff = BACKOFF_MIN
        failing = False
        while True:
            try:
                self._lease = None
                self.registered.clear()
                lease = _blocking(self._client.lease, self.lease_ttl)
                self._lease = lease
                _blocking(self._client.put, self.key, self.value, lease)
                self.registered.set()
                log.info("registered %s in etcd at %s (lease TTL %d s)", self.key, self.endpoint, self.lease_ttl)
                failing, backoff = False, BACKOFF_MIN
                while True:
                    gevent.sleep(self.lease_ttl / 3)
                    if _blocking(lease.refresh) <= 0:
                        log.warning("the etcd lease of %s expired; registering again", self.key)
                        break
            except failures as e:
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "cannot register %s in etcd at %s: %s; still serving, retrying in %.2g s",
                        self.key, self.endpoint, _reason(e), backoff)  # fmt: skip
                failing = True
                gevent.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def __repr__(self) -> str:
        return f"EtcdRegistration({self.endpoint}, {self.key})"


class EtcdRegistry:
    """The providers of ``interface`` as etcd at ``endpoint`` lists them, for the consumer sidecar.

    :meth:`start` waits up to ``timeout`` for the first read (etcd down: it warns and returns; the
    consumer starts with no provider) and goes on watching in a greenlet; ``on_change`` is called on
    the hub with the whole list whenever it changes."""

    def __init__(
        self,
        endpoint: str,
        interface: str = DEFAULT_INTERFACE,
        *,
        timeout: float = REQUEST_TIMEOUT,
        idle_resync: float = 30.0,
    ):
        self.endpoint = endpoint
        self.host, self.port = parse_endpoint(endpoint)
        self.prefix = service_prefix(interface)
        self.timeout = timeout
        self.idle_resync = idle_resync
        self.providers: dict[str, ProviderEntry] = {}
        self._published: list[ProviderEntry] | None = None
        self._on_change: Callable[[list[ProviderEntry]], None] | None = None
        self._client = None
        self._response = None
        self._greenlet: gevent.Greenlet | None = None
        self._first = gevent.event.Event()

    def start(self, on_change: Callable[[list[ProviderEntry]], None]) -> None:
        if self._greenlet is not None:
            return
        self._on_change = on_change
        self._client = _client(self.host, self.port, self.timeout)
        self._greenlet = gevent.spawn(self._run)
        self._first.wait(self.timeout + 1.0)

    def stop(self) -> None:
        if self._greenlet is None:
            return
        self._greenlet.kill(block=False)
        self._greenlet = None
        self._close_stream()

    def _run(self) -> None:
        failures = _failures()
        backoff = BACKOFF_MIN
        failing = False
        while True:
            try:
                reply = _blocking(self._read_range)
                revision, providers, problems = decode_range(reply, self.prefix)
                for problem in problems:
                    log.warning("etcd at %s: ignoring %s", self.endpoint, problem)
                if failing:
                    log.warning("etcd at %s is reachable again: %d providers", self.endpoint, len(providers))
                failing, backoff = False, BACKOFF_MIN
                self._publish(providers)
                self._first.set()
                self._watch(revision + 1)
            except failures as e:
                if not failing:
                    known = len(self._published or ())
                    keeping = f"keeping the {known} last known providers" if known else "no provider known yet (503)"
                    log.warning("etcd at %s is unreachable: %s; %s; retrying with backoff", self.endpoint,
                                _reason(e), keeping)  # fmt: skip
                else:
                    log.debug("etcd at %s still unreachable: %s", self.endpoint, _reason(e))
                failing = True
                self._first.set()
                self._close_stream()
                gevent.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _range_request(self) -> dict:
        return {"key": _e64(self.prefix), "range_end": _e64(_range_end(self.prefix))}

    def _read_range(self) -> dict:  # blocking: in the threadpool
        return self._client.post(self._client.get_url("/kv/range"), json=self._range_request())

    def _open_watch(self, start_revision: int):  # blocking: in the threadpool
        request = {"create_request": {**self._range_request(), "start_revision": start_revision}}
        url = self._client.get_url("/watch")
        return self._client.session.post(url, json=request, stream=True, timeout=(self.timeout, self.idle_resync))

    def _watch(self, start_revision: int) -> None:
        """Follow the watch stream until it ends (idle for ``idle_resync``, closed, compacted)."""
        import requests

        self._response = _blocking(self._open_watch, start_revision)
        if self._response.status_code != 200:
            raise ConnectionError(f"the watch request got HTTP {self._response.status_code}")
        lines = self._response.iter_lines()
        while True:
            try:
                line = _blocking(next, lines, None)
            except requests.ConnectionError as e:
                if "timed out" in str(e):  # silent for idle_resync seconds: read everything again
                    log.debug("etcd watch idle; resyncing")
                    self._close_stream()
                    return
                raise
            if line is None:
                raise ConnectionError("the watch stream ended (etcd stopped?)")
            if not line.strip():
                continue
            message = json.loads(line)
            result = message.get("result")
            if result is None:
                raise ValueError(f"the watch failed: {message.get('error', message)}")
            if result.get("canceled") or int(result.get("compact_revision", 0) or 0):
                raise ValueError(f"the watch was cancelled: {result.get('cancel_reason') or 'compacted'}")
            if "events" in result:
                providers, problems = apply_events(self.providers, result["events"], self.prefix)
                for problem in problems:
                    log.warning("etcd at %s: ignoring %s", self.endpoint, problem)
                self._publish(providers)

    def _publish(self, providers: dict[str, ProviderEntry]) -> None:
        self.providers = providers
        entries = sorted(providers.values())
        if entries != self._published:
            log.info("providers from etcd: %s", ", ".join(e.key for e in entries) or "none")
            self._published = entries
            self._on_change(list(entries))

    def _close_stream(self) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        try:  # wakes the thread blocked reading the stream (as etcd3gw's Watcher.stop does)
            with socket.fromfd(response.raw._fp.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, ValueError, OSError):
            pass
        response.close()

    def __repr__(self) -> str:
        return f"EtcdRegistry({self.endpoint}, {self.prefix})"


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or getattr(error, "detail_text", None) or ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
