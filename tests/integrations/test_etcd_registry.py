"""The etcd v3 registry: pure key/value encoding and diffing, then real processes against a real
``etcd`` started here on free loopback ports (skipped when ``etcd`` is not installed; CI installs the
Debian package ``etcd-server``). Waits are bounded waits for something to happen, never measurements."""

from __future__ import annotations

import base64
import doctest
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from integrations import etcd_registry as er
from sidecar.runtime.registry import ProviderEntry
from tests.support.dubbo_peer import ROOT, WAIT, java_hash
from tests.support.ports import free_port
from tests.support.waiting import wait_until

PREFIX = er.service_prefix(er.DEFAULT_INTERFACE)
TTL = 2  # seconds: the lease of the provider sidecars here, so a killed one is gone soon


# -- pure helpers ------------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _put(key: str, value: str) -> dict:
    return {"kv": {"key": _b64(key), "value": _b64(value)}}


def _delete(key: str) -> dict:
    return {"type": "DELETE", "kv": {"key": _b64(key)}}


def test_key_and_value_round_trip():
    key = er.provider_key("demo.Hello", "10.0.0.2", 30000)
    assert key == "/dubbomesh/demo.Hello/10.0.0.2:30000"
    value = er.encode_value(200, None)
    assert json.loads(value) == {"weight": 200.0, "threshold": None}
    prefix = er.service_prefix("demo.Hello")
    assert er.decode_entry(key, value, prefix) == ProviderEntry("10.0.0.2", 30000, 200.0, None)
    assert er.decode_entry(key, er.encode_value(1.5, 8).encode(), prefix) == ProviderEntry("10.0.0.2", 30000, 1.5, 8)


def test_a_provider_that_takes_request_batches_says_so_and_older_values_mean_it_does_not():
    key, prefix = er.provider_key("i", "10.0.0.2", 30000), "/dubbomesh/i/"
    value = er.encode_value(64, None, batch=True)
    assert json.loads(value) == {"weight": 64.0, "threshold": None, "batch": True}
    assert er.decode_entry(key, value, prefix) == ProviderEntry("10.0.0.2", 30000, 64.0, None, batch=True)
    assert er.decode_entry(key, '{"weight": 64, "threshold": null}', prefix).batch is False
    assert er.decode_entry(key, '{"weight": 64, "batch": false}', prefix).batch is False
    registration = er.EtcdRegistration("http://127.0.0.1:2379", ("10.0.0.2", 30000), 64.0, batch=True, interface="i")
    assert json.loads(registration.value)["batch"] is True


def test_ipv6_keys_use_brackets():
    key = er.provider_key("i", "::1", 30000)
    assert key == "/dubbomesh/i/[::1]:30000"
    assert er.decode_entry(key, er.encode_value(1), "/dubbomesh/i/").host == "::1"


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("/dubbomesh/i/127.0.0.1:1", "not json", "not JSON"),
        ("/dubbomesh/i/127.0.0.1:1", "[1]", "JSON object"),
        ("/dubbomesh/i/127.0.0.1:1", '{"weight": 0}', "weight"),
        ("/dubbomesh/i/127.0.0.1:1", '{"weight": "5"}', "weight"),
        ("/dubbomesh/i/127.0.0.1:1", '{"weight": 1, "threshold": 0}', "threshold"),
        ("/dubbomesh/i/127.0.0.1:1", '{"weight": 1, "batch": 1}', "batch must be true or false"),
        ("/dubbomesh/i/nowhere", '{"weight": 1}', "HOST:PORT"),
        ("/other/127.0.0.1:1", '{"weight": 1}', "not under"),
    ],
)
def test_bad_entries_say_what_is_wrong(key, value, says):
    with pytest.raises(ValueError, match=says):
        er.decode_entry(key, value, "/dubbomesh/i/")


def test_events_add_replace_and_remove_providers():
    a, b = PREFIX + "127.0.0.1:1", PREFIX + "127.0.0.1:2"
    providers, problems = er.apply_events({}, [_put(a, er.encode_value(1)), _put(b, er.encode_value(2))], PREFIX)
    assert problems == [] and sorted(providers) == [a, b]
    providers, problems = er.apply_events(providers, [_put(a, er.encode_value(5, 3)), _delete(b)], PREFIX)
    assert providers == {a: ProviderEntry("127.0.0.1", 1, 5.0, 3)} and problems == []
    # a bad value drops the key and says why; deleting a key never seen is harmless
    providers, problems = er.apply_events(providers, [_put(a, "garbage"), _delete(b)], PREFIX)
    assert providers == {} and len(problems) == 1 and "not JSON" in problems[0]


def test_range_reply_gives_the_revision_and_the_providers():
    reply = {"header": {"revision": "7"}, "kvs": [_put(PREFIX + "127.0.0.1:1", er.encode_value(3))["kv"]]}
    revision, providers, problems = er.decode_range(reply, PREFIX)
    assert revision == 7 and list(providers.values()) == [ProviderEntry("127.0.0.1", 1, 3.0)] and problems == []
    assert er.decode_range({"header": {"revision": "3"}}, PREFIX) == (3, {}, [])


def test_docstring_examples():
    failures, tried = doctest.testmod(er)
    assert tried > 0 and failures == 0


def test_endpoint_parsing():
    assert er.parse_endpoint("etcd://127.0.0.1:2379") == ("127.0.0.1", 2379)
    with pytest.raises(ValueError, match="etcd://HOST:PORT"):
        er.parse_endpoint("127.0.0.1:2379")


# -- a real etcd ---------------------------------------------------------------------------------------

ETCD = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
needs_etcd = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (Debian package etcd-server)")


class Etcd:
    """One etcd member on free loopback ports; :meth:`start` again after :meth:`kill` keeps its data."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.client_port, self.peer_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.endpoint = f"etcd://127.0.0.1:{self.client_port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> Etcd:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = subprocess.Popen(
            [ETCD, "--name", "t", "--data-dir", self.data_dir, "--listen-client-urls", self.url,
             "--advertise-client-urls", self.url, "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", f"t={peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._healthy, "etcd answers")
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as reply:
                return json.loads(reply.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def _post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.loads(reply.read())

    def entries(self) -> dict[str, dict]:
        """The keys under the service prefix and their values, read directly (no library)."""
        end = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)
        reply = self._post("/v3/kv/range", {"key": _b64(PREFIX), "range_end": _b64(end)})
        return {
            base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"]))
            for kv in reply.get("kvs", ())
        }


@pytest.fixture
def etcd():
    with tempfile.TemporaryDirectory() as tmp:
        server = Etcd(os.path.join(tmp, "data"))
        try:
            yield server.start()
        finally:
            server.kill()


class Child:
    """A process started here that prints ``listening HOST:PORT``; stderr is collected for checks."""

    def __init__(self, *args: str):
        env = {**os.environ, "SIDECAR_LOG_LEVEL": "info", "SIDECAR_LOG_FORMAT": "plain"}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        line = self.popen.stdout.readline()
        if not line.startswith("listening "):
            self.stop()
            raise AssertionError(f"{args} did not start: {line!r} {self.err()}")
        self.address = line.split()[1]

    def _read_stderr(self) -> None:
        for line in self.popen.stderr:
            self.stderr.append(line)

    def err(self) -> str:
        return "".join(self.stderr)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)
        code = self.popen.wait(WAIT)
        self._reader.join(WAIT)
        self.popen.stdout.close()
        return code


@pytest.fixture
def children():
    started: list[Child] = []

    def start(*args: str) -> Child:
        child = Child(*args)
        started.append(child)
        return child

    yield start
    for child in reversed(started):
        if child.popen.poll() is None:
            child.stop(signal.SIGKILL)


def _service(start) -> Child:
    return start("integrations.demo.demo_provider", "--port", "0", "--latency-ms", "5")


def _provider(start, etcd_endpoint: str, service: Child, weight: int = 100) -> Child:
    return start(
        "sidecar", "provider", "--listen", "127.0.0.1:0", "--dubbo", service.address, "--weight", str(weight),
        "--registry", etcd_endpoint, "--config", _ttl_config(),
    )  # fmt: skip


def _consumer(start, etcd_endpoint: str) -> Child:
    return start("sidecar", "consumer", "--listen", "127.0.0.1:0", "--registry", etcd_endpoint, "--provider-header",
                 "--no-access-log")  # fmt: skip


_CONFIG: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def ttl_config(tmp_path_factory):
    """A provider config file with the short lease of these tests."""
    path = tmp_path_factory.mktemp("etcd-config") / "provider.toml"
    path.write_text(f"[provider]\nlease_ttl = {TTL}\n")
    _CONFIG["path"] = str(path)
    yield
    _CONFIG.clear()


def _ttl_config() -> str:
    return _CONFIG["path"]


def call(consumer: Child, text: str = "hello") -> tuple[int, str, str | None]:
    """One form call through the consumer: (status, body, the provider that answered)."""
    body = urllib.parse.urlencode(
        {"interface": er.DEFAULT_INTERFACE, "method": "hash", "parameterTypesString": "Ljava/lang/String;",
         "parameter": text}
    ).encode()  # fmt: skip
    request = urllib.request.Request(f"http://{consumer.address}/", body, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode(), reply.headers.get("X-Provider")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), None


def _answered_by(consumer: Child, provider: Child) -> bool:
    status, body, by = call(consumer)
    return status == 200 and by == provider.address


def _knows(consumer: Child, providers: list[Child]) -> bool:
    """Whether the consumer's last "providers from etcd" line names exactly ``providers``."""
    lines = [line for line in consumer.err().splitlines() if "providers from etcd:" in line]
    return bool(lines) and set(lines[-1].split("providers from etcd: ", 1)[1].split(", ")) == {
        p.address for p in providers
    }


class Load:
    """Calls in a loop from a few threads until stopped (several at once, so that every provider gets
    some: one call at a time would always find the same provider least loaded); counts the answers."""

    def __init__(self, consumer: Child, threads: int = 4):
        self.consumer = consumer
        self.statuses: dict[int, int] = {}
        self.providers: dict[str, int] = {}
        self.wrong = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            text = f"call {index}.{n}"
            status, body, by = call(self.consumer, text)
            with self._lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 200:
                    self.wrong += body != str(java_hash(text))
                    self.providers[by] = self.providers.get(by, 0) + 1

    def stop(self) -> Load:
        self._stop.set()
        for thread in self._threads:
            thread.join(WAIT)
        return self


@needs_etcd
def test_provider_registers_and_deregisters_on_graceful_stop(etcd, children):
    service = _service(children)
    provider = _provider(children, etcd.endpoint, service, weight=64)
    key = PREFIX + provider.address
    assert wait_until(lambda: etcd.entries().get(key), "the key appears") == {
        "weight": 64.0,
        "threshold": None,
        "batch": True,
    }
    consumer = _consumer(children, etcd.endpoint)
    status, body, by = call(consumer, "hello")
    assert (status, body, by) == (200, str(java_hash("hello")), provider.address)
    assert provider.stop() == 0
    assert key not in etcd.entries()  # deleted by the stop itself, not by the lease running out
    wait_until(lambda: call(consumer)[0] == 503, "the consumer forgets the provider")
    status, body, _ = call(consumer)
    assert status == 503 and "no provider" in body


@needs_etcd
def test_a_killed_provider_leaves_when_its_lease_expires(etcd, children):
    service = _service(children)
    provider = _provider(children, etcd.endpoint, service)
    key = PREFIX + provider.address
    wait_until(lambda: key in etcd.entries(), "the key appears")
    consumer = _consumer(children, etcd.endpoint)
    wait_until(lambda: _answered_by(consumer, provider), "calls reach the provider")
    provider.stop(signal.SIGKILL)
    wait_until(lambda: key not in etcd.entries(), "the lease expires")
    wait_until(lambda: call(consumer)[0] == 503, "the consumer forgets the provider")


@needs_etcd
def test_a_provider_joins_while_load_runs(etcd, children):
    service = _service(children)
    first = _provider(children, etcd.endpoint, service)
    consumer = _consumer(children, etcd.endpoint)
    wait_until(lambda: _answered_by(consumer, first), "calls reach the first provider")
    load = Load(consumer)
    try:
        second = _provider(children, etcd.endpoint, service)
        wait_until(lambda: load.providers.get(second.address), "calls reach the second provider")
    finally:
        load.stop()
    assert set(load.statuses) == {200}, load.statuses
    assert load.wrong == 0


@needs_etcd
def test_etcd_down_at_consumer_start_is_reported_and_providers_appear_later(children):
    with tempfile.TemporaryDirectory() as tmp:
        etcd = Etcd(os.path.join(tmp, "data"))  # ports chosen, nothing listening yet
        try:
            consumer = _consumer(children, etcd.endpoint)
            wait_until(lambda: "unreachable" in consumer.err(), "the consumer reports etcd down")
            assert etcd.endpoint in consumer.err()
            status, body, _ = call(consumer)
            assert status == 503 and "no provider" in body
            etcd.start()
            service = _service(children)
            provider = _provider(children, etcd.endpoint, service)
            wait_until(lambda: _answered_by(consumer, provider), "the consumer finds the provider")
            assert consumer.stop() == 0
        finally:
            etcd.kill()


@needs_etcd
def test_etcd_down_at_provider_start_is_reported_and_registration_retried(children):
    with tempfile.TemporaryDirectory() as tmp:
        etcd = Etcd(os.path.join(tmp, "data"))
        try:
            service = _service(children)
            provider = _provider(children, etcd.endpoint, service)
            wait_until(lambda: "cannot register" in provider.err(), "the provider reports etcd down")
            assert "still serving" in provider.err()
            etcd.start()
            wait_until(lambda: PREFIX + provider.address in etcd.entries(), "the provider registers")
        finally:
            etcd.kill()


@needs_etcd
def test_killing_etcd_under_load_keeps_the_last_known_providers(etcd, children):
    service = _service(children)
    providers = [_provider(children, etcd.endpoint, service) for _ in range(2)]
    consumer = _consumer(children, etcd.endpoint)
    wait_until(lambda: _knows(consumer, providers), "the consumer lists both providers")
    load = Load(consumer)
    try:
        etcd.kill()
        wait_until(lambda: "unreachable" in consumer.err(), "the consumer reports etcd down")
        before = sum(load.statuses.values())
        wait_until(lambda: sum(load.statuses.values()) > before + 20, "calls go on")
    finally:
        load.stop()
    assert set(load.statuses) == {200}, load.statuses
    assert set(load.providers) == {p.address for p in providers}
    assert load.wrong == 0
    # the provider sidecars report it too, keep serving, and still stop cleanly
    wait_until(lambda: all("cannot register" in p.err() or "expired" in p.err() for p in providers), "providers notice")
    for provider in providers:
        assert provider.stop() == 0
    assert consumer.stop() == 0
