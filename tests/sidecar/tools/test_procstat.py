"""/proc readings, checked against the test process itself and a child it starts."""

from __future__ import annotations

import doctest
import mmap
import os
import subprocess
import sys
import threading
import time

import pytest

from sidecar.tools import procstat
from sidecar.tools.procstat import CpuMeter, children, cpu_seconds, cpu_seconds_tree, descendants, open_fds, rss_bytes

TICK = 1 / os.sysconf("SC_CLK_TCK")
BUSY_CHILD = """
import time
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("done", flush=True)
time.sleep(60)
"""


def burn(seconds_of_cpu: float) -> None:
    """Use at least ``seconds_of_cpu`` of this thread's CPU time."""
    end = time.thread_time() + seconds_of_cpu
    while time.thread_time() < end:
        sum(range(1000))


def test_cpu_seconds_agrees_with_os_times():
    burn(0.05)
    before = os.times()
    measured = cpu_seconds(os.getpid())
    after = os.times()
    assert before.user + before.system - TICK <= measured <= after.user + after.system + TICK


def test_cpu_seconds_counts_every_thread():
    start = cpu_seconds(os.getpid())
    used = []
    thread = threading.Thread(target=lambda: (burn(0.2), used.append(time.thread_time())))
    thread.start()
    thread.join()
    assert cpu_seconds(os.getpid()) - start >= used[0] - 2 * TICK


def test_tree_includes_a_busy_child():
    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "done\n"
        assert child.pid in children(os.getpid())
        assert child.pid in descendants(os.getpid())
        own, tree, theirs = cpu_seconds(os.getpid()), cpu_seconds_tree(os.getpid()), cpu_seconds(child.pid)
        assert theirs >= 0.3 - TICK
        assert tree >= own + theirs - 2 * TICK
    finally:
        child.kill()
        child.wait()


def test_rss_grows_with_touched_memory():
    # Fresh anonymous pages, touched one by one: memory the allocator already holds resident (a heap
    # left large by earlier tests in this process) could serve a plain allocation without growing RSS.
    size = 64 << 20
    with mmap.mmap(-1, size) as block:
        before = rss_bytes(os.getpid())
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1
        assert rss_bytes(os.getpid()) >= before + (32 << 20)


def test_open_fds_counts_a_new_descriptor():
    before = open_fds(os.getpid())
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        assert open_fds(os.getpid()) == before + 1
    finally:
        os.close(fd)


def test_cpu_meter_measures_the_interval_per_pid():
    meter = CpuMeter([os.getpid()])
    meter.start()
    burn(0.1)
    used = meter.stop()
    assert list(used) == [os.getpid()]
    assert used[os.getpid()] >= 0.1 - 2 * TICK


def test_cpu_meter_stop_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="before start"):
        CpuMeter([os.getpid()]).stop()


def test_a_missing_process_is_a_lookup_error():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid is free
    for read in (cpu_seconds, cpu_seconds_tree, rss_bytes, open_fds):
        with pytest.raises(ProcessLookupError):
            read(child.pid)


def test_command_names_with_spaces_and_parentheses_are_skipped(tmp_path, monkeypatch):
    fake = tmp_path / "4242"
    fake.mkdir()
    fields = ["S", "1", *["0"] * 9, "250", "150", "7", "3", *["0"] * 6, "10"]
    (fake / "stat").write_bytes(b"4242 (my (odd) name) " + " ".join(fields).encode())
    monkeypatch.setattr(procstat, "PROC", str(tmp_path))
    assert cpu_seconds(4242) == pytest.approx(400 * TICK)
    assert rss_bytes(4242) == 10 * os.sysconf("SC_PAGE_SIZE")
    assert cpu_seconds_tree(4242) == pytest.approx(410 * TICK)


def test_docstring_examples():
    failures, tried = doctest.testmod(procstat)
    assert tried and not failures


def test_cpu_by_role_gives_the_work_s_result_and_each_process_s_cpu_by_role():
    me = os.getpid()

    def spin():
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
        return "done"

    result, cpu = procstat.cpu_by_role({"load": [me], "both": [me, os.getppid()]}, spin)
    assert result == "done"
    assert list(cpu) == ["load", "both"] and list(cpu["both"]) == [me, os.getppid()]
    assert cpu["load"][me] >= 0.1 and cpu["both"][me] == cpu["load"][me]
