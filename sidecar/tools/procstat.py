"""What a process costs, read from Linux's ``/proc``: CPU time, resident memory, open descriptors.

The bench uses it to put CPU per request next to throughput: measure a process's CPU seconds over a
run (:class:`CpuMeter`) and divide by the requests it served.

* :func:`cpu_seconds` is ``utime + stime`` from ``/proc/PID/stat`` (fields 14 and 15), in seconds via
  ``SC_CLK_TCK``. It already sums every thread of the process, live or ended.
* :func:`cpu_seconds_tree` adds the live descendants (found by walking ``/proc/*/stat`` for parent
  ids) and, for the process and each descendant, the CPU of its children that ended and were waited
  for (``cutime + cstime``): everything the tree has used so far.

* :func:`cpu_by_role` runs some work (a load generator) and gives the CPU seconds each process of each
  role (consumer sidecar, provider sidecars, services ...) used meanwhile: ``sidecar bench`` and
  ``sidecar demo`` divide it by the calls served.

The resolution is one clock tick (usually 10 ms): measure runs of seconds, not single requests. A
process that does not exist (any more) raises :class:`ProcessLookupError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

_T = TypeVar("_T")

__all__ = [
    "CpuMeter",
    "children",
    "cpu_by_role",
    "cpu_seconds",
    "cpu_seconds_tree",
    "descendants",
    "open_fds",
    "rss_bytes",
]

PROC = "/proc"
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` split into fields; index 0 is field 3 (state): the command name, which may
    hold spaces and parentheses, is cut off at its last ``)``."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessLookupError(f"no process {pid}") from None
    return raw[raw.rindex(b")") + 2 :].decode("ascii").split()


# offsets into _stat_fields (man 5 proc field number minus 3)
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME, _RSS = 1, 11, 12, 13, 14, 21


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads included."""
    fields = _stat_fields(pid)
    return (int(fields[_UTIME]) + int(fields[_STIME])) / _TICK


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``, in pid order."""
    found = []
    for name in os.listdir(PROC):
        if name.isdigit():
            try:
                if int(_stat_fields(int(name))[_PPID]) == pid:
                    found.append(int(name))
            except ProcessLookupError:  # ended while we looked
                continue
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """The live children of ``pid``, their children, and so on (one walk over ``/proc``)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir(PROC):
        if name.isdigit():
            try:
                parents.setdefault(int(_stat_fields(int(name))[_PPID]), []).append(int(name))
            except ProcessLookupError:
                continue
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return sorted(found)


def cpu_seconds_tree(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants, plus those of their children that ended and
    were waited for."""
    total = _tree_part(pid, required=True)
    for child in descendants(pid):
        total += _tree_part(child, required=False)
    return total


def _tree_part(pid: int, *, required: bool) -> float:
    try:
        fields = _stat_fields(pid)
    except ProcessLookupError:
        if required:
            raise
        return 0.0  # a descendant that ended meanwhile: its time moves to its parent's cutime
    return sum(int(fields[i]) for i in (_UTIME, _STIME, _CUTIME, _CSTIME)) / _TICK


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` in bytes."""
    return int(_stat_fields(pid)[_RSS]) * _PAGE


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` has open (reading another user's process needs privileges)."""
    try:
        return len(os.listdir(f"{PROC}/{pid}/fd"))
    except FileNotFoundError:
        raise ProcessLookupError(f"no process {pid}") from None


class CpuMeter:
    """CPU seconds used by some processes between ``start()`` and ``stop()``.

    >>> meter = CpuMeter([os.getpid()])
    >>> meter.start()
    >>> used = meter.stop()
    >>> list(used) == [os.getpid()] and used[os.getpid()] >= 0
    True

    With ``tree=True`` each pid counts with its descendants (:func:`cpu_seconds_tree`).
    """

    def __init__(self, pids, *, tree: bool = False):
        self.pids = list(pids)
        self._read = cpu_seconds_tree if tree else cpu_seconds
        self._start: dict[int, float] | None = None

    def start(self) -> None:
        self._start = {pid: self._read(pid) for pid in self.pids}

    def stop(self) -> dict[int, float]:
        """CPU seconds each pid used since ``start()``."""
        if self._start is None:
            raise RuntimeError("CpuMeter.stop() before start()")
        return {pid: self._read(pid) - before for pid, before in self._start.items()}


def cpu_by_role(roles: Mapping[str, Iterable[int]], work: Callable[[], _T]) -> tuple[_T, dict[str, dict[int, float]]]:
    """Run ``work()`` and return what it returned, with the CPU seconds each process used meanwhile,
    by role: ``{role: {pid: seconds}}`` in the order of ``roles`` (a pid in two roles counts in both).

    >>> answer, cpu = cpu_by_role({"me": [os.getpid()]}, lambda: 42)
    >>> answer, list(cpu), list(cpu["me"]) == [os.getpid()]
    (42, ['me'], True)
    """
    groups = {role: list(pids) for role, pids in roles.items()}
    meter = CpuMeter(sorted({pid for pids in groups.values() for pid in pids}))
    meter.start()
    result = work()
    used = meter.stop()
    return result, {role: {pid: used[pid] for pid in pids} for role, pids in groups.items()}
