"""Messages in and out of a store as text: the display formats of `mqdb get`, the JSON-lines export and
import, and putting lines. Library only (no click).

The export format is JSON lines, one object per message, lossless for any bytes::

    {"queue": "Queue-42", "offset": 0, "b64": "aGVsbG8="}

``offset`` is the message's offset in its queue, ``b64`` its bytes in standard base64. Lines are
ASCII. `mqdb get --format json` prints the same objects, so its output can be imported too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import BinaryIO

from ..errors import Error
from ..store import Store
from .inspect import require_queue

FORMATS = ("text", "hex", "base64", "json")
_CHUNK = 1024  # messages per get
_SPOOL = 64 << 20  # an import from a pipe is kept in memory up to this size, then in a temporary file

# control characters would break the one-line-per-message layout of the text format
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(32), 127)} | {9: "\\t", 10: "\\n", 13: "\\r"}


class TransferError(Error):
    """A line of an import file is not an export record, or its offset would not be kept."""


def text(data: bytes) -> str:
    """UTF-8 for people: invalid bytes and control characters as backslash escapes (``\\xff``, ``\\n``)."""
    return data.decode("utf-8", "backslashreplace").translate(_ESCAPES)


def record(queue: str, offset: int, msg: bytes) -> str:
    """One export line (without its newline)."""
    return _record(json.dumps(queue), offset, msg)


def _record(queue_json: str, offset: int, msg: bytes) -> str:
    """``record`` with the queue name already JSON-encoded (the same for every message of a queue)."""
    return f'{{"queue": {queue_json}, "offset": {offset}, "b64": "{binascii.b2a_base64(msg, newline=False).decode()}"}}'


def render(fmt: str, queue: str, offset: int, msg: bytes) -> str:
    """One message as `mqdb get` prints it: ``OFFSET<TAB>BODY``, or an export record for ``json``."""
    if fmt == "json":
        return record(queue, offset, msg)
    if fmt == "text":
        body = text(msg)
    elif fmt == "hex":
        body = msg.hex()
    elif fmt == "base64":
        body = base64.b64encode(msg).decode("ascii")
    else:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return f"{offset}\t{body}"


def parse(line: str | bytes) -> tuple[str, int, bytes]:
    """(queue, offset, message) of one export line; ValueError saying what is wrong."""
    try:
        obj = json.loads(line)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("queue", "offset", "b64") if k not in obj]
    if missing:
        raise ValueError(f"no {', '.join(repr(k) for k in missing)} field")
    queue, offset, b64 = obj["queue"], obj["offset"], obj["b64"]
    if not isinstance(queue, str) or not queue:
        raise ValueError("'queue' is not a non-empty string")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError("'offset' is not a non-negative integer")
    if not isinstance(b64, str):
        raise ValueError("'b64' is not a string")
    try:
        msg = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("'b64' is not valid base64") from None
    return queue, offset, msg


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


# --- export ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def output(path: str):
    """A text file for an export: standard output for ``-``; otherwise written under a temporary name
    and renamed to ``path`` only when the block succeeds, so a failed export leaves no partial file."""
    if path == "-":
        yield sys.stdout
        return
    if not os.path.isdir(os.path.dirname(path) or "."):
        raise FileNotFoundError(f"cannot write {path}: no directory {os.path.dirname(path)}")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export(
    db: Store, write: Callable[[str], object], queues: Iterable[str] | None = None, progress=None
) -> tuple[int, int]:
    """Write every message of ``queues`` (all, by name, if None) as export lines through ``write``.

    Queues come in the order given (sorted by name when all), each queue's messages in offset order.
    Returns (queues, messages) written. ``progress(phase, done, total)`` counts messages.
    """
    progress = progress or _no_progress
    if queues is None:
        names = sorted(db)
    else:
        names = list(dict.fromkeys(queues))
        for q in names:
            require_queue(db, q)
    counts = [db.count(q) for q in names]
    total = sum(counts)
    done = told = 0
    progress("export", 0, total)
    for q, n in zip(names, counts, strict=True):
        qjson = json.dumps(q)
        offset = 0
        while offset < n:
            msgs = db.get(q, offset, min(_CHUNK, n - offset))
            if not msgs:
                break
            write("".join(_record(qjson, offset + i, m) + "\n" for i, m in enumerate(msgs)))
            offset += len(msgs)
            done += len(msgs)
            if done - told >= _CHUNK:
                progress("export", done, total)
                told = done
    progress("export", done, total)
    return len(names), done


# --- import ----------------------------------------------------------------------------------------
def import_file(db: Store, f: BinaryIO, name: str = "input", progress=None) -> tuple[int, int]:
    """Append the export lines of ``f`` to ``db``, keeping every offset; return (queues, messages).

    Every line is checked before anything is written: each queue's lines must carry consecutive
    offsets that continue where the queue ends in ``db`` (0 for a new queue); otherwise TransferError
    names the line and nothing is imported. ``f`` is read twice (a pipe is spooled first).
    ``progress(phase, done, total)`` counts lines.
    """
    progress = progress or _no_progress
    if not f.seekable():
        spool = tempfile.SpooledTemporaryFile(_SPOOL)
        shutil.copyfileobj(f, spool)
        f = spool
    f.seek(0)
    expected: dict[str, int] = {}
    lines = 0
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            queue, offset, _ = parse(line)
        except ValueError as e:
            raise TransferError(f"{name} line {n}: {e}; expected an export record") from None
        want = expected.get(queue)
        if want is None:
            want = db.count(queue)
            if offset != want:
                raise TransferError(
                    f"{name} line {n}: the message at offset {offset} of queue {queue!r} would get offset {want} "
                    f"({db.path} holds {want} messages of it); each queue must continue where the store ends"
                )
        elif offset != want:
            raise TransferError(
                f"{name} line {n}: offset {offset} of queue {queue!r} does not follow offset {want - 1} "
                "(a queue's lines must have consecutive offsets)"
            )
        expected[queue] = want + 1
        lines += 1
    f.seek(0)
    done = 0
    progress("import", 0, lines)
    for line in f:
        if not line.strip():
            continue
        queue, offset, msg = parse(line)
        got = db.put(queue, msg)
        if got != offset:  # pragma: no cover - the first pass rules this out
            raise Error(f"queue {queue!r}: message stored at offset {got}, not {offset}")
        done += 1
        if not done % _CHUNK or done == lines:
            progress("import", done, lines)
    return len(expected), done


# --- put -------------------------------------------------------------------------------------------
def put_lines(db: Store, queue: str, stream: Iterable[bytes]) -> tuple[int | None, int]:
    """Put each line of ``stream`` (without its ``\\n``) as one message; return (first offset, count)."""
    first = None
    n = 0
    for line in stream:
        offset = db.put(queue, line[:-1] if line.endswith(b"\n") else line)
        if first is None:
            first = offset
        n += 1
    return first, n
