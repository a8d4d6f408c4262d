"""`mqdb bench` with the Redis Cluster store: in the same run as the others, memory per message."""

import re

from click.testing import CliRunner

from mqdb.cli import main
from mqdb.tools.bench import format_report, run_bench
from tests.support.redis_cluster import redis_client


def test_bench_on_a_given_cluster_beside_mqdb_and_removes_its_stores(cluster, tmp_path):
    result = run_bench(300, 5, threads=(1, 2), stores=("mqdb", "redis-cluster"), workdir=str(tmp_path),
                       redis_url=cluster.url)  # fmt: skip
    entry = result["stores"]["redis-cluster"]
    assert entry["status"] == "ok", entry.get("error")
    assert entry["verify_errors"] == 0 and entry["bytes_per_payload"] is None
    assert entry["cluster_bytes_per_msg"] > entry["cluster_primary_bytes_per_msg"] > 0
    assert result["stores"]["mqdb"]["status"] == "ok"
    report = format_report(result)
    assert re.search(r"^redis-cluster .* 0 +[\d,]+$", report, re.M)
    assert "cluster B/msg" in report
    for node in cluster.primary_nodes():  # each run's store was deleted
        client = redis_client(node)
        assert list(client.scan_iter(match="bench-*")) == []
        client.close()


def test_bench_command_starts_its_own_cluster(tmp_path):
    result = CliRunner().invoke(
        main, ["bench", "--queues", "200", "--per-queue", "3", "--threads", "1", "--store", "sqlite",
               "--store", "redis-cluster", "--workdir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("redis-cluster"))
    assert row.split()[-2] == "0"  # verify errors, then cluster B/msg
    assert int(row.split()[-1].replace(",", "")) > 0
