"""The `mqdb` command on a Redis Cluster URL: info, ls, get, tail (--follow), put, export and import,
and a store moved from embedded to cluster and back with its offsets."""

import json

from click.testing import CliRunner

import mqdb
from mqdb.cli import main
from tests.support.mqdb_cli import interrupt, start, take

MESSAGES = {
    "alpha": [b"hello", b"tab\there\nnewline", b"\xff\xfe\x00binary", b""],
    "beta": [f"beta-{i} ".encode() * (i % 5 + 1) for i in range(60)],
    "{tagged}": [bytes(range(256)) * 3],
}


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def ok(result) -> str:
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return result.stdout


def fill(target) -> None:
    with mqdb.open(target) as db:
        for queue, msgs in MESSAGES.items():
            for m in msgs:
                db.put(queue, m)


def test_info_ls_get_tail_and_put_on_a_cluster_url(cluster_url):
    fill(cluster_url)
    out = ok(run("info", cluster_url))
    assert "queues          3\n" in out and "messages        65\n" in out
    assert out.count(" slots, 1 replica(s), ") == 3 and "appendfsync everysec" in out
    info = json.loads(ok(run("info", cluster_url, "--json")))
    assert (info["kind"], info["queues"], info["messages"], info["primaries"]) == ("redis-cluster", 3, 65, 3)

    lines = ok(run("ls", cluster_url, "--sort", "messages")).splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["beta", "60", "-"],
        ["alpha", "4", "-"],
        ["{tagged}", "1", "-"],
    ]
    assert all(int(line.split("\t")[3]) > 0 for line in lines)
    assert json.loads(ok(run("ls", cluster_url, "--prefix", "al", "--json")))["name"] == "alpha"

    assert ok(run("get", cluster_url, "alpha", "--num", "2")) == "0\thello\n1\ttab\\there\\nnewline\n"
    assert ok(run("tail", cluster_url, "beta", "-n", "1")) == f"59\t{MESSAGES['beta'][59].decode()}\n"
    assert ok(run("put", cluster_url, "alpha", "more")) == "4\n"
    assert ok(run("get", cluster_url, "alpha", "--offset", "4")) == "4\tmore\n"

    missing = run("get", cluster_url, "nope")
    assert missing.exit_code == 1 and "no queue 'nope'" in missing.stderr
    check = run("check", cluster_url)
    assert check.exit_code == 1 and "redis-cli --cluster check" in check.stderr


def test_errors_are_one_line(cluster):
    result = run("info", "redis://127.0.0.1:1")
    assert result.exit_code == 1 and result.stderr.startswith("Error: no node of the Redis Cluster")
    result = run("info", f"{cluster.url}/never-made")
    assert result.exit_code == 1 and "no mqdb store named 'never-made'" in result.stderr


def test_tail_follow_on_a_cluster_sees_what_a_writer_flushes(cluster_url):
    with mqdb.open(cluster_url) as db:
        for i in range(3):
            db.put("q", b"m%d" % i)
        db.flush()
        proc, lines = start("tail", cluster_url, "q", "-n", "2", "--follow", "--timeout", "60", "--interval", "0.05")
        try:
            assert take(lines, 2) == ["1\tm1\n", "2\tm2\n"]
            for i in range(3, 1503):
                db.put("q", b"m%d" % i)
            db.flush()
            assert take(lines, 1500) == [f"{i}\tm{i}\n" for i in range(3, 1503)]
            assert interrupt(proc) == 0  # Ctrl-C ends a follow cleanly
            assert proc.stderr.read() == ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_embedded_to_cluster_and_back_through_export_and_import(tmp_path, cluster_url):
    embedded = tmp_path / "embedded"
    fill(str(embedded))
    dump = tmp_path / "dump.jsonl"
    ok(run("export", embedded, "-o", dump))
    assert ok(run("import", cluster_url, dump)) == "imported 65 messages into 3 queues\n"
    with mqdb.open(cluster_url, readonly=True) as db:
        assert {q: db.get(q, 0, 100) for q in db} == MESSAGES

    again = tmp_path / "again.jsonl"
    ok(run("export", cluster_url, "-o", again))
    assert again.read_text() == dump.read_text()  # queues by name, offsets kept, the same bytes
    back = tmp_path / "back"
    assert ok(run("import", back, again)) == "imported 65 messages into 3 queues\n"
    with mqdb.open(back, readonly=True) as db:
        assert {q: db.get(q, 0, 100) for q in db} == MESSAGES

    twice = run("import", cluster_url, dump)  # offsets would not be kept: refused, nothing written
    assert twice.exit_code == 1 and "each queue must continue where the store ends" in twice.stderr
    with mqdb.open(cluster_url, readonly=True) as db:
        assert db.count("beta") == 60
