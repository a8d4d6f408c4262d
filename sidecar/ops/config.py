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
    batch = true          # it takes several calls per datagram (REQUEST_BATCH; default false)

    [provider]
    listen = "127.0.0.1:30000"
    dubbo = "127.0.0.1:20880"
    weight = 200

Unknown keys and values of the wrong type are errors that name the key: a typo must not be ignored.
``packaging/config/consumer.toml`` and ``provider.toml`` list every key with its default.

Each key is checked on its own by one set of rules (:func:`check_table`), which both the loaders here
and ``sidecar config check`` (:mod:`sidecar.ops.config_check`) use: the loaders raise the first mistake,
the checker reports them all with their lines.

>>> config = consumer_config(flags={"listen": "127.0.0.1:0", "providers": ["127.0.0.1:30001=64/64"]})
>>> config.listen, config.providers
(('127.0.0.1', 0), (ProviderEntry(host='127.0.0.1', port=30001, weight=64.0, threshold=64, batch=False),))
>>> for error in check_table("consumer", {"workers": "2", "workerz": 2})[1]:
...     print(f"{error.key}: {error.problem}")
consumer.workers: must be a whole number, not '2'
consumer.workerz: not a known key; did you mean 'workers'?
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import tomllib
from pathlib import Path
from typing import Any

from sidecar.runtime.registry import ProviderEntry, parse_address, parse_etcd_url, parse_provider
from sidecar.runtime.settings import ConsumerConfig, ProviderConfig

__all__ = [
    "ConfigError",
    "ConsumerConfig",
    "ProviderConfig",
    "SECTIONS",
    "consumer_config",
    "provider_config",
    "load_file",
    "check_document",
    "check_table",
    "check_settings",
    "spell_key",
]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or malformed; the message names the key.

    ``path`` locates the mistake in the TOML document (``("consumer", "providers", 0, "weight")``;
    ``()`` for the whole file), ``key`` spells it (``consumer.providers[1].weight``, entries counted
    from 1) and ``problem`` says what is wrong without the key."""

    def __init__(self, message: str, path: tuple[str | int, ...] = (), problem: str | None = None):
        super().__init__(message)
        self.path = tuple(path)
        self.problem = problem or message

    @property
    def key(self) -> str:
        return spell_key(self.path)


SECTIONS: dict[str, type] = {"consumer": ConsumerConfig, "provider": ProviderConfig}
# The keys of a [[consumer.providers]] table, with values of the type each takes.
_PROVIDER_FIELDS: dict[str, Any] = {"address": ("", 0), "weight": 1.0, "threshold": 1, "batch": False}

# The limits of single keys beyond their types, by key without entry numbers.
_AT_LEAST_1 = {
    "consumer.workers", "consumer.threshold", "consumer.max_head", "consumer.max_body",
    "consumer.max_connections", "consumer.datagram_limit", "consumer.providers.threshold", "provider.pool_size",
    "provider.lease_ttl", "consumer.max_buffered", "consumer.body_budget", "consumer.io_collect_calls",
}  # fmt: skip
_POSITIVE = {
    "consumer.call_timeout", "consumer.idle_timeout", "consumer.header_timeout", "consumer.providers.weight",
    "consumer.request_timeout", "consumer.send_timeout",
    "provider.weight", "provider.call_timeout", "provider.heartbeat", "consumer.replay_window",
    "provider.replay_window",
}  # fmt: skip
_NOT_NEGATIVE = {"consumer.queue_size", "consumer.retry_after", "consumer.io_collect"}
# Keys whose value is an array of strings, with the most entries each may have and a check of one entry.
_LISTS = {
    "consumer.tunnel_key_files": (2, None), "provider.tunnel_key_files": (2, None),
    "provider.allow_sources": (None, lambda value: ipaddress.ip_network(value, strict=False)),
}  # fmt: skip
_CHOICES = {"consumer.serialization": ("hessian2", "fastjson")}
# String keys whose value, unless "", must parse: the key and its parser.
_PARSED = {
    "consumer.registry": parse_etcd_url, "provider.registry": parse_etcd_url, "provider.advertise": parse_address,
    "consumer.admin": parse_address, "provider.admin": parse_address,
}  # fmt: skip


def spell_key(path: tuple[str | int, ...]) -> str:
    """``("consumer", "providers", 0, "weight")`` as ``consumer.providers[1].weight``."""
    text = ""
    for part in path:
        text += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def load_file(path: str | Path, section: str) -> dict[str, Any]:
    """The ``[section]`` table of the TOML file at ``path`` (empty when the file has none)."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    for error in check_document(document):
        raise ConfigError(f"config file {path}: {error}", error.path, error.problem)
    return document.get(section, {})


def check_document(document: dict[str, Any]) -> list[ConfigError]:
    """The mistakes of a parsed file's top level: tables other than consumer and provider."""
    errors = []
    for name, value in document.items():
        if name not in SECTIONS:
            hint = _hint(name, SECTIONS)
            errors.append(ConfigError(f"unknown table {name!r} ({hint})", (name,), f"not a known table; {hint}"))
        elif not isinstance(value, dict):
            errors.append(_error((name,), "must be a table"))
    return errors


def check_table(section: str, table: dict[str, Any]) -> tuple[dict[str, Any], list[ConfigError]]:
    """Every key of a ``[section]`` table (or of flags) converted by its rules: the values that are
    right, and a :class:`ConfigError` for each mistake (unknown keys included), in the table's order."""
    fields = {f.name: f.default for f in dataclasses.fields(SECTIONS[section])}
    values, errors = {}, []
    for name, value in table.items():
        if name not in fields:
            hint = _hint(name, fields)
            message = f"unknown key {section}.{name} ({hint})"
            errors.append(ConfigError(message, (section, name), f"not a known key; {hint}"))
            continue
        try:
            if name == "providers" and section == "consumer":
                values[name] = _providers((section, name), value, errors)
            else:
                values[name] = _convert((section, name), fields[name], value)
        except ConfigError as e:
            errors.append(e)
    return values, errors


def check_settings(config: ConsumerConfig | ProviderConfig) -> list[ConfigError]:
    """The mistakes that take more than one key to see: a sidecar binds beyond loopback (its HTTP
    port, tunnel socket or admin endpoint) only when ``allow_remote`` says so."""
    section = "consumer" if isinstance(config, ConsumerConfig) else "provider"
    errors = []
    for key, purpose in _EXPOSED[section]:
        value = getattr(config, key)
        if value == "" or config.allow_remote:
            continue
        host = parse_address(value)[0] if isinstance(value, str) else value[0]
        if not _loopback(host):
            problem = f"{host} is not a loopback address: set allow_remote (--allow-remote) {purpose}"
            errors.append(ConfigError(f"{section}.{key} {problem}", (section, key), problem))
    return errors


# What each sidecar binds, and what binding it beyond loopback does.
_EXPOSED = {
    "consumer": (
        ("listen", "to take HTTP calls from other hosts"),
        ("tunnel_bind", "to take tunnel replies on a non-loopback address"),
        ("admin", "to serve the admin endpoint to other hosts"),
    ),
    "provider": (
        ("listen", "to accept tunnel datagrams from other hosts"),
        ("admin", "to serve the admin endpoint to other hosts"),
    ),
}


def consumer_config(path: str | Path | None = None, flags: dict[str, Any] | None = None) -> ConsumerConfig:
    """Defaults, overridden by the file's ``[consumer]`` table, overridden by ``flags`` (None = unset).
    ``flags["providers"]`` are ``HOST:PORT=WEIGHT[/THRESHOLD][+batch]`` strings and replace the file's list."""
    return _load("consumer", path, flags)


def provider_config(path: str | Path | None = None, flags: dict[str, Any] | None = None) -> ProviderConfig:
    """Defaults, overridden by the file's ``[provider]`` table, overridden by ``flags``."""
    return _load("provider", path, flags)


def _load(section: str, path: str | Path | None, flags: dict[str, Any] | None):
    values = {}
    if path is not None:
        values, errors = check_table(section, load_file(path, section))
        for error in errors:
            raise ConfigError(f"{path}: {error}", error.path, error.problem)
    set_flags = {key: value for key, value in (flags or {}).items() if value is not None and value not in ([], ())}
    flag_values, errors = check_table(section, set_flags)
    for error in errors:
        raise error
    config = SECTIONS[section](**{**values, **flag_values})
    for error in check_settings(config):
        raise error
    return config


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _hint(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"


def _error(path: tuple[str | int, ...], problem: str, message: str | None = None) -> ConfigError:
    """A mistake in one key; ``problem`` reads after the key (``must be ...``)."""
    return ConfigError(message or f"{spell_key(path)} {problem}", path, problem)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _convert(path: tuple[str | int, ...], default: Any, value: Any) -> Any:
    """``value`` as the type of ``default``, within the key's limits, or a ConfigError naming it."""
    key = ".".join(part for part in path if isinstance(part, str))
    if key in _LISTS:
        return _string_list(path, key, value)
    if isinstance(default, tuple):
        if not isinstance(value, str):
            raise _error(path, f"must be a string HOST:PORT, not {_shown(value)}")
        try:
            return parse_address(value)
        except ValueError:
            raise _error(path, f"must be HOST:PORT with a port from 0 to 65535, not {value!r}") from None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise _error(path, f"must be true or false, not {_shown(value)}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(path, f"must be a whole number, not {_shown(value)}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _error(path, f"must be a number, not {_shown(value)}")
        if not math.isfinite(value):
            raise _error(path, f"must be a finite number, not {value!r}")
        value = float(value)
    elif not isinstance(value, str):
        raise _error(path, f"must be a string, not {_shown(value)}")
    if key in _AT_LEAST_1 and value < 1:
        raise _error(path, f"must be at least 1, not {value!r}")
    if key in _POSITIVE and value <= 0:
        raise _error(path, f"must be positive, not {value!r}")
    if key in _NOT_NEGATIVE and value < 0:
        raise _error(path, f"must not be negative, not {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise _error(path, f"must be one of {', '.join(_CHOICES[key])}, not {value!r}")
    if key in _PARSED and value:
        try:
            _PARSED[key](value)
        except ValueError as e:
            raise _error(path, f"must be empty or {'etcd://' if 'registry' in key else ''}HOST:PORT: {e}") from None
    return value


def _string_list(path: tuple[str | int, ...], key: str, value: Any) -> tuple[str, ...]:
    most, check = _LISTS[key]
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise _error(path, f"must be an array of strings, not {_shown(value)}")
    if most is not None and len(value) > most:
        raise _error(path, f"must have at most {most} entries, not {len(value)}")
    for item in value:
        try:
            if check is not None:
                check(item)
        except ValueError as e:
            raise _error(path, f"must be CIDRs like 10.0.0.0/8: {e}") from None
    return tuple(value)


def _providers(path: tuple[str | int, ...], value: Any, errors: list[ConfigError]) -> tuple[ProviderEntry, ...]:
    """The static registry: an array of provider tables (or ``HOST:PORT=WEIGHT[/THRESHOLD][+batch]`` strings,
    as flags give them). Each mistake is added to ``errors`` and its entry left out."""
    if not isinstance(value, list | tuple):
        raise _error(path, f"must be an array of provider tables, not {_shown(value)}")
    entries = (_provider(path + (index,), item, errors) for index, item in enumerate(value))
    return tuple(entry for entry in entries if entry is not None)


def _provider(path: tuple[str | int, ...], item: Any, errors: list[ConfigError]) -> ProviderEntry | None:
    key = spell_key(path)
    if isinstance(item, ProviderEntry):
        return item
    if isinstance(item, str):
        try:
            return parse_provider(item)
        except ValueError as e:
            errors.append(_error(path, f"must be HOST:PORT=WEIGHT[/THRESHOLD][+batch]: {e}", f"{key}: {e}"))
            return None
    if not isinstance(item, dict):
        problem = f"must be a table with address, weight and threshold, not {_shown(item)}"
        errors.append(_error(path, problem, f"{key}: each provider is a table with address, weight and threshold"))
        return None
    found = len(errors)
    values = {}
    for name, value in item.items():
        if name not in _PROVIDER_FIELDS:
            hint = _hint(name, _PROVIDER_FIELDS)
            message = f"{key}: unknown provider key {name!r} ({hint})"
            errors.append(_error(path + (name,), f"not a known key; {hint}", message))
            continue
        try:
            values[name] = _convert(path + (name,), _PROVIDER_FIELDS[name], value)
        except ConfigError as e:
            errors.append(e)
    if "address" not in item:
        errors.append(_error(path, "a provider needs an address", f"{key}: a provider needs an address"))
    if len(errors) > found:
        return None
    return ProviderEntry(
        *values["address"], values.get("weight", 100.0), values.get("threshold"), values.get("batch", False)
    )
