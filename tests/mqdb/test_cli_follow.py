"""`mqdb tail --follow` in its own process, beside a writer in another process (this one)."""

import time

import mqdb
from tests.support.mqdb_cli import interrupt, start, take


def test_tail_follow_sees_what_a_writer_in_another_process_flushes(tmp_path):
    path = tmp_path / "store"
    with mqdb.open(path, shards=4) as db:
        for i in range(3):
            db.put("q", b"m%d" % i)
        db.put("other", b"not this queue")
        db.flush()
        proc, lines = start("tail", path, "q", "-n", "2", "--follow", "--timeout", "30", "--interval", "0.05")
        try:
            assert take(lines, 2) == ["1\tm1\n", "2\tm2\n"]

            db.put("q", b"m3")
            db.put("q", b"line\nbreak \xff")
            db.put("other", b"still not this queue")
            time.sleep(0.3)  # several polls: nothing unflushed shows
            assert lines.empty()

            db.flush()
            assert take(lines, 2) == ["3\tm3\n", "4\tline\\nbreak \\xff\n"]

            for i in range(5, 2005):  # more than one read chunk in one flush
                db.put("q", b"m%d" % i)
            db.flush()
            assert take(lines, 2000) == [f"{i}\tm{i}\n" for i in range(5, 2005)]

            assert interrupt(proc) == 0  # Ctrl-C ends a follow cleanly
            assert proc.stderr.read() == ""
            assert lines.empty()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
