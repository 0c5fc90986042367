"""The admin port of a proxy with N workers: one view of all of them.

Stats are the workers' merged (:mod:`proxy.workers.aggregate`); ``/ready`` is 200 only when
every worker is; health-check and drain commands reach every worker; ``/quitquitquit`` stops
the proxy. The configuration views (``/config_dump``, ``/clusters``, ``/listeners``) are
worker 0's: every worker holds the same configuration once a push has reached them all.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlencode

import structlog

from proxy.config.model import SocketAddress
from proxy.stats import render_prometheus, render_text
from proxy.transport.mini_http import MiniHttpServer, MiniRequest, MiniResponse
from proxy.workers.aggregate import merge_stats
from proxy.workers.worker import WORKER_STATS_PATH

__all__ = ["WorkersAdmin"]

log = structlog.get_logger(__name__)

_TIMEOUT = 10.0
Handler = Callable[[MiniRequest], Awaitable[MiniResponse]]


class Workers(Protocol):
    concurrency: int

    @property
    def admin_host(self) -> str: ...

    def worker_ports(self) -> list[int | None]: ...

    def quit(self) -> None: ...


class WorkersAdmin:
    def __init__(self, workers: Workers, address: SocketAddress) -> None:
        self._workers = workers
        self._address = address
        routes: dict[tuple[str, str], Handler] = {
            ("GET", "/ready"): self._ready,
            ("GET", "/stats"): self._stats,
            ("GET", "/stats/prometheus"): self._prometheus,
            ("GET", "/server_info"): self._server_info,
            ("POST", "/quitquitquit"): self._quit,
        }
        for path in ("/", "/clusters", "/config_dump", "/listeners", "/logging"):
            routes[("GET", path)] = self._first
        for path in ("/healthcheck/fail", "/healthcheck/ok", "/drain_listeners"):
            routes[("POST", path)] = self._every
        self._server = MiniHttpServer(routes)

    async def start(self) -> None:
        await self._server.start(self._address.host, self._address.port)
        log.info("admin listening", address=f"{self._address.host}:{self._address.port}")

    async def stop(self) -> None:
        await self._server.stop()

    # -- fan-out ------------------------------------------------------------------------------
    async def _call(self, port: int | None, method: str, target: str) -> MiniResponse:
        if port is None:
            return MiniResponse(503, "PRE_INITIALIZING\n")
        try:
            return await asyncio.wait_for(
                _http(self._workers.admin_host, port, method, target), _TIMEOUT
            )
        except (OSError, TimeoutError, ValueError) as exc:
            return MiniResponse(503, f"worker admin unreachable: {exc}\n")

    async def _all(self, method: str, target: str) -> list[MiniResponse]:
        ports = self._workers.worker_ports()
        return list(await asyncio.gather(*(self._call(p, method, target) for p in ports)))

    async def _ready(self, request: MiniRequest) -> MiniResponse:
        answers = await self._all("GET", "/ready")
        return next((a for a in answers if a.status != 200), answers[0])

    async def _first(self, request: MiniRequest) -> MiniResponse:
        return await self._call(self._workers.worker_ports()[0], "GET", _target(request))

    async def _every(self, request: MiniRequest) -> MiniResponse:
        answers = await self._all(request.method, _target(request))
        return next((a for a in answers if a.status != 200), answers[0])

    async def _quit(self, request: MiniRequest) -> MiniResponse:
        asyncio.get_running_loop().call_soon(self._workers.quit)
        return MiniResponse(body="OK\n")

    async def _server_info(self, request: MiniRequest) -> MiniResponse:
        answer = await self._first(request)
        if answer.status != 200:
            return answer
        info = json.loads(answer.body)
        info["command_line_options"] = {"concurrency": self._workers.concurrency}
        return _json(info)

    # -- stats --------------------------------------------------------------------------------
    async def _merged(self) -> Any:
        answers = await self._all("GET", WORKER_STATS_PATH)
        failed = next((a for a in answers if a.status != 200), None)
        if failed is not None:
            return failed
        dumps = [json.loads(a.body) for a in answers]
        return merge_stats(dumps, concurrency=self._workers.concurrency)

    async def _stats(self, request: MiniRequest) -> MiniResponse:
        if request.query.get("format") == "prometheus":
            return await self._prometheus(request)
        store = await self._merged()
        if isinstance(store, MiniResponse):
            return store
        flt = request.query.get("filter")
        pattern = re.compile(flt) if flt else None
        if request.query.get("format") == "json":
            stats = [
                {"name": s.name, "value": s.value}
                for s in (*store.counters(), *store.gauges())
                if pattern is None or pattern.search(s.name)
            ]
            return _json({"stats": stats})
        lines = render_text(store).splitlines()
        if pattern is not None:
            lines = [line for line in lines if pattern.search(line.partition(": ")[0])]
        return MiniResponse(body="".join(line + "\n" for line in lines))

    async def _prometheus(self, request: MiniRequest) -> MiniResponse:
        store = await self._merged()
        if isinstance(store, MiniResponse):
            return store
        return MiniResponse(
            body=render_prometheus(store),
            content_type="text/plain; version=0.0.4; charset=utf-8",
        )


def _target(request: MiniRequest) -> str:
    return request.path + (f"?{urlencode(request.query)}" if request.query else "")


def _json(data: Any) -> MiniResponse:
    return MiniResponse(body=json.dumps(data, indent=2), content_type="application/json")


async def _http(host: str, port: int, method: str, target: str) -> MiniResponse:
    """One request to a worker's admin (which always answers ``connection: close``)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"{method} {target} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            "content-length: 0\r\nconnection: close\r\n\r\n".encode("latin-1")
        )
        raw = await reader.read()
    finally:
        writer.close()
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("incomplete response")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    content_type = "text/plain; charset=UTF-8"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            content_type = value.strip()
    return MiniResponse(status, body, content_type)
