"""Hostile and careless clients of a consumer sidecar, against real processes (a demo Dubbo service,
a provider sidecar and a consumer sidecar with small limits from a config file): while each abuse
runs, a well-behaved client's calls are answered right, and the consumer's memory is back within
bounds once the abuse ends.

Run with ``-s`` to see a normal client's latencies (p50/p99) during each case beside a quiet run.
"""

from __future__ import annotations

import json
import sys
import time

import gevent
import pytest

from tests.support.dubbo_peer import WAIT, Process, java_hash
from tests.support.http_clients import FORM_HEADERS, Client, form
from tests.support.measure import percentiles, rss_kib
from tests.support.sidecar_load import admin_address, admin_stats, consumer_sidecar, provider_sidecar, service
from tests.support.waiting import wait_until

LIMITS = {
    "max_connections": 300,
    "idle_timeout": 5.0,  # ends the never-reading clients once their calls are answered; idle-flood holds 1 s
    "header_timeout": 2.0,
    "request_timeout": 3.0,
    "send_timeout": 2.0,
    "max_body": 1024 * 1024,
    "body_budget": 8 * 1024 * 1024,
}
CALLS = 40  # a normal client's calls in each phase
RSS_SLACK_KIB = 48 * 1024  # what the consumer may keep after an abuse ends, over its RSS before


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    config = tmp_path_factory.mktemp("abuse") / "consumer.toml"
    config.write_text("[consumer]\n" + "".join(f"{key} = {value!r}\n" for key, value in LIMITS.items()))
    started = []
    try:
        dubbo, port = service(5)
        started.append(dubbo)
        provider, key = provider_sidecar(port)
        started.append(provider)
        consumer, address = consumer_sidecar([f"{key}=100"], "--config", str(config), "--admin", "127.0.0.1:0")
        started.append(consumer)
        admin = admin_address(consumer)
        normal_calls(address, 5)  # warm
        yield consumer, address, admin
    finally:
        for process in reversed(started):
            process.stop()


def normal_calls(address, count: int = CALLS) -> list[float]:
    """``count`` calls on one new keep-alive connection, each checked; their latencies, sorted."""
    latencies = []
    with gevent.Timeout(WAIT, AssertionError("a normal client's calls were not answered in time")):
        client = Client(address)
        try:
            for i in range(count):
                text = f"normal {i} ü😀"
                started = time.monotonic()
                reply = client.request(form(text), headers=FORM_HEADERS)
                latencies.append(time.monotonic() - started)
                assert reply.status == 200 and reply.body == str(java_hash(text)).encode(), reply
        finally:
            client.close()
    return sorted(latencies)


def abuse(name: str, address) -> Process:
    """``tests.support.abuse NAME`` against ``address``, as its own process, once it has started."""
    target = "{}:{}".format(*address)
    process = Process([sys.executable, "-m", "tests.support.abuse", name, target, json.dumps(LIMITS)])
    wait_until(lambda: not process.lines.empty(), f"the abuse {name} to start")
    assert process.lines.get() == "started\n"
    return process


def result_of(process: Process) -> dict:
    wait_until(lambda: process.popen.poll() is not None, "the abuse to end", timeout=WAIT * 4)
    assert process.popen.returncode == 0, "".join(process.stderr)
    line = process.lines.get(timeout=WAIT)
    assert line.startswith("result "), line
    return json.loads(line.split(" ", 1)[1])


ABUSES = {
    "100k pipelined HEADs": "pipelined-heads",
    "a million 1-byte chunks": "million-chunks",
    "more idle connections than the limit": "idle-flood",
    "slow 1 MiB bodies": "slow-bodies",
    "pipelining clients that never read": "never-reads",
    "a client whose window stays shut": "stalled-reader",
    "1 MiB bodies past the body budget": "large-bodies",
    "uploads over the body limit": "oversized-uploads",
}


@pytest.mark.parametrize("name", ABUSES)
def test_a_normal_client_is_served_while_another_misbehaves(mesh, name):
    consumer, address, admin = mesh
    quiet = normal_calls(address)
    rss_before = rss_kib(consumer.pid)
    send_timeouts = admin_stats(admin)["http"]["send_timeouts"]
    process = abuse(ABUSES[name], address)
    gevent.sleep(0.5)  # the abuse is under way
    during = normal_calls(address)
    print(f"\n{name}: normal client {percentiles(during)} (quiet: {percentiles(quiet)})")
    result = result_of(process)
    if name == "100k pipelined HEADs":
        assert result["answers"] == 100_001  # every one answered, a turn at a time
    if name == "a million 1-byte chunks":  # read whole and refused (no form fields), or late
        assert result["status"] in ("400", "408")
    if name == "more idle connections than the limit":
        assert result["closed"] >= 50  # the longest idle ones were closed to make room
    if name == "slow 1 MiB bodies":  # late (408), or refused at once when their 1 MiB each spent the budget
        assert set(result["statuses"]) <= {"408", "503"} and "408" in result["statuses"]
    if name == "pipelining clients that never read":
        assert all(result["cut_off"])
    if name == "a client whose window stays shut":  # reset by the send deadline, not closed by the idle one
        assert result["reset"]
        wait_until(lambda: admin_stats(admin)["http"]["send_timeouts"] > send_timeouts, "the send deadline to count")
    if name == "uploads over the body limit":  # each reads its 413, not a reset
        assert result["statuses"] == ["413"] * 10
    if name == "1 MiB bodies past the body budget":
        statuses = set(result["statuses"])
        assert "503" in statuses and statuses <= {"400", "503"}
    normal_calls(address, 5)  # still served after it
    stats = admin_stats(admin)["http"]
    print(f"{name}: http counters {stats}")
    assert rss_kib(consumer.pid) < rss_before + RSS_SLACK_KIB
