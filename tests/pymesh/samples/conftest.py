"""A test-only forward proxy standing in for the sidecar, and a fixture to run apps behind it.

Addresses: the proxy listens on 127.0.0.100, apps on 127.0.0.101-119, all on free ports.
The proxy resolves ``Host`` (``details:9080``) to an app's address, records every request,
and can delay or abort per host the way a VirtualService fault would.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

PROXY_HOST = "127.0.0.100"
APP_HOSTS = [f"127.0.0.{n}" for n in range(101, 120)]
# Hop-by-hop headers a proxy must not forward.
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}


@dataclass(frozen=True)
class Seen:
    authority: str
    method: str
    target: str  # the request target exactly as the client sent it
    path: str
    headers: dict[str, str]


class ForwardProxy:
    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, int]] = {}
        self.delays: dict[str, float] = {}
        self.aborts: dict[str, list[int]] = {}  # statuses to answer with, consumed in order
        self.seen: list[Seen] = []

    def to(self, authority: str) -> list[Seen]:
        return [s for s in self.seen if s.authority == authority]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        authority = request.headers.get("Host", "")
        self.seen.append(
            Seen(
                authority,
                request.method,
                request.raw_path,
                request.rel_url.path_qs,
                {k.lower(): v for k, v in request.headers.items()},
            )
        )
        if self.aborts.get(authority):
            return web.Response(status=self.aborts[authority].pop(0), text="fault filter abort")
        if authority in self.delays:
            await asyncio.sleep(self.delays[authority])
        if authority not in self.routes:
            return web.Response(status=503, text="no healthy upstream")
        host, port = self.routes[authority]
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]
        body = await request.read()
        timeout = aiohttp.ClientTimeout(total=15)
        connector = aiohttp.TCPConnector(force_close=True)
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector, auto_decompress=False, skip_auto_headers=["User-Agent"]
                ) as session,
                session.request(
                    request.method,
                    f"http://{host}:{port}{request.rel_url.path_qs}",
                    headers=headers,
                    data=body or None,
                    timeout=timeout,
                    allow_redirects=False,
                ) as upstream,
            ):
                payload = await upstream.read()
                out = [
                    (k, v)
                    for k, v in upstream.headers.items()
                    if k.lower() not in _HOP and k.lower() != "content-length"
                ]
                return web.Response(status=upstream.status, body=payload, headers=out)
        except aiohttp.ClientError:
            return web.Response(status=503, text="upstream connect error")


class Mesh:
    """Apps on loopback addresses behind one ForwardProxy."""

    def __init__(self, proxy_host: str = PROXY_HOST, app_hosts: list[str] = APP_HOSTS) -> None:
        self.proxy = ForwardProxy()
        self.proxy_url = ""
        self._proxy_host = proxy_host
        self._runners: list[web.AppRunner] = []
        self._hosts = itertools.cycle(app_hosts)

    async def serve(self, app: web.Application, host: str | None = None) -> tuple[str, int]:
        host = host or next(self._hosts)
        # handler_cancellation: a caller that timed out stops the delayed handler too.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1
        )
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        self._runners.append(runner)
        port: int = runner.addresses[-1][1]
        return host, port

    async def add(self, authority: str, app: web.Application) -> str:
        """Serve ``app`` and make ``authority`` (``details:9080``) resolve to it."""
        host, port = await self.serve(app)
        self.proxy.routes[authority] = (host, port)
        return f"http://{host}:{port}"

    @property
    def env(self) -> dict[str, str]:
        return {"HTTP_PROXY": self.proxy_url}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.proxy.handle)
        host, port = await self.serve(app, self._proxy_host)
        self.proxy_url = f"http://{host}:{port}"

    async def close(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    m = Mesh()
    await m.start()
    try:
        yield m
    finally:
        await m.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=15)
    # unsafe: keep cookies set by apps that are addressed by IP.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(timeout=timeout, cookie_jar=jar) as session:
        yield session
