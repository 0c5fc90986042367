"""What every sample app shares: outbound calls through the sidecar, access logs, the process.

In process mode a pod's sidecar is reached through ``HTTP_PROXY``: a service name such as
``details:9080`` only means something to the proxy, so plain-HTTP calls go to it in absolute
form. Without a proxy (netns mode, or a test talking to an address) the apps connect directly.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from structlog.typing import FilteringBoundLogger
from yarl import URL

__all__ = [
    "OUTBOUND",
    "Outbound",
    "Reply",
    "access_log",
    "base_parser",
    "forward_headers",
    "new_session",
    "outbound_context",
    "proxy_for",
    "serve",
]

_log = structlog.get_logger(__name__)


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and port is not None and entry_port != str(port):
            continue
        if "/" in name:
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def proxy_for(url: str | URL, env: Mapping[str, str]) -> str | None:
    """The proxy for ``url`` from ``HTTP_PROXY``/``http_proxy`` and ``NO_PROXY``; http only."""
    target = URL(url) if isinstance(url, str) else url
    if target.scheme != "http" or target.host is None:
        return None
    proxy = env.get("HTTP_PROXY") or env.get("http_proxy")
    if not proxy:
        return None
    no_proxy = env.get("NO_PROXY") or env.get("no_proxy") or ""
    if no_proxy and _bypassed(target.host.lower(), target.port, no_proxy):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


@dataclass(frozen=True, slots=True)
class Reply:
    """An upstream answer, read in full."""

    status: int
    body: bytes

    def json(self) -> object:
        """The body as JSON, or None when it is not JSON."""
        try:
            parsed: object = json.loads(self.body)
        except ValueError:
            return None
        return parsed


class Outbound:
    """Plain GETs to other services, each on a fresh connection.

    The real Bookinfo apps do not pool connections ("so that we can easily test load
    distribution across many versions of our backends"), and neither do these.
    """

    __slots__ = ("_env", "_session")

    def __init__(self, session: aiohttp.ClientSession, env: Mapping[str, str]) -> None:
        self._session = session
        self._env = dict(env)

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> Reply | None:
        """GET ``url``; None when it could not be reached or did not answer in time."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        try:
            async with self._session.get(
                url, headers=dict(headers), timeout=timeout, proxy=proxy_for(url, self._env)
            ) as resp:
                return Reply(resp.status, await resp.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            _log.info("upstream failed", url=url, error=f"{type(exc).__name__}: {exc}")
            return None


OUTBOUND: web.AppKey[Outbound] = web.AppKey("outbound", Outbound)


def new_session() -> aiohttp.ClientSession:
    """A client session that never pools and never keeps cookies between users."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


def outbound_context(
    env: Mapping[str, str],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An ``app.cleanup_ctx`` entry that opens ``app[OUTBOUND]`` for the app's lifetime."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with new_session() as session:
            app[OUTBOUND] = Outbound(session, env)
            yield

    return ctx


def forward_headers(request: web.Request, names: Iterable[str]) -> dict[str, str]:
    """The request's values of the ``names`` headers, for the calls it makes."""
    return {name: value for name in names if (value := request.headers.get(name)) is not None}


def access_log(log: FilteringBoundLogger) -> Middleware:
    """A middleware logging one line per request (the mirroring task reads these)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            log.info(
                "request",
                method=request.method,
                path=request.path_qs,
                host=request.host,
                status=status,
                duration_ms=round((time.monotonic() - start) * 1000, 1),
                request_id=request.headers.get("x-request-id"),
            )

    return middleware


def base_parser(prog: str, description: str, default_port: int) -> argparse.ArgumentParser:
    """The flags every sample app takes."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=default_port, help="port to listen on")
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    parser.add_argument("--log-format", default="console", choices=["console", "json"])
    return parser


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        _log.info("listening", host=host, port=port)
        await stop.wait()
        _log.info("stopping", host=host, port=port)
    finally:
        await runner.cleanup()


def serve(app: web.Application, host: str, port: int) -> int:
    """Serve ``app`` until SIGTERM or SIGINT; the exit status for the process."""
    try:
        asyncio.run(_serve(app, host, port))
    except OSError as exc:
        _log.error("cannot listen", host=host, port=port, error=str(exc))
        return 1
    return 0
