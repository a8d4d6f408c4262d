"""Our Dubbo 2 codec and demo service against independent implementations (Node.js, from npm):

* our codec calls a provider built from ``sofa-rpc-node`` and ``dubbo-remoting`` (``hello_server.js``,
  which computes ``String.hashCode`` in JavaScript);
* the ``dubbo2.js`` consumer (``hello_client.js``) calls our demo provider.

Both ways: ASCII, non-ASCII and emoji arguments, arguments of 40,000 UTF-16 units, an unknown method,
heartbeats, and 100 calls in flight at once on one connection; every hash is checked against
``String.hashCode`` computed here. Everything runs as real processes on 127.0.0.1, stopped by PID.

Needs ``node`` and ``npm ci --prefix tests/interop``; without them the tests are skipped (set
``INTEROP_REQUIRED=1`` to make that a failure instead).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sidecar.codecs.dubbo import Event, Response, Status, heartbeat
from sidecar.codecs.dubbo_messages import ResultFlag, Serialization
from tests.support.dubbo_peer import (
    SAMPLES,
    WAIT,
    DubboPeer,
    Process,
    hash_call,
    java_hash,
    start_provider,
    utf16_length,
)

HERE = Path(__file__).resolve().parent
PACKAGES = ("sofa-rpc-node", "dubbo-remoting", "dubbo2.js")
NODE = shutil.which("node")


def _missing() -> str | None:
    if NODE is None:
        return "node is not installed"
    absent = [name for name in PACKAGES if not (HERE / "node_modules" / name / "package.json").is_file()]
    if absent:
        return f"npm packages {', '.join(absent)} are not installed: run `npm ci --prefix tests/interop`"
    return None


_REASON = _missing()
if _REASON and os.environ.get("INTEROP_REQUIRED") == "1":
    raise RuntimeError(f"interop tests required but cannot run: {_REASON}")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"interop: {_REASON}")


# -- our codec -> sofa-rpc-node + dubbo-remoting provider ----------------------------------------


@pytest.fixture(scope="module")
def node_provider():
    process = Process([NODE, "hello_server.js", "--port", "0", "--version", "0.0.0"], cwd=HERE)
    port = int(process.wait_for_line(r"^listening 127\.0\.0\.1:(\d+)$").group(1))
    yield port
    process.stop()


@pytest.fixture
def peer(node_provider):
    with DubboPeer(node_provider) as connection:
        yield connection


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_our_codec_calls_their_hash(peer, name):
    reply = peer.call(hash_call(1, SAMPLES[name]))
    assert isinstance(reply, Response) and reply.request_id == 1
    assert reply.status == Status.OK and reply.serialization == Serialization.HESSIAN2
    assert reply.flag == ResultFlag.RESPONSE_VALUE  # dubbo-remoting sends no result attachments
    assert reply.value == java_hash(SAMPLES[name])


def test_our_codec_calls_their_echo(peer):
    calls = [hash_call(i, text, method="echo") for i, text in enumerate(SAMPLES.values())]
    peer.send(*calls)
    replies = peer.receive_by_id(len(calls))
    for call in calls:
        assert replies[call.request_id].value == call.arguments[0]


def test_our_codec_calls_their_unknown_method(peer):
    # sofa-rpc-node answers a method its service lacks with status 80 (SERVER_ERROR) and a message.
    reply = peer.call(hash_call(3, "x", method="nope"))
    assert reply.request_id == 3 and reply.status == Status.SERVER_ERROR
    assert "Can not find method" in reply.error_message and "#nope()" in reply.error_message


def test_our_heartbeat_gets_their_heartbeat_reply(peer):
    reply = peer.call(heartbeat(42))
    assert isinstance(reply, Event) and not reply.is_request
    assert reply.request_id == 42 and reply.is_heartbeat


def test_our_codec_keeps_100_calls_in_flight_with_them(peer):
    calls = [hash_call(100 + i, f"call {i} é😀 " + "x" * i) for i in range(100)]
    peer.send(heartbeat(99), *calls)  # everything before reading anything
    replies = peer.receive_by_id(101)
    assert replies.pop(99).is_heartbeat
    for call in calls:
        assert replies[call.request_id].value == java_hash(call.arguments[0])


# -- dubbo2.js consumer -> our demo provider -----------------------------------------------------


@pytest.fixture(scope="module")
def client_run():
    """One run of hello_client.js against our provider; its JSON report."""
    process, port = start_provider("--latency-ms", "20")
    try:
        done = subprocess.run(
            [NODE, "hello_client.js", "127.0.0.1", str(port)],
            cwd=HERE,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=WAIT * 4,
            check=False,
        )
    finally:
        stopped = process.stop()
    assert done.returncode == 0, done.stderr
    assert stopped == 0, process.stderr
    return json.loads(done.stdout)


def test_their_client_sends_the_same_samples(client_run):
    assert client_run["samples"] == SAMPLES


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_their_client_gets_string_hash_code(client_run, name):
    answer = client_run["hash"][name]
    assert answer["err"] is None
    assert answer["res"] == java_hash(SAMPLES[name])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_their_client_gets_its_echo(client_run, name):
    answer = client_run["echo"][name]
    assert answer == {"same": True, "length": utf16_length(SAMPLES[name]), "err": None}


def test_their_client_sees_the_unknown_method_fail(client_run):
    answer = client_run["unknown"]
    assert answer["res"] is None
    assert 'Not found method "nope"' in answer["err"]["message"]


def test_their_client_keeps_100_calls_in_flight(client_run):
    answers = client_run["concurrent"]
    assert len(answers) == 100 and len({answer["arg"] for answer in answers}) == 100
    for answer in answers:
        assert answer["err"] is None
        assert answer["res"] == java_hash(answer["arg"])


def test_their_heartbeat_gets_our_heartbeat_reply(client_run):
    # dubbo2.js sends its heartbeat with request id 0; the reply is an event response, status OK,
    # Hessian 2, with the one-byte null body.
    assert client_run["heartbeat"] == {"flags": 0x22, "status": 20, "requestId": 0, "bodyLength": 1}
    after = client_run["after_heartbeat"]
    assert after["err"] is None and after["res"] == java_hash(after["arg"])
