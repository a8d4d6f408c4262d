"""The `mqdb` command: thin click commands over the library. Each opens the store (read-only unless
it writes), calls one library function (mqdb.tools.inspect, mqdb.tools.check, mqdb.tools.transfer, mqdb.tools.bench,
mqdb.tools.demo) and formats the result. Library errors become one-line `Error: ...` messages with exit
code 1 at one boundary (`_errors`)."""

import functools
import json
import sys
from importlib.metadata import version

import click

import mqdb

from . import _accel
from .store import is_url
from .tools import bench as bench_lib
from .tools import check as check_lib
from .tools import demo as demo_lib
from .tools import inspect, transfer


def _errors(fn):
    """Turn mqdb errors and bad arguments into `Error: ...` on one line, exit code 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            raise  # the reader went away (`mqdb export PATH | head`): click ends quietly
        except (mqdb.Error, bench_lib.BenchError, ValueError, OSError) as e:
            raise click.ClickException(" ".join(str(e).split())) from None

    return wrapper


# --- shared options -----------------------------------------------------------------------------
# PATH: a store directory, or a Redis Cluster store's URL (redis://HOST:PORT[,HOST:PORT...][/NAME])
path_argument = click.argument("path", type=click.Path(file_okay=False))
queue_argument = click.argument("queue")


def json_option(text: str):
    return click.option("--json", "as_json", is_flag=True, help=text)


def format_options(fn):
    """--format and its --json shorthand, for commands that print messages."""
    fn = click.option("--json", "as_json", is_flag=True, help="Same as --format json.")(fn)
    return click.option(
        "--format", "fmt", type=click.Choice(transfer.FORMATS), default=None,
        help="text (default): OFFSET<TAB>UTF-8 with backslash escapes; hex or base64: OFFSET<TAB>bytes encoded; "
        'json: one {"queue", "offset", "b64"} object per line (the export format).',
    )(fn)  # fmt: skip


def progress_option(fn):
    return click.option(
        "--progress/--no-progress", default=None, help="Progress bar on stderr (default: when stderr is a terminal)."
    )(fn)


def _message_format(fmt: str | None, as_json: bool) -> str:
    if as_json and fmt not in (None, "json"):
        raise click.ClickException(f"--json and --format {fmt} contradict each other; give one of them")
    return "json" if as_json else fmt or "text"


def _progress(enabled: bool | None) -> "Progress":
    return Progress(enabled=sys.stderr.isatty() if enabled is None else enabled)


class Progress:
    """A progress(phase, done, total) callback drawn as one click progress bar per phase, on stderr."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.phase = None
        self.bar = None
        self.done = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if phase != self.phase:
            self.close()
            self.phase = phase
            self.done = 0
            self.bar = click.progressbar(length=max(total, 1), label=f"{phase:<24}", file=sys.stderr, width=30)
            self.bar.__enter__()
        if done > self.done:
            self.bar.update(done - self.done)
            self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _version(ctx, _param, value):
    """``--version``: the distribution's version, and which build of the core runs."""
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"mqdb, version {version('dubbomesh')}\ncore: {_accel.describe()}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the version and which build of the core runs, and exit.")  # fmt: skip
def main():
    """mqdb: an embeddable store for a million append-only queues."""


@main.command()
@click.option("--size", type=click.Choice(list(bench_lib.SIZES)), default="small", show_default=True,
              help="Preset: tiny 10k x 10, small 100k x 20, medium 1M x 10, large 1M x 100.")  # fmt: skip
@click.option("--queues", type=click.IntRange(1), help="Number of queues (overrides --size).")
@click.option("--per-queue", type=click.IntRange(1), help="Messages per queue (overrides --size).")
@click.option("--store", "stores", multiple=True, type=click.Choice(list(bench_lib.DEFAULT_STORES)),
              help="Stores to measure (repeatable); default: all.")  # fmt: skip
@click.option("--threads", "threads", multiple=True, type=click.IntRange(1),
              help="Writer thread counts (repeatable); default 1 and 4.")  # fmt: skip
@click.option("--workdir", type=click.Path(file_okay=False), help="Where the stores are made (default: a temp dir).")
@click.option("--redis-url", metavar="URL",
              help="The Redis Cluster for --store redis-cluster, redis://HOST:PORT[,...] (default: the bench "
                   "starts 3 primaries and 3 replicas on loopback); each run uses a store name of its own and "
                   "deletes it.")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the workload.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw figures as JSON.")
@_errors
def bench(size, queues, per_queue, stores, threads, workdir, redis_url, seed, as_json):
    """Benchmark mqdb against SQLite, LMDB, RocksDB and mqdb over a Redis Cluster on the million-queue workload.

    Every figure comes from the same run; mqdb's ratio to the best peer is printed per column. The
    redis-cluster row adds the cluster's server memory per message.
    """
    q, n = bench_lib.SIZES[size]
    progress = Progress(enabled=not as_json)
    try:
        result = bench_lib.run_bench(
            queues or q,
            per_queue or n,
            threads=tuple(threads) or (1, 4),
            stores=tuple(stores) or bench_lib.DEFAULT_STORES,
            workdir=workdir,
            progress=progress,
            seed=seed,
            redis_url=redis_url,
        )
    finally:
        progress.close()
    click.echo(json.dumps(result, indent=2) if as_json else bench_lib.format_report(result))


@main.command()
@click.option("--queues", type=click.IntRange(1), default=100_000, show_default=True, help="Queues to write.")
@click.option("--per-queue", type=click.IntRange(1), default=10, show_default=True, help="Messages per queue.")
@click.option("--path", type=click.Path(file_okay=False), help="Store directory (default: a temporary one).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw figures as JSON.")
@_errors
def demo(queues, per_queue, path, as_json):
    """Write queues on the default options, reopen, read everything back verified, print figures."""
    progress = Progress(enabled=not as_json)
    try:
        result = demo_lib.run_demo(path, queues=queues, per_queue=per_queue, progress=progress)
    finally:
        progress.close()
    click.echo(json.dumps(result, indent=2) if as_json else demo_lib.format_demo(result))


@main.command()
@path_argument
@json_option("Print the figures as one JSON object.")
@_errors
def info(path, as_json):
    """Summary figures of a store.

    Queues, messages, blocks, bytes on disk, payload bytes, compression ratio, shard balance, last
    flush time and format version. On a cluster URL: queues, messages, memory, and each primary's
    slots, replicas, memory and appendfsync setting.
    """
    with inspect.open_store(path) as db:
        s = inspect.summary(db)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    if "kind" in s:
        _cluster_info(s)
        return
    balance = "n/a" if s["shard_balance"] is None else f"{s['shard_balance']:.2f}"
    rows = [
        ("path", s["path"]),
        ("format version", s["format_version"]),
        ("queues", f"{s['queues']:,}"),
        ("messages", f"{s['messages']:,}"),
        ("blocks", f"{s['blocks']:,}"),
        ("bytes on disk", f"{s['bytes_on_disk']:,} ({inspect.human_bytes(s['bytes_on_disk'])})"),
        ("payload bytes", f"{s['payload_bytes']:,} ({inspect.human_bytes(s['payload_bytes'])})"),
        ("compression", f"{s['compression']}, ratio {s['compression_ratio']:.2f} (raw/stored block bytes)"),
        ("shard balance", f"max/min {balance} (queues per shard: min {s['queues_per_shard_min']:,}, "
                          f"max {s['queues_per_shard_max']:,}; {s['shards']} shards)"),
        ("last flush", s["last_flush"] or "never"),
    ]  # fmt: skip
    for label, value in rows:
        click.echo(f"{label:<16}{value}")


def _cluster_info(s: dict) -> None:
    rows = [
        ("path", s["path"]),
        ("store", f"{s['store']} ({s['kind']}, {s['format']})"),
        ("queues", f"{s['queues']:,}"),
        ("messages", f"{s['messages']:,}"),
        ("queue memory", f"{s['queue_memory_bytes']:,} ({inspect.human_bytes(s['queue_memory_bytes'])})"),
        ("primaries", f"{s['primaries']}, {inspect.human_bytes(s['used_memory'])} used in all"),
        ("last flush", s["last_flush"] or "not by this handle"),
    ]
    for label, value in rows:
        click.echo(f"{label:<16}{value}")
    for n in s["nodes"]:
        aof = f"appendonly, appendfsync {n['appendfsync'] or '?'}" if n["aof_enabled"] else "no appendonly file"
        click.echo(
            f"  {n['address']:<21} {n['slots']:>5} slots, {n['replicas']} replica(s), "
            f"{inspect.human_bytes(n['used_memory'])}, {aof}"
        )


@main.command()
@path_argument
@click.option("--prefix", help="Only queues whose name starts with this.")
@click.option("--limit", type=click.IntRange(0), help="At most this many queues.")
@click.option("--sort", type=click.Choice(inspect.SORTS), default="name", show_default=True,
              help="By name, or the largest first by messages or stored bytes.")  # fmt: skip
@json_option("One JSON object per queue and line: name, messages, blocks, stored_bytes.")
@_errors
def ls(path, prefix, limit, sort, as_json):
    """List queues with their message counts.

    One line per queue: NAME<TAB>MESSAGES<TAB>BLOCKS<TAB>STORED BYTES (on a cluster: - for blocks and
    the server memory of the stream for stored bytes).
    """
    with inspect.open_store(path) as db:
        infos = inspect.list_queues(db, prefix=prefix, sort=sort, limit=limit)
    for i in infos:
        if as_json:
            click.echo(json.dumps(i.as_dict()))
        else:
            blocks = "-" if i.blocks is None else i.blocks
            click.echo(f"{transfer.text(i.name.encode())}\t{i.messages}\t{blocks}\t{i.stored_bytes}")


@main.command()
@path_argument
@queue_argument
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True, help="First message to print.")
@click.option("--num", type=click.IntRange(0), default=10, show_default=True, help="At most this many messages.")
@format_options
@_errors
def get(path, queue, offset, num, fmt, as_json):
    """Print messages of a queue with their offsets, one per line."""
    fmt = _message_format(fmt, as_json)
    with inspect.open_store(path) as db:
        msgs = inspect.read(db, queue, offset, num)
    for off, msg in msgs:
        click.echo(transfer.render(fmt, queue, off, msg))


@main.command()
@path_argument
@queue_argument
@click.option("-n", "--lines", "last", type=click.IntRange(0), metavar="N", default=10, show_default=True,
              help="Print the last N messages.")  # fmt: skip
@click.option("-f", "--follow", is_flag=True, help="Then wait for messages a writer flushes, until Ctrl-C.")
@click.option("--timeout", type=click.FloatRange(0), metavar="SECONDS", help="With --follow: stop after SECONDS.")
@click.option("--interval", type=click.FloatRange(0.01), default=inspect.FOLLOW_INTERVAL, hidden=True)
@format_options
@_errors
def tail(path, queue, last, follow, timeout, interval, fmt, as_json):
    """Print the last messages of a queue; --follow waits for more.

    With --follow, every message a writer flushes later is printed too, until Ctrl-C or --timeout.
    """
    fmt = _message_format(fmt, as_json)
    with inspect.open_store(path) as db:
        msgs = inspect.tail(db, queue, last)
        for off, msg in msgs:
            click.echo(transfer.render(fmt, queue, off, msg))
        if not follow:
            return
        start = msgs[-1][0] + 1 if msgs else db.count(queue)
        try:
            for off, msg in inspect.follow(db, queue, start, interval=interval, timeout=timeout):
                click.echo(transfer.render(fmt, queue, off, msg))
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a follow ends


@main.command()
@path_argument
@queue_argument
@click.argument("message", required=False)
@_errors
def put(path, queue, message):
    """Append one message, or one per line of standard input.

    MESSAGE is put as UTF-8; without it every line of standard input (its newline removed) is one
    message. Flushes before it exits. Creates the store if PATH is a new or empty directory. Prints
    the offset of MESSAGE, or how many lines were put and their offsets.
    """
    with inspect.open_store(path, write=True) as db:
        if message is not None:
            click.echo(db.put(queue, message.encode("utf-8")))
            return
        with click.open_file("-", "rb") as stdin:
            first, n = transfer.put_lines(db, queue, stdin)
    click.echo(f"{n} messages put to {queue}" + (f", offsets {first} to {first + n - 1}" if n else ""))


@main.command()
@path_argument
@progress_option
@_errors
def check(path, progress):
    """Verify checksums, the index and every message; exit 1 on problems.

    Checks every block checksum, the index against the data, and every message frame. Exit code 0
    when the store is sound; otherwise one line per problem (FILE:OFFSET: queue 'Q': reason) and
    exit code 1. Works on a live store too: what a writer has not flushed is not checked.
    Embedded stores only: a cluster's servers keep their own data (redis-cli --cluster check).
    """
    if is_url(path):
        raise click.ClickException(
            f"mqdb check verifies the files of an embedded store; {path} is a Redis Cluster store, whose "
            "servers keep their own data: see redis-cli --cluster check HOST:PORT"
        )
    bar = _progress(progress)
    try:
        report = check_lib.check(path, progress=bar)
    finally:
        bar.close()
    for problem in report:
        click.echo(str(problem))
    if report:
        raise click.ClickException(f"{len(report)} problem{'s' if len(report) != 1 else ''} found in {path}")
    click.echo(
        f"{path}: ok, {report.files} data files, {report.records:,} records, {report.queues:,} queues, "
        f"{report.messages:,} messages checked"
    )


@main.command()
@path_argument
@click.option("--queue", "queues", multiple=True, help="Export only this queue (repeatable); default: all.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="Write to this file (default: standard output).")  # fmt: skip
@progress_option
@_errors
def export(path, queues, output, progress):
    """Write messages as JSON lines, lossless, with their offsets.

    One line per message: {"queue": ..., "offset": N, "b64": ...}; the bytes in base64.
    """
    bar = _progress(progress)
    with inspect.open_store(path) as db, transfer.output(output) as out:
        try:
            transfer.export(db, out.write, queues or None, progress=bar)
        finally:
            bar.close()


@main.command("import")
@path_argument
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@progress_option
@_errors
def import_(path, file, progress):
    """Append messages from an export file, keeping their offsets.

    FILE holds lines as `mqdb export` writes them (- reads standard input). Each queue must continue
    where it ends in the store (a new queue at offset 0); otherwise nothing is imported. Creates the
    store if PATH is a new or empty directory.
    """
    bar = _progress(progress)
    with inspect.open_store(path, write=True) as db, click.open_file(file, "rb") as f:
        try:
            queues, n = transfer.import_file(db, f, name="stdin" if file == "-" else file, progress=bar)
        finally:
            bar.close()
    click.echo(f"imported {n} messages into {queues} queues")


if __name__ == "__main__":  # pragma: no cover
    main()
