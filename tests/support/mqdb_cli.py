"""The ``mqdb`` command as a running process whose output lines the test reads as they come."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["start", "take", "interrupt"]

WAIT = 30.0  # seconds: an upper bound for a process to end, never a measurement

# ``python -m mqdb`` with Ctrl-C as a terminal gives it: SIGINT unblocked and raising KeyboardInterrupt,
# whatever this test process's signal state is (a mask or an ignored SIGINT, set by a library or by
# whoever started the tests, is inherited through fork and exec).
_LAUNCH = (
    "import runpy, signal, sys; "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'mqdb'; "
    "runpy.run_module('mqdb', run_name='__main__', alter_sys=True)"
)


def start(*args) -> tuple[subprocess.Popen, queue.Queue]:
    """``python -m mqdb ARGS`` started (stop it by its PID), and a queue that its stdout lines go to."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
    )
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def take(lines: queue.Queue, n: int) -> list[str]:
    """The next ``n`` lines, each waited for at most 10 s (a bound, not a measurement)."""
    return [lines.get(timeout=10) for _ in range(n)]


def interrupt(proc: subprocess.Popen) -> int:
    """Ctrl-C (SIGINT) to ``proc``; its exit status once it ends. A process still running after
    ``WAIT`` seconds is made to dump the stack of each of its threads (SIGABRT, which the fault
    handler turns into a traceback on stderr) and the test fails with that dump."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        states = _signal_states(proc.pid) + _signal_states(os.getpid())
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=WAIT)
        stacks = proc.stderr.read()
        message = f"{proc.args} did not end on Ctrl-C; signal masks (its, ours):\n{states}its stacks:\n{stacks}"
        raise AssertionError(message) from None


def _signal_states(pid: int) -> str:
    """The signal lines of ``/proc/PID/status`` (blocked, ignored, caught)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return "".join(line for line in status if line.startswith(("SigBlk", "SigIgn", "SigCgt")))
    except OSError as exc:
        return f"{exc}\n"
