"""The whole data path on loopback, as real processes: three demo Dubbo services, a provider sidecar
in front of each, and one consumer sidecar that knows the three through the static registry.

Every process is started with port 0 and prints ``listening HOST:PORT`` once bound, so nothing races
for a port; :meth:`Topology.stop` (or leaving the ``with`` block) stops them by PID: SIGTERM, then
SIGKILL for any that has not exited within ``STOP_TIMEOUT``.

Each provider's weight and threshold are its service's capacity, so the balancer shares the calls by
capacity and never sends a service more than it serves at once (the wait queue absorbs the rest).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.runtime.registry import parse_address

__all__ = ["Scenario", "SCENARIOS", "Topology", "Process", "TopologyError"]

STOP_TIMEOUT = 10.0
READY_TIMEOUT = 30.0


class TopologyError(RuntimeError):
    """A process of the topology did not start; the message has its command and last output."""


@dataclass(frozen=True)
class Scenario:
    name: str
    capacities: tuple[int, ...]  # of the small, medium and large service
    latency_ms: float
    connections: tuple[int, ...]  # the load levels the bench drives

    @property
    def capacity(self) -> int:
        return sum(self.capacities)

    def ideal_qps(self, connections: int) -> float:
        """Calls per second if every call took exactly the service latency: C / L, or total
        capacity / L once the connections outnumber the capacity."""
        return min(connections, self.capacity) / (self.latency_ms / 1000.0)


SCENARIOS = {
    "latency-bound": Scenario("latency-bound", (200, 400, 600), 50.0, (128, 256, 512)),
    "capacity-bound": Scenario("capacity-bound", (64, 128, 192), 50.0, (512, 1024)),
}
SERVICE_NAMES = ("small", "medium", "large")


class Process:
    """A child process that announced its address."""

    def __init__(self, name: str, command: list[str], *, env: dict | None = None):
        self.name, self.command = name, command
        if env is None:  # the sidecars log warnings and errors only, unless told otherwise
            env = {**os.environ, "SIDECAR_LOG_LEVEL": os.environ.get("SIDECAR_LOG_LEVEL", "warning")}
        self.popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,
            env=env,
            start_new_session=True,  # a Ctrl-C at the terminal reaches the demo, which stops us in order
        )
        self.address = self._wait_ready()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _wait_ready(self) -> tuple[str, int]:
        out = self.popen.stdout
        end = time.monotonic() + READY_TIMEOUT
        line = b""
        while time.monotonic() < end:
            readable, _, _ = select.select([out], [], [], 0.2)
            if readable:
                chunk = os.read(out.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
                if b"\n" in line:
                    first = line.split(b"\n", 1)[0].decode(errors="replace").strip()
                    if first.startswith("listening "):
                        return parse_address(first.split(" ", 1)[1])
                    break
            elif self.popen.poll() is not None:
                break
        self.stop()
        raise TopologyError(f"{self.name} did not start ({' '.join(self.command)}): {line.decode(errors='replace')!r}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait()
        self.popen.stdout.close()
        return self.popen.returncode


class Topology:
    """Started by :meth:`start`; a context manager that stops everything on exit."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.services: list[Process] = []
        self.providers: list[Process] = []
        self.consumer: Process | None = None

    @classmethod
    def start(
        cls,
        scenario: Scenario,
        *,
        consumer_workers: int = 1,
        provider_header: bool = False,
        call_timeout: float | None = None,
        extra_consumer_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        request_batch: bool = True,
    ) -> Topology:
        """``env``: variables set for every process on top of this one's (``DUBBOMESH_PURE_PYTHON`` picks
        the build of the codecs that the sidecars and services run). ``request_batch``: the consumer
        knows the providers as taking REQUEST_BATCH datagrams (``+batch``), as their etcd entries say;
        False: one datagram per call, as toward a provider that does not announce it."""
        topo = cls(scenario)
        python = sys.executable
        env = {**os.environ, "SIDECAR_LOG_LEVEL": os.environ.get("SIDECAR_LOG_LEVEL", "warning"), **(env or {})}
        try:
            for name, capacity in zip(SERVICE_NAMES, scenario.capacities, strict=True):
                topo.services.append(
                    Process(
                        f"{name} service",
                        [
                            python,
                            "-m",
                            "integrations.demo.demo_provider",
                            "--port",
                            "0",
                            "--host",
                            "127.0.0.1",
                            "--latency-ms",
                            f"{scenario.latency_ms:g}",
                            "--capacity",
                            str(capacity),
                        ],
                        env=env,
                    )  # fmt: skip
                )
            for name, capacity, service in zip(SERVICE_NAMES, scenario.capacities, topo.services, strict=True):
                topo.providers.append(
                    Process(
                        f"{name} provider sidecar",
                        [
                            python,
                            "-m",
                            "sidecar",
                            "provider",
                            "--listen",
                            "127.0.0.1:0",
                            "--dubbo",
                            f"{service.address[0]}:{service.address[1]}",
                            "--weight",
                            str(capacity),
                        ],
                        env=env,
                    )  # fmt: skip
                )
            command = [python, "-m", "sidecar", "consumer", "--listen", "127.0.0.1:0", "--no-access-log"]
            command += ["--workers", str(consumer_workers)]
            for capacity, provider in zip(scenario.capacities, topo.providers, strict=True):
                batch = "+batch" if request_batch else ""
                command += ["--provider", f"{provider.address[0]}:{provider.address[1]}={capacity}/{capacity}{batch}"]
            if provider_header:
                command.append("--provider-header")
            if call_timeout is not None:
                command += ["--call-timeout", str(call_timeout)]
            command += list(extra_consumer_args)
            topo.consumer = Process("consumer sidecar", command, env=env)
        except BaseException:
            topo.stop()
            raise
        return topo

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def consumer_address(self) -> tuple[str, int]:
        return self.consumer.address

    @property
    def consumer_url(self) -> str:
        host, port = self.consumer.address
        return f"http://{host}:{port}/"

    def pids(self) -> dict[str, list[int]]:
        """The processes by role; the consumer's list has its supervisor and its workers."""
        consumer = [self.consumer.pid, *_children(self.consumer.pid)] if self.consumer else []
        return {
            "consumer": consumer,
            "provider_sidecars": [p.pid for p in self.providers],
            "services": [p.pid for p in self.services],
        }

    def labels(self) -> dict[int, str]:
        """A short name for each process of :meth:`pids`: small, medium or large for a provider
        sidecar or a service, main or worker N for the consumer."""
        labels = {p.pid: name for name, p in zip(SERVICE_NAMES, self.providers, strict=False)}
        labels.update({p.pid: name for name, p in zip(SERVICE_NAMES, self.services, strict=False)})
        if self.consumer is not None:
            labels[self.consumer.pid] = "main"
            for number, pid in enumerate(_children(self.consumer.pid), 1):
                labels[pid] = f"worker {number}"
        return labels

    def provider_names(self) -> dict[str, str]:
        """Provider key (as the consumer names it in X-Provider) -> small, medium or large."""
        return {f"{p.address[0]}:{p.address[1]}": name for name, p in zip(SERVICE_NAMES, self.providers, strict=False)}

    def describe(self) -> dict:
        latency = self.scenario.latency_ms
        latency = int(latency) if float(latency).is_integer() else latency
        return {"consumer": self.consumer_url, "latency_ms": latency, "pids": self.pids()}

    def summary(self) -> str:
        caps = "/".join(str(c) for c in self.scenario.capacities)
        return (
            f"{self.scenario.name}: services with capacities {caps} and latency {self.scenario.latency_ms:g} ms, "
            f"consumer {self.consumer_url}"
        )

    def wait(self, ready: Callable[[], object] = lambda: None) -> None:
        """Call ``ready()``, then block until SIGINT or SIGTERM (``--hold``). The signals are caught
        before ``ready()`` runs, so one sent as soon as it has said so still stops us in order."""
        stop = []
        previous = {sig: signal.signal(sig, lambda *_: stop.append(1)) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            ready()
            while not stop:
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        for process in [self.consumer, *self.providers, *self.services]:
            if process is not None:
                process.stop()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []
