"""wrk's command line and output (captured from real runs), and the bench script checking answers for real:
through nginx to two plain backends, and against a server that answers wrong numbers."""

from __future__ import annotations

import doctest
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from integrations.demo.hello_service import java_string_hash
from sidecar.codecs import http1
from sidecar.tools import wrk
from sidecar.tools.nginx_baseline import Nginx, find_nginx
from sidecar.tools.wrk import SCRIPT, WrkResult, parse_wrk_output, wrk_command
from sidecar.tools.wrk_run import WrkError, find_wrk, run_wrk
from tests.support.ports import free_port

# -- captured output of wrk 4.1.0 (Debian) against integrations.demo.http_backend -------------------------

CHECKED = """\
Running 1s test @ http://127.0.0.1:18081/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.30ms  836.85us  10.37ms   76.78%
    Req/Sec     1.26k    65.11     1.35k    70.00%
  Latency Distribution
     50%    6.09ms
     75%    6.60ms
     90%    7.47ms
     99%    9.19ms
  2519 requests in 1.00s, 284.44KB read
Requests/sec:   2513.31
Transfer/sec:    283.80KB
BENCH_WRK_RESULT {"requests":2519,"duration_us":1002263,"sent":2535,"responses":2519,"mismatches":0,"echoed":2519,\
"outstanding":16,"statuses":{"200":2519},"socket_errors":{"connect":0,"read":0,"write":0,"timeout":0},\
"p50_us":6085,"p90_us":7466,"p99_us":9192,"mean_us":6302.4,"max_us":10369}
"""

# --capacity 4: most calls refused with 503
OVERLOADED = """\
Running 1s test @ http://127.0.0.1:18082/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.29ms    5.20ms  22.75ms   86.32%
    Req/Sec     5.60k   421.03     6.34k    68.18%
  Latency Distribution
     50%    1.08ms
     75%    1.25ms
     90%   12.11ms
     99%   21.64ms
  12250 requests in 1.10s, 1.95MB read
  Non-2xx or 3xx responses: 12041
Requests/sec:  11139.23
Transfer/sec:      1.77MB
BENCH_WRK_RESULT {"requests":12250,"duration_us":1099717,"sent":12266,"responses":12250,"mismatches":0,"echoed":12250,\
"outstanding":16,"statuses":{"200":209,"503":12041},"socket_errors":{"connect":0,"read":0,"write":0,"timeout":0},\
"p50_us":1083,"p90_us":12110,"p99_us":21635,"mean_us":3287.3,"max_us":22754}
"""

# --latency-ms 1200 with wrk --timeout 1s: every answer late
TIMED_OUT = """\
Running 3s test @ http://127.0.0.1:18083/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec    11.00     16.52    30.00     66.67%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  8 requests in 3.01s, 0.91KB read
  Socket errors: connect 0, read 0, write 0, timeout 8
Requests/sec:      2.66
Transfer/sec:     309.29B
BENCH_WRK_RESULT {"requests":8,"duration_us":3006840,"sent":13,"responses":8,"mismatches":0,"echoed":8,\
"outstanding":5,"statuses":{"200":8},"socket_errors":{"connect":0,"read":0,"write":0,"timeout":8},\
"p50_us":0,"p90_us":0,"p99_us":0,"mean_us":0.0,"max_us":0}
"""

# a script of its own (a GET the backend answers with 405), no --latency
UNCHECKED = """\
Running 1s test @ http://127.0.0.1:18081/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.03ms  331.30us   7.97ms   97.18%
    Req/Sec     7.88k   165.81     8.29k    86.36%
  17237 requests in 1.10s, 2.15MB read
  Non-2xx or 3xx responses: 17237
Requests/sec:  15673.08
Transfer/sec:      1.96MB
"""


def test_checked_run():
    result = parse_wrk_output(CHECKED)
    assert result == WrkResult(
        requests=2519,
        duration_s=1.002263,
        qps=2513.31,
        p50_ms=6.085,
        p99_ms=9.192,
        errors=0,
        mismatches=0,
        statuses={200: 2519},
        p90_ms=7.466,
        socket_errors={"connect": 0, "read": 0, "write": 0, "timeout": 0},
        non_2xx=0,
        checked=True,
        echoed=2519,
        max_ms=10.369,
    )


def test_answers_are_counted_by_provider_when_the_line_has_them():
    line = '"outstanding":16,"statuses":{"200":2519},"providers":{"127.0.0.1:30001":900,"127.0.0.1:30002":1619},'
    result = parse_wrk_output(CHECKED.replace('"outstanding":16,"statuses":{"200":2519},', line))
    assert result.providers == {"127.0.0.1:30001": 900, "127.0.0.1:30002": 1619}
    assert parse_wrk_output(CHECKED).providers == {}


def test_refused_calls_are_errors():
    result = parse_wrk_output(OVERLOADED)
    assert (result.requests, result.non_2xx, result.errors, result.statuses) == (
        12250,
        12041,
        12041,
        {200: 209, 503: 12041},
    )
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (1.083, 12.11, 21.635)
    assert result.ok_qps == pytest.approx(209 / 1.099717)


def test_timeouts_are_errors():
    result = parse_wrk_output(TIMED_OUT)
    assert result.socket_errors == {"connect": 0, "read": 0, "write": 0, "timeout": 8}
    assert (result.errors, result.qps, result.duration_s) == (8, 2.66, 3.00684)


def test_without_the_script_the_text_is_read_and_nothing_is_checked():
    result = parse_wrk_output(UNCHECKED)
    assert (result.requests, result.duration_s, result.qps) == (17237, pytest.approx(1.1), 15673.08)
    assert (result.non_2xx, result.errors, result.mismatches, result.checked) == (17237, 17237, 0, False)
    assert (result.p50_ms, result.p99_ms, result.statuses) == (None, None, {})


def test_latency_distribution_text_is_used_without_the_script_line():
    text = CHECKED.rsplit("BENCH_WRK_RESULT", 1)[0]
    result = parse_wrk_output(text)
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (pytest.approx(6.09), pytest.approx(7.47), 9.19)


def test_mismatches_count_as_errors():
    text = CHECKED.replace('"mismatches":0', '"mismatches":3')
    assert (parse_wrk_output(text).mismatches, parse_wrk_output(text).errors) == (3, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unable to connect to 127.0.0.1:1 Connection refused\n", "not the output"),
        (CHECKED.replace('"mismatches":0,', '"mismatches":0'), "not JSON"),
        (CHECKED.replace('"mismatches":0,', ""), "lacks the counts"),
    ],
)
def test_what_is_not_a_result_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_wrk_output(text)


def test_command():
    command = wrk_command("http://h:1/", 4, 1.5, 8, None, 0.5, wrk="/usr/bin/wrk")
    assert command == ["/usr/bin/wrk", "-t", "4", "-c", "4", "-d", "2s", "--timeout", "1s", "--latency", "http://h:1/"]
    with pytest.raises(ValueError):
        wrk_command("http://h:1/", 0, 1, 1, None, 1)
    assert failures_and_tries(wrk) == (0, 1)


def failures_and_tries(module) -> tuple[int, int]:
    return tuple(doctest.testmod(module))


# -- real runs --------------------------------------------------------------------------------------

needs_wrk = pytest.mark.skipif(find_wrk() is None, reason="wrk is not installed (apt-get install wrk)")
needs_nginx = pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (apt-get install nginx-light)")


@needs_wrk
@needs_nginx
def test_through_nginx_every_answer_checks_out(backends, tmp_path):
    port = free_port()
    with Nginx(port, [("127.0.0.1", backends[0], 1), ("127.0.0.1", backends[1], 2)], tmp_path):
        result, output = run_wrk(f"http://127.0.0.1:{port}/", 16, 2, threads=2)
    assert result.checked, output
    assert result.requests > 0
    assert (result.mismatches, result.errors) == (0, 0), output
    assert result.echoed == result.requests  # nginx passes X-Request-Id through
    assert set(result.statuses) == {200}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mode = "right"

    def handle_error(self, request, client_address):
        pass  # wrk hangs up at the end of its run, mid-connection


class _Handler(BaseHTTPRequestHandler):
    """Answers the form call per the server's mode: right or wrong numbers, echoing the id or not."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        value = java_string_hash(http1.parse_form(body)["parameter"])
        mode = self.server.mode
        answer = str(value + 1 if mode.startswith("wrong") else value).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        if mode.endswith("echo"):
            self.send_header("X-Request-Id", self.headers["X-Request-Id"])
        elif mode == "right_other_id":
            self.send_header("x-request-id", str(value + 1))  # the casing of the name does not matter
        elif mode == "right_provider":
            self.send_header("x-provider", f"127.0.0.1:{30000 + (value & 1)}")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def answering_server():
    server = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@needs_wrk
@pytest.mark.parametrize(
    ("mode", "all_wrong"),
    [
        ("right", False),  # no echo: checked against the numbers in flight only
        ("right_echo", False),
        ("wrong", True),
        ("wrong_echo", True),
        ("right_other_id", True),  # a right-looking number, but the echo says it answers another request
    ],
)
def test_wrong_answers_are_counted_as_mismatches(answering_server, mode, all_wrong):
    answering_server.mode = mode
    result, output = run_wrk(f"http://127.0.0.1:{answering_server.server_address[1]}/", 4, 1, threads=2)
    assert result.requests > 0, output
    assert result.echoed == (result.requests if mode != "right" and mode != "wrong" else 0)
    assert result.mismatches == (result.requests if all_wrong else 0), output
    assert result.errors == result.mismatches


@needs_wrk
def test_answers_are_counted_by_their_x_provider_header(answering_server):
    answering_server.mode = "right_provider"
    ticks = []
    result, output = run_wrk(
        f"http://127.0.0.1:{answering_server.server_address[1]}/", 4, 1, threads=2, on_tick=lambda: ticks.append(1)
    )
    assert result.requests > 0 and result.errors == 0, output
    assert set(result.providers) <= {"127.0.0.1:30000", "127.0.0.1:30001"} and len(result.providers) == 2
    assert sum(result.providers.values()) == result.requests
    assert len(ticks) >= 5  # every 0.1 s of a run of 1 s


def test_run_wrk_reports_a_missing_wrk():
    with pytest.raises(WrkError, match="not found"):
        run_wrk("http://127.0.0.1:1/", 1, 1, wrk="no-such-wrk-binary")


@needs_wrk
def test_run_wrk_reports_a_failed_run():
    with pytest.raises(WrkError, match="exited with status"):
        run_wrk(f"http://127.0.0.1:{free_port()}/", 1, 1, script_path=SCRIPT)
