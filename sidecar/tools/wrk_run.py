"""Run wrk once and read its result: the process side of :mod:`sidecar.tools.wrk` (which stays pure)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable

from sidecar.tools.wrk import SCRIPT, WrkResult, parse_wrk_output, wrk_command

__all__ = ["WrkError", "find_wrk", "run_wrk", "wait_ticking"]

GRACE = 30.0  # seconds beyond the run's duration and timeout before the wrk process is given up on
TICK = 0.1  # seconds between calls of on_tick


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result. ``output`` holds what it printed (stdout, stderr)."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


def find_wrk(wrk: str = "wrk") -> str | None:
    """The path of the wrk executable, or None when it is not installed."""
    return shutil.which(wrk)


def run_wrk(
    url: str,
    connections: int,
    duration_s: float,
    threads: int = 2,
    script_path: str | None = SCRIPT,
    timeout_s: float = 2.0,
    *,
    wrk: str = "wrk",
    on_tick: Callable[[], object] | None = None,
) -> tuple[WrkResult, str]:
    """Run wrk against ``url`` (arguments as :func:`sidecar.tools.wrk.wrk_command`) and wait for it,
    calling ``on_tick()`` every ``TICK`` seconds meanwhile, if given (a progress bar).

    Returns the parsed result and wrk's output. Raises :class:`WrkError` when wrk is not installed,
    exits with an error, runs ``GRACE`` seconds longer than asked, or prints no result (with the bench
    script: no result line of the script, whose answers are then unchecked).
    """
    executable = find_wrk(wrk)
    if executable is None:
        raise WrkError(f"{wrk} not found on PATH (Debian/Ubuntu: apt-get install wrk)")
    command = wrk_command(url, connections, duration_s, threads, script_path, timeout_s, wrk=executable)
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr, overran = wait_ticking(process, time.monotonic() + duration_s + timeout_s + GRACE, on_tick)
    if overran:
        raise WrkError(f"wrk ran more than {GRACE:.0f} s past its duration", _text(stdout, stderr))
    output = _text(stdout, stderr)
    if process.returncode != 0:
        raise WrkError(f"wrk exited with status {process.returncode}: {stderr.strip()[-300:]}", output)
    try:
        result = parse_wrk_output(stdout)
    except ValueError as exc:
        raise WrkError(str(exc), output) from None
    if script_path == SCRIPT and not result.checked:  # e.g. the script failed to load: wrk goes on without it
        raise WrkError("wrk ran without the bench script's result line", output)
    return result, output


def wait_ticking(
    process: subprocess.Popen, end: float, on_tick: Callable[[], object] | None = None
) -> tuple[str, str, bool]:
    """Wait for ``process`` (its pipes as text), calling ``on_tick()`` every ``TICK`` seconds, if given;
    kill it at ``time.monotonic()`` ``end``. Return its stdout, its stderr and whether it was killed."""
    with process:
        while True:
            try:
                stdout, stderr = process.communicate(timeout=max(0.0, min(TICK, end - time.monotonic())))
                return stdout, stderr, False
            except subprocess.TimeoutExpired:
                if time.monotonic() >= end:
                    process.kill()
                    stdout, stderr = process.communicate()
                    return stdout, stderr, True
                if on_tick is not None:
                    on_tick()


def _text(stdout, stderr) -> str:
    parts = [p.decode(errors="replace") if isinstance(p, bytes) else p for p in (stdout, stderr) if p]
    return "\n".join(parts)
