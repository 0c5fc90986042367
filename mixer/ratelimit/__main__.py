"""``python -m mixer.ratelimit``: the Rate Limit Service on its own gRPC port.

The standalone form of what ``pymesh mixer`` serves on 9091: the demo runs it as Istio's
``ratelimit`` Service (gRPC on 8081 and ``/healthcheck`` on 8080, as the reference service's
pod). Alone, it answers on the lean unary gRPC server (``mixer.grpc_unary``) rather than
grpcio's, which costs several times more CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import structlog
from aiohttp import web

from mixer.grpc_unary import UnaryGrpcServer
from mixer.ratelimit.app import RateLimitApp, RateLimitOptions, add_arguments
from mixer.ratelimit.servicer import SHOULD_RATE_LIMIT, RateLimitHandler
from pymesh.errors import ConfigError
from pymesh.log import configure

__all__ = ["main"]

log = structlog.get_logger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixer.ratelimit", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--grpc-port", type=int, default=8081, help="gRPC port (default 8081)")
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="HTTP port for /healthcheck, /stats, /metrics (default: none)",
    )
    parser.add_argument("--log-level", default="info")
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure(args.log_level)
    import uvloop

    try:
        options = RateLimitOptions.from_args(args)
        return int(uvloop.run(_serve(args.host, args.grpc_port, args.port, options)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _serve(host: str, grpc_port: int, http_port: int, options: RateLimitOptions) -> int:
    app = RateLimitApp(options)
    server = UnaryGrpcServer({SHOULD_RATE_LIMIT: RateLimitHandler(app.service)})
    address = f"{host}:{grpc_port}"
    try:
        await server.start(host, grpc_port)
    except OSError as exc:
        print(f"error: cannot listen on {address}: {exc}", file=sys.stderr)
        return 1
    await app.start()
    health = await _http(host, http_port, app) if http_port else None
    log.info("rate limit service listening", address=address, redis=options.redis_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if health is not None:
        await health.cleanup()
    await server.stop(grace=1.0)
    await app.stop()
    return 0


async def _http(host: str, port: int, app: RateLimitApp) -> web.AppRunner:
    """``/healthcheck`` as the reference service answers it, ``/stats`` (its counters by
    their reference names) and ``/metrics`` (the same in Prometheus text)."""

    async def healthcheck(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def stats(request: web.Request) -> web.Response:
        lines = [f"{name}: {value}" for name, value in sorted(app.stats.flat().items())]
        return web.Response(text="\n".join(lines) + "\n")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=app.stats.prometheus_text(), content_type="text/plain")

    site_app = web.Application()
    site_app.router.add_get("/healthcheck", healthcheck)
    site_app.router.add_get("/stats", stats)
    site_app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(site_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


if __name__ == "__main__":
    sys.exit(main())
