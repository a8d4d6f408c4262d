"""What the two sidecars run with: their settings as frozen dataclasses, with every default.

The runtime reads these; :mod:`sidecar.ops.config` builds them from defaults, a TOML file and flags,
and checks every key. Times are in seconds, sizes in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.runtime.registry import ProviderEntry

__all__ = ["ACCESS_LOGGER", "ConsumerConfig", "ProviderConfig"]

ACCESS_LOGGER = "sidecar.access"  # the logger of the consumer's access log (one INFO line per call)


@dataclass(frozen=True)
class ConsumerConfig:
    """What the consumer sidecar runs with. Times are in seconds, sizes in bytes."""

    listen: tuple[str, int] = ("127.0.0.1", 20000)  # the HTTP port applications call
    allow_remote: bool = False  # may bind listen, tunnel_bind or admin beyond loopback
    providers: tuple[ProviderEntry, ...] = ()  # the static registry
    workers: int = 1  # processes sharing the port with SO_REUSEPORT
    threshold: int = 200  # calls in flight per provider before calls queue (split over the workers)
    queue_size: int = 1024  # calls that may wait for a provider slot, per worker
    call_timeout: float = 3.0  # a call without an answer by then gets 504
    retry_after: int = 1  # seconds, the Retry-After of a 503 for a full wait queue
    idle_timeout: float = 60.0  # a keep-alive connection silent that long is closed
    header_timeout: float = 10.0  # a request head must arrive whole within this
    request_timeout: float = 30.0  # the whole request (head and body) within this of its first byte
    send_timeout: float = 10.0  # a response must be taken by the client within this
    max_head: int = 16 * 1024  # request line plus headers (over: 431)
    max_body: int = 1024 * 1024  # request body (over: 413)
    max_connections: int = 10000  # per worker; then the longest idle connection is closed for a new one
    max_buffered: int = 64 * 1024  # bytes of pipelined requests read ahead of their turn, per connection
    body_budget: int = 64 * 1024 * 1024  # request bodies buffered at once, all connections (over: 503)
    tunnel_bind: tuple[str, int] = ("127.0.0.1", 0)  # the UDP socket the tunnel uses
    datagram_limit: int = 65507  # the largest tunnel datagram sent
    serialization: str = "hessian2"  # of the Dubbo requests: hessian2 or fastjson
    provider_header: bool = False  # answer with X-Provider naming the provider (demo, debugging)
    access_log: bool = True  # one INFO line per call on the sidecar.access logger; off saves its cost
    registry: str = ""  # "" for the static list above, or etcd://HOST:PORT to watch etcd for providers
    interface: str = "com.alibaba.dubbo.performance.demo.provider.IHelloService"  # whose providers etcd lists
    admin: str = ""  # HOST:PORT of the admin endpoint (/healthz, /metrics, /stats); "" for none
    tunnel_key_files: tuple[str, ...] = ()  # hex key files (at most 2, the first signs); or $SIDECAR_TUNNEL_KEY
    replay_window: float = 30.0  # seconds a tagged datagram's timestamp may differ from this host's clock
    io_collect: float = 0.0006  # seconds a busy hub gathers I/O events before it polls again (collect.py)
    io_collect_calls: int = 32  # calls in flight from which the hub is busy enough to collect; fewer: it polls at once


@dataclass(frozen=True)
class ProviderConfig:
    """What the provider sidecar runs with."""

    listen: tuple[str, int] = ("127.0.0.1", 30000)  # the tunnel's UDP port; binding wider is a choice
    dubbo: tuple[str, int] = ("127.0.0.1", 20880)  # the local Dubbo service
    weight: float = 100.0  # this provider's share, as the registry announces it
    pool_size: int = 4  # persistent TCP connections to the service
    call_timeout: float = 10.0  # calls the service never answers are forgotten after this
    heartbeat: float = 60.0  # seconds of silence before a heartbeat; 3x closes the connection
    allow_remote: bool = False  # may listen beyond loopback (who may send: a key, or allow_sources)
    registry: str = ""  # "" for none (consumers list this provider statically), or etcd://HOST:PORT to register
    interface: str = "com.alibaba.dubbo.performance.demo.provider.IHelloService"  # the service registered
    lease_ttl: int = 10  # seconds the etcd key outlives this sidecar if it dies; refreshed every third of it
    advertise: str = ""  # HOST:PORT consumers send to, as registered; "" = the bound listen address
    admin: str = ""  # HOST:PORT of the admin endpoint (/healthz, /metrics, /stats); "" for none
    tunnel_key_files: tuple[str, ...] = ()  # hex key files (at most 2, the first signs); or $SIDECAR_TUNNEL_KEY
    replay_window: float = 30.0  # seconds a tagged datagram's timestamp may differ from this host's clock
    allow_sources: tuple[str, ...] = ()  # CIDRs that may send; () = any when keyed, else loopback only
