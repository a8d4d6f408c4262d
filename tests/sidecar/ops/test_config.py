"""Configuration: defaults, the TOML file, flags on top; every mistake names its key."""

import pytest

from sidecar.ops.config import ConfigError, ConsumerConfig, ProviderConfig, consumer_config, provider_config
from sidecar.runtime.registry import ProviderEntry, StaticRegistry, parse_address, parse_provider

CONSUMER_TOML = """
[consumer]
listen = "127.0.0.1:21000"
workers = 2
call_timeout = 1.5

[[consumer.providers]]
address = "127.0.0.1:30001"
weight = 64
threshold = 64

[[consumer.providers]]
address = "127.0.0.1:30002"

[provider]
listen = "127.0.0.1:30001"
dubbo = "127.0.0.1:20880"
weight = 64
"""


@pytest.fixture
def toml_file(tmp_path):
    def write(text):
        path = tmp_path / "sidecar.toml"
        path.write_text(text)
        return path

    return write


def test_a_provider_that_takes_request_batches_in_the_file_and_in_flags(toml_file):
    path = toml_file("[[consumer.providers]]\naddress = '127.0.0.1:30001'\nbatch = true\n")
    assert consumer_config(path).providers == (ProviderEntry("127.0.0.1", 30001, 100.0, None, batch=True),)
    flags = {"providers": ["127.0.0.1:1=2/8+batch", "127.0.0.1:2=3+batch", "127.0.0.1:3=4/5"]}
    assert [(p.port, p.threshold, p.batch) for p in consumer_config(None, flags).providers] == [
        (1, 8, True),
        (2, None, True),
        (3, 5, False),
    ]
    with pytest.raises(ConfigError, match="must be true or false, not 'yes'"):
        consumer_config(toml_file("[[consumer.providers]]\naddress = '127.0.0.1:1'\nbatch = 'yes'\n"))
    for bad, says in [("127.0.0.1:1=2+fast", "unknown provider option 'fast'"), ("127.0.0.1:1=2+", "option ''")]:
        with pytest.raises(ValueError, match=says):
            parse_provider(bad)
    with pytest.raises(ValueError, match="is not a number"):
        parse_provider("127.0.0.1:1=+batch")


def test_defaults():
    assert consumer_config() == ConsumerConfig()
    assert ConsumerConfig().listen == ("127.0.0.1", 20000)
    assert provider_config().listen == ("127.0.0.1", 30000)


def test_file_then_flags(toml_file):
    path = toml_file(CONSUMER_TOML)
    config = consumer_config(path)
    assert config.listen == ("127.0.0.1", 21000)
    assert config.workers == 2 and config.call_timeout == 1.5
    assert config.providers == (
        ProviderEntry("127.0.0.1", 30001, 64.0, 64),
        ProviderEntry("127.0.0.1", 30002, 100.0, None),
    )
    flagged = consumer_config(path, {"workers": 4, "listen": None, "providers": ["127.0.0.1:1=2"]})
    assert flagged.workers == 4 and flagged.listen == ("127.0.0.1", 21000)
    assert flagged.providers == (ProviderEntry("127.0.0.1", 1, 2.0, None),)
    provider = provider_config(path, {"pool_size": 2})
    assert provider == ProviderConfig(listen=("127.0.0.1", 30001), weight=64.0, pool_size=2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[consumer]\nworkerz = 2\n", "unknown key consumer.workerz"),
        ("[consumer]\nworkers = '2'\n", "consumer.workers must be a whole number"),
        ("[consumer]\nworkers = 0\n", "consumer.workers must be at least 1"),
        ("[consumer]\nlisten = 'nowhere'\n", "consumer.listen"),
        ("[consumer]\nserialization = 'xml'\n", "consumer.serialization must be one of"),
        ("[consumer]\nprovider_header = 1\n", "must be true or false"),
        ("[[consumer.providers]]\nweight = 3\n", "a provider needs an address"),
        ("[[consumer.providers]]\naddress = '1.2.3.4:5'\nwieght = 3\n", "unknown provider key 'wieght'"),
        ("[consumer\n", "not valid TOML"),
        ("[proxy]\n", "unknown table 'proxy'"),
    ],
)
def test_mistakes_name_the_key(toml_file, text, message):
    with pytest.raises(ConfigError, match=message):
        consumer_config(toml_file(text))


def test_provider_binding_wider_than_loopback_is_a_choice():
    with pytest.raises(ConfigError, match="allow_remote"):
        provider_config(None, {"listen": "0.0.0.0:30000"})
    assert provider_config(None, {"listen": "0.0.0.0:30000", "allow_remote": True}).listen == ("0.0.0.0", 30000)


@pytest.mark.parametrize(
    ("section", "flags", "key"),
    [
        ("consumer", {"listen": "0.0.0.0:20000"}, "consumer.listen"),
        ("consumer", {"admin": "0.0.0.0:9000"}, "consumer.admin"),
        ("consumer", {"tunnel_bind": "0.0.0.0:0"}, "consumer.tunnel_bind"),
        ("consumer", {"listen": "[::]:20000"}, "consumer.listen"),
        ("provider", {"admin": "0.0.0.0:9000"}, "provider.admin"),
    ],
)
def test_both_sidecars_bind_beyond_loopback_only_when_allowed(section, flags, key):
    load = consumer_config if section == "consumer" else provider_config
    with pytest.raises(ConfigError, match="set allow_remote") as raised:
        load(None, flags)
    assert raised.value.key == key
    assert load(None, {**flags, "allow_remote": True})


def test_loopback_addresses_need_no_allowance():
    config = consumer_config(None, {"listen": "[::1]:0", "admin": "localhost:9000", "tunnel_bind": "127.0.0.2:0"})
    assert not config.allow_remote and config.listen == ("::1", 0)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        consumer_config(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:30000=100", ProviderEntry("127.0.0.1", 30000, 100.0, None)),
        ("localhost:1=0.5/3", ProviderEntry("localhost", 1, 0.5, 3)),
        ("[::1]:30000=2", ProviderEntry("::1", 30000, 2.0, None)),
    ],
)
def test_parse_provider(text, expected):
    assert parse_provider(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:30000", "HOST:PORT=WEIGHT"),
        ("127.0.0.1=1", "not HOST:PORT"),
        ("127.0.0.1:99999=1", "port must be a number"),
        ("127.0.0.1:1=x", "weight 'x' is not a number"),
        ("127.0.0.1:1=0", "positive"),
        ("127.0.0.1:1=1/0", "threshold must be a whole number"),
    ],
)
def test_parse_provider_mistakes(text, message):
    with pytest.raises(ValueError, match=message):
        parse_provider(text)


def test_parse_address_and_key():
    assert parse_address("[::1]:80") == ("::1", 80)
    assert ProviderEntry("::1", 80, 1.0).key == "[::1]:80"


def test_static_registry_calls_back_once_with_everything():
    seen = []
    entries = [parse_provider("127.0.0.1:1=1"), parse_provider("127.0.0.1:2=2")]
    registry = StaticRegistry(entries)
    registry.start(seen.append)
    registry.stop()
    assert seen == [entries]


def test_docstring_examples():
    import doctest

    from sidecar.ops import config
    from sidecar.runtime import registry

    assert doctest.testmod(config).failed == 0
    assert doctest.testmod(registry).failed == 0
