"""One worker of ``pymesh proxy --concurrency N`` (``python -m proxy.workers.worker``).

A worker is a whole sidecar: it binds every listener with ``SO_REUSEPORT``, holds its own xDS
stream to pilot and applies pushes itself. Relaying snapshots from the main process would
need a second path for config (serialising runtime snapshots, warming, ACK/NACK on behalf of
N processes); with a stream per worker each worker takes the one tested path, and a push
reaches every worker because each asked for it. The cost is N streams per proxy at pilot.

Its admin listens on an ephemeral port of the admin host; the main process learns the port
from one line on the report pipe and serves the proxy's real admin port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Sequence

import structlog

from proxy.config.model import Bootstrap
from proxy.transport.mini_http import MiniRequest, MiniResponse
from proxy.workers.aggregate import dump_stats

__all__ = ["WORKER_STATS_PATH", "main"]

log = structlog.get_logger(__name__)

# Not an Envoy endpoint: the whole store, histograms with raw buckets, for the main process.
WORKER_STATS_PATH = "/stats/worker_dump"
_PR_SET_PDEATHSIG = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m proxy.workers.worker")
    p.add_argument("--config-path", required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--report-fd", type=int, required=True)
    p.add_argument("--drain-time-s", type=float, default=5.0)
    p.add_argument("--drain-inbound-only", action="store_true")
    p.add_argument("--wait-full-drain", action="store_true")
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", default="console", choices=["console", "json"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _die_with_parent()
    from pymesh import log as pymesh_log

    pymesh_log.configure(args.log_level, args.log_format)
    structlog.contextvars.bind_contextvars(worker=args.index)
    from proxy.config.isolated import load_bootstrap_isolated

    bootstrap = load_bootstrap_isolated(args.config_path)
    import uvloop

    from proxy.transport.allocator import tune_allocator

    tune_allocator()
    rc: int = uvloop.run(_serve(bootstrap, args))
    return rc


def _die_with_parent() -> None:
    """A worker must not outlive its main process (``kill -9`` of the proxy included)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_bootstrap(bootstrap: Bootstrap) -> Bootstrap:
    """The bootstrap with the admin on an ephemeral port of the same host."""
    admin = bootstrap.admin
    if admin is None or admin.address is None:
        return bootstrap
    address = dataclasses.replace(admin.address, port=0)
    return dataclasses.replace(bootstrap, admin=dataclasses.replace(admin, address=address))


async def _serve(bootstrap: Bootstrap, args: argparse.Namespace) -> int:
    from proxy.sidecar import Sidecar

    loop = asyncio.get_running_loop()
    sidecar = Sidecar(
        worker_bootstrap(bootstrap),
        loop=loop,
        drain_time=args.drain_time_s,
        inbound_drain=args.drain_inbound_only,
        exit_on_zero=not args.wait_full_drain,
    )
    sidecar.server.listener_manager.reuse_port = True
    stats = sidecar.server.stats

    async def stats_dump(request: MiniRequest) -> MiniResponse:
        return MiniResponse(body=json.dumps(dump_stats(stats)), content_type="application/json")

    if sidecar.admin is not None:
        sidecar.admin.add_route("GET", WORKER_STATS_PATH, stats_dump)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sidecar.on_quit = stop.set
    await sidecar.start()
    port = sidecar.admin.port if sidecar.admin is not None else 0
    os.write(args.report_fd, f"{port}\n".encode())
    os.close(args.report_fd)
    await stop.wait()
    await sidecar.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
