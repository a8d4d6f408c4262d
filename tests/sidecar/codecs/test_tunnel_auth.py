"""The pure parts of tunnel authentication: the tag and trailer byte for byte, rotation, the replay
window and cache, the source policy; and how keys are read from files and the environment."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.codecs import dubbo, tunnel, tunnel_auth
from sidecar.codecs.dubbo_messages import Response
from sidecar.codecs.tunnel_auth import (
    FLAG_TAGGED,
    TRAILER_SIZE,
    AuthError,
    ReplayCache,
    SourcePolicy,
    TunnelAuth,
    key_id,
)
from sidecar.ops.config import ConfigError, provider_config
from sidecar.ops.tunnel_keys import ENV, load_keys, parse_key, read_key_file

PROTOCOLS = Path(__file__).resolve().parents[3] / "sidecar" / "PROTOCOLS.md"
KEY = bytes(range(32))
OTHER = bytes(range(100, 132))
T = 1_700_000_000_000
WINDOW = 30_000
RID = tunnel.make_request_id(7, 123456, 1)


def plain_request(request_id: int = RID) -> bytes:
    return tunnel.encode_request(request_id, tunnel_frame(request_id))


def tunnel_frame(request_id: int) -> bytes:
    return dubbo.encode(dubbo.Request(request_id, "Svc", "ping"))


def plain_reply() -> bytes:
    frame = dubbo.encode(Response(RID, value=99162322, attachments={"dubbo": "2.0.2"}))
    return tunnel.encode_replies([(RID, frame)])


def auth(*keys: bytes) -> TunnelAuth:
    return TunnelAuth(keys or (KEY,), window_ms=WINDOW)


def drop_of(box: TunnelAuth, datagram: bytes, now_ms: int = T) -> str:
    with pytest.raises(AuthError) as caught:
        box.open(datagram, now_ms)
    assert caught.value.reason.startswith("tunnel datagram: ")
    return caught.value.drop


# -- the documented example ---------------------------------------------------------------------


def documented_tagged() -> bytes:
    text = PROTOCOLS.read_text(encoding="utf-8")
    section = text.split("\n## Tunnel authentication\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```hex\n(.*?)```", section, re.S)
    return bytes.fromhex(block)


def test_protocols_md_example_is_what_seal_writes():
    documented = documented_tagged()
    assert auth().seal(plain_reply(), T) == documented
    assert len(documented) == 80 == len(plain_reply()) + TRAILER_SIZE
    assert key_id(KEY) == 0xAF == documented[55]
    assert T == 0x18BCFE56800 and documented[56:64] == T.to_bytes(8, "big")


def test_protocols_md_example_opens_and_decodes():
    plain, stamp = auth().open(documented_tagged(), T + 5)
    assert (plain, stamp) == (plain_reply(), T)
    batch = tunnel.decode(plain)
    assert batch.replies[0].request_id == RID


def test_layout_byte_for_byte():
    plain = plain_request()
    sealed = auth().seal(plain, T)
    n = len(plain)
    assert sealed[:4] == plain[:4] and sealed[4] == FLAG_TAGGED and sealed[5:n] == plain[5:]
    assert sealed[n] == key_id(KEY)
    assert int.from_bytes(sealed[n + 1 : n + 9], "big") == T
    assert sealed[n + 9 :] == hashlib.blake2b(sealed[: n + 9], key=KEY, digest_size=16).digest()


def test_docstring_examples():
    import doctest

    assert doctest.testmod(tunnel_auth).failed == 0


# -- verifying ----------------------------------------------------------------------------------


@pytest.mark.parametrize("plain", [plain_request(), plain_reply()], ids=["request", "reply batch"])
def test_round_trip(plain):
    assert auth().open(auth().seal(plain, T), T) == (plain, T)


def test_no_tag():
    assert drop_of(auth(), plain_request()) == "no tag"
    assert drop_of(auth(), b"DT") == "no tag"


def test_wrong_key_with_another_id_is_an_unknown_key():
    assert key_id(OTHER) != key_id(KEY)
    assert drop_of(auth(KEY), auth(OTHER).seal(plain_request(), T)) == "unknown key"


def test_wrong_key_with_the_same_id_is_a_bad_tag():
    twin = _twin_of(KEY)
    assert key_id(twin) == key_id(KEY)
    assert drop_of(auth(KEY), auth(twin).seal(plain_request(), T)) == "bad tag"
    assert auth(KEY, twin).open(auth(twin).seal(plain_request(), T), T)[1] == T  # both of one id are tried


def _twin_of(key: bytes) -> bytes:
    for i in range(1, 1 << 16):
        candidate = i.to_bytes(2, "big") * 16
        if key_id(candidate) == key_id(key):
            return candidate
    raise AssertionError("no key with the same id")


@given(st.data())
def test_any_changed_byte_is_refused(data):
    sealed = bytearray(auth().seal(plain_request(), T))
    index = data.draw(st.integers(0, len(sealed) - 1))
    sealed[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(AuthError) as caught:
        auth().open(bytes(sealed), T)
    assert caught.value.drop in ("no tag", "unknown key", "bad tag")


@given(st.integers(0, 200))
def test_a_cut_datagram_is_refused(keep):
    sealed = auth().seal(plain_request(), T)
    with pytest.raises(AuthError):
        auth().open(sealed[: min(keep, len(sealed) - 1)], T)


@pytest.mark.parametrize(
    ("skew", "accepted"),
    [(0, True), (WINDOW, True), (-WINDOW, True), (WINDOW + 1, False), (-WINDOW - 1, False), (3_600_000, False)],
)
def test_timestamp_window(skew, accepted):
    sealed = auth().seal(plain_request(), T)
    if accepted:
        assert auth().open(sealed, T + skew)[1] == T
    else:
        assert drop_of(auth(), sealed, T + skew) == "stale"


def test_rotation():
    old, new = KEY, OTHER
    plain = plain_request()
    # step 1: every node has [old, new]: all seal with old, all open both
    assert auth(old).open(auth(old, new).seal(plain, T), T)[0] == plain
    # step 2: a node that swapped seals with new; nodes not yet swapped ([old, new]) open it
    from_swapped = auth(new, old).seal(plain, T)
    assert from_swapped[len(plain)] == key_id(new)
    assert auth(old, new).open(from_swapped, T)[0] == plain
    # a node that never got the new key cannot: that is why step 1 comes first
    assert drop_of(auth(old), from_swapped) == "unknown key"
    # step 3: old removed
    assert drop_of(auth(new), auth(old).seal(plain, T)) == "unknown key"


@pytest.mark.parametrize(
    ("keys", "window", "message"),
    [
        ((), WINDOW, "give 1 or 2"),
        ((KEY, KEY, KEY), WINDOW, "give 1 or 2"),
        ((b"short",), WINDOW, "5 bytes"),
        ((bytes(65),), WINDOW, "65 bytes"),
        ((KEY,), 0, "must be positive"),
    ],
)
def test_bad_auth_arguments(keys, window, message):
    with pytest.raises(ValueError, match=message):
        TunnelAuth(keys, window_ms=window)


# -- replay cache -------------------------------------------------------------------------------


def test_replay_cache_refuses_a_second_copy_for_twice_the_window():
    cache = ReplayCache(window_ms=1000)
    assert cache.check(RID, 1, 0) is False
    assert cache.check(RID, 1, 1) is True
    assert cache.check(RID, 2, 1) is False  # another kind
    assert cache.check(RID + 1, 1, 1) is False
    assert cache.check(RID, 1, 1999) is True
    assert cache.check(RID, 1, 2000) is False  # forgotten, then seen afresh
    assert len(cache) == 3
    cache.forget(2001)  # the two seen at 1
    assert len(cache) == 1


def test_replay_cache_forgets_in_arrival_order_and_stays_bounded():
    cache = ReplayCache(window_ms=10, max_entries=3)
    for i in range(3):
        assert not cache.check(i, 1, i)
    assert cache.check(99, 1, 5)  # full: fails closed
    assert not cache.check(99, 1, 20)  # entry 0 (expires at 20) forgotten
    assert len(cache) == 3
    cache.forget(10_000)
    assert len(cache) == 0


def test_replay_cache_with_a_clock_that_steps_back():
    cache = ReplayCache(window_ms=10)
    cache.check(1, 1, 100)
    assert cache.check(1, 1, 50)  # still remembered


# -- sources ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("networks", "keyed", "host", "allowed"),
    [
        ((), False, "127.0.0.1", True),
        ((), False, "127.8.9.10", True),
        ((), False, "::1", True),
        ((), False, "::ffff:127.0.0.1", True),
        ((), False, "10.0.0.1", False),
        ((), False, "192.168.1.5", False),
        ((), False, "2001:db8::1", False),
        ((), False, "not an address", False),
        ((), True, "10.0.0.1", True),
        (("10.0.0.0/8",), False, "10.20.30.40", True),
        (("10.0.0.0/8",), False, "11.0.0.1", False),
        (("10.0.0.0/8",), False, "127.0.0.1", False),  # a list is exact
        (("10.0.0.0/8",), True, "11.0.0.1", False),  # also when keyed
        (("10.0.0.0/8", "2001:db8::/32"), False, "2001:db8::7", True),
        (("10.0.0.0/8",), False, "::ffff:10.0.0.9", True),
        (("192.168.1.7",), False, "192.168.1.7", True),
        (("192.168.1.7",), False, "192.168.1.8", False),
    ],
)
def test_source_policy(networks, keyed, host, allowed):
    assert SourcePolicy(networks, keyed=keyed).allows(host) is allowed


def test_source_policy_describes_itself():
    assert "loopback sources only" in SourcePolicy((), keyed=False).describe()
    assert SourcePolicy((), keyed=True).open_to_all
    assert "10.0.0.0/8" in SourcePolicy(["10.0.0.0/8"], keyed=True).describe()
    assert not SourcePolicy(["10.0.0.0/8"], keyed=True).open_to_all


# -- key files and the environment --------------------------------------------------------------


def key_file(tmp_path: Path, text: str | bytes, name: str = "tunnel.key", mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    path.chmod(mode)
    return str(path)


def test_key_file_is_hex_text(tmp_path):
    assert read_key_file(key_file(tmp_path, KEY.hex() + "\n")) == KEY
    spaced = " ".join(KEY.hex()[i : i + 8] for i in range(0, 64, 8))
    assert read_key_file(key_file(tmp_path, f"  {spaced}\n\n")) == KEY


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("00" * 15, "holds 15 bytes of key; a tunnel key has 16 to 64"),
        ("00" * 65, "holds 65 bytes"),
        ("", "holds 0 bytes"),
        ("not hex at all", "is not hex text"),
        (bytes(range(200, 232)), "is not hex text"),
    ],
)
def test_bad_key_files_are_named(tmp_path, content, message):
    path = key_file(tmp_path, content)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        read_key_file(path)
    assert path in str(caught.value)


def test_a_missing_key_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read tunnel key file .*nowhere\.key"):
        load_keys([str(tmp_path / "nowhere.key")], {})


def test_a_key_file_others_can_read_gets_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sidecar.ops.tunnel_keys"):
        read_key_file(key_file(tmp_path, KEY.hex(), mode=0o644))
    assert "readable by group or others (mode 644)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sidecar.ops.tunnel_keys"):
        read_key_file(key_file(tmp_path, KEY.hex(), name="private.key", mode=0o400))
    assert caplog.text == ""


def test_load_keys_from_files_in_order(tmp_path):
    files = [key_file(tmp_path, OTHER.hex(), "new.key"), key_file(tmp_path, KEY.hex(), "old.key")]
    assert load_keys(files, {}) == [OTHER, KEY]
    assert load_keys([], {}) == []
    with pytest.raises(ConfigError, match="at most 2"):
        load_keys(files + files[:1], {})
    with pytest.raises(ConfigError, match="both by file and by"):
        load_keys(files, {ENV: KEY.hex()})


@pytest.mark.parametrize(
    ("value", "keys"),
    [
        (KEY.hex(), [KEY]),
        (KEY.hex().upper(), [KEY]),
        (base64.b64encode(KEY).decode(), [KEY]),
        (base64.b64encode(KEY).decode().rstrip("="), [KEY]),
        (base64.urlsafe_b64encode(bytes(range(200, 232))).decode(), [bytes(range(200, 232))]),
        (f"{OTHER.hex()}, {base64.b64encode(KEY).decode()}", [OTHER, KEY]),
        ("", []),
    ],
)
def test_keys_from_the_environment(value, keys):
    assert load_keys([], {ENV: value}) == keys


@pytest.mark.parametrize(
    ("value", "message"),
    [("tooshort", "holds 6 bytes"), ("*" * 40, "is not hex or base64"), (",".join([KEY.hex()] * 3), "at most 2")],
)
def test_bad_keys_in_the_environment(value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_keys([], {ENV: value})


def test_parse_key_names_its_source():
    with pytest.raises(ConfigError, match="^somewhere is not hex"):
        parse_key("zz", "somewhere")


def test_config_keys():
    config = provider_config(flags={"allow_sources": ["10.0.0.0/8", "::1"], "tunnel_key_files": ["a", "b"]})
    assert config.allow_sources == ("10.0.0.0/8", "::1") and config.tunnel_key_files == ("a", "b")
    assert config.replay_window == 30.0
    with pytest.raises(ConfigError, match="provider.allow_sources must be CIDRs"):
        provider_config(flags={"allow_sources": ["10.0.0.0/33"]})
    with pytest.raises(ConfigError, match="provider.tunnel_key_files must have at most 2 entries"):
        provider_config(flags={"tunnel_key_files": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match="must be an array of strings"):
        provider_config(flags={"allow_sources": "10.0.0.0/8"})
    with pytest.raises(ConfigError, match="provider.replay_window must be positive"):
        provider_config(flags={"replay_window": 0})
