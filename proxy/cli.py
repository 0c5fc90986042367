"""``pymesh proxy``: run (or only validate) a proxy from an Envoy v3 bootstrap."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

import structlog

from pymesh.errors import ConfigError

__all__ = ["add_arguments", "run"]

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config-path", help="Envoy v3 bootstrap (YAML/JSON)")
    parser.add_argument(
        "--config-yaml", help="the bootstrap as a YAML string (instead of -c, as in Envoy)"
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="only check the configuration (like envoy --mode validate)",
    )
    parser.add_argument(
        "--drain-time-s", type=float, default=5.0, help="graceful drain on SIGTERM (seconds)"
    )
    parser.add_argument(
        "--drain-inbound-only",
        action="store_true",
        help="on SIGTERM drain the INBOUND listeners only; outbound keeps serving the app "
        "while it shuts down (Istio's sidecar drain)",
    )
    parser.add_argument(
        "--wait-full-drain",
        action="store_true",
        help="wait the whole drain time even when no connection is left "
        "(Istio's EXIT_ON_ZERO_ACTIVE_CONNECTIONS=false, its default)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="worker processes sharing the listeners (Envoy's worker threads; 0: one per "
        "CPU the proxy may run on); the admin port shows their stats summed",
    )
    # Accepted so that Envoy command lines keep working.
    parser.add_argument("--base-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--disable-hot-restart", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.config_yaml:
        if args.config_path:
            print("error: give -c or --config-yaml, not both", file=sys.stderr)
            return 2
        return _run_inline(args)
    if not args.config_path:
        print("error: -c/--config-path or --config-yaml is required", file=sys.stderr)
        return 2
    if args.concurrency < 0:
        print(f"error: --concurrency must be 0 or more, not {args.concurrency}", file=sys.stderr)
        return 2
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
    concurrency = args.concurrency or len(os.sched_getaffinity(0))
    if concurrency > 1:
        return _run_workers(args, bootstrap, concurrency)
    import uvloop

    from proxy.transport.allocator import tune_allocator

    tune_allocator()  # streamed bodies reuse heap buffers instead of a mmap per read
    try:
        rc: int = uvloop.run(
            _serve(
                bootstrap,
                args.drain_time_s,
                inbound_only=args.drain_inbound_only,
                exit_on_zero=not args.wait_full_drain,
            )
        )
        return rc
    except ConfigError as exc:
        print(f"error initializing configuration '{args.config_path}': {exc}", file=sys.stderr)
        return 1


def _run_workers(args: argparse.Namespace, bootstrap: object, concurrency: int) -> int:
    from proxy.workers.supervisor import WorkerOptions, run

    options = WorkerOptions(
        config_path=os.path.abspath(args.config_path),
        drain_time=args.drain_time_s,
        drain_inbound_only=args.drain_inbound_only,
        wait_full_drain=args.wait_full_drain,
        log_level=getattr(args, "log_level", "info"),
        log_format=getattr(args, "log_format", "console"),
    )
    admin = getattr(bootstrap, "admin", None)
    return run(options, concurrency, admin.address if admin is not None else None)


def _run_inline(args: argparse.Namespace) -> int:
    """``--config-yaml``: a sidecar whose uid cannot read its launcher's files (the demo's
    uid 1337 proxies) gets its bootstrap on the command line; the loader reads files."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="pymesh-bootstrap-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(args.config_yaml)
        args.config_path, args.config_yaml = path, None
        return run(args)
    finally:
        os.unlink(path)


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


async def _serve(
    bootstrap: object, drain_time: float, *, inbound_only: bool, exit_on_zero: bool
) -> int:
    from proxy.sidecar import Sidecar

    loop = asyncio.get_running_loop()
    sidecar = Sidecar(
        bootstrap,  # type: ignore[arg-type]
        loop=loop,
        drain_time=drain_time,
        inbound_drain=inbound_only,
        exit_on_zero=exit_on_zero,
    )
    # Before start: the admin and static listeners open during it, and a quit or a signal
    # that arrives before start returns (the xDS client is still loading) must not be lost.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sidecar.on_quit = stop.set
    await sidecar.start()
    await stop.wait()
    await sidecar.stop()
    return 0
