"""``python -m mixer.ratelimit``: the Rate Limit Service on its own gRPC port.

The standalone form of what ``pymesh mixer`` serves on 9091: the demo runs it as Istio's
``ratelimit`` Service, and replicas sharing one Redis run as several of these.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc
import structlog

from mixer.ratelimit.app import RateLimitApp, RateLimitOptions, add_arguments
from pymesh.errors import ConfigError
from pymesh.log import configure

__all__ = ["main"]

log = structlog.get_logger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixer.ratelimit", description=__doc__)
    parser.add_argument(
        "--address", default="127.0.0.1:8081", help="gRPC listen address (host:port)"
    )
    parser.add_argument("--log-level", default="info")
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure(args.log_level)
    import uvloop

    try:
        return int(uvloop.run(_serve(args.address, RateLimitOptions.from_args(args))))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _serve(address: str, options: RateLimitOptions) -> int:
    app = RateLimitApp(options)
    # No SO_REUSEPORT: a second server on a taken port must fail, not share it silently.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    app.register(server)
    if server.add_insecure_port(address) == 0:
        print(f"error: cannot listen on {address}", file=sys.stderr)
        return 1
    await app.start()
    await server.start()
    log.info("rate limit service listening", address=address, redis=options.redis_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)
    await app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
