"""systemd integration: the unit files pass ``systemd-analyze verify``, and real sidecar processes send
READY=1 / WATCHDOG=1 / STOPPING=1 to a ``$NOTIFY_SOCKET`` the test binds itself, from the main process
only. The pure helpers of :mod:`integrations.systemd` are checked without sockets."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from integrations import systemd
from tests.support.dubbo_peer import ROOT, WAIT

UNITS = ROOT / "packaging" / "systemd"
INSTALLED_PROGRAM = "/usr/bin/sidecar"
CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid


# -- pure helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/123", "\0/org/freedesktop/systemd1/notify/123"),
        ("@x", "\0x"),
        ("@", None),
        ("", None),
        (None, None),
        ("relative/path", None),
        ("vsock:2:1234", None),
    ],
)
def test_socket_address(value, expected):
    assert systemd.socket_address(value) == expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "42"}, 0.2),  # ours
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "43"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": ""}, 0.2),  # empty counts as unset
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_PID": "42"}, None),
    ],
)
def test_watchdog_interval(environ, expected):
    assert systemd.watchdog_interval(environ, pid=42) == expected


def test_watchdog_interval_defaults_to_this_process(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 1.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None


def test_message():
    assert systemd.message(READY=1) == "READY=1"
    assert systemd.message(READY=1, STATUS="listening 127.0.0.1:1") == "READY=1\nSTATUS=listening 127.0.0.1:1"
    with pytest.raises(ValueError, match="newline"):
        systemd.message(STATUS="two\nlines")


def test_notify_without_a_socket_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    assert systemd.notify("READY=1") is False
    assert systemd.ready() is False and systemd.stopping() is False and systemd.watchdog() is False
    assert systemd.start_watchdog() is None
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": "not/absolute"}) is False


def test_notify_to_a_missing_socket_is_false():
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": "@dubbomesh-nobody-" + uuid.uuid4().hex}) is False


def test_watchdog_pinger_sends_every_half_interval():
    now, sent = [100.0], []
    pinger = systemd.WatchdogPinger(2.0, send=lambda: sent.append(now[0]), clock=lambda: now[0])
    for t in (100.0, 100.5, 100.99, 101.0, 101.5, 102.5):
        now[0] = t
        pinger.poll()
    assert sent == [100.0, 101.0, 102.5]


def test_watchdog_pinger_without_interval_never_sends():
    pinger = systemd.WatchdogPinger(None, send=lambda: pytest.fail("sent"), clock=lambda: 0.0)
    assert pinger.poll() is False


# -- notifications from real processes -----------------------------------------------------------


class NotifyListener:
    """The systemd side: an AF_UNIX datagram socket that records every notification with its sender's
    pid (SO_PASSCRED), read by a thread so that a sender never waits for room in the queue."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: queue.Queue[tuple[int, str]] = queue.Queue()
        self.seen: list[tuple[int, str]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(CREDENTIALS.size))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = -1
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = CREDENTIALS.unpack(payload[: CREDENTIALS.size])[0]
            self.messages.put((pid, data.decode()))

    def wait_for(self, field: str) -> tuple[int, str]:
        """The next notification that has ``field`` (e.g. ``READY=1``) as one of its lines."""
        while True:
            try:
                pid, text = self.messages.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no {field} within {WAIT} s; got {self.seen}") from None
            self.seen.append((pid, text))
            if field in text.split("\n"):
                return pid, text

    def rest(self) -> list[tuple[int, str]]:
        self._done.set()
        self._thread.join(WAIT)
        while not self.messages.empty():
            self.seen.append(self.messages.get_nowait())
        return self.seen

    def close(self) -> None:
        self._done.set()
        self._thread.join(WAIT)
        self.sock.close()


@pytest.fixture(params=["abstract", "path"])
def listener(request):
    if request.param == "abstract":
        name = f"@dubbomesh-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        made = NotifyListener(systemd.socket_address(name))
        folder = None
    else:
        folder = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")  # short: AF_UNIX paths end at 107 bytes
        name = os.path.join(folder, "notify")
        made = NotifyListener(name)
    made.name = name
    yield made
    made.close()
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


SIDECARS = {
    "consumer": ["consumer", "--listen", "127.0.0.1:0", "--provider", "127.0.0.1:9=1"],
    "consumer-workers": ["consumer", "--listen", "127.0.0.1:0", "--provider", "127.0.0.1:9=1", "--workers", "2"],
    "provider": ["provider", "--listen", "127.0.0.1:0", "--dubbo", "127.0.0.1:9"],
}


def _start(args: list[str], tmp_path: Path, **env: str) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    environ.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr").open("w"),
        text=True,
    )


def _is_serving(kind: str, port: int) -> bool:
    if kind == "provider":  # UDP: bound means a second bind of the port fails
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        finally:
            probe.close()
        return False
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT):
        return True


@pytest.mark.parametrize("kind", list(SIDECARS))
def test_ready_watchdog_and_stopping_come_from_the_main_process(kind, listener, tmp_path):
    process = _start(SIDECARS[kind], tmp_path, NOTIFY_SOCKET=listener.name, WATCHDOG_USEC="200000")
    try:
        pid, text = listener.wait_for("READY=1")
        line = process.stdout.readline()  # printed before READY=1 is sent
        assert line.startswith("listening 127.0.0.1:"), line
        assert _is_serving(kind, int(line.rsplit(":", 1)[1]))
        assert "STATUS=" + line.strip() in text.split("\n")
        listener.wait_for("WATCHDOG=1")
        process.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1")
        assert process.wait(WAIT) == 0, (tmp_path / "stderr").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    seen = listener.rest()
    assert {sender for sender, _ in seen} == {process.pid}, seen  # NotifyAccess=main: never a worker
    assert sum("READY=1" in text.split("\n") for _, text in seen) == 1, seen


def test_a_watchdog_meant_for_another_process_is_not_pinged(listener, tmp_path):
    watchdog = {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    process = _start(SIDECARS["consumer"], tmp_path, NOTIFY_SOCKET=listener.name, **watchdog)
    try:
        listener.wait_for("READY=1")
        process.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1")
        assert process.wait(WAIT) == 0, (tmp_path / "stderr").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not any("WATCHDOG=1" in text for _, text in listener.rest())


# -- the unit files -------------------------------------------------------------------------------


def _units() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


def test_units_exist():
    assert [p.name for p in _units()] == ["sidecar-consumer.service", "sidecar-provider@.service"]


@pytest.mark.parametrize("unit", _units(), ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`; .ci/run installs it)")
    program = Path(sys.executable).with_name("sidecar")
    assert program.is_file(), f"{program}: the console script of this checkout (pip install -e .)"
    text = unit.read_text(encoding="utf-8")
    assert f"ExecStart={INSTALLED_PROGRAM} " in text
    # verify checks that ExecStart's program exists: point it at this checkout's console script
    (tmp_path / unit.name).write_text(text.replace(INSTALLED_PROGRAM, str(program)), encoding="utf-8")
    name = unit.name.replace("@.", "@test.")  # a template is verified through an instance
    result = subprocess.run([analyze, "verify", f"./{name}"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines() if unit.name.split("@")[0].split(".")[0] in line]
    assert result.returncode == 0, result.stderr
    assert problems == [], result.stderr  # unknown keys and bad values are only warnings


@pytest.mark.parametrize("unit", _units(), ids=lambda p: p.name)
def test_unit_settings(unit):
    settings = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    one = {key: values[-1] for key, values in settings.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["KillSignal"] == "SIGTERM" and one["Restart"] == "on-failure"
    assert one["CapabilityBoundingSet"] == "" and one["NoNewPrivileges"] == "yes"
    assert one["ProtectSystem"] == "strict" and one["DynamicUser"] == "yes"
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert _seconds(one["TimeoutStopSec"]) > 5.0 + 5.0  # the drain, and the supervisor's wait for workers
    assert _seconds(one["WatchdogSec"]) > 0
    config = "/etc/dubbomesh/consumer.toml" if "consumer" in unit.name else "/etc/dubbomesh/provider-%i.toml"
    assert f"SIDECAR_CONFIG={config}" in settings["Environment"]
    assert "--config ${SIDECAR_CONFIG}" in one["ExecStart"]


def _seconds(value: str) -> float:
    return float(value[:-1]) if value.endswith("s") else float(value)
