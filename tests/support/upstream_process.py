"""The test upstream in a child process, driven through its ``/__upstream/`` control paths.

For benchmarks, and for tests whose event loop must not serve the upstream (a sync test, or
one that blocks its loop). The child runs ``python -m tests.support.upstream``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.behaviours import (
    Behaviour,
    ReceivedRequest,
    UpstreamStats,
    behaviour_to_json,
    decode_value,
)
from tests.support.procs import ManagedProcess, async_wait_for_http, free_port, wait_for_http

__all__ = ["UpstreamProcess"]


class UpstreamProcess:
    """:class:`~tests.support.upstream.Upstream` in a child process; same routes, same records."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str | None = None,
        routes: Mapping[str, Behaviour] | None = None,
        log_dir: str | os.PathLike[str],
        cpus: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.name = name or f"{host}:{self.port}"
        spec = json.dumps({p: behaviour_to_json(b) for p, b in (routes or {}).items()})
        argv = [sys.executable, "-m", "tests.support.upstream", "--host", host]
        argv += ["--port", str(self.port), "--name", self.name, "--routes", spec]
        self.proc = ManagedProcess(
            argv,
            log_path=Path(log_dir) / f"upstream-{self.name.replace(':', '_')}.log",
            name=f"upstream {self.name}",
            cwd=Path(__file__).resolve().parents[2],
            cpus=cpus,
        )

    def start(self, timeout: float = 10.0) -> UpstreamProcess:
        self.proc.start()
        # Polling the control path, not a bare TCP connect: that would count as traffic.
        wait_for_http(self.host, self.port, "/__upstream/stats", timeout, proc=self.proc)
        return self

    async def astart(self, timeout: float = 10.0) -> UpstreamProcess:
        self.proc.start()
        await async_wait_for_http(self.host, self.port, "/__upstream/stats", timeout, self.proc)
        return self

    def stop(self) -> None:
        self.proc.stop()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5.0)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, f"/__upstream/{path}", body=data)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stats(self) -> UpstreamStats:
        d = self._call("GET", "stats")
        return UpstreamStats(
            d["connections"], d["open_connections"], d["requests"], Counter(d["by_path"])
        )

    def received(self) -> list[ReceivedRequest]:
        out = []
        for d in self._call("GET", "received"):
            body = None if d["body"] is None else base64.b64decode(d["body"])
            fields = {k: decode_value(v) for k, v in d.items() if k != "body"}
            out.append(ReceivedRequest(**fields, body=body))
        return out

    def reset(self) -> None:
        self._call("POST", "reset", {})

    def route(self, path: str, behaviour: Behaviour) -> None:
        self._call("POST", "routes", {path: behaviour_to_json(behaviour)})
