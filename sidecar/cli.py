"""The `sidecar` command: thin click commands over the library. `provider` and `consumer` run one
sidecar (configuration: defaults, then `--config FILE`, then flags); `demo` and `bench` start the
whole topology on loopback. Library errors become one-line `Error: ...` messages with exit code 1."""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import sys
import time
from importlib.metadata import version

import click

from sidecar import _accel, app
from sidecar.ops import config, logs
from sidecar.runtime import registry

__all__ = ["main"]

LOG_LEVELS = logs.LEVELS


def _errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (config.ConfigError, ValueError, OSError) as e:
            raise click.ClickException(" ".join(str(e).split())) from None

    return wrapper


def _address(ctx, param, value):
    if value is None:
        return None
    try:
        registry.parse_address(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return value


def _registry(ctx, param, value):
    if value:
        try:
            registry.parse_etcd_url(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return value


def _providers(ctx, param, values):
    for value in values:
        try:
            registry.parse_provider(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return list(values)


config_option = click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, exists=True), help="TOML file (see sidecar.ops.config)."
)
log_option = click.option(
    "--log-level", type=click.Choice(LOG_LEVELS), default=None, help="Default: $SIDECAR_LOG_LEVEL or info."
)
log_format_option = click.option(
    "--log-format", type=click.Choice(logs.FORMATS), default=None,
    help="Lines on stderr: plain text or one JSON object each. Default: $SIDECAR_LOG_FORMAT or plain.",
)  # fmt: skip
registry_option = click.option(
    "--registry", callback=_registry, help="etcd://HOST:PORT of an etcd v3 registry [none: the static list]."
)
admin_option = click.option(
    "--admin", callback=_address, help="HOST:PORT of the admin endpoint: /healthz, /metrics, /stats [none]."
)
tunnel_key_option = click.option(
    "--tunnel-key-file", "tunnel_key_files", multiple=True, type=click.Path(dir_okay=False),
    help="File with a tunnel key as hex text (repeatable, at most 2: the first signs) [none, or $SIDECAR_TUNNEL_KEY].",
)  # fmt: skip


allow_remote_option = click.option(
    "--allow-remote", is_flag=True, default=None, help="Allow binding beyond loopback (listen, tunnel, admin)."
)


def _version(ctx, _param, value):
    """``--version``: the distribution's version, and which build of the codecs runs."""
    if not value or ctx.resilient_parsing:
        return
    for name in _accel.TWINS:
        importlib.import_module(name)
    click.echo(f"sidecar, version {version('dubbomesh')}\ncore: {_accel.describe()}")
    ctx.exit()


@click.group()
@click.option(
    "--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
    help="Show the version and whether the codecs run compiled or as pure Python, and exit.",
)  # fmt: skip
def main():
    """sidecar: an HTTP to Dubbo sidecar proxy with a UDP tunnel and a capacity-aware balancer."""


@main.command()
@click.option("--listen", callback=_address, help="UDP HOST:PORT of the tunnel [127.0.0.1:30000].")
@click.option("--dubbo", callback=_address, help="HOST:PORT of the local Dubbo service [127.0.0.1:20880].")
@click.option("--weight", type=click.FloatRange(min=0, min_open=True), help="This provider's share [100].")
@click.option("--pool-size", type=click.IntRange(1), help="TCP connections to the service [4].")
@allow_remote_option
@click.option("--allow-source", "allow_sources", multiple=True, metavar="CIDR",
              help="Accept tunnel datagrams only from these (repeatable) [keyed: any; else loopback].")  # fmt: skip
@tunnel_key_option
@registry_option
@admin_option
@config_option
@log_option
@log_format_option
@_errors
def provider(
    listen, dubbo, weight, pool_size, allow_remote, allow_sources, tunnel_key_files, registry, admin, config_file,
    log_level, log_format,
):  # fmt: skip
    """Run a provider sidecar: tunnel datagrams in, Dubbo over pooled TCP to the service."""
    logs.configure(log_level, log_format)
    flags = {"listen": listen, "dubbo": dubbo, "weight": weight, "pool_size": pool_size, "allow_remote": allow_remote}
    flags["allow_sources"] = list(allow_sources)
    flags["tunnel_key_files"] = list(tunnel_key_files)
    flags["registry"] = registry
    flags["admin"] = admin
    sys.exit(app.run_provider(config.provider_config(config_file, flags)))


@main.command()
@click.option("--listen", callback=_address, help="HTTP HOST:PORT applications call [127.0.0.1:20000].")
@click.option(
    "--provider", "providers", multiple=True, callback=_providers,
    help="A provider sidecar, HOST:PORT=WEIGHT[/THRESHOLD][+batch] (+batch: it takes several calls per "
    "datagram; repeatable; replaces the config file's list).",
)  # fmt: skip
@click.option("--workers", type=click.IntRange(1), help="Processes sharing the port with SO_REUSEPORT [1].")
@click.option("--threshold", type=click.IntRange(1), help="Calls in flight per provider before calls queue [200].")
@click.option("--call-timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds before a 504 [3].")
@click.option("--provider-header", is_flag=True, default=None, help="Name the provider in an X-Provider header.")
@click.option("--access-log/--no-access-log", default=None, help="One INFO line per call on sidecar.access [on].")
@click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds idle before a close [60].")
@click.option("--header-timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds for a request head [10].")
@click.option(
    "--io-collect", type=click.FloatRange(min=0),
    help="Seconds a busy consumer gathers socket events before it polls again; 0: at once [0.0006].",
)  # fmt: skip
@click.option(
    "--io-collect-calls", type=click.IntRange(min=1),
    help="Calls in flight from which the consumer is busy enough to gather events [32].",
)  # fmt: skip
@allow_remote_option
@tunnel_key_option
@registry_option
@admin_option
@config_option
@log_option
@log_format_option
@_errors
def consumer(
    listen, providers, workers, threshold, call_timeout, provider_header, access_log, idle_timeout, header_timeout,
    io_collect, io_collect_calls, allow_remote, tunnel_key_files, registry, admin, config_file, log_level, log_format,
):  # fmt: skip
    """Run a consumer sidecar: HTTP calls in, tunnel datagrams to the providers."""
    logs.configure(log_level, log_format)
    flags = {
        "listen": listen,
        "providers": providers,
        "workers": workers,
        "threshold": threshold,
        "call_timeout": call_timeout,
        "provider_header": provider_header,
        "access_log": access_log,
        "idle_timeout": idle_timeout,
        "header_timeout": header_timeout,
        "io_collect": io_collect,
        "io_collect_calls": io_collect_calls,
        "allow_remote": allow_remote,
        "tunnel_key_files": list(tunnel_key_files),
        "registry": registry,
        "admin": admin,
    }
    settings = config.consumer_config(config_file, flags)
    if not settings.providers and not settings.registry:
        raise click.UsageError(
            "no providers: give --provider HOST:PORT=WEIGHT, --registry etcd://HOST:PORT or a config file"
        )
    sys.exit(app.run_consumer(settings))


@main.command()
@click.option("--scenario", type=click.Choice(["latency-bound", "capacity-bound"]), default="latency-bound",
              show_default=True, help="Service capacities 200/400/600 or 64/128/192, latency 50 ms.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(min=0.5), default=5.0, show_default=True, help="Seconds of load.")
@click.option("--connections", type=click.IntRange(1), default=None, help="Client connections [scenario's first].")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Consumer workers.")
@click.option("--hold", is_flag=True, help="Keep the topology up until interrupted; print one JSON line first.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@_errors
def demo(scenario, duration, connections, workers, hold, progress):
    """Start three demo services, three provider sidecars and a consumer on loopback, and drive load."""
    from sidecar.tools import demo as demo_lib
    from sidecar.tools import procstat, topology

    chosen = topology.SCENARIOS[scenario]
    with topology.Topology.start(chosen, consumer_workers=workers, provider_header=True) as topo:
        if hold:
            topo.wait(ready=lambda: click.echo(json.dumps(topo.describe())))
            return
        click.echo(f"topology up: {topo.summary()}")
        if progress is None:
            progress = sys.stderr.isatty()
        conns = connections or chosen.connections[0]
        with contextlib.ExitStack() as stack:
            on_tick = None
            if progress:
                bar = stack.enter_context(
                    click.progressbar(length=int(duration * 10), label=f"{conns} connections", file=sys.stderr)
                )
                on_tick = lambda: bar.update(1)  # noqa: E731
            try:
                result, cpu = procstat.cpu_by_role(
                    topo.pids(), lambda: demo_lib.run_load(topo.consumer_address, conns, duration, on_tick=on_tick)
                )
            except demo_lib.LoadError as e:
                raise click.ClickException(str(e)) from None
        click.echo(demo_lib.report(result, chosen, conns, topo.provider_names(), cpu, topo.labels()))
        if result.mismatches:
            raise click.ClickException(f"{result.mismatches} answers did not match String.hashCode")


@main.command()
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(["latency-bound", "capacity-bound"]),
              help="Scenario to run (repeatable); default: both.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(min=1), default=10.0, show_default=True, help="Seconds per level.")
@click.option("--connections", "levels", multiple=True, type=click.IntRange(1),
              help="Connection levels (repeatable); default: the scenario's.")  # fmt: skip
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Consumer workers.")
@click.option("--nginx/--no-nginx", default=True, show_default=True, help="Measure the nginx baseline too.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per level instead of the table.")
@click.option("--build", "builds", multiple=True, type=click.Choice(["compiled", "pure"]),
              help="Measure the sidecars with this build of the codecs (repeatable, side by side); "
                   "default: the build this command runs.")  # fmt: skip
@click.option("--request-batch/--no-request-batch", default=True, show_default=True,
              help="Several calls per datagram toward each provider (REQUEST_BATCH), "
                   "or one datagram per call.")  # fmt: skip
@click.option("--rounds", type=click.IntRange(1), default=1, show_default=True,
              help="Measure each level this many times, the topologies in turn each time; ratios and "
                   "targets are the median of the rounds.")  # fmt: skip
@click.option("--soak", type=click.FloatRange(min=0, min_open=True), metavar="MINUTES",
              help="Instead: steady load on the sidecar topology for MINUTES; RSS and fds per process.")  # fmt: skip
@_errors
def bench(scenarios, duration, levels, workers, nginx, as_json, builds, request_batch, rounds, soak):
    """Drive the topology with wrk and compare with nginx proxying the same load."""
    from sidecar.tools import bench as bench_lib
    from sidecar.tools.nginx_baseline import NginxError
    from sidecar.tools.topology import TopologyError
    from sidecar.tools.wrk_run import WrkError

    if soak is not None:
        from sidecar.tools import soak as soak_lib

        if len(scenarios) > 1 or len(levels) > 1:
            raise click.UsageError("--soak takes one --scenario and one --connections")
        if builds:
            raise click.UsageError(
                "--soak runs the build this command runs: run it with DUBBOMESH_PURE_PYTHON=1 for pure"
            )
        lines = soak_lib.run(
            scenarios[0] if scenarios else "latency-bound",
            soak,
            connections=levels[0] if levels else None,
            workers=workers,
            as_json=as_json,
        )
    else:
        lines = bench_lib.run(
            scenarios or ("latency-bound", "capacity-bound"),
            duration=duration,
            levels=levels,
            workers=workers,
            nginx=nginx,
            as_json=as_json,
            builds=tuple(dict.fromkeys(builds)),
            request_batch=request_batch,
            rounds=rounds,
        )
    try:
        for line in lines:
            click.echo(line)
    except (bench_lib.BenchError, WrkError, NginxError, TopologyError) as e:
        raise click.ClickException(" ".join(str(e).split())) from None


@main.command()
@click.argument("url")
@click.option("--watch", type=click.FloatRange(min=0.1), is_flag=False, flag_value=2.0, default=None,
              metavar="[SECONDS]", help="Refresh every SECONDS (2 when not given) until Ctrl-C.")  # fmt: skip
def stats(url, watch):
    """Show a sidecar's admin /stats as a table: per provider in flight, answered, errors, timeouts and
    latency percentiles, then the tunnel and HTTP counters. URL is its --admin, as http://HOST:PORT."""
    from sidecar.ops.stats_table import format_stats

    if "://" not in url:
        url = "http://" + url
    if not url.rstrip("/").endswith("/stats"):
        url = url.rstrip("/") + "/stats"
    if watch is None:
        click.echo(format_stats(_fetch_stats(url)))
        return
    try:
        while True:
            try:
                text = format_stats(_fetch_stats(url))
            except click.ClickException as e:
                text = f"Error: {e.message}"
            click.clear()
            click.echo(f"{url}  every {watch:g} s, Ctrl-C to stop\n\n{text}")
            time.sleep(watch)
    except KeyboardInterrupt:
        pass


def _fetch_stats(url: str) -> dict:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise click.ClickException(f"{url} answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise click.ClickException(f"cannot fetch {url}: {getattr(e, 'reason', None) or e}") from None
    except ValueError as e:
        raise click.ClickException(f"{url} did not answer JSON: {e}") from None


@main.group("config")
def config_group():
    """Configuration files (see sidecar.ops.config and packaging/config/)."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@_errors
def config_check(file):
    """Check a configuration file: every mistake with its key and line.

    Prints each mistake of FILE's [consumer] and [provider] tables as FILE:LINE: key KEY: what is wrong
    (exit code 1), or one line saying the file is valid (exit code 0)."""
    from sidecar.ops import config_check as checker

    report = checker.check_file(file)
    for line in report.lines(file):
        click.echo(line)
    if report.problems:
        sys.exit(1)
