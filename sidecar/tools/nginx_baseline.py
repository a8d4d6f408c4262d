"""nginx with one worker as the bench's baseline: the same load, proxied to plain HTTP backends.

``sidecar bench`` measures the sidecars, then nginx in front of :mod:`integrations.demo.http_backend`
processes with the same latency and capacities, and prints the sidecar figures as ratios to nginx.
:func:`nginx_config` writes the configuration (pure text); :class:`Nginx` runs it.

Choices, all in the configuration text:

* ``worker_processes 1`` with ``master_process on`` and ``daemon off``: the process we start is the
  master (it stays in the foreground, so stopping it by its pid stops nginx) and its one child is the
  worker, whose pid :attr:`Nginx.worker_pid` gives for CPU accounting. The master only supervises:
  it uses no CPU while the worker serves.
* Every path nginx writes (pid, error log, temp directories) is inside ``workdir``, so any user can
  run it; ``-e`` names the error log before the configuration is read (nginx 1.19.5 and later), so
  nginx does not try ``/var/log/nginx`` at start. When run as root, ``user`` keeps the worker under
  the caller's user instead of ``nobody``.
* Upstream: the backends with their weights, ``least_conn`` (the nearest stock policy to the
  sidecar's "furthest below its share"), ``keepalive 512`` idle connections kept per worker,
  ``proxy_http_version 1.1`` with ``proxy_set_header Connection ""`` so they are reused, and
  ``keepalive_requests`` high on both sides so no connection is closed for its age. ``max_fails=0``:
  a backend is never marked down, as the bench's backends never go away. A 503 from a backend is
  passed to the client as it is (not retried on another backend), like the sidecar's answer.
* ``access_log off``: no disk I/O per request.
"""

from __future__ import annotations

import getpass
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from sidecar.tools.procstat import children

__all__ = ["Nginx", "NginxError", "find_nginx", "nginx_config"]

WORKER_CONNECTIONS = 8192  # client plus upstream connections of the one worker
KEEPALIVE_REQUESTS = 1_000_000
UPSTREAM_KEEPALIVE = 512


def nginx_config(
    listen_port: int,
    backends: list[tuple[str, int, int]],
    workdir: str | os.PathLike,
    *,
    listen_host: str = "127.0.0.1",
    user: str | None = None,
    max_files: int | None = None,
) -> str:
    """The text of ``nginx.conf``: one worker listening on ``listen_host:listen_port``, proxying every
    request to ``backends`` (``(host, port, weight)``).

    ``user`` (only for a master run as root) names the worker's user; ``max_files`` raises the
    worker's open-file limit (``worker_rlimit_nofile``; it must not exceed the hard limit unless run
    as root).
    """
    if not backends:
        raise ValueError("nginx needs at least one backend")
    work = Path(workdir).resolve()
    servers = []
    for host, port, weight in backends:
        if int(weight) < 1:
            raise ValueError(f"backend {host}:{port} has weight {weight}; nginx weights are at least 1")
        address = f"[{host}]" if ":" in host else host
        servers.append(f"        server {address}:{int(port)} weight={int(weight)} max_fails=0;")
    listen = f"[{listen_host}]" if ":" in listen_host else listen_host
    top = ["worker_processes 1;", "daemon off;", "master_process on;"]
    if user is not None:
        top.append(f"user {user};")
    if max_files is not None:
        top.append(f"worker_rlimit_nofile {int(max_files)};")
    top += [f"pid {work / 'nginx.pid'};", f"error_log {work / 'error.log'} warn;"]
    temp = "\n".join(
        f"    {kind}_temp_path {work / 'temp' / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    upstream = "\n".join(servers)
    return f"""# nginx as the bench's baseline (written by sidecar.tools.nginx_baseline)
{chr(10).join(top)}

events {{
    worker_connections {WORKER_CONNECTIONS};
    multi_accept on;
}}

http {{
    access_log off;
    keepalive_timeout 65s;
    keepalive_requests {KEEPALIVE_REQUESTS};
{temp}

    upstream backends {{
        least_conn;
{upstream}
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_requests {KEEPALIVE_REQUESTS};
    }}

    server {{
        listen {listen}:{int(listen_port)} backlog=4096;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class NginxError(RuntimeError):
    """nginx is missing, did not start, or failed; the message ends with its error log."""


def find_nginx(nginx: str = "nginx") -> str | None:
    """The nginx executable (also looked for in ``/usr/sbin``, often not on a user's PATH), or None."""
    return shutil.which(nginx) or shutil.which(nginx, path="/usr/sbin:/usr/local/sbin:/usr/local/nginx/sbin")


class Nginx:
    """An nginx baseline run from ``workdir``: ``start()`` writes the configuration, starts nginx and
    waits until the port accepts; ``stop()`` ends it by pid. Also a context manager.

    ``pid`` is the master's, ``worker_pid`` the one worker's (for :mod:`sidecar.tools.procstat`).
    """

    START_TIMEOUT = 10.0  # seconds for the port to accept
    STOP_TIMEOUT = 10.0  # seconds after SIGQUIT (graceful) before SIGKILL

    def __init__(
        self,
        listen_port: int,
        backends: list[tuple[str, int, int]],
        workdir: str | os.PathLike,
        *,
        listen_host: str = "127.0.0.1",
        nginx: str = "nginx",
    ):
        self.listen = (listen_host, listen_port)
        self.backends = list(backends)
        self.workdir = Path(workdir).resolve()
        self.nginx = nginx
        self.process: subprocess.Popen | None = None
        self.worker_pid: int | None = None
        self._stderr = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def config_path(self) -> Path:
        return self.workdir / "nginx.conf"

    def start(self) -> None:
        executable = find_nginx(self.nginx)
        if executable is None:
            raise NginxError(f"{self.nginx} not found (Debian/Ubuntu: apt-get install nginx-light or nginx)")
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / "temp" / kind).mkdir(parents=True, exist_ok=True)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 2 * WORKER_CONNECTIONS + 64
        max_files = wanted if hard == resource.RLIM_INFINITY or hard >= wanted else hard
        user = getpass.getuser() if os.geteuid() == 0 else None
        text = nginx_config(
            self.listen[1], self.backends, self.workdir, listen_host=self.listen[0], user=user, max_files=max_files
        )
        self.config_path.write_text(text, encoding="utf-8")
        error_log = self.workdir / "error.log"
        command = [executable, "-p", f"{self.workdir}/", "-c", str(self.config_path), "-e", str(error_log)]
        self._stderr = open(self.workdir / "stderr.log", "wb")  # noqa: SIM115 -- closed by stop()
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise NginxError(f"nginx exited with status {self.process.returncode}: {self._log_tail()}")
            workers = children(self.process.pid)
            if workers and _accepts(self.listen):
                self.worker_pid = workers[0]
                return
            if time.monotonic() > deadline:
                raise NginxError(
                    f"nginx did not accept on {self.listen} within {self.START_TIMEOUT} s: {self._log_tail()}"
                )
            time.sleep(0.02)

    def _log_tail(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            path = self.workdir / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text.strip()[-1000:] or "(nothing logged)"

    def stop(self) -> int | None:
        """Stop nginx by its master's pid (SIGQUIT: finish the requests in progress; SIGKILL after
        ``STOP_TIMEOUT``). Returns the master's exit status; harmless when not running."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            os.kill(process.pid, signal.SIGQUIT)
            try:
                process.wait(self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return process.returncode

    def error_log(self) -> str:
        """What nginx logged so far (warnings and errors)."""
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _accepts(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1.0):
            return True
    except OSError:
        return False
