"""Run wrk once and read its result: the process side of :mod:`sidecar.tools.wrk` (which stays pure)."""

from __future__ import annotations

import shutil
import subprocess

from sidecar.tools.wrk import SCRIPT, WrkResult, parse_wrk_output, wrk_command

__all__ = ["WrkError", "find_wrk", "run_wrk"]

GRACE = 30.0  # seconds beyond the run's duration and timeout before the wrk process is given up on


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
) -> tuple[WrkResult, str]:
    """Run wrk against ``url`` (arguments as :func:`sidecar.tools.wrk.wrk_command`) and wait for it.

    Returns the parsed result and wrk's output. Raises :class:`WrkError` when wrk is not installed,
    exits with an error, runs ``GRACE`` seconds longer than asked, or prints no result (with the bench
    script: no result line of the script, whose answers are then unchecked).
    """
    executable = find_wrk(wrk)
    if executable is None:
        raise WrkError(f"{wrk} not found on PATH (Debian/Ubuntu: apt-get install wrk)")
    command = wrk_command(url, connections, duration_s, threads, script_path, timeout_s, wrk=executable)
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=duration_s + timeout_s + GRACE,
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise WrkError(f"wrk ran more than {GRACE:.0f} s past its duration", _text(exc.stdout, exc.stderr)) from None
    output = _text(done.stdout, done.stderr)
    if done.returncode != 0:
        raise WrkError(f"wrk exited with status {done.returncode}: {done.stderr.strip()[-300:]}", output)
    try:
        result = parse_wrk_output(done.stdout)
    except ValueError as exc:
        raise WrkError(str(exc), output) from None
    if script_path == SCRIPT and not result.checked:  # e.g. the script failed to load: wrk goes on without it
        raise WrkError("wrk ran without the bench script's result line", output)
    return result, output


def _text(stdout, stderr) -> str:
    parts = [p.decode(errors="replace") if isinstance(p, bytes) else p for p in (stdout, stderr) if p]
    return "\n".join(parts)
