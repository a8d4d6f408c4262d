"""The admin endpoint of a consumer run as ``--workers N``: the supervisor answers for all its workers.

Each worker has its own stats. It serves them, raw (:mod:`sidecar.ops.metrics`: histograms, not
percentiles), with a :class:`~sidecar.ops.admin.AdminServer` on a Unix socket in a private directory
the supervisor made (``worker-INDEX.sock``). The supervisor has no gevent hub: it serves the admin
port with the standard library's ``ThreadingHTTPServer`` on a thread of its own and, for each
request, asks every worker over its socket:

* ``/healthz`` and ``/readyz``: 200 when every worker answers 200 to the same path, else 503 naming
  the first worker that does not and why; ``draining`` once the supervisor is stopping;
* ``/stats`` and ``/metrics``: the workers' stats merged (:func:`sidecar.ops.metrics.merge`), then shown
  as one consumer's. A worker that does not answer (one being restarted) is left out and counted in
  ``unreachable_workers``.

The port holds up under misbehaving clients as a worker's does (:mod:`sidecar.ops.admin`), with the
same rules from :mod:`sidecar.policies.connections`: a request must be whole within
``REQUEST_TIMEOUT`` of the connection's start or previous answer, a full port sheds the connection
that has waited longest, a connection gets at most ``MAX_REQUESTS`` answers. The serving loop looks
for late requests every half second and shuts their sockets down, which ends their threads.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sidecar.ops import metrics
from sidecar.policies.connections import ConnectionLimits

__all__ = ["SupervisorAdmin", "fetch"]

log = logging.getLogger(__name__)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def fetch(path: str, target: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """``GET target`` from the admin server on the Unix socket ``path``: ``(status, body)``."""
    conn = _UnixConnection(path, timeout)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class SupervisorAdmin:
    """The supervisor's admin port; see the module docstring. :meth:`bind` before forking the
    workers (a port in use fails early), :meth:`start` once they are ready, :meth:`close` at the end."""

    FETCH_TIMEOUT = 2.0  # seconds a worker has to answer

    def __init__(self, listen: tuple[str, int], workers: int, stopping: Callable[[], bool]):
        self.listen, self.workers, self.stopping = listen, workers, stopping
        self.directory = tempfile.mkdtemp(prefix="dubbomesh-admin-")  # mode 0700: ours only
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def socket_path(self, index: int) -> str:
        """Where worker ``index`` serves its stats."""
        return os.path.join(self.directory, f"worker-{index}.sock")

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    def bind(self) -> None:
        admin = self
        server_class = _Server6 if ":" in self.listen[0] else _Server
        handler = type("Handler", (_Handler,), {"admin": admin})
        self._server = server_class(self.listen, handler)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="admin", daemon=True)
        self._thread.start()

    def close_in_child(self) -> None:
        """In a forked worker: close the inherited listening socket (the worker does not serve it)."""
        if self._server is not None:
            self._server.socket.close()

    def close(self) -> None:
        """Stop serving and remove the sockets' directory; closing twice is harmless."""
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None:
                server.shutdown()
            server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- what the port answers ------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        return self._every_worker("/healthz")

    def ready(self) -> tuple[bool, str]:
        return self._every_worker("/readyz")

    def _every_worker(self, path: str) -> tuple[bool, str]:
        if self.stopping():
            return False, "draining"
        for index in range(self.workers):
            try:
                status, body = fetch(self.socket_path(index), path, self.FETCH_TIMEOUT)
            except OSError as e:
                return False, f"worker {index} does not answer: {e.strerror or e}"
            if status != 200:
                return False, f"worker {index}: {body.decode(errors='replace').strip()}"
        return True, "ok"

    def raw_stats(self) -> dict:
        """The workers' raw stats merged; ``unreachable_workers`` counts those that did not answer."""
        docs, missing = [], 0
        for index in range(self.workers):
            try:
                status, body = fetch(self.socket_path(index), "/stats", self.FETCH_TIMEOUT)
                if status != 200:
                    raise OSError(f"status {status}")
                docs.append(json.loads(body))
            except (OSError, ValueError) as e:
                missing += 1
                log.debug("no stats from worker %d: %s", index, e)
        merged = metrics.merge(docs)
        merged.setdefault("workers", 0)
        merged["unreachable_workers"] = missing
        return merged

    def stats(self) -> dict:
        raw = self.raw_stats()
        return {**metrics.consumer_view(raw), "unreachable_workers": raw["unreachable_workers"]}

    def metrics(self) -> str:
        return metrics.consumer_metrics(self.raw_stats())


class _Server(ThreadingHTTPServer):
    """Serves each connection on a thread; :class:`ConnectionLimits` says which to shut down."""

    daemon_threads = True

    def __init__(self, address, handler):
        self.limits = ConnectionLimits(max_connections=metrics.ADMIN_LIMITS["max_connections"])
        self.limits_lock = threading.Lock()
        self.shed = self.timed_out = 0
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        with self.limits_lock:
            shed = self.limits.opened(request, deadline=_deadline())
            self.shed += len(shed or ())
        if shed is None:  # every connection is being answered: this one waits for no one
            self.shutdown_request(request)
            return
        for victim in shed:
            _shut(victim)
        super().process_request(request, client_address)

    def service_actions(self) -> None:
        """Between polls of the listening socket (every half second): end the late requests."""
        with self.limits_lock:
            late = self.limits.overdue(time.monotonic())
            self.timed_out += len(late)
        for sock in late:
            _shut(sock)

    def shutdown_request(self, request) -> None:
        with self.limits_lock:
            self.limits.closed(request)
        super().shutdown_request(request)

    def busy(self, request) -> None:
        with self.limits_lock:
            self.limits.busy(request)

    def answered(self, request) -> None:
        with self.limits_lock:
            self.limits.idle(request, deadline=_deadline())


class _Server6(_Server):
    address_family = socket.AF_INET6


def _deadline() -> float:
    return time.monotonic() + metrics.ADMIN_LIMITS["request_timeout"]


def _shut(sock: socket.socket) -> None:
    """End a connection served by another thread: its reads see the end, and it closes the socket."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    admin: SupervisorAdmin
    protocol_version = "HTTP/1.1"
    # each read and write; the whole request is bounded by the server's limits
    timeout = metrics.ADMIN_LIMITS["send_timeout"]
    answers = 0

    def _answer(self) -> None:
        admin = self.admin
        self.server.busy(self.connection)
        self.answers += 1
        if self.answers >= metrics.ADMIN_LIMITS["max_requests"]:
            self.close_connection = True
        try:
            status, headers, body = metrics.answer(
                self.command, self.path, admin.health, admin.stats, admin.metrics, admin.ready
            )
        except Exception:
            log.exception("admin %s %s failed", self.command, self.path)
            status, headers, body = 500, [("Content-Type", metrics.TEXT)], b"internal error of the admin endpoint\n"
        self.send_response(status)
        if self.command != "GET" or self.close_connection:  # a body we did not read may follow, or enough
            self.close_connection = True
            self.send_header("Connection", "close")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.answered(self.connection)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("admin: " + format, *args)
