"""``pymesh ca``: the certificate authority on its own (pilot runs the same one with
``--ca-dir``).

* ``pymesh ca --ca-dir DIR [--address HOST:PORT]`` serves Istio's CA API over TLS;
* ``pymesh ca --ca-dir DIR token -n NS SA`` prints a service-account token the CA accepts
  (what ``kubectl create token SA -n NS`` gives an Istio agent);
* ``pymesh ca --ca-dir DIR root`` prints the root certificate (the agents' trust anchor).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from pymesh.config.durations import parse_duration
from pymesh.errors import ConfigError

if TYPE_CHECKING:
    from auth.server import CaOptions, CaService

__all__ = ["add_arguments", "add_ca_options", "ca_options", "run"]

log = structlog.get_logger(__name__)


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be positive")
    return seconds


def add_ca_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The CA's options, shared with ``pymesh pilot`` (where the CA is optional)."""
    parser.add_argument(
        "--ca-dir",
        required=required,
        help="the CA's directory: Istio's cacerts layout (ca-cert.pem, ca-key.pem, "
        "root-cert.pem, cert-chain.pem); empty = a new self-signed root",
    )
    parser.add_argument(
        "--trust-domain", help="SPIFFE trust domain (cluster.local; pilot: its mesh config's)"
    )
    parser.add_argument(
        "--workload-cert-ttl", type=_duration, default=24 * 3600.0, help="default TTL (24h)"
    )
    parser.add_argument(
        "--max-workload-cert-ttl",
        type=_duration,
        default=90 * 24 * 3600.0,
        help="cap on requested TTLs (2160h)",
    )


def ca_options(args: argparse.Namespace, trust_domain: str = "cluster.local") -> CaOptions:
    """The :class:`~auth.server.CaOptions` of the parsed command line."""
    from auth.server import CaOptions

    return CaOptions(
        directory=Path(args.ca_dir),
        trust_domain=args.trust_domain or trust_domain,
        default_ttl=args.workload_cert_ttl,
        max_ttl=args.max_workload_cert_ttl,
        domain=getattr(args, "domain", "cluster.local"),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_ca_options(parser, required=True)
    parser.add_argument("--address", default="127.0.0.1:15012", help="TLS gRPC address (host:port)")
    parser.add_argument("--domain", default="cluster.local", help="the cluster DNS domain")
    sub = parser.add_subparsers(dest="ca_command", metavar="[token|root]")
    token = sub.add_parser("token", help="print a service-account token for SA")
    token.add_argument("service_account", metavar="SA")
    token.add_argument("-n", "--namespace", default="default")
    token.add_argument("--duration", type=_duration, default=24 * 3600.0, help="lifetime (24h)")
    token.add_argument("--audience", action="append", help="audience (repeatable; istio-ca)")
    sub.add_parser("root", help="print the root certificate (PEM)")


def run(args: argparse.Namespace) -> int:
    from auth.server import open_ca

    options = ca_options(args)
    try:
        service, issuer = open_ca(options, time.time)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.ca_command == "token":
        audiences = args.audience or ["istio-ca"]
        print(
            issuer.issue(
                args.namespace, args.service_account, audiences=audiences, ttl=args.duration
            )
        )
        return 0
    if args.ca_command == "root":
        print(service.ca.root_pem, end="")
        return 0
    import uvloop

    try:
        return int(uvloop.run(_serve(service, args.address, options)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _serve(service: CaService, address: str, options: CaOptions) -> int:
    from auth.server import CaServer, serving_names

    server = CaServer(service, names=serving_names(options.root_namespace, options.domain))
    await server.start(address)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("ca stopping")
    await server.stop()
    return 0
