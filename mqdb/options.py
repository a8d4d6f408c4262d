"""Options of :func:`mqdb.open`, their defaults and their checks."""

from types import MappingProxyType

#: Every option of :func:`mqdb.open` with its default.
#:
#: ``block_size``          bytes of one on-disk block record, header included (512..65535). Fixed when a
#:                         store is created; reopening with another value is an error.
#: ``shards``              number of shards, each with its own map, lock and files. Fixed at creation.
#: ``compression``         ``"none"`` or ``"lz4"``: lz4 compresses each block on its own (a block that
#:                         does not shrink is stored as it is). May change between opens.
#: ``sync``                ``True``: ``flush()`` also fsyncs, so flushed data survives a power cut, not
#:                         only a crash of the process.
#: ``readonly``            open beside a writer (no lock taken) and see everything it has flushed;
#:                         ``refresh()`` picks up later flushes.
#: ``write_buffer_bytes``  memory budget of the shared write-buffer pool. When it is full, the largest
#:                         unfinished blocks move to the shard's spill file.
#: ``slice_size``          bytes of one pool slice (a power of two); an unfinished block is a chain of
#:                         slices.
#: ``spill_bytes``         disk budget of the spill files, where unfinished blocks go when the pool is
#:                         full (they come back when the block is sealed). Past it, a shard seals all its
#:                         unfinished blocks as they are, and its spill file starts empty again.
#: ``write_batch_bytes``   finished blocks are gathered until this many bytes, then written with one
#:                         ``pwritev`` call per shard.
#: ``cache_blocks``        verified blocks kept per shard, split into messages, for readers that stop inside one.
#: ``readahead_blocks``    blocks of a queue announced to the kernel ahead of a sequential reader.
DEFAULT_OPTIONS = MappingProxyType(
    {
        "block_size": 4096,
        "shards": 32,
        "compression": "none",
        "sync": False,
        "readonly": False,
        "write_buffer_bytes": 128 << 20,
        "slice_size": 128,
        "spill_bytes": 2 << 30,
        "write_batch_bytes": 1 << 20,
        "cache_blocks": 64,
        "readahead_blocks": 2,
    }
)

COMPRESSIONS = ("none", "lz4")


def resolve(options: dict) -> dict:
    """Return the full option set: defaults updated by ``options``, every value checked."""
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_OPTIONS)}")
    opts = dict(DEFAULT_OPTIONS)
    opts.update(options)
    _int(opts, "block_size", 512, 65535)
    _int(opts, "shards", 1, 1024)
    _int(opts, "slice_size", 16, 65536)
    _int(opts, "write_buffer_bytes", 64 << 10, 1 << 40)
    _int(opts, "write_batch_bytes", 4096, 1 << 30)
    _int(opts, "spill_bytes", 0, 1 << 50)
    _int(opts, "cache_blocks", 0, 1 << 20)
    _int(opts, "readahead_blocks", 0, 1024)
    if opts["compression"] not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, not {opts['compression']!r}")
    for name in ("sync", "readonly"):
        if not isinstance(opts[name], bool):
            raise TypeError(f"option {name} must be True or False, not {opts[name]!r}")
    if opts["write_buffer_bytes"] < 4 * opts["block_size"]:
        raise ValueError("write_buffer_bytes must hold at least 4 blocks")
    return opts


def _int(opts: dict, name: str, low: int, high: int) -> None:
    value = opts[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"option {name} must be an int, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"option {name} must be between {low} and {high}, not {value}")
