"""The `mqdb` command: thin click commands over the library. Library errors become one-line
`Error: ...` messages with exit code 1 at one boundary (`_errors`)."""

import functools
import json
import sys

import click

import mqdb

from . import bench as bench_lib
from . import demo as demo_lib


def _errors(fn):
    """Turn mqdb errors and bad arguments into `Error: ...`, exit code 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (mqdb.Error, bench_lib.BenchError, ValueError, OSError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mqdb.__version__, prog_name="mqdb")
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
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the workload.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw figures as JSON.")
@_errors
def bench(size, queues, per_queue, stores, threads, workdir, seed, as_json):
    """Benchmark mqdb against SQLite, LMDB and RocksDB on the million-queue workload.

    Every figure comes from the same run; mqdb's ratio to the best peer is printed per column.
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


if __name__ == "__main__":  # pragma: no cover
    main()
