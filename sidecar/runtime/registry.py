"""Where the consumer learns its providers: the static registry, and the shapes every registry shares.

A registry hands the consumer the whole current list of :class:`ProviderEntry` whenever it changes;
the consumer diffs it against its balancer. The static registry (a TOML list or ``--provider`` flags,
the embedded default) calls back once at start and never again.

>>> parse_provider("127.0.0.1:30001=64/64")
ProviderEntry(host='127.0.0.1', port=30001, weight=64.0, threshold=64, batch=False)
>>> parse_provider("[::1]:30002=1.5").key
'[::1]:30002'
>>> parse_provider("127.0.0.1:30003=64/64+batch").batch
True
>>> parse_address("localhost:20000")
('localhost', 20000)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

__all__ = ["ProviderEntry", "StaticRegistry", "parse_address", "parse_etcd_url", "parse_provider", "format_address"]


class ProviderEntry(NamedTuple):
    """One provider sidecar: its tunnel address, its share of the calls (``weight``), the calls in
    flight it takes before calls queue (``threshold``; ``None`` = the consumer's default), and whether
    it takes several calls in one REQUEST_BATCH datagram (``batch``; a provider that does not say so
    gets one REQUEST datagram per call)."""

    host: str
    port: int
    weight: float
    threshold: int | None = None
    batch: bool = False

    @property
    def key(self) -> str:
        return format_address(self.host, self.port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as ``(host, port)``; ValueError saying what is wrong."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    return host, int(port)


def parse_etcd_url(text: str) -> tuple[str, int]:
    """The ``registry`` setting ``etcd://HOST:PORT`` as ``(host, port)``; ValueError saying what is wrong."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep or scheme not in ("etcd", "http"):
        raise ValueError(f"{text!r} is not etcd://HOST:PORT")
    return parse_address(rest.rstrip("/"))


PROVIDER_OPTIONS = ("batch",)  # what may follow the share after a "+"


def parse_provider(text: str) -> ProviderEntry:
    """``HOST:PORT=WEIGHT`` or ``HOST:PORT=WEIGHT/THRESHOLD`` as a :class:`ProviderEntry`, either
    followed by ``+batch`` for a provider that takes REQUEST_BATCH datagrams."""
    address, sep, share = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r} is not HOST:PORT=WEIGHT[/THRESHOLD][+batch]")
    host, port = parse_address(address)
    share, plus, option = share.partition("+")
    if plus and option not in PROVIDER_OPTIONS:
        raise ValueError(f"{text!r}: unknown provider option {option!r} after '+' (known: batch)")
    weight_text, slash, threshold_text = share.partition("/")
    try:
        weight = float(weight_text)
    except ValueError:
        raise ValueError(f"{text!r}: the weight {weight_text!r} is not a number") from None
    if not weight > 0 or weight == float("inf"):
        raise ValueError(f"{text!r}: the weight must be a positive number")
    threshold = None
    if slash:
        if not threshold_text.isdigit() or int(threshold_text) < 1:
            raise ValueError(f"{text!r}: the threshold must be a whole number of at least 1")
        threshold = int(threshold_text)
    return ProviderEntry(host, port, weight, threshold, bool(plus))


class StaticRegistry:
    """The providers given in the configuration; they never change while the consumer runs."""

    def __init__(self, providers: Iterable[ProviderEntry]):
        self.providers = tuple(providers)

    def start(self, on_change: Callable[[list[ProviderEntry]], None]) -> None:
        on_change(list(self.providers))

    def stop(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"StaticRegistry({', '.join(p.key for p in self.providers)})"
