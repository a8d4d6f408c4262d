"""Loopback ports for tests: one that is free now, and what a listening process has not read yet."""

from __future__ import annotations

import socket

__all__ = ["free_port", "unread_bytes"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unread_bytes(port: int, peer_port: int) -> int | None:
    """Bytes waiting in the receive queue of the server side (``127.0.0.1:port``) of the TCP connection
    from ``127.0.0.1:peer_port``, as ``/proc/net/tcp`` shows them; None while there is no such socket.
    0 once the server process has read all the client sent."""
    local, remote = f"0100007F:{port:04X}", f"0100007F:{peer_port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return int(fields[4].split(":")[1], 16)
    return None
