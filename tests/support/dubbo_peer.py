"""Helpers for tests that run real processes: start one (the demo Dubbo service, the HTTP backend) and
wait for its ready line, stop it by PID, and talk Dubbo 2 to it over a plain blocking socket with our
own codec."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from sidecar.codecs.dubbo import NEED_DATA, DubboDecoder, Request, encode
from sidecar.codecs.dubbo_messages import Serialization

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "com.alibaba.dubbo.performance.demo.provider.IHelloService"
WAIT = 30.0  # seconds: an upper bound for anything to arrive, never a measurement


def java_hash(text: str) -> int:
    """``String.hashCode`` written out plainly, as the Java source does it: h = 31*h + unit, in int32."""
    data = text.encode("utf-16-be", "surrogatepass")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + (data[i] << 8 | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


# Arguments every peer is checked with: ASCII, non-ASCII (Latin, CJK), emoji (outside the BMP), and
# two of 40,000 UTF-16 units (Java's String.length()): in the mixed one, Hessian's first 32,768-unit
# chunk would end between the two halves of an emoji. tests/interop/hello_client.js sends the same.
SAMPLES = {
    "ascii": "hello",
    "latin": "héllo wörld, ça va?",
    "cjk": "你好，世界",
    "emoji": "ok 😀👍🏽 done",
    "long_ascii": "".join(chr(0x20 + (i * 7919) % 0x5F) for i in range(40_000)),
    "long_mixed": "a😀" * 13_333 + "a",
}


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-be", "surrogatepass")) // 2


class Process:
    """A child process whose stdout lines are collected by a thread (so it never blocks on a full pipe)."""

    def __init__(self, args: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None):
        self.args = args
        self.popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.pid = self.popen.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, args=(self.popen.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.popen.stderr, self.stderr.append), daemon=True).start()

    @staticmethod
    def _drain(stream, sink) -> None:
        for line in stream:
            sink(line)
        sink(None)

    def wait_for_line(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first stdout line matching ``pattern``; fails if the process ends first."""
        seen = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{self.args}: no line matching {pattern!r} (saw {seen})") from None
            if line is None:
                raise AssertionError(f"{self.args} ended: stdout {seen}, stderr {''.join(self.stderr[-20:])}")
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self, sig: int = signal.SIGTERM, timeout: float = WAIT) -> int:
        """Send ``sig`` to the process by PID and wait for it (killed if it does not end in time)."""
        if self.popen.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode


def start_provider(*options: str) -> tuple[Process, int]:
    """``python -m integrations.demo.demo_provider --port 0 ...``, and the port it listens on."""
    process = Process([sys.executable, "-m", "integrations.demo.demo_provider", "--port", "0", *options])
    match = process.wait_for_line(r"^listening 127\.0\.0\.1:(\d+)$")
    return process, int(match.group(1))


def start_backend(*options: str) -> tuple[Process, int]:
    """``python -m integrations.demo.http_backend --port 0 ...``, and the port it listens on."""
    process = Process([sys.executable, "-m", "integrations.demo.http_backend", "--port", "0", *options])
    match = process.wait_for_line(r"^listening 127\.0\.0\.1:(\d+)$")
    return process, int(match.group(1))


def hash_call(request_id: int, text, *, method: str = "hash", **fields) -> Request:
    """A call of ``IHelloService.method(String)`` with the attachments a Java consumer sends."""
    version = fields.pop("service_version", "0.0.0")
    return Request(
        request_id,
        SERVICE,
        method,
        "Ljava/lang/String;",
        [text],
        {"path": SERVICE, "interface": SERVICE, "version": version},
        service_version=version,
        **fields,
    )


class DubboPeer:
    """A blocking Dubbo 2 connection: send messages, receive frames (decoded) by count."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=WAIT)
        self.decoder = DubboDecoder()

    def send(self, *messages) -> None:
        self.sock.sendall(b"".join(encode(message) for message in messages))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, count: int = 1) -> list:
        """The next ``count`` frames; raises if the connection ends first."""
        frames: list = []
        while len(frames) < count:
            event = self.decoder.next_event()
            if event is NEED_DATA:
                data = self.sock.recv(256 * 1024)
                if not data:
                    raise AssertionError(f"connection closed after {len(frames)} of {count} frames")
                self.decoder.receive_data(data)
            else:
                frames.append(event)
        return frames

    def receive_by_id(self, count: int) -> dict:
        frames = self.receive(count)
        by_id = {frame.request_id: frame for frame in frames}
        assert len(by_id) == count, "two replies with the same request id"
        return by_id

    def call(self, message):
        self.send(message)
        return self.receive(1)[0]

    def at_eof(self) -> bool:
        """Whether the peer closed the connection (waits for it, up to the socket timeout)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> DubboPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = [
    "ROOT",
    "SERVICE",
    "SAMPLES",
    "WAIT",
    "DubboPeer",
    "Process",
    "Serialization",
    "hash_call",
    "java_hash",
    "start_backend",
    "start_provider",
    "utf16_length",
]
