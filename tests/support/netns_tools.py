"""Two small programs test_netns.py runs inside a network namespace (``ip netns exec NS python -m
tests.support.netns_tools ...``), where the test process itself cannot open sockets:

* ``load HOST:PORT``: ``--clients`` keep-alive HTTP clients call the consumer sidecar for
  ``--seconds``, each call with its own ``--deadline`` (the socket timeout, and the latency past which
  a call counts as late); prints one JSON object: the calls by status, wrong answers, late calls,
  connection errors, and the largest latency of each status.
* ``relay HOST UPSTREAM...``: the network faults in user space, for kernels without ``sch_netem``:
  one UDP socket on ``HOST`` per upstream (a provider sidecar), printing ``listening HOST:PORT`` for
  each; what the consumer sends is passed to the upstream and the upstream's replies back, each
  datagram dropped with probability ``--loss`` or else delayed by ``--delay`` +- ``--jitter`` seconds
  (uniform, so datagrams overtake each other).
* ``stats URL...``: fetches each URL (a sidecar's admin ``/stats``) and prints the JSON answers as one
  JSON array.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from collections import Counter

from integrations.demo.hello_service import java_string_hash
from sidecar.runtime.registry import parse_address
from sidecar.tools.demo import ALPHABET, form_body

__all__ = ["load", "relay", "stats", "main"]


def load(address: tuple[str, int], *, clients: int, seconds: float, deadline: float, seed: int = 0) -> dict:
    """Drive the calls (see the module docstring) and return the summary."""
    end = time.monotonic() + seconds
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    max_latency: dict[str, float] = {}
    odd: list[str] = []  # the first few replies other than 200 and 504, for the failure message
    wrong = late = 0
    lock = threading.Lock()

    def record(status: str, latency: float, right: bool = True, body: bytes = b"") -> None:
        nonlocal wrong, late
        with lock:
            statuses[status] += 1
            max_latency[status] = max(max_latency.get(status, 0.0), latency)
            wrong += not right
            late += latency > deadline
            if status not in ("200", "504") and len(odd) < 5:
                odd.append(f"{status} {body[:200]!r}")

    def client(rng: random.Random) -> None:
        conn = None
        while time.monotonic() < end:
            if conn is None:
                conn = http.client.HTTPConnection(*address, timeout=deadline)
            parameter = "".join(rng.choices(ALPHABET, k=rng.randint(0, 64)))
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            start = time.monotonic()
            try:
                conn.request("POST", "/", body=form_body(parameter), headers=headers)
                response = conn.getresponse()
                body = response.read()
            except TimeoutError:
                record("no reply by the deadline", time.monotonic() - start)
                conn.close()
                conn = None
                continue
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors[type(e).__name__] += 1
                conn.close()
                conn = None
                time.sleep(0.01)
                continue
            right = response.status != 200 or body == str(java_string_hash(parameter)).encode()
            record(str(response.status), time.monotonic() - start, right, body)
            if response.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(random.Random(seed * 1000 + i),)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "calls": sum(statuses.values()),
        "statuses": dict(statuses),
        "wrong": wrong,
        "late": late,
        "errors": dict(errors),
        "max_latency": {status: round(value, 4) for status, value in sorted(max_latency.items())},
        "odd": odd,
    }


def relay(host: str, upstreams: list[tuple[str, int]], *, loss: float, delay: float, jitter: float, seed: int) -> None:
    """Run the relays (see the module docstring) until a signal ends the process."""
    import gevent
    from gevent import socket

    rng = random.Random(seed)

    def forward(sock, upstream: tuple[str, int]) -> None:
        client = None  # the consumer's tunnel address, once it has sent something
        while True:
            data, source = sock.recvfrom(65535)
            if source[:2] == upstream:
                target = client
            else:
                client, target = source[:2], upstream
            if target is None or rng.random() < loss:
                continue
            gevent.spawn_later(max(0.0, rng.uniform(delay - jitter, delay + jitter)), sock.sendto, data, target)

    greenlets = []
    for upstream in upstreams:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        print("listening {}:{}".format(*sock.getsockname()[:2]), flush=True)
        greenlets.append(gevent.spawn(forward, sock, upstream))
    gevent.joinall(greenlets, raise_error=True)


def stats(urls: list[str]) -> list:
    """The JSON answer of each URL."""
    import urllib.request

    answers = []
    for url in urls:
        with urllib.request.urlopen(url, timeout=5) as response:
            answers.append(json.loads(response.read()))
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.netns_tools")
    commands = parser.add_subparsers(dest="command", required=True)
    load_args = commands.add_parser("load", help="drive calls and print a JSON summary")
    load_args.add_argument("address", type=parse_address)
    load_args.add_argument("--clients", type=int, default=16)
    load_args.add_argument("--seconds", type=float, default=3.0)
    load_args.add_argument("--deadline", type=float, required=True, help="seconds a call may take")
    load_args.add_argument("--seed", type=int, default=0)
    relay_args = commands.add_parser("relay", help="pass datagrams on, with loss, delay and reordering")
    relay_args.add_argument("host")
    relay_args.add_argument("upstreams", nargs="+", type=parse_address)
    relay_args.add_argument("--loss", type=float, default=0.0)
    relay_args.add_argument("--delay", type=float, default=0.0)
    relay_args.add_argument("--jitter", type=float, default=0.0)
    relay_args.add_argument("--seed", type=int, default=0)
    stats_args = commands.add_parser("stats", help="fetch JSON from each URL; print them as one array")
    stats_args.add_argument("urls", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "load":
        summary = load(args.address, clients=args.clients, seconds=args.seconds, deadline=args.deadline, seed=args.seed)
        print(json.dumps(summary, sort_keys=True))
    elif args.command == "stats":
        print(json.dumps(stats(args.urls)))
    else:
        relay(args.host, args.upstreams, loss=args.loss, delay=args.delay, jitter=args.jitter, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
