"""The Redis Cluster store when the cluster changes under it, on clusters of their own: a silent
replica, a primary killed with SIGKILL and its replica promoted, slots migrated during puts, and a
million queues."""

import os
import signal
import subprocess
import threading

import pytest

import mqdb
from mqdb.tools.redis_cluster import LocalCluster
from tests.support.redis_cluster import primary_of, redis_client, replica_of, skip_reason


def message(q: int, seq: int) -> bytes:
    return b"%d:%d:" % (q, seq) + b"x" * (q % 50)


def put_round(db, queues: int, seq: int) -> None:
    for q in range(queues):
        assert db.put(f"Queue-{q}", message(q, seq)) == seq


def check_all(db, queues: int, per_queue: int) -> None:
    for q in range(queues):
        assert db.get(f"Queue-{q}", 0, per_queue + 1) == [message(q, s) for s in range(per_queue)], q


def test_a_silent_replica_fails_the_flush_and_the_next_flush_confirms(fresh_cluster):
    with mqdb.open(fresh_cluster.url, wait_timeout=2.0) as db:
        put_round(db, 50, 0)
        db.flush()
        stopped = replica_of(fresh_cluster, primary_of(fresh_cluster, b"mqdb:q:Queue-0"))
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        try:
            put_round(db, 50, 1)
            with pytest.raises(mqdb.NotDurableError, match=r"0 of 1 replica\(s\) of 127.0.0.1:\d+ acknowledged") as e:
                db.flush()
            assert ("Queue-0", 1) in e.value.messages
            assert {q for q, off in e.value.messages} <= {f"Queue-{q}" for q in range(50)}
            assert all(off == 1 for _, off in e.value.messages)
        finally:
            os.kill(stopped.proc.pid, signal.SIGCONT)
        db.flush()
        assert db.stats()["unconfirmed"] == 0
        check_all(db, 50, 2)


def test_a_lost_primary_fails_the_flush_until_its_replica_takes_over_and_loses_nothing_flushed(fresh_cluster):
    queues = 3000
    first = primary_of(fresh_cluster, b"mqdb:q:Queue-0")
    first_replica = replica_of(fresh_cluster, first)
    fresh_cluster.cli(first_replica, "config", "set", "cluster-replica-no-failover", "yes")
    with mqdb.open(fresh_cluster.url, failover_timeout=3.0) as db:
        put_round(db, queues, 0)
        db.flush()  # round 0 is durable from here on
        fresh_cluster.kill(first)  # SIGKILL; its replica will not take over by itself
        put_round(db, queues, 1)
        with pytest.raises(mqdb.NotDurableError, match=f"{first.address} was lost") as e:
            db.flush()
        lost = e.value.messages  # round 1 of the queues on the lost primary, and only those
        assert ("Queue-0", 1) in lost and all(off == 1 for _, off in lost)
        assert 0 < len(lost) < queues
        fresh_cluster.cli(first_replica, "cluster", "failover", "takeover")
        fresh_cluster.wait_ok(replicas=2)
        db.flush()  # the same puts, now to the promoted replica
        check_all(db, queues, 2)

    second = next(n for n in fresh_cluster.primary_nodes() if n is not first_replica)
    with mqdb.open(fresh_cluster.url) as db:
        put_round(db, queues, 2)
        db.flush()
        fresh_cluster.kill(second)  # SIGKILL; its replica takes over after cluster-node-timeout (2 s)
        put_round(db, queues, 3)
        db.flush()  # waits out the automatic failover
        check_all(db, queues, 4)
    fresh_cluster.wait_ok(replicas=1)
    with mqdb.open(fresh_cluster.url, readonly=True) as db:
        check_all(db, queues, 4)
    for node in (first, second):
        fresh_cluster.launch(node)  # back, as replicas of their successors
    fresh_cluster.wait_ok()
    with mqdb.open(fresh_cluster.url) as db:
        put_round(db, queues, 4)
        db.flush()
        check_all(db, queues, 5)


def test_slots_migrated_during_puts_lose_and_duplicate_nothing(fresh_cluster):
    queues, max_rounds = 2000, 400
    ids = {n.port: fresh_cluster.cli(n, "cluster", "myid").strip() for n in fresh_cluster.primary_nodes()}
    source, target = sorted(ids)[:2]
    done = threading.Event()
    rounds = []
    errors = []
    db = mqdb.open(fresh_cluster.url, pipeline_bytes=16 << 10)

    def writer():
        try:
            for seq in range(max_rounds):  # until the resharding has ended, plus one full round
                finished = done.is_set()
                put_round(db, queues, seq)
                rounds.append(seq)
                if finished:
                    return
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reshard = subprocess.run(
            ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}", "--cluster-from", ids[source],
             "--cluster-to", ids[target], "--cluster-slots", "3000", "--cluster-yes", "--cluster-pipeline", "20"],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert reshard.returncode == 0, reshard.stdout[-2000:] + reshard.stderr[-2000:]
    finally:
        done.set()
        thread.join(timeout=300)
    try:
        assert not errors and not thread.is_alive()
        assert len(rounds) < max_rounds, "the writer ran out of rounds before the resharding ended"
        db.flush()
        assert db.stats()["redirects"] > 0  # the writer's slot map was stale after the resharding
        check_all(db, queues, len(rounds))
    finally:
        db.close()
    fresh_cluster.wait_ok()
    with mqdb.open(fresh_cluster.url, readonly=True) as ro:
        check_all(ro, queues, len(rounds))
        assert ro.stats()["messages"] == queues * len(rounds)


MILLION = int(os.environ.get("MQDB_CLUSTER_QUEUES", 1_000_000))


def test_a_million_queues_of_a_few_messages(tmp_path):
    why = skip_reason()
    if why:
        pytest.skip(why)
    per_queue = 3
    with LocalCluster(str(tmp_path / "big"), appendfsync=None) as cluster:
        with mqdb.open(cluster.url) as db:
            for seq in range(per_queue):
                for q in range(MILLION):
                    db.put(f"Queue-{q}", b"%d:%d" % (q, seq))
            db.flush()
            s = db.stats()
            assert (s["queues"], s["messages"]) == (MILLION, MILLION * per_queue)
            for q in range(0, MILLION, max(1, MILLION // 10_000)):  # 10,000 queues read through
                assert db.get(f"Queue-{q}", 0, 10) == [b"%d:%d" % (q, seq) for seq in range(per_queue)]
            assert db.get(f"Queue-{MILLION - 1}", 2, 10) == [b"%d:2" % (MILLION - 1)]


def test_a_slot_migrated_by_hand_is_followed_through_ask_and_moved(fresh_cluster):
    key_old = b"mqdb:q:{s}old"  # one slot for both queues: the hash tag {s}
    source = primary_of(fresh_cluster, key_old)
    target = next(n for n in fresh_cluster.primary_nodes() if n is not source)
    source_id, target_id = (fresh_cluster.cli(n, "cluster", "myid").strip() for n in (source, target))
    client = redis_client(source)
    slot = str(client.execute_command("CLUSTER", "KEYSLOT", key_old))
    client.close()
    with mqdb.open(fresh_cluster.url) as db:
        db.put("{s}old", b"m0")
        db.flush()
        fresh_cluster.cli(target, "cluster", "setslot", slot, "importing", source_id)
        fresh_cluster.cli(source, "cluster", "setslot", slot, "migrating", target_id)
        assert db.put("{s}new", b"n0") == 0  # not on the source: ASK, then ASKING + XADD at the target
        assert db.put("{s}old", b"m1") == 1  # still on the source
        db.flush()
        assert db.get("{s}new", 0, 5) == [b"n0"] and db.get("{s}old", 0, 5) == [b"m0", b"m1"]

        fresh_cluster.cli(source, "migrate", "127.0.0.1", str(target.port), "", "0", "5000", "keys", key_old.decode())
        for node in fresh_cluster.running():
            if fresh_cluster.role(node) == "master":
                fresh_cluster.cli(node, "cluster", "setslot", slot, "node", target_id)
        assert db.put("{s}old", b"m2") == 2  # the source answers MOVED
        db.flush()
        assert db.get("{s}old", 0, 5) == [b"m0", b"m1", b"m2"]
        assert db.stats()["redirects"] >= 2
    fresh_cluster.wait_ok()
    with mqdb.open(fresh_cluster.url, readonly=True) as ro:
        assert ro.get("{s}new", 0, 5) == [b"n0"] and ro.get("{s}old", 0, 5) == [b"m0", b"m1", b"m2"]
