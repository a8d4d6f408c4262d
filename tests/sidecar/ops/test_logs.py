"""The sidecar's log lines: the two formats byte for byte, the level and format fallbacks, the consumer's
access log in process (captured with caplog), and JSON lines on the stderr of a real consumer process."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecar import cli
from sidecar.codecs import tunnel
from sidecar.ops import config, logs
from sidecar.ops.config import ConsumerConfig
from tests.support.dubbo_peer import ROOT, WAIT
from tests.support.fakes import FakeProvider
from tests.support.http_clients import FORM_HEADERS, Client, form

NOON = 1714564800.123  # 2024-05-01T12:00:00.123Z
HEX16 = re.compile(r"[0-9a-f]{16}")


def record(msg="POST %s %d", args=("/", 200), *, level=logging.INFO, name=logs.ACCESS, exc_info=None, **extra):
    return logging.makeLogRecord(
        {
            "name": name,
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": msg,
            "args": args,
            "exc_info": exc_info,
            "created": NOON,
            **extra,
        }
    )


def failure():
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        return sys.exc_info()


# -- the formats ----------------------------------------------------------------------------------


def test_plain_line():
    line = logs.PlainFormatter().format(record(request_id="0007000000010002", status=200, ms=1.5))
    assert (
        line == "2024-05-01T12:00:00.123Z INFO sidecar.access: POST / 200 request_id=0007000000010002 status=200 ms=1.5"
    )


def test_plain_quotes_values_with_spaces_quotes_or_nothing():
    line = logs.PlainFormatter().format(record("hi", (), path="/a b", client_request_id='x"y', provider=""))
    assert line == '2024-05-01T12:00:00.123Z INFO sidecar.access: hi path="/a b" client_request_id="x\\"y" provider=""'


def test_plain_traceback_follows_on_its_own_lines():
    text = logs.PlainFormatter().format(record("failed", (), level=logging.ERROR, exc_info=failure()))
    first, *rest = text.split("\n")
    assert first == "2024-05-01T12:00:00.123Z ERROR sidecar.access: failed"
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ZeroDivisionError: division by zero"


def test_json_line():
    line = logs.JsonFormatter().format(record(request_id="0007000000010002", status=200, ms=1.5, client="1.2.3.4:5"))
    assert line == (
        '{"ts":"2024-05-01T12:00:00.123Z","level":"info","logger":"sidecar.access","msg":"POST / 200",'
        '"request_id":"0007000000010002","status":200,"ms":1.5,"client":"1.2.3.4:5"}'
    )


def test_json_exception_stays_on_one_line():
    line = logs.JsonFormatter().format(record("failed", (), level=logging.ERROR, exc_info=failure()))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "error" and parsed["msg"] == "failed"
    assert parsed["exc"].startswith("Traceback (most recent call last):\n")
    assert parsed["exc"].endswith("ZeroDivisionError: division by zero")


def test_json_writes_other_values_as_text_and_keeps_its_own_fields():
    parsed = json.loads(logs.JsonFormatter().format(record(where=Path("/tmp/x"), address=("h", 1), level_="x")))
    assert parsed["where"] == "/tmp/x" and parsed["address"] == ["h", 1]
    parsed = json.loads(logs.JsonFormatter().format(record("m", (), ts="forged")))
    assert parsed["ts"] == "2024-05-01T12:00:00.123Z"


def test_hex_id_is_sixteen_digits():
    assert logs.hex_id(1) == "0000000000000001"
    assert logs.hex_id(tunnel.make_request_id(0xFFFF, 0, 0)) == "ffff000000000000"


# -- configure: flags, then the environment, then the defaults -------------------------------------


@pytest.fixture
def root(monkeypatch):
    monkeypatch.delenv("SIDECAR_LOG_LEVEL", raising=False)
    monkeypatch.delenv("SIDECAR_LOG_FORMAT", raising=False)
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_configure_defaults_to_info_and_plain(root):
    stream = io.StringIO()
    handler = logs.configure(stream=stream)
    assert root.handlers == [handler] and root.level == logging.INFO
    logging.getLogger("sidecar.test").debug("hidden")
    logging.getLogger("sidecar.test").info("shown", extra={"request_id": "00ff"})
    assert re.fullmatch(r"\S+Z INFO sidecar\.test: shown request_id=00ff\n", stream.getvalue())


def test_configure_falls_back_to_the_environment(root, monkeypatch):
    monkeypatch.setenv("SIDECAR_LOG_LEVEL", "debug")
    monkeypatch.setenv("SIDECAR_LOG_FORMAT", "json")
    stream = io.StringIO()
    logs.configure(None, None, stream=stream)
    assert root.level == logging.DEBUG
    logging.getLogger("sidecar.test").debug("shown")
    assert json.loads(stream.getvalue())["msg"] == "shown"


def test_flags_beat_the_environment(root, monkeypatch):
    monkeypatch.setenv("SIDECAR_LOG_LEVEL", "debug")
    monkeypatch.setenv("SIDECAR_LOG_FORMAT", "json")
    handler = logs.configure("error", "plain", stream=io.StringIO())
    assert root.level == logging.ERROR and isinstance(handler.formatter, logs.PlainFormatter)


@pytest.mark.parametrize(("variable", "value"), [("SIDECAR_LOG_LEVEL", "loud"), ("SIDECAR_LOG_FORMAT", "xml")])
def test_unknown_level_or_format_is_an_error(root, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=value):
        logs.configure(stream=io.StringIO())


# -- the consumer's access log, in this process -----------------------------------------------------


def access_records(caplog):
    return [r for r in caplog.records if r.name == logs.ACCESS]


def test_access_log_has_one_line_per_call(start, caplog):
    caplog.set_level(logging.INFO, logger=logs.ACCESS)
    provider = FakeProvider()
    try:
        sidecar = start([provider.entry()])
        client = Client(sidecar.address)
        assert client.request(form("a"), headers=[*FORM_HEADERS, ("X-Request-Id", "abc-1")]).status == 200
        assert client.request(b"", target="/nowhere", headers=FORM_HEADERS).status == 404
    finally:
        provider.close()
    ok, missing = access_records(caplog)
    key = "{}:{}".format(*provider.address)
    assert ok.getMessage() == "POST / 200"
    assert (ok.status, ok.method, ok.path, ok.provider, ok.client_request_id) == (200, "POST", "/", key, "abc-1")
    assert ok.client == "{}:{}".format(*client.sock.getsockname())
    assert HEX16.fullmatch(ok.request_id) and int(ok.request_id, 16) == provider.received[0].request_id
    assert tunnel.split_request_id(int(ok.request_id, 16)).consumer_id == 7
    assert ok.ms >= 0
    assert (missing.status, missing.path) == (404, "/nowhere")
    assert not hasattr(missing, "request_id") and not hasattr(missing, "provider")
    assert not hasattr(missing, "client_request_id")


def test_timeout_is_logged_with_its_request_id(start, caplog):
    caplog.set_level(logging.INFO, logger=logs.ACCESS)
    caplog.set_level(logging.INFO, logger="sidecar.runtime.consumer")
    silent = FakeProvider(behave=lambda request: None)
    try:
        sidecar = start([silent.entry()], call_timeout=0.2)
        assert Client(sidecar.address).request(form("x"), headers=FORM_HEADERS).status == 504
    finally:
        silent.close()
    (access,) = access_records(caplog)
    key = "{}:{}".format(*silent.address)
    assert (access.status, access.provider) == (504, key)
    assert int(access.request_id, 16) == silent.received[0].request_id
    (warning,) = [r for r in caplog.records if r.name == "sidecar.runtime.consumer" and r.levelno == logging.WARNING]
    assert "no answer from provider" in warning.getMessage()
    assert (warning.request_id, warning.provider) == (access.request_id, key)


def test_no_access_log_when_it_is_off(start, caplog):
    caplog.set_level(logging.INFO, logger=logs.ACCESS)
    provider = FakeProvider()
    try:
        sidecar = start([provider.entry()], access_log=False)
        client = Client(sidecar.address)
        assert client.request(form("a"), headers=FORM_HEADERS).status == 200
        assert client.request(b"", target="/nowhere", headers=FORM_HEADERS).status == 404
    finally:
        provider.close()
    assert access_records(caplog) == []


def test_access_log_is_a_config_key_and_a_flag(tmp_path):
    path = tmp_path / "consumer.toml"
    path.write_text("[consumer]\naccess_log = false\n")
    assert ConsumerConfig().access_log is True
    assert config.consumer_config(path).access_log is False
    assert config.consumer_config(path, {"access_log": True}).access_log is True
    for command in ("consumer", "provider"):
        help_text = CliRunner().invoke(cli.main, [command, "--help"]).output
        assert "--log-format [plain|json]" in help_text and "--log-level" in help_text
    assert "--access-log / --no-access-log" in CliRunner().invoke(cli.main, ["consumer", "--help"]).output


# -- a real consumer process -------------------------------------------------------------------------


def test_consumer_process_writes_json_lines_on_stderr():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_LOG_")}
    command = [sys.executable, "-m", "sidecar", "consumer", "--log-format", "json", "--listen", "127.0.0.1:0",
               "--provider", "127.0.0.1:9=1", "--call-timeout", "0.2"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("listening 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Request-Id": "proc-1"}
        connection.request("POST", "/", body=form("x"), headers=headers)
        assert connection.getresponse().status == 504  # nothing answers on the discard port
        connection.close()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    lines = [json.loads(text) for text in err.splitlines()]
    assert all(set(line) >= {"ts", "level", "logger", "msg"} for line in lines)
    assert any(line["logger"] == "sidecar.app" and line["msg"].startswith("consumer sidecar on") for line in lines)
    (access,) = [line for line in lines if line["logger"] == logs.ACCESS]
    assert access["level"] == "info" and access["msg"] == "POST / 504"
    assert (access["status"], access["provider"], access["client_request_id"]) == (504, "127.0.0.1:9", "proc-1")
    assert HEX16.fullmatch(access["request_id"]) and access["method"] == "POST" and access["path"] == "/"
    (timeout,) = [line for line in lines if line["logger"] == "sidecar.runtime.consumer" and line["level"] == "warning"]
    assert timeout["request_id"] == access["request_id"]
