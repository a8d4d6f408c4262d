"""The Redis Cluster store beyond the shared contract: URLs, the layout on the servers, batching and
WAIT, and the errors a user can act on. Real clusters (tests/support/redis_cluster.py)."""

import signal
import socket
import subprocess
import sys
import time

import pytest

import mqdb
from mqdb.cluster import layout
from mqdb.tools.redis_cluster import free_ports
from tests.support.redis_cluster import primary_of, redis_client, replica_of


# --- URLs and the layout, no server -------------------------------------------------------------
def test_parse_url():
    u = layout.parse_url("redis://127.0.0.1:7000,[::1]:7001,node-3:7002/orders")
    assert u.addresses == (("127.0.0.1", 7000), ("::1", 7001), ("node-3", 7002))
    assert u.name == "orders"
    assert layout.parse_url("redis://h:1").name == "mqdb"
    auth = layout.parse_url("redis://me:s%40cret@h:1")
    assert (auth.username, auth.password) == ("me", "s@cret")


@pytest.mark.parametrize(
    "url, match",
    [
        ("http://h:1", "not a store URL"),
        ("redis://h", "is not HOST:PORT"),
        ("redis://h:0", "is not HOST:PORT"),
        ("redis://h:1/bad name", "store name"),
    ],
)
def test_bad_urls_say_what_a_good_one_is(url, match):
    with pytest.raises(ValueError, match=match) as e:
        layout.parse_url(url)
    assert "redis://HOST:PORT" in str(e.value)


def test_id_mapping_and_packed_xadd():
    assert layout.entry_id(0) == b"0-1"
    assert [layout.offset_of(i) for i in (b"0-1", b"0-42", b"0-0", b"1700000000000-0", b"x")] == [
        0,
        41,
        None,
        None,
        None,
    ]
    assert layout.pack_xadd(b"mqdb:q:Queue-7", 1, b"world!") == (
        b"*5\r\n$4\r\nXADD\r\n$14\r\nmqdb:q:Queue-7\r\n$3\r\n0-2\r\n$1\r\nm\r\n$6\r\nworld!\r\n"
    )
    for msg in (b"", b"\r\n", b"a\r\nb\r\n", bytes(range(256))):
        assert layout.xadd_message(layout.pack_xadd(b"k\r\n", 9, msg), b"k\r\n", 9) == msg


def test_embedded_options_are_refused_with_the_cluster_ones_named():
    with pytest.raises(TypeError, match="known: readonly, replicas"):
        mqdb.open("redis://127.0.0.1:1", compression="lz4")


def test_without_the_redis_package_open_says_how_to_install_it():
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import mqdb\n"
        "try:\n    mqdb.open('redis://127.0.0.1:1')\n"
        "except mqdb.MissingDependencyError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'dubbomesh[redis]'" in out.stdout, out.stderr


# --- errors with servers --------------------------------------------------------------------------
def test_unreachable_cluster_names_the_addresses():
    a, b = free_ports(2)
    with pytest.raises(mqdb.ClusterUnreachableError) as e:
        mqdb.open(f"redis://127.0.0.1:{a},127.0.0.1:{b}")
    assert f"127.0.0.1:{a}" in str(e.value) and f"127.0.0.1:{b}" in str(e.value)
    assert "start the cluster" in str(e.value)


def test_a_redis_without_cluster_mode_is_named(tmp_path):
    (port,) = free_ports(1)
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(500):  # until it listens: at most 500 tries 10 ms apart
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.01)
        with pytest.raises(mqdb.ClusterUnreachableError, match="without cluster mode"):
            mqdb.open(f"redis://127.0.0.1:{port}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_foreign_streams_are_refused_by_name(cluster, cluster_url):
    name = cluster_url.rsplit("/", 1)[1]
    with mqdb.open(cluster_url) as db:
        db.put("mine", b"x")
    foreign = f"{name}:q:theirs".encode()
    text_key = f"{name}:q:text".encode()
    for key in (foreign, text_key):
        client = redis_client(primary_of(cluster, key))
        if key == foreign:
            client.xadd(key, {"event": "signup"})  # an id from the clock, another field
        else:
            client.set(key, "plain")
        client.close()
    with mqdb.open(cluster_url) as db:
        with pytest.raises(mqdb.ForeignStreamError, match=r"queue 'theirs': key '[^']*:q:theirs' is not an mqdb queue"):
            db.get("theirs", 0, 10)
        with pytest.raises(mqdb.ForeignStreamError, match="queue 'theirs'"):
            db.put("theirs", b"y")
        with pytest.raises(mqdb.ForeignStreamError, match="queue 'text'.*not a stream"):
            db.put("text", b"y")
        assert db.get("mine", 0, 1) == [b"x"]


def test_a_second_writer_of_one_queue_is_a_conflict(cluster_url):
    with mqdb.open(cluster_url) as a:
        a.put("q", b"a0")
        a.flush()
        with mqdb.open(cluster_url) as b:
            assert b.put("q", b"b1") == 1
            b.flush()
        assert a.put("q", b"a1") == 1  # a still believes offset 1 is free
        with pytest.raises(mqdb.ConflictError, match="queue 'q': offset 1 already holds another message"):
            a.flush()
        assert a.get("q", 0, 5) == [b"a0", b"b1"]


def test_a_store_marker_of_something_else_is_a_format_error(cluster, cluster_url):
    name = cluster_url.rsplit("/", 1)[1]
    key = f"{name}:meta".encode()
    client = redis_client(primary_of(cluster, key))
    client.set(key, "someone else's")
    client.close()
    with pytest.raises(mqdb.FormatError, match="another store name"):
        mqdb.open(cluster_url)


# --- batching and WAIT ---------------------------------------------------------------------------------
def test_puts_wait_in_the_handle_until_flush_or_the_bound(cluster_url):
    with mqdb.open(cluster_url) as db, mqdb.open(cluster_url, readonly=True) as ro:
        for i in range(100):
            db.put(f"q{i}", b"x" * 100)
        assert sum(ro.count(f"q{i}") for i in range(100)) == 0  # pending in the writer
        db.flush()
        assert sum(ro.count(f"q{i}") for i in range(100)) == 100
    with mqdb.open(cluster_url, pipeline_bytes=4096) as db, mqdb.open(cluster_url, readonly=True) as ro:
        for i in range(100):
            db.put(f"q{i}", b"y" * 100)
        assert sum(ro.count(f"q{i}") for i in range(100)) > 100  # batches past 4 KiB went out before flush


def test_flush_returns_once_a_replica_holds_every_message(cluster, cluster_url):
    with mqdb.open(cluster_url) as db:
        for i in range(300):
            db.put(f"Queue-{i}", b"m%d" % i)
        db.flush()
        prefix = cluster_url.rsplit("/", 1)[1]
        for i in range(0, 300, 7):
            key = f"{prefix}:q:Queue-{i}".encode()
            replica = redis_client(replica_of(cluster, primary_of(cluster, key)))
            replica.execute_command("READONLY")
            assert replica.xrange(key) == [(b"0-1", {b"m": b"m%d" % i})]
            replica.close()


def test_stats_describe_the_nodes(cluster_url):
    with mqdb.open(cluster_url) as db:
        db.put("q", b"x")
        db.flush()
        s = db.stats()
    assert s["kind"] == "redis-cluster" and s["primaries"] == 3
    assert sum(n["slots"] for n in s["nodes"]) == 16384
    assert all(n["replicas"] == 1 and n["appendfsync"] == "everysec" for n in s["nodes"])
    assert s["queue_memory_bytes"] > 0 and s["unconfirmed"] == 0
