"""Real Redis Clusters for the tests: Debian's redis-server on free loopback ports, in a temp dir.

``cluster`` (session): 3 primaries and 3 replicas shared by the tests that only read and write;
each test gets its own store name (``/NAME`` in the URL), so tests never see each other's queues.
``fresh_cluster`` (function): a cluster of its own, for the tests that kill, stop or reshard nodes.
Every node is stopped by its pid when the fixture ends.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import signal

import pytest

from mqdb.tools.redis_cluster import LocalCluster, missing

_names = itertools.count()


def skip_reason() -> str | None:
    why = missing()
    if why:
        return why + " (scripts/test-deps installs it)"
    if importlib.util.find_spec("redis") is None:
        return "the redis package is not installed (pip install -e '.[test]')"
    return None


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{os.getpid()}-{next(_names)}"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    why = skip_reason()
    if why:
        pytest.skip(why)
    with LocalCluster(str(tmp_path_factory.mktemp("redis-cluster"))) as c:
        yield c


@pytest.fixture
def cluster_url(cluster):
    """The shared cluster's URL with a store name of this test's own."""
    return f"{cluster.url}/{unique_name()}"


@pytest.fixture
def fresh_cluster(tmp_path):
    """A cluster for one test (quick failover: cluster-node-timeout 2 s). SIGSTOPped nodes are continued."""
    why = skip_reason()
    if why:
        pytest.skip(why)
    c = LocalCluster(str(tmp_path / "redis-cluster"), node_timeout_ms=2000)
    c.start()
    try:
        yield c
    finally:
        for node in c.running():
            os.kill(node.proc.pid, signal.SIGCONT)
        c.stop()


def redis_client(node):
    """A plain redis-py client on one node (not cluster-aware): to look at or tamper with its keys."""
    import redis

    return redis.Redis(host="127.0.0.1", port=node.port)


def primary_of(cluster: LocalCluster, key: bytes):
    """The node that serves ``key`` now."""
    from redis.crc import key_slot

    slot = key_slot(key)
    client = redis_client(cluster.running()[0])
    try:
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                port = int(primary[1])
                return next(n for n in cluster.nodes if n.port == port)
    finally:
        client.close()
    raise AssertionError(f"no primary serves slot {slot}")


def replica_of(cluster: LocalCluster, primary):
    """The running node that replicates ``primary``."""
    for node in cluster.running():
        info = cluster.info(node, "replication")
        if info.get("role") == "slave" and int(info.get("master_port", -1)) == primary.port:
            return node
    raise AssertionError(f"no replica of {primary.address}")
