"""Authenticated tunnel datagrams: a keyed BLAKE2b tag, a wall-clock timestamp, replay refusal, and
which source addresses a provider accepts. Pure: keys, datagrams and times come in, bytes or verdicts
go out; no files, no sockets, no clock of its own.

* :class:`TunnelAuth` holds one or two keys: :meth:`~TunnelAuth.seal` appends the 25-byte trailer
  (key id, timestamp, tag) to a datagram :mod:`sidecar.codecs.tunnel` encoded and sets its TAGGED flag;
  :meth:`~TunnelAuth.open` checks the trailer and gives back the plain datagram for
  :func:`sidecar.codecs.tunnel.decode`, or raises :class:`AuthError` whose ``drop`` says why in a word.
* :class:`ReplayCache` remembers ``(request id, kind)`` of the datagrams accepted within the window.
* :class:`SourcePolicy` says whether a source address may send tunnel datagrams at all.

The byte layout, a worked example and the rotation procedure are in ``sidecar/PROTOCOLS.md``
(section Tunnel authentication).

>>> auth = TunnelAuth([bytes(range(32))], window_ms=30_000)
>>> plain = bytes.fromhex("4454010100") + bytes(8) + bytes(16)
>>> sealed = auth.seal(plain, now_ms=1_700_000_000_000)
>>> len(sealed) - len(plain), sealed[4] == FLAG_TAGGED
(25, True)
>>> auth.open(sealed, now_ms=1_700_000_001_000) == (plain, 1_700_000_000_000)
True
>>> try:
...     auth.open(plain, now_ms=1_700_000_001_000)
... except AuthError as error:
...     print(error.drop)
no tag
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from collections import deque
from collections.abc import Iterable, Sequence

from sidecar.codecs.tunnel import FLAG_TAGGED, HEADER_SIZE
from sidecar.errors import RemoteProtocolError

__all__ = [
    "FLAG_TAGGED",
    "TAG_SIZE",
    "TRAILER_SIZE",
    "MIN_KEY",
    "MAX_KEY",
    "MAX_KEYS",
    "AuthError",
    "TunnelAuth",
    "ReplayCache",
    "SourcePolicy",
    "key_id",
]

TAG_SIZE = 16  # bytes of BLAKE2b output
TRAILER = struct.Struct(">BQ")  # key id, timestamp (ms since the Unix epoch); the tag follows
TRAILER_SIZE = TRAILER.size + TAG_SIZE  # 25
MIN_KEY, MAX_KEY = 16, 64  # bytes of key material (BLAKE2b takes keys of up to 64 bytes)
MAX_KEYS = 2  # the key in use and the one being rotated in or out
_CLEARED = [bytes((flags & ~FLAG_TAGGED,)) for flags in range(256)]  # a flags byte with TAGGED cleared
_KEY_ID_PERSON = b"dubbomesh key id"  # 16 bytes, BLAKE2b's personalisation: key ids are not tags


def key_id(key: bytes) -> int:
    """The key id byte of ``key``: the first byte of its unkeyed BLAKE2b hash personalised with
    ``"dubbomesh key id"``, so every node derives the same id from the same key with nothing to
    configure (two keys sharing an id are both tried).

    >>> hex(key_id(bytes(range(32))))
    '0xaf'
    """
    return hashlib.blake2b(bytes(key), digest_size=1, person=_KEY_ID_PERSON).digest()[0]


class AuthError(RemoteProtocolError):
    """A datagram that fails authentication. ``drop`` is the short reason it is counted under
    (``no tag``, ``unknown key``, ``bad tag``, ``stale``, ``replayed``); ``reason`` says more."""

    def __init__(self, drop: str, detail: str):
        super().__init__(f"tunnel datagram: {drop} ({detail})")
        self.drop = drop


class TunnelAuth:
    """Sealing and opening datagrams with one or two keys (the first signs; any opens) and a replay
    window of ``window_ms`` milliseconds either side of the receiver's clock."""

    __slots__ = ("keys", "window_ms", "_signer", "_signer_id", "_openers")

    def __init__(self, keys: Sequence[bytes], *, window_ms: int):
        keys = [bytes(key) for key in keys]
        if not 1 <= len(keys) <= MAX_KEYS:
            raise ValueError(f"give 1 or {MAX_KEYS} tunnel keys, not {len(keys)}")
        for index, key in enumerate(keys):
            if not MIN_KEY <= len(key) <= MAX_KEY:
                raise ValueError(f"tunnel key {index + 1} has {len(key)} bytes, not {MIN_KEY} to {MAX_KEY}")
        if window_ms <= 0:
            raise ValueError(f"the replay window must be positive, not {window_ms} ms")
        self.keys = tuple(keys)
        self.window_ms = int(window_ms)
        # a keyed hasher per key, copied per datagram: cheaper than keying a new one each time
        self._signer = hashlib.blake2b(key=keys[0], digest_size=TAG_SIZE)
        self._signer_id = key_id(keys[0])
        self._openers: dict[int, list] = {}
        for key in keys:
            self._openers.setdefault(key_id(key), []).append(hashlib.blake2b(key=key, digest_size=TAG_SIZE))

    def __repr__(self) -> str:
        ids = ", ".join(f"0x{key_id(key):02x}" for key in self.keys)
        return f"TunnelAuth(key ids [{ids}], window_ms={self.window_ms})"

    def seal(self, datagram: bytes, now_ms: int) -> bytes:
        """``datagram`` (a plain tunnel datagram) with the TAGGED flag set and the trailer appended:
        key id, ``now_ms`` (milliseconds since the Unix epoch), and the tag over all bytes before it."""
        sealed = bytearray(datagram)
        sealed[4] |= FLAG_TAGGED
        sealed += TRAILER.pack(self._signer_id, now_ms)
        hasher = self._signer.copy()
        hasher.update(sealed)
        sealed += hasher.digest()
        return bytes(sealed)

    def open(self, datagram: bytes, now_ms: int) -> tuple[bytes, int]:
        """The plain datagram inside ``datagram`` (flag cleared, trailer removed) and its timestamp,
        once its tag verifies under a configured key and its timestamp lies within the window of
        ``now_ms``; else :class:`AuthError`. The plain datagram is not decoded here."""
        size = len(datagram)
        if size < HEADER_SIZE or not datagram[4] & FLAG_TAGGED:
            raise AuthError("no tag", "this side has a tunnel key; the sender has none")
        if size < HEADER_SIZE + TRAILER_SIZE:
            raise AuthError("bad tag", f"{size} bytes, too short for a header and the {TRAILER_SIZE}-byte trailer")
        body_end = size - TRAILER_SIZE
        kid, stamp = TRAILER.unpack_from(datagram, body_end)
        openers = self._openers.get(kid)
        if openers is None:
            raise AuthError("unknown key", f"key id 0x{kid:02x} is not one of this side's keys")
        signed = datagram[: size - TAG_SIZE]
        tag = datagram[size - TAG_SIZE :]
        for opener in openers:
            hasher = opener.copy()
            hasher.update(signed)
            if hmac.compare_digest(hasher.digest(), tag):
                break
        else:
            raise AuthError("bad tag", f"the tag does not verify under key id 0x{kid:02x}")
        skew = now_ms - stamp
        if not -self.window_ms <= skew <= self.window_ms:
            raise AuthError("stale", f"timestamp {stamp} is {skew / 1000:+.3f} s from this side's clock")
        return b"".join((datagram[:4], _CLEARED[datagram[4]], datagram[5:body_end])), stamp


class ReplayCache:
    """The ``(request id, kind)`` of datagrams accepted recently: :meth:`check` says whether one was
    seen already and remembers it otherwise.

    A datagram stamped ``t`` is accepted only while the receiver's clock is within ``window_ms`` of
    ``t``, and ``t`` is at most ``window_ms`` ahead of the clock at arrival, so an entry is kept for
    twice the window after its arrival and forgotten after that. ``max_entries`` bounds the memory:
    when that many are younger than their time, :meth:`check` refuses (answers "seen") rather than
    forgetting one early: a full cache fails closed.

    >>> cache = ReplayCache(window_ms=1000)
    >>> cache.check(0x77, 1, now_ms=0), cache.check(0x77, 1, now_ms=1999), cache.check(0x77, 1, now_ms=2000)
    (False, True, False)
    """

    MAX_ENTRIES = 1 << 20

    __slots__ = ("window_ms", "max_entries", "_expiry", "_order")

    def __init__(self, *, window_ms: int, max_entries: int = MAX_ENTRIES):
        if window_ms <= 0 or max_entries <= 0:
            raise ValueError("the window and the size of a replay cache must be positive")
        self.window_ms = int(window_ms)
        self.max_entries = max_entries
        self._expiry: dict[tuple[int, int], int] = {}
        self._order: deque[tuple[int, tuple[int, int]]] = deque()

    def __len__(self) -> int:
        return len(self._expiry)

    def check(self, request_id: int, kind: int, now_ms: int) -> bool:
        """True when ``(request_id, kind)`` was seen within its time (a replay, or the cache is full);
        else False, and it is remembered."""
        self.forget(now_ms)
        entry = (request_id, kind)
        if entry in self._expiry or len(self._expiry) >= self.max_entries:
            return True
        expiry = now_ms + 2 * self.window_ms
        self._expiry[entry] = expiry
        self._order.append((expiry, entry))
        return False

    def forget(self, now_ms: int) -> None:
        """Drop the entries whose time is up (in arrival order: a clock that steps back only delays it)."""
        order, expiry = self._order, self._expiry
        while order and order[0][0] <= now_ms:
            _, entry = order.popleft()
            expiry.pop(entry, None)


class SourcePolicy:
    """Which source hosts may send tunnel datagrams: those in ``networks`` (CIDRs) when any are
    given; else every host when the tunnel is keyed (the tag authenticates), and only loopback when
    it is not. Verdicts are remembered per host string (up to ``MEMO`` hosts).

    >>> SourcePolicy((), keyed=False).allows("127.0.0.2"), SourcePolicy((), keyed=False).allows("10.0.0.1")
    (True, False)
    >>> policy = SourcePolicy(["10.0.0.0/8"], keyed=False)
    >>> policy.allows("10.1.2.3"), policy.allows("::ffff:10.1.2.3"), policy.allows("127.0.0.1")
    (True, True, False)
    """

    MEMO = 4096

    __slots__ = ("networks", "keyed", "_memo")

    def __init__(self, networks: Iterable[str], *, keyed: bool):
        self.networks = tuple(ipaddress.ip_network(network, strict=False) for network in networks)
        self.keyed = keyed
        self._memo: dict[str, bool] = {}

    @property
    def open_to_all(self) -> bool:
        """True when every source is allowed (keyed, no list): nothing to check per datagram."""
        return self.keyed and not self.networks

    def describe(self) -> str:
        """One line for the start-up log: what this policy accepts."""
        if self.networks:
            listed = ", ".join(str(network) for network in self.networks)
            return f"accepting tunnel datagrams from {listed} only"
        if self.keyed:
            return "accepting tagged tunnel datagrams from any source"
        return (
            "no tunnel key: accepting unauthenticated tunnel datagrams from loopback sources only "
            "(configure tunnel_key_files or allow_sources for remote consumers)"
        )

    def allows(self, host: str) -> bool:
        verdict = self._memo.get(host)
        if verdict is None:
            verdict = self._judge(host)
            if len(self._memo) >= self.MEMO:
                self._memo.clear()
            self._memo[host] = verdict
        return verdict

    def _judge(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if self.networks:
            return any(address in network for network in self.networks)
        return self.keyed or address.is_loopback
