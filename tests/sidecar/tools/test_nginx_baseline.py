"""nginx as the baseline: its configuration text, and a real nginx proxying to two real backends."""

from __future__ import annotations

import os
import socket

import pytest

from sidecar.tools.nginx_baseline import Nginx, NginxError, find_nginx, nginx_config
from sidecar.tools.procstat import CpuMeter, children
from tests.support.dubbo_peer import SAMPLES, java_hash
from tests.support.http_clients import ProcessClient, form_request
from tests.support.ports import free_port

needs_nginx = pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (apt-get install nginx-light)")


# -- configuration ----------------------------------------------------------------------------------


def test_config_has_one_worker_the_weights_and_kept_alive_upstreams(tmp_path):
    text = nginx_config(8080, [("127.0.0.1", 9001, 1), ("127.0.0.1", 9002, 3)], tmp_path)
    lines = [line.strip() for line in text.splitlines()]
    for expected in (
        "worker_processes 1;",
        "daemon off;",
        "master_process on;",
        "least_conn;",
        "server 127.0.0.1:9001 weight=1 max_fails=0;",
        "server 127.0.0.1:9002 weight=3 max_fails=0;",
        "keepalive 512;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "access_log off;",
        "keepalive_requests 1000000;",
        "listen 127.0.0.1:8080 backlog=4096;",
    ):
        assert expected in lines, expected
    assert "user" not in text.split()
    work = str(tmp_path.resolve())
    paths = [
        line.split()[1].rstrip(";") for line in lines if line.startswith(("pid ", "error_log ")) or "_temp_path" in line
    ]
    assert len(paths) == 7 and all(p.startswith(work) for p in paths)


def test_config_options_and_refusals(tmp_path):
    text = nginx_config(80, [("::1", 9001, 2)], tmp_path, listen_host="::1", user="bench", max_files=20000)
    assert "server [::1]:9001 weight=2 max_fails=0;" in text
    assert "listen [::1]:80 backlog=4096;" in text
    assert "user bench;" in text and "worker_rlimit_nofile 20000;" in text
    with pytest.raises(ValueError, match="at least one backend"):
        nginx_config(80, [], tmp_path)
    with pytest.raises(ValueError, match="weight 0"):
        nginx_config(80, [("127.0.0.1", 9001, 0)], tmp_path)


# -- a real nginx -----------------------------------------------------------------------------------


@needs_nginx
def test_nginx_proxies_the_form_call_to_both_backends(backends, tmp_path):
    port = free_port()
    nginx = Nginx(port, [("127.0.0.1", backends[0], 1), ("127.0.0.1", backends[1], 3)], tmp_path)
    with nginx:
        assert children(nginx.pid) == [nginx.worker_pid]
        meter = CpuMeter([nginx.worker_pid])
        meter.start()
        client = ProcessClient(port)
        try:
            for i, text in enumerate([*SAMPLES.values(), *(f"call {n}" for n in range(20))]):
                response = client.call(form_request(text, request_id=str(i)))
                assert (response.status, response.body) == (200, str(java_hash(text)).encode())
                assert [v for k, v in response.headers if k.lower() == "x-request-id"] == [str(i)]
        finally:
            client.close()
        assert meter.stop()[nginx.worker_pid] >= 0
        pid, worker = nginx.pid, nginx.worker_pid
    assert nginx.stop() == 0  # already stopped: harmless, same status
    for gone in (pid, worker):
        with pytest.raises(ProcessLookupError):
            os.kill(gone, 0)
    assert "[emerg]" not in nginx.error_log() and "[crit]" not in nginx.error_log()


@needs_nginx
def test_a_port_in_use_is_reported_with_the_log(backends, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(NginxError, match="Address already in use"):
            Nginx(port, [("127.0.0.1", backends[0], 1)], tmp_path).start()


def test_a_missing_nginx_is_reported(tmp_path):
    with pytest.raises(NginxError, match="not found"):
        Nginx(free_port(), [("127.0.0.1", 1, 1)], tmp_path, nginx="no-such-nginx-binary").start()
