"""Configuration of the two sidecars: defaults, a TOML file, then command-line flags, in that order.

A file holds a ``[consumer]`` table, a ``[provider]`` table, or both (one file can describe a whole
host); each sidecar reads only its own table. Every key has the name of its command-line flag with
``-`` written as ``_``. The static registry is the consumer's list of providers::

    [consumer]
    listen = "127.0.0.1:20000"
    workers = 2

    [[consumer.providers]]
    address = "127.0.0.1:30000"
    weight = 200          # the provider's share of the calls
    threshold = 200       # calls in flight before calls queue (default: the consumer's threshold)

    [provider]
    listen = "127.0.0.1:30000"
    dubbo = "127.0.0.1:20880"
    weight = 200

Unknown keys and values of the wrong type are errors that name the key: a typo must not be ignored.

>>> config = consumer_config(flags={"listen": "127.0.0.1:0", "providers": ["127.0.0.1:30001=64/64"]})
>>> config.listen, config.providers
(('127.0.0.1', 0), (ProviderEntry(host='127.0.0.1', port=30001, weight=64.0, threshold=64),))
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.registry import ProviderEntry, parse_address, parse_provider

__all__ = ["ConfigError", "ConsumerConfig", "ProviderConfig", "consumer_config", "provider_config", "load_file"]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or malformed; the message names the key."""


@dataclass(frozen=True)
class ConsumerConfig:
    """What the consumer sidecar runs with. Times are in seconds, sizes in bytes."""

    listen: tuple[str, int] = ("127.0.0.1", 20000)  # the HTTP port applications call
    providers: tuple[ProviderEntry, ...] = ()  # the static registry
    workers: int = 1  # processes sharing the port with SO_REUSEPORT
    threshold: int = 200  # calls in flight per provider before calls queue (split over the workers)
    queue_size: int = 1024  # calls that may wait for a provider slot, per worker
    call_timeout: float = 3.0  # a call without an answer by then gets 504
    retry_after: int = 1  # seconds, the Retry-After of a 503 for a full wait queue
    idle_timeout: float = 60.0  # a keep-alive connection silent that long is closed
    header_timeout: float = 10.0  # a request head must arrive whole within this
    max_head: int = 16 * 1024  # request line plus headers (over: 431)
    max_body: int = 1024 * 1024  # request body (over: 413)
    max_connections: int = 10000  # per worker; a full pool stops accepting
    tunnel_bind: tuple[str, int] = ("127.0.0.1", 0)  # the UDP socket the tunnel uses
    datagram_limit: int = 65507  # the largest tunnel datagram sent
    serialization: str = "hessian2"  # of the Dubbo requests: hessian2 or fastjson
    provider_header: bool = False  # answer with X-Provider naming the provider (demo, debugging)


@dataclass(frozen=True)
class ProviderConfig:
    """What the provider sidecar runs with."""

    listen: tuple[str, int] = ("127.0.0.1", 30000)  # the tunnel's UDP port; binding wider is a choice
    dubbo: tuple[str, int] = ("127.0.0.1", 20880)  # the local Dubbo service
    weight: float = 100.0  # this provider's share, as the registry announces it
    pool_size: int = 4  # persistent TCP connections to the service
    call_timeout: float = 10.0  # calls the service never answers are forgotten after this
    heartbeat: float = 60.0  # seconds of silence before a heartbeat; 3x closes the connection
    allow_remote: bool = False  # accept tunnel datagrams from outside loopback


_SERIALIZATIONS = ("hessian2", "fastjson")


def load_file(path: str | Path, section: str) -> dict[str, Any]:
    """The ``[section]`` table of the TOML file at ``path`` (empty when the file has none)."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    others = set(document) - {"consumer", "provider"}
    if others:
        raise ConfigError(f"config file {path}: unknown table {sorted(others)[0]!r} (known: consumer, provider)")
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: {section} must be a table")
    return table


def consumer_config(path: str | Path | None = None, flags: dict[str, Any] | None = None) -> ConsumerConfig:
    """Defaults, overridden by the file's ``[consumer]`` table, overridden by ``flags`` (None = unset).
    ``flags["providers"]`` are ``HOST:PORT=WEIGHT[/THRESHOLD]`` strings and replace the file's list."""
    values = _merge(ConsumerConfig, "consumer", path, flags)
    config = _build(ConsumerConfig, "consumer", values)
    if config.serialization not in _SERIALIZATIONS:
        raise ConfigError(f"consumer.serialization must be one of {', '.join(_SERIALIZATIONS)}")
    for name in ("workers", "threshold", "max_head", "max_body", "max_connections", "datagram_limit"):
        if getattr(config, name) < 1:
            raise ConfigError(f"consumer.{name} must be at least 1")
    for name in ("call_timeout", "idle_timeout", "header_timeout"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"consumer.{name} must be positive")
    if config.queue_size < 0 or config.retry_after < 0:
        raise ConfigError("consumer.queue_size and consumer.retry_after must not be negative")
    return config


def provider_config(path: str | Path | None = None, flags: dict[str, Any] | None = None) -> ProviderConfig:
    """Defaults, overridden by the file's ``[provider]`` table, overridden by ``flags``."""
    config = _build(ProviderConfig, "provider", _merge(ProviderConfig, "provider", path, flags))
    if config.weight <= 0 or config.pool_size < 1 or config.call_timeout <= 0 or config.heartbeat <= 0:
        raise ConfigError("provider.weight, pool_size, call_timeout and heartbeat must be positive")
    if not config.allow_remote and not _loopback(config.listen[0]):
        raise ConfigError(
            f"provider.listen {config.listen[0]} is not a loopback address: set allow_remote (--allow-remote) "
            "to accept tunnel datagrams from other hosts"
        )
    return config


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _merge(cls: type, section: str, path: str | Path | None, flags: dict[str, Any] | None) -> dict[str, Any]:
    values = dict(load_file(path, section)) if path is not None else {}
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{path}: unknown key {section}.{key} (known: {', '.join(sorted(known))})")
    for key, value in (flags or {}).items():
        if key not in known:
            raise ConfigError(f"unknown option {key}")
        if value is not None and value != ():
            values[key] = value
    return values


def _build(cls: type, section: str, values: dict[str, Any]):
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        kwargs[f.name] = _convert(f"{section}.{f.name}", f.default, values[f.name])
    return cls(**kwargs)


def _convert(key: str, default: Any, value: Any) -> Any:
    try:
        if key.endswith(".providers"):
            if not isinstance(value, list | tuple):
                raise ConfigError(f"{key} must be a list of providers")
            return tuple(_provider(key, item) for item in value)
        if isinstance(default, tuple):
            if not isinstance(value, str):
                raise ConfigError(f"{key} must be a string HOST:PORT")
            return parse_address(value)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be true or false")
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key} must be a whole number, not {value!r}")
            return value
        if isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{key} must be a number, not {value!r}")
            return float(value)
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, not {value!r}")
        return value
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{key}: {e}") from None


def _provider(key: str, item: Any) -> ProviderEntry:
    if isinstance(item, ProviderEntry):
        return item
    if isinstance(item, str):
        return parse_provider(item)
    if not isinstance(item, dict):
        raise ConfigError(f"{key}: each provider is a table with address, weight and threshold")
    unknown = set(item) - {"address", "weight", "threshold"}
    if unknown:
        raise ConfigError(f"{key}: unknown provider key {sorted(unknown)[0]!r} (known: address, weight, threshold)")
    if "address" not in item:
        raise ConfigError(f"{key}: a provider needs an address")
    host, port = parse_address(_convert(f"{key}.address", "", item["address"]))
    weight = _convert(f"{key}.weight", 1.0, item.get("weight", 100))
    threshold = item.get("threshold")
    if threshold is not None:
        threshold = _convert(f"{key}.threshold", 1, threshold)
    return ProviderEntry(host, port, weight, threshold)
