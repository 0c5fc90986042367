"""The benchmark backend: Debian's nginx-light, one worker, generated config in a tmp dir.

Paths served (all ``200``):

* ``/``    — ``return 200`` with a 100-byte body (the request-rate path),
* ``/1k``  — ``return 200`` with a 1 KiB body (mesh paths),
* ``/1m``  — a 1 MiB file via sendfile (throughput).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import ManagedProcess, free_port, wait_for_port

__all__ = ["BODY_1K", "BODY_100", "FILE_1M_SIZE", "Nginx", "NginxPaths", "render_config"]


def _body(size: int) -> str:
    text = "pymesh benchmark body "
    return (text * (size // len(text) + 1))[: size - 1] + "\n"


BODY_100 = _body(100)
BODY_1K = _body(1024)
FILE_1M_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class NginxPaths:
    small: str = "/"
    one_k: str = "/1k"
    one_m: str = "/1m"


def render_config(
    workdir: Path, host: str, port: int, *, as_root: bool, http2: bool = False
) -> str:
    temp = {name: workdir / "temp" / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    # Workers of a root master drop to "nobody", which cannot read a 0700 tmp dir.
    user = "user root;\n" if as_root else ""
    return f"""\
{user}worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    server {{
        listen {host}:{port}{" http2" if http2 else ""} backlog=4096;
        {"http2_max_concurrent_streams 1024;" if http2 else ""}
        location = / {{ return 200 "{BODY_100}"; }}
        location = /1k {{ return 200 "{BODY_1K}"; }}
        location = /1m {{ root {workdir}/files; }}
    }}
}}
"""


class Nginx:
    """One nginx master + one worker on ``host:port``, pinned with ``cpus``."""

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        cpus: str | None = "0",
        http2: bool = False,
    ) -> None:
        """``http2``: prior-knowledge h2c only (nginx's plaintext ``listen ... http2``)."""
        self.workdir = workdir
        self.http2 = http2
        self.host = host
        self.port = free_port(host)
        self.cpus = cpus
        self.paths = NginxPaths()
        self.proc: ManagedProcess | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
        )

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self) -> Nginx:
        nginx = self.binary()
        if nginx is None:
            raise FileNotFoundError("nginx not found: apt-get install nginx-light")
        files = self.workdir / "files"
        files.mkdir(parents=True, exist_ok=True)
        (files / "1m").write_bytes(bytes(i % 251 for i in range(256)) * (FILE_1M_SIZE // 256))
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / "temp" / d).mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(
            render_config(
                self.workdir, self.host, self.port, as_root=os.geteuid() == 0, http2=self.http2
            )
        )
        argv = [nginx, "-p", str(self.workdir), "-e", str(self.workdir / "error.log")]
        argv += ["-c", str(conf), "-g", "daemon off;"]
        self.proc = ManagedProcess(
            argv, log_path=self.workdir / "nginx.log", name="nginx", cpus=self.cpus
        ).start()
        try:
            wait_for_port(self.host, self.port, 10.0, proc=self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
