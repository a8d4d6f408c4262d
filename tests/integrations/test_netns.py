"""The tunnel across a real link that loses, delays and reorders datagrams: two network namespaces
joined by a veth pair, ``tc netem`` on both ends of it.

The provider namespace runs the demo Dubbo service on its loopback and two provider sidecars on its
veth address (``--allow-remote``); the consumer namespace runs the consumer sidecar on its loopback,
its tunnel socket bound to its veth address (``tunnel_bind`` and ``allow_remote``, set by a config file), and the load,
a subprocess (``netns_tools load``) whose clients give each call its own deadline. Each case runs a
few seconds of load with ``--call-timeout 1``; then every call must have ended as 200 with the right
answer or as 504, none later than the call timeout plus a margin, and the tables of calls in flight
(the consumer's pending calls, each provider's calls at the service, read from ``--admin`` ``/stats``)
must empty within the call timeout (plus the margin). A datagram that arrives, late or out of order,
must never be dropped (as a replay, a stale tag, from a wrong source). Every wait is bounded;
nothing is timed.

Why two provider sidecars: after ``eject_after`` (5) timeouts in a row the balancer ejects a provider,
and with a single one the calls meanwhile get 503 ``every provider is ejected``; five losses in a row
are rare at these rates but not impossible over thousands of calls, and ``eject_after`` is not a
setting. With two, a call gets 503 only if both are ejected at once, and the test accepts no 503.

Without netem (a kernel without ``sch_netem``) the netem cases are skipped, and the same faults are
made in user space (``netns_tools relay``: loss, delay and jitter that reorders) so the rest still
runs. Without namespaces (not root, no ``ip`` or ``tc``, ``ip netns add`` refused) everything is
skipped, with the reason; ``NETNS_REQUIRED=1`` makes those skips failures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.support.dubbo_peer import ROOT, WAIT, Process

PID = os.getpid()
SUBNET = f"10.199.{PID % 250 + 1}"  # a /30 of it; the namespaces are fresh, so it clashes with nothing
CONSUMER_NS, PROVIDER_NS = f"dmtest-c-{PID}", f"dmtest-p-{PID}"
CONSUMER_VETH, PROVIDER_VETH = f"dmc{PID}", f"dmp{PID}"  # at most 15 characters
CONSUMER_IP, PROVIDER_IP = f"{SUBNET}.1", f"{SUBNET}.2"

CALL_TIMEOUT = 1.0  # the consumer's --call-timeout
MARGIN = 1.0  # seconds past the call timeout a call may take: a bound, not a measurement
LOAD_SECONDS = 3.0
CLIENTS = 16

# Applied on both ends of the veth pair. "delay 20ms 10ms" reorders: netem sends each packet at its
# own time. "reorder 25% 50%" sends a quarter of the packets (correlated 50%) at once, the rest 20ms late.
NETEM_CASES = {
    "loss 1%": "loss 1%",
    "loss 5%": "loss 5%",
    "delay 20ms jitter 10ms": "delay 20ms 10ms",
    "reorder 25% 50%": "delay 20ms reorder 25% 50%",
}
RELAY = {"loss": 0.05, "delay": 0.02, "jitter": 0.01}  # the user-space case: loss 5%, delay 20ms +- 10ms

# The sidecars share a tunnel key (a keyed provider takes datagrams from any source; unkeyed, only
# from loopback), given by the environment so that it works whatever the flags are called.
_ENV = {**os.environ, "SIDECAR_LOG_LEVEL": "warning", "SIDECAR_TUNNEL_KEY": os.urandom(32).hex()}


def _skip(reason: str):
    if os.environ.get("NETNS_REQUIRED") == "1":
        pytest.fail(f"{reason} (NETNS_REQUIRED=1)")
    pytest.skip(reason)


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT)


def _must(*command: str) -> str:
    done = _run(*command)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _in(namespace: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command]


class Link:
    """The namespaces, the veth pair, and the processes in them (stopped by PID in :meth:`close`)."""

    def __init__(self):
        self.processes: list[Process] = []
        self.namespaces: list[str] = []
        self.netem_missing: str | None = None  # why netem cannot be used, once known

    def create(self) -> None:
        """The namespaces and the link; skips the module when the machine does not allow them."""
        if os.geteuid() != 0:
            _skip("network namespaces need root (ip netns add)")
        for tool in ("ip", "tc"):
            if shutil.which(tool) is None:
                _skip(f"no `{tool}` command (Debian package iproute2)")
        for namespace in (CONSUMER_NS, PROVIDER_NS):
            done = _run("ip", "netns", "add", namespace)
            if done.returncode != 0:
                _skip(f"`ip netns add {namespace}` failed: {done.stderr.strip()}")
            self.namespaces.append(namespace)
        try:
            _must("ip", "-n", CONSUMER_NS, "link", "add", CONSUMER_VETH, "type", "veth",
                  "peer", "name", PROVIDER_VETH, "netns", PROVIDER_NS)  # fmt: skip
            for namespace, veth, ip in (
                (CONSUMER_NS, CONSUMER_VETH, CONSUMER_IP),
                (PROVIDER_NS, PROVIDER_VETH, PROVIDER_IP),
            ):
                _must("ip", "-n", namespace, "addr", "add", f"{ip}/30", "dev", veth)
                _must("ip", "-n", namespace, "link", "set", veth, "up")
                _must("ip", "-n", namespace, "link", "set", "lo", "up")
            # permanent neighbour entries: netem then loses only tunnel datagrams, never an ARP
            # exchange that would hold every datagram to the peer for a second at once
            for namespace, veth, peer_ns, peer_veth, peer_ip in (
                (CONSUMER_NS, CONSUMER_VETH, PROVIDER_NS, PROVIDER_VETH, PROVIDER_IP),
                (PROVIDER_NS, PROVIDER_VETH, CONSUMER_NS, CONSUMER_VETH, CONSUMER_IP),
            ):
                mac = json.loads(_must("ip", "-n", peer_ns, "-j", "link", "show", "dev", peer_veth))[0]["address"]
                _must(
                    "ip", "-n", namespace, "neigh", "replace", peer_ip, "lladdr", mac, "dev", veth, "nud", "permanent"
                )
        except RuntimeError as e:
            _skip(f"cannot join the namespaces with a veth pair: {e}")
        done = _run(*_in(CONSUMER_NS, "tc", "qdisc", "add", "dev", CONSUMER_VETH, "root", "netem", "delay", "0ms"))
        if done.returncode != 0:
            self.netem_missing = (
                f"tc netem is not available ({done.stderr.strip()}): the kernel lacks sch_netem "
                "(CONFIG_NET_SCH_NETEM; try `modprobe sch_netem`)"
            )

    def netem(self, spec: str) -> None:
        """The same netem settings on both ends of the link (replacing the last case's)."""
        for namespace, veth in ((CONSUMER_NS, CONSUMER_VETH), (PROVIDER_NS, PROVIDER_VETH)):
            _must(*_in(namespace, "tc", "qdisc", "replace", "dev", veth, "root", "netem", *spec.split()))

    def start(self, command: list[str], namespace: str, lines: int = 1) -> tuple[Process, list[tuple[str, int]]]:
        """``command`` run in ``namespace``; its first ``lines`` ``listening`` addresses, and its admin
        address when it prints one."""
        process = Process(_in(namespace, *command), env=_ENV)
        self.processes.append(process)
        addresses = []
        for _ in range(lines):
            match = process.wait_for_line(r"^listening (\S+):(\d+)$")
            addresses.append((match.group(1), int(match.group(2))))
        if "--admin" in command:
            match = process.wait_for_line(r"^admin (\S+):(\d+)$")
            addresses.append((match.group(1), int(match.group(2))))
        return process, addresses

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        for namespace in self.namespaces:  # deleting a namespace deletes its end of the veth pair, and so both
            _run("ip", "netns", "delete", namespace)


def _sidecar(*args: str) -> list[str]:
    return [sys.executable, "-m", "sidecar", *args]


class Topology:
    """What the cases share: the service, two provider sidecars, and one consumer per route."""

    def __init__(self, link: Link, config: str):
        self.link, self.config = link, config
        _, ((_, port),) = link.start(
            [sys.executable, "-m", "integrations.demo.demo_provider", "--port", "0", "--latency-ms", "5"], PROVIDER_NS
        )
        self.providers, self.provider_admins = [], []
        for _ in range(2):
            _, (address, admin) = link.start(
                _sidecar("provider", "--listen", f"{PROVIDER_IP}:0", "--dubbo", f"127.0.0.1:{port}",
                         "--allow-remote", "--admin", "127.0.0.1:0"),
                PROVIDER_NS,
            )  # fmt: skip
            self.providers.append(address)
            self.provider_admins.append(admin)
        self.consumer, self.consumer_admin = self.consumer_for(self.providers)

    def consumer_for(self, providers: list[tuple[str, int]]) -> tuple[tuple[str, int], tuple[str, int]]:
        """A consumer sidecar in the consumer namespace calling ``providers``: its address and admin's."""
        command = _sidecar("consumer", "--config", self.config, "--listen", "127.0.0.1:0", "--no-access-log",
                           "--call-timeout", f"{CALL_TIMEOUT:g}", "--admin", "127.0.0.1:0")  # fmt: skip
        for host, port in providers:
            command += ["--provider", f"{host}:{port}=1"]
        _, (address, admin) = self.link.start(command, CONSUMER_NS)
        return address, admin


def _stats(namespace: str, *admins: tuple[str, int]) -> list[dict]:
    """The ``/stats`` of the sidecars whose admin ports are ``admins``, fetched inside ``namespace``."""
    urls = ["http://{}:{}/stats".format(*admin) for admin in admins]
    command = _in(namespace, sys.executable, "-m", "tests.support.netns_tools", "stats", *urls)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _settled(topology: Topology, consumer_admin: tuple[str, int]) -> tuple[list[str], dict]:
    """Waits (at most the call timeout plus the margin) for the consumer's pending calls and each
    provider's calls in flight to be 0: the tables left non-empty (or []), and the consumer's stats."""
    end = time.monotonic() + CALL_TIMEOUT + MARGIN
    while True:
        left = []
        (consumer,) = _stats(CONSUMER_NS, consumer_admin)
        if consumer["in_flight"] or consumer["queued"]:
            left.append(f"consumer: {consumer['in_flight']} pending, {consumer['queued']} queued")
        for provider in _stats(PROVIDER_NS, *topology.provider_admins):
            if provider["in_flight"]:
                left.append(f"provider {provider['address']}: {provider['in_flight']} in flight")
        if not left or time.monotonic() > end:
            return left, consumer
        time.sleep(0.1)


def _load(consumer: tuple[str, int]) -> dict:
    """The load, driven from inside the consumer namespace; its JSON summary."""
    command = [sys.executable, "-m", "tests.support.netns_tools", "load", "{}:{}".format(*consumer),
               "--clients", str(CLIENTS), "--seconds", f"{LOAD_SECONDS:g}",
               "--deadline", f"{CALL_TIMEOUT + MARGIN:g}"]  # fmt: skip
    done = subprocess.run(_in(CONSUMER_NS, *command), cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _check(topology: Topology, consumer: tuple[str, int], consumer_admin: tuple[str, int]) -> dict:
    before = _stats(CONSUMER_NS, consumer_admin)[0]["calls"]
    summary = _load(consumer)
    print(json.dumps(summary, sort_keys=True))  # shown with -s or on failure: the counts per case
    statuses = summary["statuses"]
    assert summary["calls"] > 0 and statuses.get("200", 0) > 0, summary
    assert set(statuses) <= {"200", "504"}, summary
    assert summary["wrong"] == 0 and summary["late"] == 0 and not summary["errors"], summary
    left, consumer_stats = _settled(topology, consumer_admin)
    providers = _stats(PROVIDER_NS, *topology.provider_admins)
    drops = {"consumer": consumer_stats["tunnel"]["dropped"], **{p["address"]: p["dropped"] for p in providers}}
    print(json.dumps(drops, sort_keys=True))  # datagrams dropped by reason, since each sidecar started
    assert left == []
    calls = consumer_stats["calls"]
    delta = {name: calls[name] - before[name] for name in calls}
    # every call the consumer took ended as an answer or a timeout, and the client saw each one
    assert delta["calls"] == summary["calls"] == delta["answered"] + delta["timeouts"], (delta, summary)
    assert delta["timeouts"] == statuses.get("504", 0), (delta, summary)
    # what arrives, late or out of order, is never refused (as a replay, a stale tag, a wrong source):
    # only a reply after its call's 504 is dropped, and the delays here are far below the call timeout
    assert all(not dropped for dropped in drops.values()), drops
    return summary


@pytest.fixture(scope="module")
def link():
    link = Link()
    try:
        link.create()
        yield link
    finally:
        link.close()


@pytest.fixture(scope="module")
def topology(link, tmp_path_factory):
    config = tmp_path_factory.mktemp("netns") / "consumer.toml"
    config.write_text(f'[consumer]\nallow_remote = true\ntunnel_bind = "{CONSUMER_IP}:0"\n')
    return Topology(link, str(config))


def test_calls_cross_the_link_with_the_tunnel_bound_to_the_veth_address(topology):
    (consumer,) = _stats(CONSUMER_NS, topology.consumer_admin)
    summary = _check(topology, topology.consumer, topology.consumer_admin)
    assert set(summary["statuses"]) == {"200"}, summary
    assert set(consumer["providers"]) == {"{}:{}".format(*p) for p in topology.providers}


@pytest.mark.parametrize("spec", NETEM_CASES.values(), ids=NETEM_CASES.keys())
def test_every_call_ends_in_time_and_the_tables_empty_under_netem(link, topology, spec):
    if link.netem_missing:
        _skip(link.netem_missing)
    link.netem(spec)
    try:
        _check(topology, topology.consumer, topology.consumer_admin)
    finally:
        link.netem("delay 0ms")


def test_every_call_ends_in_time_and_the_tables_empty_with_faults_made_in_user_space(link, topology):
    args = [f"--{name}={value:g}" for name, value in RELAY.items()]
    upstreams = ["{}:{}".format(*p) for p in topology.providers]
    command = [sys.executable, "-m", "tests.support.netns_tools", "relay", PROVIDER_IP, *upstreams, *args]
    _, relays = link.start(command, PROVIDER_NS, lines=len(upstreams))
    consumer, admin = topology.consumer_for(relays)
    _check(topology, consumer, admin)
