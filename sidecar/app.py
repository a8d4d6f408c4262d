"""Running a sidecar as a process: bind, say so, serve until SIGTERM or SIGINT, drain, exit 0.

Each sidecar prints one line on stdout once its sockets are bound, ``listening HOST:PORT`` (port 0
in the configuration picks a free port; the line gives the real one), so scripts and tests can start
it with free ports and wait for that line. With an admin endpoint (``--admin HOST:PORT``,
:mod:`sidecar.ops.admin`) a second line follows, ``admin HOST:PORT``, with its real port.

``--workers N`` (N > 1) makes the consumer a small supervisor: it reserves the port, forks N worker
processes that each bind it with ``SO_REUSEPORT`` and run their own gevent hub, prints the ready line
once every worker accepts, forwards SIGTERM to them, and starts a new worker if one dies. It also
serves the admin port, for all the workers (:mod:`sidecar.ops.admin_supervisor`): each worker shows its
stats on a Unix socket in a private directory of the supervisor's, which merges them per request.

Under systemd (``Type=notify``, :mod:`integrations.systemd`) the process that prints the ready line
also sends ``READY=1`` right after it, ``STOPPING=1`` when a signal starts the drain, and
``WATCHDOG=1`` while it serves if ``WatchdogSec=`` is set: a single sidecar from a greenlet on its hub,
the supervisor from its own loop. Workers of a supervisor send nothing (``NotifyAccess=main``).
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable

from sidecar.ops.config import ConsumerConfig, ProviderConfig
from sidecar.runtime.registry import format_address, parse_address

__all__ = ["run_consumer", "run_provider", "DRAIN_TIMEOUT"]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 5.0  # seconds a stopping sidecar gives the calls in flight
READY_TIMEOUT = 30.0  # seconds the supervisor waits for its workers to bind
GC_THRESHOLD = 50_000  # container allocations between collections of the young generation while serving


def _announce(address: tuple[str, int], out=None, admin: tuple[str, int] | None = None) -> None:
    out = out or sys.stdout
    print(f"listening {format_address(*address)}", file=out, flush=True)
    if admin is not None:
        print(f"admin {format_address(*admin)}", file=out, flush=True)
    from integrations import systemd

    systemd.ready(f"listening {format_address(*address)}")


def _quiet_collector() -> None:
    """Once started: what start-up allocated (modules, tables, sockets) is moved out of the cyclic
    collector's sight for good (``gc.freeze``), and the young generation is collected every
    :data:`GC_THRESHOLD` container allocations instead of Python's 700. A call allocates a few dozen
    containers that reference counting frees; at the default a collection ran every dozen or so calls,
    walking every object the process holds, for nothing (4 to 5% of a busy consumer's CPU)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def _serve_until_signal(start: Callable[[], object], stop: Callable[[], object], notify: bool = True) -> int:
    import gevent
    import gevent.event

    from integrations import systemd

    stopping = gevent.event.Event()
    handlers = [gevent.signal_handler(sig, stopping.set) for sig in (signal.SIGTERM, signal.SIGINT)]
    start()
    _quiet_collector()
    pinger = systemd.start_watchdog() if notify else None
    stopping.wait()
    if notify:
        systemd.stopping("draining")
    for handler in handlers:
        handler.cancel()
    stop()
    if pinger is not None:
        pinger.kill()
    return 0


def run_provider(config: ProviderConfig) -> int:
    """Run the provider sidecar in this process until a signal stops it."""
    from sidecar.ops.tunnel_keys import load_keys
    from sidecar.runtime.provider import ProviderSidecar

    sidecar = ProviderSidecar(
        config.listen,
        config.dubbo,
        weight=config.weight,
        pool_size=config.pool_size,
        call_timeout=config.call_timeout,
        heartbeat=config.heartbeat,
        keys=load_keys(config.tunnel_key_files),
        replay_window=config.replay_window,
        allow_sources=config.allow_sources,
    )

    from sidecar.ops import admin as admin_lib

    registration = None
    admin = _admin(config.admin, lambda listen: admin_lib.for_provider(sidecar, listen))

    def start():
        nonlocal registration
        sidecar.start()
        if admin is not None:
            admin.start()
        _announce(sidecar.address, admin=admin and admin.address)
        log.info("provider sidecar on %s forwarding to %s", format_address(*sidecar.address), config.dubbo)
        registration = _registration(config, sidecar.address)

    def stop():
        if registration is not None:  # first, so that consumers stop sending while the calls drain
            registration.stop()
        sidecar.stop(DRAIN_TIMEOUT)
        if admin is not None:  # last: /healthz says "draining" while the calls drain
            admin.stop()

    return _serve_until_signal(start, stop)


def _admin(listen: str, make):
    """``make(address)`` when ``listen`` (the admin key) is set, else None."""
    return make(parse_address(listen)) if listen else None


def _registration(config: ProviderConfig, bound: tuple[str, int]):
    """With a registry configured, this provider's etcd registration, started; else None."""
    if not config.registry:
        return None
    from integrations.etcd_registry import EtcdRegistration
    from sidecar.runtime.registry import parse_address

    address = parse_address(config.advertise) if config.advertise else bound
    if address[0] in ("0.0.0.0", "::"):
        log.warning("registering %s, which consumers cannot reach: set advertise to this host's address",
                    format_address(*address))  # fmt: skip
    registration = EtcdRegistration(
        config.registry, address, config.weight, batch=True, interface=config.interface, lease_ttl=config.lease_ttl
    )
    registration.start()
    return registration


def _registry(config: ConsumerConfig):
    """The consumer's registry: etcd when configured, else None (the static list of the config)."""
    if not config.registry:
        return None
    from integrations.etcd_registry import EtcdRegistry

    return EtcdRegistry(config.registry, config.interface)


def run_consumer(config: ConsumerConfig) -> int:
    """Run the consumer sidecar until a signal stops it: in this process, or as N workers."""
    from sidecar.ops.tunnel_keys import load_keys

    keys = load_keys(config.tunnel_key_files)  # before any fork: a bad key file stops the start
    if config.workers == 1:
        return _run_worker(config, None, None, None, keys=keys)
    return _Supervisor(config, keys).run()


def _run_worker(
    config: ConsumerConfig,
    listener,
    consumer_id: int | None,
    ready_fd: int | None,
    admin_path: str | None = None,
    keys: list[bytes] | None = None,
) -> int:
    """One consumer on this process's hub: alone (``ready_fd`` None), or a supervisor's worker that
    shows its raw stats on the Unix socket ``admin_path`` (None: the supervisor has no admin port)."""
    from sidecar.ops import admin as admin_lib
    from sidecar.runtime.consumer import ConsumerSidecar

    sidecar = ConsumerSidecar(
        config, listener=listener, registry=_registry(config), consumer_id=consumer_id, keys=keys or ()
    )

    if admin_path is not None:
        admin = admin_lib.for_consumer(sidecar, admin_path, raw=True)
    else:
        admin = _admin(config.admin if ready_fd is None else "", lambda a: admin_lib.for_consumer(sidecar, a))

    def start():
        sidecar.start()
        if admin is not None:
            admin.start()
        if ready_fd is None:
            _announce(sidecar.address, admin=admin and admin.address)
        elif ready_fd >= 0:  # a worker tells its supervisor; a replacement worker (-1) says nothing
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        log.info("consumer sidecar on %s, tunnel %s", format_address(*sidecar.address), sidecar.caller.address)

    def stop():
        sidecar.stop(DRAIN_TIMEOUT)
        if admin is not None:
            admin.stop()

    return _serve_until_signal(start, stop, notify=ready_fd is None)


class _Supervisor:
    RESTART_DELAY = 1.0  # seconds between starting replacements for workers that died

    def __init__(self, config: ConsumerConfig, keys: list[bytes] | None = None):
        self.config = config
        self.keys = keys or []
        self.children: dict[int, int] = {}  # pid -> worker index
        self.stopping = False
        self.base_id = int.from_bytes(os.urandom(2), "big")
        self.admin = None  # the SupervisorAdmin of the admin port, when there is one
        from integrations import systemd

        self.watchdog = systemd.WatchdogPinger(systemd.watchdog_interval())

    def run(self) -> int:
        family = socket.AF_INET6 if ":" in self.config.listen[0] else socket.AF_INET
        reserve = socket.socket(family, socket.SOCK_STREAM)  # bound, never listening: holds the port
        reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserve.bind(self.config.listen)
        self.address = reserve.getsockname()[:2]
        if self.config.admin:
            from sidecar.ops.admin_supervisor import SupervisorAdmin

            self.admin = SupervisorAdmin(parse_address(self.config.admin), self.config.workers, lambda: self.stopping)
        try:
            return self._run(reserve)
        finally:
            if self.admin is not None:
                self.admin.close()

    def _run(self, reserve: socket.socket) -> int:
        if self.admin is not None:
            self.admin.bind()  # before the workers: a port in use fails at once
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        read_fd, write_fd = os.pipe()
        for index in range(self.config.workers):
            self._fork(index, write_fd)
        os.close(write_fd)
        if not self._wait_ready(read_fd):
            self._stop_children()
            return 1
        os.close(read_fd)
        reserve.close()
        if self.admin is not None:
            self.admin.start()
        _announce(self.address, admin=self.admin and self.admin.address)
        return self._supervise()

    def _fork(self, index: int, ready_fd: int) -> None:
        pid = os.fork()
        if pid:
            self.children[pid] = index
            return
        code = 1
        try:
            import gevent

            gevent.reinit()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            from sidecar.runtime.consumer import listening_socket

            admin_path = None
            if self.admin is not None:
                self.admin.close_in_child()
                admin_path = self.admin.socket_path(index)
            listener = listening_socket(self.address, reuse_port=True)
            worker_id = (self.base_id + index) & 0xFFFF
            code = _run_worker(self.config, listener, worker_id, ready_fd, admin_path, keys=self.keys)
        except BaseException:
            log.exception("consumer worker %d failed", index)
        finally:
            os._exit(code)

    def _wait_ready(self, read_fd: int) -> bool:
        ready, end = 0, time.monotonic() + READY_TIMEOUT
        while ready < self.config.workers:
            left = end - time.monotonic()
            if left <= 0 or self.stopping:
                print("error: consumer workers did not start in time", file=sys.stderr)
                return False
            self.watchdog.poll()
            readable, _, _ = select.select([read_fd], [], [], min(left, 0.2))
            if readable:
                data = os.read(read_fd, 64)
                if not data:
                    print("error: a consumer worker exited before it was ready", file=sys.stderr)
                    return False
                ready += len(data)
        return True

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def _supervise(self) -> int:
        last_restart = 0.0
        while self.children:
            self.watchdog.poll()
            if self.stopping:
                return self._stop_children()
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.1)
                continue
            index = self.children.pop(pid, None)
            if index is None or self.stopping:
                continue
            log.warning("consumer worker %d (pid %d) exited with status %d; starting another", index, pid, status)
            wait = last_restart + self.RESTART_DELAY - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            last_restart = time.monotonic()
            self._fork(index, -1)
        return 0

    def _stop_children(self) -> int:
        from integrations import systemd

        systemd.stopping("draining")
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + DRAIN_TIMEOUT + 5.0
        code = 0
        while self.children and time.monotonic() < end:
            self.watchdog.poll()
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            self.children.pop(pid, None)
            code = code or (os.waitstatus_to_exitcode(status) != 0)
        for pid in self.children:
            os.kill(pid, signal.SIGKILL)
        return int(bool(code))
