"""The layout of an mqdb store in a Redis Cluster: store URLs, keys, stream ids, the commands sent.
The document is `mqdb/CLUSTER.md`; the writer (store.py) and the readers use these constants only.

- A store is a namespace NAME (default ``mqdb``) in a cluster.
- Queue Q is the stream at key ``NAME:q:`` + UTF-8 of Q; message ``k`` of Q is the entry with id
  ``0-(k+1)`` and one field, ``m``, whose value is the message.
- ``NAME:meta`` is a string: :data:`META_VALUE`, set once when the store is created.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

FORMAT = "mqdb-streams"
VERSION = 1
META_VALUE = b'{"format": "mqdb-streams", "version": 1}'
FIELD = b"m"
DEFAULT_NAME = "mqdb"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


@dataclass(frozen=True)
class StoreURL:
    """``redis://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][/NAME]``, parsed."""

    addresses: tuple[tuple[str, int], ...]
    name: str = DEFAULT_NAME
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        nodes = ",".join(f"{h}:{p}" for h, p in self.addresses)
        return f"redis://{nodes}" + ("" if self.name == DEFAULT_NAME else f"/{self.name}")


def parse_url(url: str) -> StoreURL:
    """Parse a store URL; ValueError saying what is wrong and what a good one looks like."""
    example = "expected redis://HOST:PORT[,HOST:PORT...][/NAME], e.g. redis://127.0.0.1:7000,127.0.0.1:7001"
    if not isinstance(url, str) or not url.startswith("redis://"):
        raise ValueError(f"{url!r} is not a store URL: {example}")
    rest = url[len("redis://") :]
    rest, _, name = rest.partition("/")
    name = name.rstrip("/") or DEFAULT_NAME
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"store name {name!r} in {url!r}: 1 to 64 of A-Z a-z 0-9 _ . -; {example}")
    username = password = None
    if "@" in rest:
        auth, _, rest = rest.rpartition("@")
        user, sep, secret = auth.partition(":")
        username, password = (unquote(user) or None, unquote(secret)) if sep else (None, unquote(user))
    addresses = []
    for part in rest.split(","):
        m = _ADDRESS.fullmatch(part.strip())
        if not m or not 0 < int(m.group(2)) < 65536:
            raise ValueError(f"{part!r} in {url!r} is not HOST:PORT; {example}")
        addresses.append((m.group(1).strip("[]"), int(m.group(2))))
    return StoreURL(tuple(addresses), name, username, password)


def queue_prefix(name: str) -> bytes:
    """The start of every queue key of the store ``name``."""
    return name.encode() + b":q:"


def meta_key(name: str) -> bytes:
    return name.encode() + b":meta"


def entry_id(offset: int) -> bytes:
    """The stream id of the message at ``offset``: ``0-(offset+1)`` (``0-0`` is not a valid id)."""
    return b"0-%d" % (offset + 1)


def offset_of(entry: bytes) -> int | None:
    """The offset whose id is ``entry``; None when the id is not one mqdb gives (its first part not 0)."""
    ms, _, seq = entry.partition(b"-")
    if ms != b"0" or not seq.isdigit() or seq == b"0":
        return None
    return int(seq) - 1


def pack_xadd(key: bytes, offset: int, msg: bytes) -> bytes:
    """``XADD key 0-(offset+1) m msg`` in the Redis protocol (RESP), ready to send."""
    eid = b"0-%d" % (offset + 1)
    return b"*5\r\n$4\r\nXADD\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$1\r\nm\r\n$%d\r\n%b\r\n" % (
        len(key), key, len(eid), eid, len(msg), msg,
    )  # fmt: skip


def xadd_message(cmd: bytes, key: bytes, offset: int) -> bytes:
    """The message inside ``pack_xadd(key, offset, message)``."""
    start = len(pack_xadd(key, offset, b"")) - len(b"$0\r\n\r\n")
    body = cmd.index(b"\r\n", start) + 2
    return cmd[body:-2]
