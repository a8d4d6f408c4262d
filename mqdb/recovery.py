"""Loading a shard: the index checkpoint, then the data written after it, up to the last commit.

Everything after the last commit record was never flushed: a writer truncates it away and reports
what it dropped; a reader simply stops there and picks up later commits with ``refresh``. A record
that fails its checksum ends the scan; if more than an interrupted write could leave follows it,
the store is not touched and CorruptionError names the offset.
"""

import os
from array import array

from . import checkpoint, format
from .coding import checksum
from .errors import CorruptionError, FormatError, StoreNotFoundError
from .format import FILE_HEADER_SIZE, KIND_COMMIT
from .scan import Stop, scan

_IOV_MAX = 1024

_NOATIME = getattr(os, "O_NOATIME", 0)


def load(sh, migrating: bool = False) -> dict:
    report = {"shard": sh.number, "dropped_bytes": 0, "dropped_blocks": 0, "dropped_name_bytes": 0,
              "reason": None, "rebuilt": False}  # fmt: skip
    _open_files(sh)
    data_size = os.fstat(sh.fd).st_size
    names_data = _read_all(sh.names_fd)
    names_base = checkpoint.NAMES_HEADER.size
    cp = None
    if migrating:
        if data_size > FILE_HEADER_SIZE:
            report["rebuilt"] = True
            report["reason"] = "store of format version 1: index checkpoint rebuilt from the data file"
    elif os.path.exists(sh.index_path):
        try:
            cp = checkpoint.read(sh.index_path, sh.number, names_data, data_size)
        except FormatError as e:
            report["reason"] = f"index checkpoint unusable, rebuilt from the data file: {e}"
            report["rebuilt"] = True
            cp = None
    elif data_size > FILE_HEADER_SIZE:
        report["rebuilt"] = True
        report["reason"] = "index checkpoint missing, rebuilt from the data file"
    if cp is not None:
        if cp.delta_stop is not None:
            report["rebuilt"] = True
            report["reason"] = f"index checkpoint {cp.delta_stop} unusable, the rest rebuilt from the data file"
        sh.adopt(cp, names_data)
        payload, messages = cp.payload, cp.messages
    else:
        sh.names_written = names_base
        payload = messages = 0
    sh.names_pending = bytearray()
    sh.names_since_commit = bytearray()
    stop, dropped_blocks, applied, payload, messages = _apply(
        sh, sh.committed, data_size, names_data, 0, payload, messages
    )
    sh.message_total = messages
    sh.varint_extra = sh.raw_bytes - payload - messages  # see refresh
    sh.tail = sh.written = sh.committed
    dropped = data_size - sh.committed
    names_dropped = len(names_data) - sh.names_written
    if dropped or names_dropped > 0:
        report["dropped_bytes"] = dropped
        report["dropped_blocks"] = dropped_blocks
        report["dropped_name_bytes"] = names_dropped
        if stop.reason is not None:
            report["reason"] = f"{stop.reason} at offset {stop.offset}"
        else:
            report["reason"] = "data written after the last flush"
        if not sh.readonly:
            allowance = (_IOV_MAX + 1) * sh.block_size
            if stop.reason is not None and data_size - stop.offset > allowance:
                raise CorruptionError(
                    sh.data_path,
                    stop.offset,
                    f"{stop.reason}, with {data_size - stop.offset} bytes after it (more than an "
                    "interrupted write leaves); the store was not changed",
                )
            os.ftruncate(sh.fd, sh.committed)
            os.ftruncate(sh.names_fd, sh.names_written)
    if sh.readonly:
        sh.new_qids = array("i")
    elif applied or report["rebuilt"] or migrating:
        sh.write_checkpoint()
    return report


def refresh(sh) -> int:
    """Apply commits a writer made since this read-only shard was loaded; return how many."""
    data_size = os.fstat(sh.fd).st_size
    if data_size <= sh.committed:
        return 0
    names_size = os.fstat(sh.names_fd).st_size
    names_data = os.pread(sh.names_fd, names_size - sh.names_written, sh.names_written)
    _, _, applied, payload, messages = _apply(
        sh, sh.committed, data_size, names_data, sh.names_written, sh.payload(), sh.message_total
    )
    sh.message_total = messages
    # every loaded block was sealed at a commit, so raw block bytes = payload + length prefixes
    sh.varint_extra = sh.raw_bytes - payload - messages
    sh.tail = sh.written = sh.committed
    sh.new_qids = array("i")
    return applied


def _apply(sh, start: int, end: int, names_data: bytes, names_base: int, payload: int, messages: int):
    """Scan records from ``start``; apply each group of blocks when its commit record is reached.

    ``names_data`` holds the names file from byte ``names_base`` on. Returns (stop, blocks seen
    after the last commit, commits applied, payload bytes and messages as of the last commit applied).
    """
    stops: list = []
    provisional = []
    applied = 0
    for rec in scan(sh.fd, start, end, sh.block_size, stops):
        if rec.kind != KIND_COMMIT:
            provisional.append(rec)
            continue
        seq, names_len, names_sum, commit_messages, commit_payload, offset = rec.commit()
        lo, hi = sh.names_written - names_base, names_len - names_base
        if offset != rec.offset or lo < 0 or hi < lo or hi > len(names_data):
            stops.append(Stop(rec.offset, "commit record does not match its position or names"))
            break
        new_names = names_data[lo:hi]
        if checksum(new_names) != names_sum:
            stops.append(Stop(rec.offset, "names written with this commit fail their checksum"))
            break
        body = checkpoint.names_header(sh.number) + new_names
        try:
            names = checkpoint.decode_names(sh.names_path, body, sh.number)
        except FormatError as e:
            stops.append(Stop(rec.offset, str(e)))
            break
        if any(r.qid >= sh.queue_count + len(names) for r in provisional):
            stops.append(Stop(rec.offset, "a block names a queue that does not exist"))
            break
        sh.add_names(new_names)
        for r in provisional:
            _attach(sh, r)
        provisional = []
        sh.names_written = names_len
        sh.seq = seq
        payload = commit_payload
        messages = commit_messages
        sh.committed = rec.offset + rec.length
        applied += 1
    sh.names_pending = bytearray()
    sh.names_since_commit = bytearray()
    return stops[-1], len(provisional), applied, payload, messages


def _attach(sh, rec) -> None:
    sh.add_block(rec.qid, format.pack_entry(rec.offset, rec.length), rec.count)
    last = sh.last_b[rec.qid]
    sh.count[rec.qid] = sh.b_end[last]
    raw = int.from_bytes(rec.payload[:2], "little") if rec.flags & format.FLAG_LZ4 else rec.size
    sh.raw_bytes += raw
    sh.stored_bytes += rec.length


def _open_data(path: str, flags: int) -> int:
    """The data log, opened so that reading it does not update its access time (``O_NOATIME``: a
    read then skips the kernel's check of the clock, in every get). Only the file's owner may ask for
    that; anyone else opens it as it is."""
    if _NOATIME:
        try:
            return os.open(path, flags | _NOATIME, 0o644)
        except PermissionError:
            pass
    return os.open(path, flags, 0o644)


def _open_files(sh) -> None:
    if sh.readonly:
        try:
            sh.fd = _open_data(sh.data_path, os.O_RDONLY)
            sh.names_fd = os.open(sh.names_path, os.O_RDONLY)
        except FileNotFoundError as e:
            raise StoreNotFoundError(f"{sh.dir} is not a complete mqdb store: {e.filename} is missing") from None
    else:
        sh.fd = _open_data(sh.data_path, os.O_RDWR | os.O_CREAT)
        sh.names_fd = os.open(sh.names_path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(sh.fd).st_size == 0:
            os.pwrite(sh.fd, format.pack_file_header(sh.number, sh.block_size), 0)
        if os.fstat(sh.names_fd).st_size == 0:
            os.pwrite(sh.names_fd, checkpoint.names_header(sh.number), 0)
        # the spill file only ever holds unfinished blocks of the last run: nothing in it was flushed
        sh.spill_fd = os.open(sh.spill_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        sh.stage_fd = os.open(sh.stage_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    head = os.pread(sh.fd, FILE_HEADER_SIZE, 0)
    format.check_file_header(sh.data_path, head, sh.number, sh.block_size)
    checkpoint.decode_names(sh.names_path, os.pread(sh.names_fd, checkpoint.NAMES_HEADER.size, 0), sh.number)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""
