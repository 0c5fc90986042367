"""``pymesh injector``: the sidecar injector webhook (AdmissionReview v1 over TLS)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from typing import TYPE_CHECKING

from pymesh.cli.kube_inject import inject_arguments, inject_config

if TYPE_CHECKING:
    from pymesh.inject.pod import InjectConfig

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default="0.0.0.0:9443", help="host:port to listen on")
    parser.add_argument("--tls-cert", required=True, help="serving certificate (PEM)")
    parser.add_argument("--tls-key", required=True, help="its private key (PEM)")
    inject_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = inject_config(args)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        print(f"error: TLS certificate {args.tls_cert}: {exc}", file=sys.stderr)
        return 1
    host, _, port = args.address.rpartition(":")
    import uvloop

    return int(uvloop.run(_serve(cfg, context, host or "0.0.0.0", int(port))))


async def _serve(cfg: InjectConfig, context: ssl.SSLContext, host: str, port: int) -> int:
    from pymesh.inject.webhook import InjectorServer

    server = InjectorServer(cfg, context)
    await server.start(host, port)
    print(f"injector listening on {host}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0
