"""Where the tunnel keys come from: key files (``--tunnel-key-file``, config ``tunnel_key_files``) or
the environment variable ``SIDECAR_TUNNEL_KEY``; never a command-line value (it would show in ``ps``).

* A key file holds the key as hex text: 32 to 128 hex digits (16 to 64 bytes), whitespace around or
  inside ignored, so ``openssl rand -hex 32 > tunnel.key`` makes one. A file that is not hex, or holds
  fewer than 16 bytes, is a :class:`~sidecar.ops.config.ConfigError` naming the file. A file readable by
  group or others gets a warning (not a refusal: Kubernetes mounts Secrets 0644 unless told
  ``defaultMode: 0400``).
* ``SIDECAR_TUNNEL_KEY`` holds one key, or two separated by a comma (the first signs), each as hex
  or else as base64 (standard or URL-safe alphabet, padding optional); a value that reads as hex is
  hex. Give keys by files or by the variable, not both.

At most two keys: the one in use and the one being rotated in or out (``sidecar/PROTOCOLS.md``,
Tunnel authentication, says how to rotate).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from collections.abc import Mapping, Sequence

from sidecar.codecs.tunnel_auth import MAX_KEY, MAX_KEYS, MIN_KEY
from sidecar.ops.config import ConfigError

__all__ = ["ENV", "load_keys", "read_key_file", "parse_key"]

log = logging.getLogger(__name__)

ENV = "SIDECAR_TUNNEL_KEY"


def load_keys(files: Sequence[str], environ: Mapping[str, str] | None = None) -> list[bytes]:
    """The tunnel keys, signing key first: from ``files``, or from ``environ[ENV]``; ``[]`` for none."""
    environ = os.environ if environ is None else environ
    text = environ.get(ENV, "").strip()
    if files and text:
        raise ConfigError(f"tunnel keys are given both by file and by ${ENV}: give them one way")
    if len(files) > MAX_KEYS:
        raise ConfigError(f"{len(files)} tunnel key files given; at most {MAX_KEYS} (the key in use and the next)")
    if files:
        return [read_key_file(path) for path in files]
    if not text:
        return []
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > MAX_KEYS:
        raise ConfigError(f"${ENV} holds {len(parts)} keys; at most {MAX_KEYS}, separated by a comma")
    return [parse_key(part, f"${ENV} key {index + 1}", base64_too=True) for index, part in enumerate(parts)]


def read_key_file(path: str) -> bytes:
    """The key in the file at ``path`` (hex text); :class:`ConfigError` naming the file if unusable."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(4096)
    except OSError as e:
        raise ConfigError(f"cannot read tunnel key file {path}: {e.strerror or e}") from None
    if stat.S_IMODE(mode) & 0o077:
        log.warning(
            "tunnel key file %s is readable by group or others (mode %03o): chmod 600 it", path, stat.S_IMODE(mode)
        )
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"tunnel key file {path} is not hex text (make one with: openssl rand -hex 32)") from None
    return parse_key(text, f"tunnel key file {path}")


def parse_key(text: str, source: str, *, base64_too: bool = False) -> bytes:
    """The key written in ``text`` as hex (or, with ``base64_too``, else as base64); ``source`` names
    where it came from in the :class:`ConfigError` it raises."""
    compact = "".join(text.split())
    key = None
    try:
        key = bytes.fromhex(compact)
    except ValueError:
        if base64_too:
            padded = compact.rstrip("=") + "=" * (-len(compact.rstrip("=")) % 4)
            altchars = b"-_" if "-" in compact or "_" in compact else None  # the URL-safe alphabet
            try:
                key = base64.b64decode(padded, altchars=altchars, validate=True)
            except (binascii.Error, ValueError):
                pass
    if key is None:
        what = "hex or base64" if base64_too else "hex text (make one with: openssl rand -hex 32)"
        raise ConfigError(f"{source} is not {what}")
    if not MIN_KEY <= len(key) <= MAX_KEY:
        raise ConfigError(f"{source} holds {len(key)} bytes of key; a tunnel key has {MIN_KEY} to {MAX_KEY}")
    return key
