"""The admin endpoint in this process on gevent: a consumer sidecar in front of fake providers, a
provider sidecar in front of the demo service (or of nothing), asked over real loopback sockets."""

from __future__ import annotations

import json

import gevent
import pytest
from gevent import socket
from prometheus_client.parser import text_string_to_metric_families

from sidecar.codecs import http1, tunnel
from sidecar.ops import admin, metrics, stats_table
from sidecar.ops.admin_supervisor import fetch
from tests.support.fakes import FakeProvider
from tests.support.http_clients import FORM_HEADERS, Client, form
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def get(address, target: str, method: str = "GET") -> http1.Response:
    client = Client(address)
    try:
        return client.request(b"", target, method=method)
    finally:
        client.close()


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


@pytest.fixture
def servers():
    made = []

    def serve(server: admin.AdminServer) -> admin.AdminServer:
        server.start()
        made.append(server)
        return server

    yield serve
    for server in made:
        server.stop()


@pytest.fixture
def providers():
    made = [FakeProvider(), FakeProvider()]
    yield made
    for fake in made:
        fake.close()


def test_consumer_healthz_ok_then_draining(start, servers, providers):
    sidecar = start([p.entry() for p in providers])
    server = servers(admin.for_consumer(sidecar, ("127.0.0.1", 0)))
    reply = get(server.address, "/healthz")
    assert (reply.status, reply.body) == (200, b"ok\n")
    sidecar.stop(timeout=0)  # the admin port outlives the drain
    reply = get(server.address, "/healthz")
    assert (reply.status, reply.body) == (503, b"draining\n")


def test_consumer_without_providers_is_not_ready(start, servers):
    sidecar = start([])
    server = servers(admin.for_consumer(sidecar, ("127.0.0.1", 0)))
    reply = get(server.address, "/healthz")
    assert (reply.status, reply.body) == (503, b"no provider known\n")


def test_consumer_stats_after_calls(start, servers, providers):
    sidecar = start([p.entry() for p in providers])
    server = servers(admin.for_consumer(sidecar, ("127.0.0.1", 0)))
    client = Client(sidecar.address)
    for i in range(6):
        assert client.request(form(f"call {i}"), headers=FORM_HEADERS).status == 200
    client.close()
    reply = get(server.address, "/stats?pretty")
    assert reply.status == 200 and http1.get_header(reply.headers, "content-type") == "application/json"
    stats = json.loads(reply.body)
    assert stats["role"] == "consumer" and stats["workers"] == 1
    assert stats["in_flight"] == 0 and stats["queued"] == 0
    keys = {"{}:{}".format(*p.address) for p in providers}
    assert set(stats["providers"]) == keys
    rows = stats["providers"].values()
    assert sum(row["answered"] for row in rows) == 6
    for row in rows:
        assert {"in_flight", "answered", "errors", "timeouts", "ejections", "weight", "threshold"} <= set(row)
        assert set(row["latency_ms"]) == {"p50", "p90", "p99", "mean", "count"}
        assert row["latency_ms"]["count"] == row["answered"]
        if row["answered"]:
            assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p90"] <= row["latency_ms"]["p99"]
    assert stats["calls"]["calls"] == stats["calls"]["answered"] == 6
    assert stats["tunnel"]["datagrams_out"] == 6 and stats["tunnel"]["datagrams_in"] == 6
    assert stats["tunnel"]["dropped"] == {}
    assert stats["http"] == {"connections": 1, "requests": 6, "timeouts": 0, "send_timeouts": 0}
    collect = stats["io_collect"]
    assert collect["interval"] == sidecar.io_collect and collect["collecting"] is False  # one call at a time
    assert collect["turns"] >= 12 and collect["busy_turns"] == 0  # a poll for each request and each reply, at least
    table = stats_table.format_stats(stats).splitlines()
    assert [line for line in table if line.startswith("loop ")] == [f"loop      polls {collect['turns']}  gathered 0"]


def test_consumer_metrics_parse_as_prometheus_text(start, servers, providers):
    sidecar = start([p.entry() for p in providers])
    server = servers(admin.for_consumer(sidecar, ("127.0.0.1", 0)))
    client = Client(sidecar.address)
    for i in range(4):
        assert client.request(form(f"call {i}"), headers=FORM_HEADERS).status == 200
    client.close()
    garbage = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a datagram that is no tunnel packet
    garbage.sendto(b"not a tunnel packet", sidecar.caller.address)
    garbage.close()
    wait_until(lambda: sidecar.caller.dropped["malformed"] == 1, "the drop")

    reply = get(server.address, "/metrics")
    assert reply.status == 200
    assert http1.get_header(reply.headers, "content-type") == metrics.CONTENT_TYPE
    found = families(reply.body.decode())
    keys = {"{}:{}".format(*p.address) for p in providers}

    assert found["dubbomesh_consumer_http_requests"].type == "counter"
    assert found["dubbomesh_consumer_http_requests"].samples[0].value == 4
    assert found["dubbomesh_consumer_calls_answered"].samples[0].value == 4
    assert found["dubbomesh_consumer_in_flight"].type == "gauge"
    answered = found["dubbomesh_consumer_provider_answered"]
    assert {s.labels["provider"] for s in answered.samples} == keys
    assert sum(s.value for s in answered.samples) == 4
    in_flight = found["dubbomesh_consumer_provider_in_flight"]
    assert in_flight.type == "gauge" and {s.labels["provider"] for s in in_flight.samples} == keys
    assert found["dubbomesh_consumer_loop_turns"].samples[0].value >= 8  # a poll per request and per reply
    assert found["dubbomesh_consumer_loop_collecting_turns"].samples[0].value == 0  # one call in flight at a time
    dropped = found["dubbomesh_consumer_tunnel_dropped"]
    assert [(s.labels, s.value) for s in dropped.samples] == [({"reason": "malformed"}, 1)]

    latency = found["dubbomesh_consumer_provider_latency_seconds"]
    assert latency.type == "histogram"
    counts = {s.labels["provider"]: s.value for s in latency.samples if s.name.endswith("_count")}
    assert set(counts) == keys and sum(counts.values()) == 4
    buckets = [s for s in latency.samples if s.name.endswith("_bucket")]
    assert {s.labels["le"] for s in buckets} >= {"+Inf", "0.0001", "1.6384"}
    for key in keys:  # cumulative: never decreasing, ending at the count
        values = [s.value for s in buckets if s.labels["provider"] == key]
        assert values == sorted(values) and values[-1] == counts[key]
    for family in found.values():
        assert family.documentation, family.name  # every family has its HELP


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [("GET", "/", 404), ("GET", "/stat", 404), ("POST", "/stats", 405), ("DELETE", "/healthz", 405)],
)
def test_other_paths_and_methods(start, servers, providers, method, target, status):
    sidecar = start([p.entry() for p in providers])
    server = servers(admin.for_consumer(sidecar, ("127.0.0.1", 0)))
    reply = get(server.address, target, method)
    assert reply.status == status
    if status == 405:
        assert http1.get_header(reply.headers, "allow") == "GET"


def test_keep_alive_serves_several_requests(start, servers, providers):
    sidecar = start([p.entry() for p in providers])
    server = servers(admin.for_consumer(sidecar, ("127.0.0.1", 0)))
    client = Client(server.address)
    for target in ("/healthz", "/stats", "/metrics", "/healthz"):
        assert client.request(b"", target, method="GET").status == 200
    client.close()


def test_worker_serves_raw_stats_on_a_unix_socket(start, servers, providers, tmp_path):
    sidecar = start([p.entry() for p in providers])
    path = str(tmp_path / "worker-0.sock")
    servers(admin.for_consumer(sidecar, path, raw=True))
    pool = gevent.get_hub().threadpool  # the supervisor's client blocks: a thread, as it has no hub

    status, body = pool.apply(fetch, (path, "/stats"))
    raw = json.loads(body)
    assert status == 200 and raw["role"] == "consumer" and raw["workers"] == 1
    assert all("latency" in p for p in raw["providers"].values())  # histograms, which merge
    assert pool.apply(fetch, (path, "/healthz")) == (200, b"ok\n")


def test_provider_without_its_service_is_not_ready(provider_sidecars, servers):
    sidecar = provider_sidecars(free_port())
    server = servers(admin.for_provider(sidecar, ("127.0.0.1", 0)))
    reply = get(server.address, "/healthz")
    assert reply.status == 503 and reply.body.startswith(b"no connection to the Dubbo service 127.0.0.1:")
    assert reply.body.count(b"\n") == 1


def test_provider_healthz_stats_and_metrics(service, provider_sidecars, servers, consumers):
    sidecar = provider_sidecars(service)
    assert sidecar.pool.wait_connected(10)
    server = servers(admin.for_provider(sidecar, ("127.0.0.1", 0)))
    assert get(server.address, "/healthz").status == 200
    consumer = consumers(sidecar.address)
    ids = [consumer.new_id() for _ in range(3)]
    for request_id in ids:
        consumer.send_call(request_id, "hello")
    consumer.receive(3)
    consumer.send_raw(tunnel.encode_replies([(ids[0], b"\xda\xbb" + bytes(14))]))  # not a request: dropped
    wait_until(lambda: sidecar.dropped["reply batch"] == 1, "the drop")
    consumer.close()

    stats = json.loads(get(server.address, "/stats").body)
    assert stats["role"] == "provider"
    assert stats["datagrams_in"] == 4 and stats["forwarded"] == stats["answered"] == 3
    assert stats["in_flight"] == 0 and stats["dropped"] == {"reply batch": 1}
    assert stats["pool"]["connections"] >= 1

    found = families(get(server.address, "/metrics").body.decode())
    assert found["dubbomesh_provider_calls_answered"].samples[0].value == 3
    assert found["dubbomesh_provider_upstream_connections"].type == "gauge"
    dropped = found["dubbomesh_provider_tunnel_dropped"].samples
    assert [(s.labels, s.value) for s in dropped] == [({"reason": "reply batch"}, 1)]

    sidecar.stop(timeout=1)
    assert get(server.address, "/healthz").body == b"draining\n"
