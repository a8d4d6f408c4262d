"""A Redis Cluster on loopback, made of Debian's `redis-server` processes: what `mqdb bench --store
redis-cluster` measures and what the tests run against. Library only (no click).

    with LocalCluster(directory, primaries=3, replicas=1) as cluster:
        db = mqdb.open(cluster.url)

Each node gets two free loopback ports (clients and the cluster bus), its own folder under
`directory` (config, nodes.conf, append-only file, log) and runs in the foreground as a child of this
process; the nodes are joined with `redis-cli --cluster create` and the cluster is ready once every
node reports `cluster_state:ok`. Stopping ends each node by its pid: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # seconds for the nodes to listen and the cluster to agree


class ClusterStartError(Exception):
    """The local cluster could not be started; the message says why and where its logs are."""


def missing() -> str | None:
    """Why a local cluster cannot start here (None if it can)."""
    for command in ("redis-server", "redis-cli"):
        if shutil.which(command) is None:
            return f"{command} is not installed (Debian: apt-get install redis-server redis-tools)"
    return None


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that are free on loopback right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Node:
    port: int
    bus_port: int
    directory: str
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log(self) -> str:
        return os.path.join(self.directory, "redis.log")


class LocalCluster:
    """``primaries`` primaries with ``replicas`` replicas each, on free loopback ports.

    ``node_timeout_ms`` is `cluster-node-timeout`: how long a silent primary has before its replica
    takes over. ``appendfsync`` is the append-only file's fsync policy ("always", "everysec", "no";
    None turns the append-only file off). ``maxmemory`` (bytes, 0 for none) bounds each node.
    """

    def __init__(
        self,
        directory: str,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 3000,
        appendfsync: str | None = "everysec",
        maxmemory: int = 0,
    ):
        if primaries < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        self.directory = os.path.abspath(directory)
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendfsync = appendfsync
        self.maxmemory = maxmemory
        self.nodes: list[Node] = []

    @property
    def url(self) -> str:
        """The store URL of the cluster: every node's address."""
        return "redis://" + ",".join(n.address for n in self.nodes)

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        why = missing()
        if why:
            raise ClusterStartError(why)
        count = self.primaries * (1 + self.replicas)
        ports = free_ports(2 * count)
        for i in range(count):
            directory = os.path.join(self.directory, f"node-{i}")
            os.makedirs(directory, exist_ok=True)
            self.nodes.append(Node(ports[2 * i], ports[2 * i + 1], directory))
        try:
            for node in self.nodes:
                self.launch(node)
            for node in self.nodes:
                self._wait_listening(node)
            self._create()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self, node: Node) -> None:
        """Start (or restart) one node's process; its nodes.conf keeps its identity and role."""
        args = [
            "redis-server",
            "--bind", HOST, "--port", str(node.port), "--protected-mode", "yes",
            "--cluster-enabled", "yes", "--cluster-port", str(node.bus_port),
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(self.node_timeout_ms),
            "--dir", node.directory, "--logfile", "redis.log", "--daemonize", "no", "--save", "",
            "--maxmemory", str(self.maxmemory), "--stream-node-max-bytes", "512",
            # a replica, new or restarted, gets its copy at once: the primary does not wait 5 s (Redis's
            # default) for others to share the transfer, which makes a start take 7 s instead of 3 s
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if self.appendfsync is None:
            args += ["--appendonly", "no"]
        else:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        node.proc = subprocess.Popen(
            args, cwd=node.directory, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        """End every node by its pid: SIGTERM, and SIGKILL for one still running after 10 seconds."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()

    def kill(self, node: Node) -> None:
        """SIGKILL one node, as a machine that dies would."""
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- looking at it --------------------------------------------------------------------------
    def cli(self, node: Node, *args: str, timeout: float = 60) -> str:
        """Run ``redis-cli -p PORT ARGS`` against ``node``; its standard output."""
        done = subprocess.run(
            ["redis-cli", "-h", HOST, "-p", str(node.port), *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            raise ClusterStartError(f"redis-cli {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def info(self, node: Node, section: str) -> dict:
        """One INFO (or CLUSTER INFO for "cluster") section of ``node`` as a dict of strings."""
        text = self.cli(node, "cluster", "info") if section == "cluster" else self.cli(node, "info", section)
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))
        return {k.strip(): v.strip() for k, v in pairs}

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def role(self, node: Node) -> str:
        return self.info(node, "replication").get("role", "?")

    def primary_nodes(self) -> list[Node]:
        return [n for n in self.running() if self.role(n) == "master"]

    def wait_ok(self, timeout: float = START_TIMEOUT, replicas: int | None = None) -> None:
        """Until every running node says `cluster_state:ok`, sees ``replicas`` replicas in the cluster
        (all of them by default) and, with all of them, every primary has its replicas online (synced)."""
        want = self.primaries * self.replicas if replicas is None else replicas
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                last = self._not_ok(want, self.replicas if replicas is None else 0)
                if not last:
                    return
            except (ClusterStartError, subprocess.TimeoutExpired) as e:
                last = str(e)
            time.sleep(0.1)
        raise ClusterStartError(f"the cluster in {self.directory} is not ok after {timeout:.0f} s ({last})")

    def _not_ok(self, want: int, online_each: int) -> str:
        """Why the cluster is not ready yet ("" once it is)."""
        for node in self.running():
            state = self.info(node, "cluster")
            if state.get("cluster_state") != "ok" or state.get("cluster_slots_ok") != "16384":
                return f"{node.address}: cluster_state {state.get('cluster_state')}"
            seen = sum("slave" in line.split()[2] for line in self.cli(node, "cluster", "nodes").splitlines() if line)
            if seen < want:
                return f"{node.address} sees {seen} of {want} replicas"
            replication = self.info(node, "replication")
            if replication.get("role") == "master":
                online = sum("state=online" in v for k, v in replication.items() if k.startswith("slave"))
                if online < online_each:
                    return f"{node.address} has {online} of {online_each} replicas online"
        return ""

    def _wait_listening(self, node: Node, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise ClusterStartError(f"redis-server on port {node.port} exited; see {node.log}")
            try:
                with socket.create_connection((HOST, node.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.02)
        raise ClusterStartError(f"redis-server on port {node.port} is not listening after {timeout:.0f} s")

    def _create(self) -> None:
        args = ["--cluster", "create", *(n.address for n in self.nodes)]
        args += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        self.cli(self.nodes[0], *args, timeout=START_TIMEOUT)


# --- a cluster given by URL ---------------------------------------------------------------------------
def _client(url: str):
    """A plain client on the first node of ``url`` that answers, and the parsed URL."""
    import redis

    from ..cluster.layout import parse_url

    parsed = parse_url(url)
    errors = []
    for host, port in parsed.addresses:
        client = redis.Redis(host=host, port=port, username=parsed.username, password=parsed.password)
        try:
            client.ping()
            return client, parsed
        except redis.RedisError as e:
            errors.append(f"{host}:{port}: {e}")
            client.close()
    raise ClusterStartError(f"no node of {url} answers ({'; '.join(errors)})")


def _nodes(client) -> list[tuple[str, int, bool]]:
    """(host, port, is primary) of every node that is not failed, from CLUSTER NODES."""
    out = []
    text = client.execute_command("CLUSTER", "NODES")
    text = text.decode() if isinstance(text, bytes) else text
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or "fail" in fields[2].split(","):
            continue
        host, _, port = fields[1].split("@")[0].rpartition(":")
        out.append((host or client.connection_pool.connection_kwargs["host"], int(port), "master" in fields[2]))
    return out


def cluster_memory(url: str) -> dict:
    """``used_memory`` summed over the primaries and over every node of the cluster at ``url``."""
    import redis

    client, parsed = _client(url)
    try:
        nodes = _nodes(client)
    finally:
        client.close()
    out = {"primaries": 0, "all": 0}
    for host, port, primary in nodes:
        node = redis.Redis(host=host, port=port, username=parsed.username, password=parsed.password)
        try:
            used = int(node.info("memory")["used_memory"])
        finally:
            node.close()
        out["all"] += used
        if primary:
            out["primaries"] += used
    return out


def drop_store(url: str) -> int:
    """Delete every key of the store named in ``url`` (its queues and its marker); the keys deleted."""
    import redis

    client, parsed = _client(url)
    try:
        nodes = [(h, p) for h, p, primary in _nodes(client) if primary]
    finally:
        client.close()
    deleted = 0
    for host, port in nodes:
        node = redis.Redis(host=host, port=port, username=parsed.username, password=parsed.password)
        try:
            pipe = node.pipeline(transaction=False)
            for key in node.scan_iter(match=f"{parsed.name}:*", count=1000):
                pipe.unlink(key)
                if len(pipe) >= 1000:
                    deleted += sum(pipe.execute())
            deleted += sum(pipe.execute())
        finally:
            node.close()
    return deleted
