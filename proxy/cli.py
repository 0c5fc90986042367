"""``pymesh proxy``: run (or only validate) a proxy from an Envoy v3 bootstrap."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import structlog

from pymesh.errors import ConfigError

__all__ = ["add_arguments", "run"]

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config-path", required=True, help="Envoy v3 bootstrap (YAML/JSON)")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="only check the configuration (like envoy --mode validate)",
    )
    parser.add_argument(
        "--drain-time-s", type=float, default=5.0, help="graceful drain on SIGTERM (seconds)"
    )
    # Accepted so that Envoy command lines keep working; one event loop is one worker.
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--base-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--disable-hot-restart", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    try:
        # Validation needs the protos anyway; a running proxy parses in a child process so
        # that they never load into it.
        if args.validate:
            from proxy.config.bootstrap import load_bootstrap

            bootstrap = load_bootstrap(args.config_path)
        else:
            from proxy.config.isolated import load_bootstrap_isolated

            bootstrap = load_bootstrap_isolated(args.config_path)
    except (ConfigError, OSError) as exc:
        print(f"error initializing configuration '{args.config_path}': {exc}", file=sys.stderr)
        return 1
    if args.validate:
        try:
            _check_runnable(bootstrap)
        except ConfigError as exc:
            print(f"error initializing configuration '{args.config_path}': {exc}", file=sys.stderr)
            return 1
        print(f"configuration '{args.config_path}' OK")
        return 0
    import uvloop

    from proxy.transport.allocator import tune_allocator

    tune_allocator()  # streamed bodies reuse heap buffers instead of a mmap per read
    try:
        rc: int = uvloop.run(_serve(bootstrap, args.drain_time_s))
        return rc
    except ConfigError as exc:
        print(f"error initializing configuration '{args.config_path}': {exc}", file=sys.stderr)
        return 1


def _check_runnable(bootstrap: object) -> None:
    """Build the whole runtime without binding sockets, so validate rejects what run would."""
    import asyncio as _asyncio

    from proxy.config.snapshot import ProxySnapshot
    from proxy.server import ProxyServer
    from proxy.transport.tls import SecretUnavailable

    async def check() -> None:
        server = ProxyServer(bootstrap, loop=_asyncio.get_running_loop())  # type: ignore[arg-type]
        snapshot = ProxySnapshot.from_bootstrap(bootstrap)  # type: ignore[arg-type]
        server._validate(snapshot)
        for listener in snapshot.listeners.values():
            # An SDS secret may only arrive at run time, as Envoy's validate mode allows.
            with contextlib.suppress(SecretUnavailable):
                server._build_listener(listener, snapshot.secrets)
        server.cluster_manager.close()

    _asyncio.run(check())


async def _serve(bootstrap: object, drain_time: float) -> int:
    from proxy.sidecar import Sidecar

    loop = asyncio.get_running_loop()
    sidecar = Sidecar(bootstrap, loop=loop, drain_time=drain_time)  # type: ignore[arg-type]
    await sidecar.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sidecar.on_quit = stop.set
    await stop.wait()
    await sidecar.stop()
    return 0
