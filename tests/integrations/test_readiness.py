"""Readiness of a real consumer sidecar: ``/healthz`` says the process serves, ``/readyz`` says a call
made now can be served. With its only provider ejected after repeated timeouts, the consumer is
alive (200 on /healthz) and not ready (503 on /readyz, saying why), and ready again once the
provider answers in time."""

from __future__ import annotations

import subprocess
import sys

from tests.support.http_clients import FORM_HEADERS, Client, form
from tests.support.sidecar_load import admin_address, consumer_sidecar, provider_sidecar, service
from tests.support.waiting import wait_until


def get(address, path: str):
    client = Client(address)
    try:
        return client.request(b"", path, method="GET")
    finally:
        client.close()


def call(address) -> int:
    client = Client(address)
    try:
        return client.request(form("r"), headers=FORM_HEADERS).status
    finally:
        client.close()


def test_readyz_follows_ejection_while_healthz_stays_200():
    started = []
    try:
        slow, port = service(1500)  # slower than the call timeout: every call times out
        started.append(slow)
        provider, key = provider_sidecar(port)
        started.append(provider)
        consumer, address = consumer_sidecar([f"{key}=100"], "--call-timeout", "0.2", "--admin", "127.0.0.1:0")
        started.append(consumer)
        admin = admin_address(consumer)
        assert (get(admin, "/readyz").status, get(admin, "/healthz").status) == (200, 200)
        statuses = [call(address) for _ in range(5)]  # five timeouts in a row eject the provider
        assert statuses == [504] * 5
        reply = get(admin, "/readyz")
        assert reply.status == 503 and reply.body == b"all providers ejected\n"
        assert get(admin, "/healthz").status == 200  # alive: restarting it would not help
        assert call(address) == 503
        wait_until(lambda: get(admin, "/readyz").status == 200, "the ejection to end (half-open)", timeout=30)
    finally:
        for process in reversed(started):
            process.stop()


def test_both_sidecars_refuse_to_bind_beyond_loopback_unless_allowed():
    for args in (
        ["consumer", "--listen", "0.0.0.0:0", "--provider", "127.0.0.1:30000=1"],
        ["consumer", "--admin", "0.0.0.0:0", "--provider", "127.0.0.1:30000=1"],
        ["provider", "--listen", "0.0.0.0:0", "--dubbo", "127.0.0.1:20880"],
        ["provider", "--admin", "0.0.0.0:0", "--dubbo", "127.0.0.1:20880"],
    ):
        run = subprocess.run([sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=60)
        assert run.returncode != 0 and "set allow_remote (--allow-remote)" in run.stderr, (args, run.stderr)
