"""Reading the records of a data file in order: used by recovery, ``refresh`` and ``check``."""

import os
from dataclasses import dataclass

from .coding import checksum
from .format import COMMIT, KIND_BLOCK, KIND_COMMIT, RECORD, RECORD_SIZE

_CHUNK = 4 << 20


@dataclass(slots=True)
class Record:
    offset: int
    kind: int
    flags: int
    qid: int
    size: int  # stored payload bytes
    skip: int
    count: int
    payload: bytes

    @property
    def length(self) -> int:
        return RECORD_SIZE + self.size

    def commit(self) -> tuple:
        """(seq, names_len, names_sum, messages, payload, offset) of a commit record."""
        return COMMIT.unpack_from(self.payload)


@dataclass(slots=True)
class Stop:
    """Why a scan ended before the end of the file (``None`` reason: a clean end)."""

    offset: int
    reason: str | None


def scan(fd: int, start: int, end: int, block_size: int, stop: list):
    """Yield each whole, checksummed record of ``fd`` from ``start`` up to ``end``.

    The scan ends at the first record that is cut short or fails its checksum; ``stop`` receives one
    :class:`Stop` saying where and why.
    """
    buf = b""
    base = start  # file offset of buf[0]
    pos = start
    while True:
        if pos >= end:
            stop.append(Stop(pos, None))
            return
        need = pos - base + RECORD_SIZE
        if need > len(buf):
            buf, base = _refill(fd, buf, base, pos, end)
            need = RECORD_SIZE
        if len(buf) - (pos - base) < RECORD_SIZE:
            stop.append(Stop(pos, f"record header cut short ({end - pos} bytes left)"))
            return
        at = pos - base
        cs, kind, flags, qid, size, skip, count = RECORD.unpack_from(buf, at)
        if kind not in (KIND_BLOCK, KIND_COMMIT):
            stop.append(Stop(pos, f"unknown record kind {kind}"))
            return
        if kind == KIND_BLOCK and RECORD_SIZE + size > block_size:
            stop.append(Stop(pos, f"block record of {RECORD_SIZE + size} bytes exceeds the block size"))
            return
        if kind == KIND_COMMIT and size != COMMIT.size:
            stop.append(Stop(pos, f"commit record with a {size}-byte payload"))
            return
        if at + RECORD_SIZE + size > len(buf):
            buf, base = _refill(fd, buf, base, pos, end)
            at = 0
            if RECORD_SIZE + size > len(buf):
                stop.append(Stop(pos, f"record cut short ({end - pos} of {RECORD_SIZE + size} bytes)"))
                return
        view = memoryview(buf)
        if checksum(view[at + 4 : at + RECORD_SIZE + size]) != cs:
            stop.append(Stop(pos, "checksum mismatch"))
            return
        payload = bytes(view[at + RECORD_SIZE : at + RECORD_SIZE + size])
        yield Record(pos, kind, flags, qid, size, skip, count, payload)
        pos += RECORD_SIZE + size


def _refill(fd: int, buf: bytes, base: int, pos: int, end: int) -> tuple[bytes, int]:
    keep = buf[pos - base :]
    more = os.pread(fd, min(_CHUNK, end - pos - len(keep)), pos + len(keep)) if end > pos + len(keep) else b""
    return keep + more, pos
