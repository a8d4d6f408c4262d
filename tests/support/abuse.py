"""Misbehaving HTTP clients, run as their own process so that their work does not slow the test's
well-behaved client: ``python -m tests.support.abuse NAME HOST:PORT [LIMITS_JSON]`` runs the abuse
``NAME`` against a consumer sidecar and prints one line, ``result JSON``, when it is over.

Each abuse is bounded in count and time and stops by itself.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import threading
import time

WAIT = 30.0  # seconds: an upper bound for anything to arrive, never a measurement
FORM = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n"


def read_all(sock: socket.socket, seconds: float = WAIT) -> bytes:
    """What the server sends until it closes (or ``seconds`` pass, or it resets the connection)."""
    data, end = b"", time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            sock.settimeout(max(0.01, end - time.monotonic()))
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data


def closed_by_server(sock: socket.socket, seconds: float) -> bool:
    """True once the server closed ``sock`` (a read sees the end), waiting at most ``seconds``."""
    sock.settimeout(seconds)
    try:
        while chunk := sock.recv(1 << 16):
            del chunk
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def in_threads(count: int, work) -> list:
    results = [None] * count

    def run(index):
        results[index] = work()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    return results


# -- the abuses -------------------------------------------------------------------------------------


def pipelined_heads(address, limits) -> dict:
    """100,000 ``HEAD /x`` (404s) in one write of about 3 MB, the answers read as they come."""
    sock = socket.create_connection(address)
    head = b"HEAD /x HTTP/1.1\r\nHost: a\r\n"
    burst = (head + b"\r\n") * 100_000 + head + b"Connection: close\r\n\r\n"
    writer = threading.Thread(target=lambda: _send_quietly(sock, burst))
    writer.start()
    answers = read_all(sock, WAIT * 2).count(b"HTTP/1.1 404 ")
    writer.join(WAIT)
    sock.close()
    return {"answers": answers}


def _send_quietly(sock: socket.socket, data: bytes) -> int:
    """Send ``data``; the errno of the error that stopped it, or 0."""
    try:
        sock.sendall(data)
    except OSError as e:
        return e.errno or 0
    return 0


def million_chunks(address, limits) -> dict:
    """One chunked POST of a million 1-byte chunks (a body just under 1 MiB)."""
    sock = socket.create_connection(address)
    sock.sendall(FORM + b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"1\r\na\r\n" * 10_000
    try:
        for _ in range(100):
            sock.sendall(piece)
        sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    answer = read_all(sock)
    sock.close()
    return {"status": answer[9:12].decode()}


def idle_flood(address, limits) -> dict:
    """More idle connections than the consumer takes (``max_connections``), held open."""
    socks = [socket.create_connection(address) for _ in range(limits["max_connections"] + 50)]
    time.sleep(1.0)
    closed = sum(closed_by_server(sock, 0.01) for sock in socks)
    for sock in socks:
        sock.close()
    return {"closed": closed}


def slow_bodies(address, limits) -> dict:
    """20 uploads that announce 1 MiB and then send a byte every 0.2 s."""

    def one():
        sock = socket.create_connection(address)
        sock.sendall(FORM + b"Content-Length: 1048576\r\n\r\n")
        sock.settimeout(0.2)
        answer = b""
        for _ in range(200):
            try:
                sock.sendall(b"a")
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if answer:
                break
        sock.close()
        return answer[9:12].decode()

    return {"statuses": in_threads(20, one)}


def never_reads(address, limits) -> dict:
    """5 connections that pipeline a thousand calls and never read an answer (a small receive
    buffer, so that the answers back up at once). A thousand calls (434 KB) are far past what the
    consumer reads ahead (``max_buffered``, 64 KB): the rest waits in the kernel, answered one call at
    a time; more calls only make the abuse longer (each waits for the service in turn)."""
    body = b"interface=com.alibaba.dubbo.performance.demo.provider.IHelloService&method=hash&"
    body += b"parameterTypesString=Ljava%2Flang%2FString%3B&parameter=" + b"x" * 200
    request = FORM + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    def one():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(address)
        sock.settimeout(WAIT)
        try:
            for _ in range(1000):
                sock.sendall(request)
        except OSError:
            pass
        cut = closed_by_server(sock, limits["send_timeout"] + limits["idle_timeout"] + 10)
        sock.close()
        return cut

    return {"cut_off": in_threads(5, one)}


def stalled_reader(address, limits) -> dict:
    """One connection that pipelines 200,000 ``GET /x`` (each answered at once, 404, no call made)
    and never reads: its answers fill its small receive window and then the consumer's send buffer
    (several MB), and the answer the socket cannot take must be taken within ``send_timeout``. Without
    reading a byte, it waits to be reset: the kernel reports the reset once, to the first call that
    meets it, the send still under way or the socket's pending error."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address)
    sock.settimeout(WAIT)
    error = _send_quietly(sock, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n" * 200_000)  # the kernel's buffers take most
    end = time.monotonic() + limits["send_timeout"] + WAIT
    while not error and time.monotonic() < end:
        time.sleep(0.05)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    sock.close()
    return {"reset": error == errno.ECONNRESET}


def large_bodies(address, limits) -> dict:
    """40 connections each uploading a whole 1 MiB body as fast as they can (past the body budget)."""

    def one():
        sock = socket.create_connection(address)
        _send_quietly(sock, FORM + b"Connection: close\r\nContent-Length: 1048576\r\n\r\n" + b"a" * 1048576)
        answer = read_all(sock, 10)
        sock.close()
        return answer[9:12].decode()

    return {"statuses": in_threads(40, one)}


def oversized_uploads(address, limits) -> dict:
    """10 uploads of twice ``max_body``, each sent whole before its answer is read."""

    def one():
        sock = socket.create_connection(address)
        size = 2 * limits["max_body"]
        _send_quietly(sock, FORM + b"Content-Length: %d\r\n\r\n" % size + b"a" * size)
        answer = read_all(sock, 10)
        sock.close()
        return answer[9:12].decode()

    return {"statuses": in_threads(10, one)}


ABUSES = {
    "pipelined-heads": pipelined_heads,
    "million-chunks": million_chunks,
    "idle-flood": idle_flood,
    "slow-bodies": slow_bodies,
    "never-reads": never_reads,
    "stalled-reader": stalled_reader,
    "large-bodies": large_bodies,
    "oversized-uploads": oversized_uploads,
}


def main(argv: list[str]) -> int:
    name, target = argv[0], argv[1]
    limits = json.loads(argv[2]) if len(argv) > 2 else {}
    host, _, port = target.rpartition(":")
    print("started", flush=True)
    result = ABUSES[name]((host, int(port)), limits)
    print("result " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
