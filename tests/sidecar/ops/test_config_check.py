"""`sidecar config check`: every mistake of a file with its key and line; the example files are clean."""

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecar.cli import main
from sidecar.ops.config import ConsumerConfig, ProviderConfig, consumer_config, provider_config
from sidecar.ops.config_check import check_file, check_text, key_lines
from sidecar.runtime.registry import ProviderEntry

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "packaging" / "config"


def lines(text: str) -> list[str]:
    return check_text(text).lines("F")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[consumer]\nworkers = "2"\n', "F:2: key consumer.workers: must be a whole number, not '2'"),
        ("[consumer]\n\nworkers = 0\n", "F:3: key consumer.workers: must be at least 1, not 0"),
        ("[consumer]\nqueue_size = -1\n", "F:2: key consumer.queue_size: must not be negative, not -1"),
        ("[consumer]\ncall_timeout = 0\n", "F:2: key consumer.call_timeout: must be positive, not 0.0"),
        ("[consumer]\ncall_timeout = inf\n", "F:2: key consumer.call_timeout: must be a finite number, not inf"),
        ("[consumer]\ncall_timeout = true\n", "F:2: key consumer.call_timeout: must be a number, not True"),
        (
            "[consumer]\nlisten = 'nowhere'\n",
            "F:2: key consumer.listen: must be HOST:PORT with a port from 0 to 65535, not 'nowhere'",
        ),
        ("[consumer]\nlisten = 20000\n", "F:2: key consumer.listen: must be a string HOST:PORT, not 20000"),
        (
            "[consumer]\nserialization = 'xml'\n",
            "F:2: key consumer.serialization: must be one of hessian2, fastjson, not 'xml'",
        ),
        ("[consumer]\nprovider_header = 1\n", "F:2: key consumer.provider_header: must be true or false, not 1"),
        ("[consumer]\nworkerz = 2\n", "F:2: key consumer.workerz: not a known key; did you mean 'workers'?"),
        (
            "[provider]\nzzz = 2\n",
            "F:2: key provider.zzz: not a known key; "
            "known: admin, advertise, allow_remote, allow_sources, call_timeout, dubbo, heartbeat, interface, "
            "lease_ttl, listen, pool_size, registry, replay_window, tunnel_key_files, weight",
        ),
        ("[proxy]\n[consumer]\n", "F:1: key proxy: not a known table; known: consumer, provider"),
        ("[providers]\n[consumer]\n", "F:1: key providers: not a known table; did you mean 'provider'?"),
        ("consumer = 3\n", "F:1: key consumer: must be a table"),
        ("# nothing\n", "F: has neither a [consumer] nor a [provider] table"),
        # the static registry: tables, inline tables, strings
        ("[[consumer.providers]]\nweight = 3\n", "F:1: key consumer.providers[1]: a provider needs an address"),
        (
            "[[consumer.providers]]\naddress = '127.0.0.1:1'\n"
            "[[consumer.providers]]\naddress = '127.0.0.1:2'\nweight = 0",
            "F:5: key consumer.providers[2].weight: must be positive, not 0.0",
        ),
        (
            "[[consumer.providers]]\naddress = '127.0.0.1:1'\nthreshold = 1.5\n",
            "F:3: key consumer.providers[1].threshold: must be a whole number, not 1.5",
        ),
        (
            "[consumer]\nproviders = [\n  {address = '127.0.0.1:1'},  # fine\n"
            "  {address = '127.0.0.1:2', wieght = 2},\n]",
            "F:4: key consumer.providers[2].wieght: not a known key; did you mean 'weight'?",
        ),
        (
            "[consumer]\nproviders = 'x'\n",
            "F:2: key consumer.providers: must be an array of provider tables, not 'x'",
        ),
        (
            "[consumer]\nproviders = ['127.0.0.1:1=x']\n",
            "F:2: key consumer.providers[1]: must be HOST:PORT=WEIGHT[/THRESHOLD][+batch]: "
            "'127.0.0.1:1=x': the weight 'x' is not a number",
        ),
        # dotted and quoted keys, values over several lines
        ('consumer.workers = "2"\n', "F:1: key consumer.workers: must be a whole number, not '2'"),
        ('[consumer]\n"workers" = true\n', "F:2: key consumer.workers: must be a whole number, not True"),
        ("[ consumer ]\n'max_body' = -1\n", "F:2: key consumer.max_body: must be at least 1, not -1"),
        (
            '[consumer]\ntunnel_bind = """\nworkers = 2:1 """\nworkers = "x"\n',
            "F:4: key consumer.workers: must be a whole number, not 'x'",
        ),
        # the rule across keys
        (
            "[provider]\nlisten = '0.0.0.0:30000'\n",
            "F:2: key provider.listen: 0.0.0.0 is not a loopback address: set allow_remote (--allow-remote) "
            "to accept tunnel datagrams from other hosts",
        ),
    ],
)
def test_each_mistake_names_its_key_and_line(text, expected):
    assert lines(text) == [expected]


def test_every_mistake_is_reported_in_line_order():
    text = """\
[provider]
pool_size = 0
weight = "heavy"

[consumer]
listen = "127.0.0.1:99999"
workerz = 2

[[consumer.providers]]
address = "127.0.0.1:30000"
threshold = 0

[[consumer.providers]]
wieght = 3
"""
    assert lines(text) == [
        "F:2: key provider.pool_size: must be at least 1, not 0",
        "F:3: key provider.weight: must be a number, not 'heavy'",
        "F:6: key consumer.listen: must be HOST:PORT with a port from 0 to 65535, not '127.0.0.1:99999'",
        "F:7: key consumer.workerz: not a known key; did you mean 'workers'?",
        "F:11: key consumer.providers[1].threshold: must be at least 1, not 0",
        "F:13: key consumer.providers[2]: a provider needs an address",
        "F:14: key consumer.providers[2].wieght: not a known key; did you mean 'weight'?",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[consumer\n", "F:1:10: not valid TOML: Expected ']' at the end of a table declaration"),
        ("[consumer]\nworkers = 2\nlisten = \n", "F:3:10: not valid TOML: Invalid value"),
        ("[consumer]\nworkers = 1\nworkers = 2\n", "F:3:12: not valid TOML: Cannot overwrite a value"),
        ('[consumer]\nlisten = """x', "F:2: not valid TOML: Unterminated string (at end of document)"),
    ],
)
def test_syntax_errors_give_the_line_and_column_tomllib_reports(text, expected):
    assert lines(text) == [expected]


def test_clean_files_say_which_tables_are_valid():
    assert lines("[consumer]\n") == ["F: consumer settings are valid"]
    assert lines("[provider]\n[consumer]\n") == ["F: consumer and provider settings are valid"]


def test_key_lines_follow_headers_arrays_and_inline_tables():
    text = """\
top = 1
[a]
b.c = 'x#y'  # comment
"q.k" = {x = [1,
  2], y = {z = 3}}
s = '''
not = "a key"
'''
[[a.arr]]
[[a.arr]]
k = "\\"" # escaped quote
[a.arr.sub]
m = 1
"""
    found = key_lines(text)
    assert found[("top",)] == 1 and found[("a",)] == 2 and found[("a", "b", "c")] == 3
    assert found[("a", "q.k", "x", 1)] == 5 and found[("a", "q.k", "y", "z")] == 5
    assert ("not",) not in found and ("a", "not") not in found
    assert found[("a", "arr", 1)] == 10 and found[("a", "arr", 1, "k")] == 11
    assert found[("a", "arr", 1, "sub", "m")] == 13


# The example files of packaging/config.


def uncommented(path: Path) -> str:
    """The example with its commented-out examples ("#" directly before the text) switched on."""
    return re.sub(r"^#(?=[^\s#])", "", path.read_text(), flags=re.M)


def test_example_files_are_exactly_the_defaults():
    assert consumer_config(EXAMPLES / "consumer.toml") == ConsumerConfig()
    assert provider_config(EXAMPLES / "provider.toml") == ProviderConfig()


def test_example_files_list_every_key():
    """A key added to ConsumerConfig or ProviderConfig must be added to its example file too."""
    for name, cls in (("consumer", ConsumerConfig), ("provider", ProviderConfig)):
        table = tomllib.loads(uncommented(EXAMPLES / f"{name}.toml"))[name]
        assert set(table) == {f.name for f in dataclasses.fields(cls)}, f"packaging/config/{name}.toml"


def test_the_commented_provider_examples_are_valid(tmp_path):
    path = tmp_path / "consumer.toml"
    path.write_text(uncommented(EXAMPLES / "consumer.toml"))
    assert check_file(path).problems == ()
    assert consumer_config(path).providers == (
        ProviderEntry("127.0.0.1", 30000, 100.0, 200, batch=True),
        ProviderEntry("10.0.0.2", 30000, 50.0, None),
    )


@pytest.mark.parametrize("name", ["consumer.toml", "provider.toml"])
def test_example_files_check_clean(name):
    result = CliRunner().invoke(main, ["config", "check", str(EXAMPLES / name)])
    assert (result.exit_code, result.output) == (0, f"{EXAMPLES / name}: {name[:-5]} settings are valid\n")


# The command.


def test_cli_prints_every_mistake_and_exits_1(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[consumer]\nworkers = "2"\nthresold = 1\n')
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert result.output == (
        f"{path}:2: key consumer.workers: must be a whole number, not '2'\n"
        f"{path}:3: key consumer.thresold: not a known key; did you mean 'threshold'?\n"
    )


def test_cli_syntax_error_and_missing_tables(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[consumer\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert (result.exit_code, result.output) == (
        1,
        f"{path}:1:10: not valid TOML: Expected ']' at the end of a table declaration\n",
    )
    path.write_text("")
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert (result.exit_code, result.output) == (1, f"{path}: has neither a [consumer] nor a [provider] table\n")


def test_cli_clean_file(tmp_path):
    path = tmp_path / "host.toml"
    path.write_text("[consumer]\nworkers = 2\n[provider]\nweight = 50\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert (result.exit_code, result.output) == (0, f"{path}: consumer and provider settings are valid\n")


def test_cli_missing_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["config", "check", str(tmp_path / "absent.toml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_cli_unreadable_file_is_an_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[consumer]\n# caf\xe9\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 1 and result.output.startswith(f"Error: config file {path} is not UTF-8")
